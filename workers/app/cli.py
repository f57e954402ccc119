"""The `merclip` command. Each subcommand lives in its own module, imported only when used
(so `merclip --help` does not import torch).

A subcommand module provides `add_arguments(parser)` and `run(args, settings) -> int`; the
service commands are in workers/app/commands/, the training ones in merclip/training/. Logging is
configured here and nowhere else. Exit codes: 0 done, 1 a runtime failure (MerClipError), 2 a
usage or configuration error (ConfigError and the others whose `exit_code` is 2), 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from merclip.errors import MerClipError
from workers.app.settings import Settings, load_settings
from workers.app.training import use_live_featurizer

__all__ = ["main"]

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": (
        "workers.app.commands.serve",
        "run every role of one machine (embedded Redis by default)",
    ),
    "ingest": ("workers.app.commands.ingest", "WebRTC server + feature extraction only"),
    "infer": ("workers.app.commands.infer", "MER-CLIP inference worker (consumer group)"),
    "subscribe": ("workers.app.commands.subscribe", "print events as JSON lines"),
    "stream-file": ("stream.clients.file", "stream a media file to a server over WebRTC"),
    "dashboard": (
        "workers.app.commands.dashboard",
        "serve the monitoring dashboard for a shared Redis",
    ),
    "capture": ("stream.clients.capture", "send the local camera and microphone to a server"),
    "token": ("workers.app.commands.token", "mint or check an access token (auth.secret)"),
    "extract": ("workers.extract", "extract live-space features from a folder of videos"),
    "train": ("merclip.training.train", "train MER-CLIP"),
    "evaluate": ("merclip.training.evaluate", "evaluate a checkpoint: JSON report + plots"),
    "ablate-query": ("merclip.training.ablate", "train/evaluate once per query word"),
}

DEFAULT_CONFIG = Path("config.toml")


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Attributes every LogRecord has; anything else on a record came from `extra=` (session_id,
# stage, consumer, ...) and goes into the JSON line so logs can be filtered by it.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (the record's creation time), level, logger, msg, the
    record's `extra=` context, and exc."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def _configure_logging(level: str, as_json: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # Per-candidate ICE and per-request access lines drown what matters at INFO.
    for chatty in ("aioice", "aiortc", "aiohttp.access", "faster_whisper"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))


def _add_common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The flags every command takes, before or after the subcommand name. After it (`suppress`)
    they default to SUPPRESS, so an absent flag does not overwrite one given before it."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--config",
        type=Path,
        default=default(None),
        help="config.toml to read (default: ./config.toml if present, else built-in defaults)",
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=default("INFO"),
        help="least severe log records printed (default INFO)",
    )
    parser.add_argument(
        "--log-json",
        action="store_true",
        default=default(False),
        help="log one JSON object per line, with each record's session/stage context",
    )


def _version() -> str:
    try:
        return importlib.metadata.version("merclip-live")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that is not installed
        import merclip

        return merclip.__version__


def _base_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="merclip", description="MER-CLIP Live")
    parser.add_argument("--version", action="version", version=f"merclip {_version()}")
    _add_common(parser, suppress=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _base_parser()
    common = argparse.ArgumentParser(add_help=False)
    _add_common(common, suppress=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        if name == chosen:
            importlib.import_module(module_name).add_arguments(p)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _configure_logging(args.log_level, args.log_json)
    try:
        config_path = args.config
        if config_path is None and DEFAULT_CONFIG.exists():
            config_path = DEFAULT_CONFIG
        settings: Settings = load_settings(config_path)
        use_live_featurizer()  # training commands read raw emotion datasets through it
        module = importlib.import_module(COMMANDS[args.command][0])
        return int(module.run(args, settings) or 0)
    except MerClipError as exc:
        print(f"merclip {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
