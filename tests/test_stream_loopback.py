"""The loopback ICE workaround, where it matters: a network namespace whose only interface is lo.

aioice leaves 127.0.0.1 out of its host candidates. On a machine with a real interface the peers
pair over it, so an ordinary test cannot tell whether the workaround works; inside `unshare -rn`
(a fresh user + network namespace with only `lo`) it decides whether the peers connect at all.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    sys.path.insert(0, "tests")
    from stream_helpers import SineTrack, make_settings, running_server, wait_for
    import stream.app
    from stream.clients.peer_client import connect_peer

    LOOPBACK = sys.argv[1] == "on"

    async def main():
        # running_server always asks for loopback candidates; undo that for the "off" run.
        original = stream.app.use_loopback_candidates
        if not LOOPBACK:
            stream.app.use_loopback_candidates = lambda: None
        async with running_server(make_settings()) as (url, app, sinks):
            pc, sid = await connect_peer(url, [SineTrack(seconds=3)], loopback=LOOPBACK)
            ok = await wait_for(lambda: bool(sinks and sinks[0].audio), 4)
            print("CONNECTED" if ok else "NOT-CONNECTED", pc.connectionState)
            await pc.close()
        stream.app.use_loopback_candidates = original

    asyncio.run(main())
    """
)


def _in_loopback_only_namespace(mode: str) -> str:
    cmd = [
        "unshare",
        "-rn",
        "sh",
        "-c",
        f'ip link set lo up && exec "{sys.executable}" -c "$0" {mode}',
        SCRIPT,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def namespace_available() -> None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs util-linux unshare and iproute2")
    probe = subprocess.run(
        ["unshare", "-rn", "sh", "-c", "ip link set lo up"], capture_output=True, timeout=10
    )
    if probe.returncode != 0:
        pytest.skip(f"unprivileged network namespaces unavailable: {probe.stderr.decode()}")


def test_peers_connect_over_loopback_only_with_the_workaround(namespace_available: None) -> None:
    assert "CONNECTED" in _in_loopback_only_namespace("on").split()


def test_without_the_workaround_loopback_only_peers_do_not_connect(
    namespace_available: None,
) -> None:
    # The reason the workaround exists; if aioice ever offers 127.0.0.1 itself, this fails and
    # the workaround can go.
    assert "NOT-CONNECTED" in _in_loopback_only_namespace("off").split()
