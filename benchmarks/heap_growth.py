"""Python heap growth while sessions come and go: is anything left behind per session?

Runs the live service in this process (embedded Redis, faster-whisper tiny.en, test-size CLIP and
MER-CLIP unless --full) and keeps N aiortc sessions (4 s of tone + test pattern each) connecting,
streaming and hanging up. After a warm-up, tracemalloc snapshots the Python heap before and after
a measured period and prints the growth in all, per session, and its largest sites. The clients
run in this process too, so their leftovers would count as well.

    python benchmarks/heap_growth.py --sessions 3 --seconds 150

RSS (benchmarks/soak_memory.py) also moves with native allocations (torch, CTranslate2, codecs,
the allocator's arenas); this separates what Python code keeps from those.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from service_helpers import tiny_settings  # noqa: E402
from stream_helpers import PatternVideoTrack, SineTrack, wait_for  # noqa: E402

from stream.clients.peer_client import connect_peer  # noqa: E402
from workers.app.service import LiveService  # noqa: E402
from workers.app.settings import Settings  # noqa: E402


async def one_session(url: str, sid: str) -> None:
    tracks = [SineTrack(seconds=4.0), PatternVideoTrack(fps=10, seconds=4.0)]
    pc, _ = await connect_peer(url, tracks, session_id=sid)
    try:
        await wait_for(lambda: all(t.readyState == "ended" for t in tracks), 30)
    finally:
        await pc.close()


async def measure(settings: Settings, args: argparse.Namespace) -> dict:
    async with LiveService(settings) as svc:
        started = 0

        async def churn(seconds: float) -> None:
            nonlocal started
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                ids = [f"heap-{started + i}" for i in range(args.sessions)]
                started += args.sessions
                await asyncio.gather(*(one_session(svc.url, sid) for sid in ids))

        async def settle() -> tracemalloc.Snapshot:
            await asyncio.sleep(5)  # the last sessions' windows reach inference
            gc.collect()
            return tracemalloc.take_snapshot()

        await churn(args.warmup)  # caches, pools, lazy imports, allocator growth
        tracemalloc.start(10)
        await churn(30)  # tracemalloc's own first allocations
        before = await settle()
        first = started
        await churn(args.seconds)
        after = await settle()
        measured = started - first
        assert svc.worker is not None
        windows = svc.worker.counters.processed

    diffs = after.compare_to(before, "traceback")
    growth = sum(d.size_diff for d in diffs)
    top = [
        {
            "kib": round(d.size_diff / 1024, 1),
            "blocks": d.count_diff,
            "where": [f"{f.filename.replace(str(ROOT) + '/', '')}:{f.lineno}" for f in d.traceback][
                -3:
            ],
        }
        for d in diffs[:5]
    ]
    return {
        "sessions_measured": measured,
        "seconds_measured": args.seconds,
        "windows_inferred_in_all": windows,
        "python_heap_growth_kib": round(growth / 1024, 1),
        "python_heap_growth_bytes_per_session": round(growth / max(1, measured)),
        "largest_growth_sites": top,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sessions", type=int, default=3, help="concurrent sessions")
    p.add_argument("--seconds", type=float, default=150.0, help="measured period")
    p.add_argument("--warmup", type=float, default=60.0)
    p.add_argument("--full", action="store_true", help="service default models (ViT-B-32)")
    args = p.parse_args()
    settings = tiny_settings()
    if args.full:
        defaults = Settings()
        settings = settings.replace("model", name=defaults.model.name)
        settings = settings.replace("clip", model=defaults.clip.model)
    settings = settings.replace("server", max_sessions=max(8, args.sessions))
    result = asyncio.run(measure(settings, args))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
