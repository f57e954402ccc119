"""The `merclip` command's conventions: --version, common flags on either side of the
subcommand, usage errors without tracebacks, exit 1 for runtime failures and 2 for usage or
configuration, JSON logs that carry each record's context."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

import merclip
from merclip.errors import CheckpointMismatchError, ConfigError, DatasetError, MerClipError
from workers.app.cli import JsonFormatter

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[1]


def _merclip(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.app", *args],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=cwd,
    )


def test_version_is_the_package_version() -> None:
    proc = _merclip("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"merclip {merclip.__version__}"


def test_common_flags_are_accepted_after_the_subcommand(tmp_path: Path) -> None:
    # Before this, `merclip subscribe --log-json` said "unrecognized arguments".
    proc = _merclip("subscribe", "--log-json", "--log-level", "debug", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "unrecognized" not in proc.stderr
    assert "needs the Redis URL" in proc.stderr

    bad = tmp_path / "bad.toml"
    bad.write_text('[redis]\nprefix = "a:b"\n')
    for argv in (("--config", str(bad), "subscribe"), ("subscribe", "--config", str(bad))):
        proc = _merclip(*argv, cwd=tmp_path)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert "redis.prefix" in proc.stderr, argv


def test_a_flag_given_before_the_subcommand_is_not_reset_after_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[redis]\nprefix = "a:b"\n')
    proc = _merclip("--config", str(bad), "subscribe", "--log-json", cwd=tmp_path)
    assert proc.returncode == 2 and "redis.prefix" in proc.stderr, proc.stderr


def test_a_bad_log_level_is_a_usage_error_not_a_traceback() -> None:
    proc = _merclip("subscribe", "--log-level", "FOO")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "invalid choice: 'FOO'" in proc.stderr


def test_a_runtime_failure_exits_1_a_config_error_2(tmp_path: Path) -> None:
    # Port 9 (discard) has no Redis: the command ran, and what failed may work on a retry.
    proc = _merclip("subscribe", "--redis-url", "redis://127.0.0.1:9/0", "--count", "1")
    assert proc.returncode == 1, proc.stderr
    assert "cannot reach Redis" in proc.stderr and "Traceback" not in proc.stderr
    proc = _merclip("subscribe", cwd=tmp_path)  # no URL at all: fix the command first
    assert proc.returncode == 2


def test_exit_codes_by_error_class() -> None:
    assert MerClipError("x").exit_code == 1
    for cls in (ConfigError, CheckpointMismatchError, DatasetError):
        assert cls("x").exit_code == 2, cls


def test_json_logs_carry_the_record_context_and_its_creation_time() -> None:
    record = logging.getLogger("workers.ingest").makeRecord(
        "workers.ingest",
        logging.WARNING,
        __file__,
        1,
        "session %s: window %d dropped",
        ("abc", 7),
        None,
        extra={"session_id": "abc", "stage": "ingest"},
    )
    record.created = 1_700_000_000.123456
    out = json.loads(JsonFormatter().format(record))
    assert out == {
        "ts": 1_700_000_000.123,
        "level": "WARNING",
        "logger": "workers.ingest",
        "msg": "session abc: window 7 dropped",
        "session_id": "abc",
        "stage": "ingest",
    }
