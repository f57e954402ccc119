"""Sessions that come and go leave nothing behind in the live service: after each session ends, its
server-side peer connection, its PeerSession and its ingest state are freed, and the service's
tasks and threads are back where they were. This is what keeps memory flat when users connect and
leave for hours (benchmarks/soak_memory.py measures the RSS; this test pins the mechanism)."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import weakref

import pytest
from service_helpers import tiny_settings
from stream_helpers import PatternVideoTrack, SineTrack, wait_for

from stream.app import REGISTRY
from stream.clients.peer_client import connect_peer
from workers.app.service import LiveService

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


async def _one_session(svc: LiveService, sid: str) -> list[weakref.ref[object]]:
    """Stream 4 s of audio + video as `sid`, hang up, wait until the service has let go of it.
    Returns weak references to the session's server-side objects."""
    assert svc.app is not None and svc.pipeline is not None
    registry = svc.app[REGISTRY]
    assert svc.worker is not None
    processed = svc.worker.counters.processed
    tracks = [SineTrack(seconds=4.0), PatternVideoTrack(fps=10, seconds=4.0)]
    pc, _ = await connect_peer(svc.url, tracks, session_id=sid)
    try:
        assert await wait_for(lambda: registry.get(sid) is not None, 10)
        peer = registry.get(sid)
        assert await wait_for(lambda: sid in svc.pipeline.sessions, 10)  # type: ignore[union-attr]
        refs: list[weakref.ref[object]] = [
            weakref.ref(peer),
            weakref.ref(peer._pc),  # noqa: SLF001 - the server's RTCPeerConnection itself
            weakref.ref(svc.pipeline.sessions[sid]),
        ]
        del peer
        assert await wait_for(lambda: all(t.readyState == "ended" for t in tracks), 15)
        # Inferred windows prove the session went all the way through before it ended.
        assert await wait_for(lambda: svc.worker.counters.processed > processed, 60)  # type: ignore[union-attr]
    finally:
        await pc.close()
    assert await wait_for(lambda: registry.get(sid) is None, 30), "session still registered"
    assert await wait_for(lambda: sid not in svc.pipeline.sessions, 30), "ingest kept it"
    return refs


async def test_sessions_that_end_leave_nothing_behind() -> None:
    async with LiveService(tiny_settings()) as svc:
        assert svc.worker is not None
        # The first session starts the thread pools and caches; measure from after it.
        await _one_session(svc, "churn-warm")
        await asyncio.sleep(1.0)
        tasks_before = len(asyncio.all_tasks())
        threads_before = {t.ident for t in threading.enumerate()}
        processed_before = svc.worker.counters.processed

        refs = []
        for i in range(4):
            refs += await _one_session(svc, f"churn-{i}")
        assert svc.worker.counters.processed > processed_before

        async def settled() -> bool:
            gc.collect()
            return all(r() is None for r in refs)

        deadline = asyncio.get_running_loop().time() + 20
        while not await settled() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.5)
        alive = [type(r()).__name__ for r in refs if r() is not None]
        assert not alive, f"per-session objects still referenced: {alive}"
        assert await wait_for(lambda: len(asyncio.all_tasks()) <= tasks_before, 20), (
            f"tasks grew: {len(asyncio.all_tasks())} > {tasks_before}: "
            f"{sorted(t.get_name() for t in asyncio.all_tasks())}"
        )
        # Threads started since the warm-up session come only from the service's bounded pools
        # (which start threads lazily, up to their size): none is started per session. (Other
        # tests of this process may have left threads of their own: only new ones count.)
        new = sorted(t.name for t in threading.enumerate() if t.ident not in threads_before)
        pools = {name.rsplit("_", 1)[0] for name in new}
        assert pools <= {"asyncio", "extract", "frames", "merclip-infer"}, new
        default_executor = min(32, (os.cpu_count() or 1) + 4)
        assert len(new) <= default_executor + svc.settings.ingest.extract_threads, new
