"""Memory soak: several WebRTC sessions for minutes against `merclip serve`; is RSS flat?

Starts `merclip serve` (embedded Redis) as a child process, keeps N sessions streaming (each
session streams a 30 s face + speech clip (--clip-seconds), disconnects, and reconnects as a NEW
session, so session set-up and tear-down are soaked too), subscribes to all events, and samples the
RSS of every process of the service (server + embedded redis-server) every second. Prints JSON
with RSS at the start of the measurement (after a warm-up), at the end, its least-squares slope in
MB per minute, and the events received.

    python benchmarks/soak_memory.py --sessions 3 --minutes 5
    python benchmarks/soak_memory.py --sessions 3 --minutes 3 --tiny   # test-size models

A slope near 0 (within noise of a few MB/min after warm-up) means memory is flat; a steady
positive slope over a long run is a leak. Slopes are also given per process (the service, and the
embedded redis-server, whose data is bounded by redis.windows_maxlen / events_maxlen /
events_ttl_s rather than flat), with Redis's own used_memory and key count at the end.

With recycling (`--ingest-processes 2 --recycle-after-sessions 15`): one Redis, one `merclip
infer` and K `merclip ingest` nodes that drain and exit after N sessions and are started again on
their port (benchmarks/fleet.py, as a supervisor would); each session is offered to the nodes in
turn until one takes it. Adds RSS per role (redis, infer, ingest: the nodes alive at each
sample), every ingest generation's RSS a minute into its life and its peak, the restarts, and the
offers refused while a node drained or restarted.

    python benchmarks/soak_memory.py --sessions 3 --minutes 32 --warmup 300 \
        --ingest-processes 2 --recycle-after-sessions 15
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from fleet import Fleet  # noqa: E402
from live_sessions import make_media  # noqa: E402
from serve_process import RssSeries, ServeProcess  # noqa: E402

from stream.clients.file import stream_file  # noqa: E402
from stream.errors import OfferRejectedError  # noqa: E402
from workers.subscriber import subscribe  # noqa: E402


def _refused(exc: BaseException) -> bool:
    """An offer that a draining or restarting node turned away before any media flowed: the
    client tries another node, as it would behind a load balancer that reads /readyz."""
    if isinstance(exc, OfferRejectedError):
        return exc.status == 503
    return isinstance(exc, aiohttp.ClientError | OSError)


async def soak(urls: list[str], redis_url: str, media: Path, args: argparse.Namespace) -> dict:
    end = time.monotonic() + args.minutes * 60
    counts = {"events": 0, "sessions_started": 0, "session_errors": 0, "offers_refused": 0}
    per_session: dict[str, int] = {}

    async def listen() -> None:
        async for ev in subscribe(redis_url):
            counts["events"] += 1
            per_session[ev.session_id] = per_session.get(ev.session_id, 0) + 1

    async def session_loop(i: int) -> None:
        round_ = tries = 0
        while time.monotonic() < end:
            url = urls[(i + round_ + tries) % len(urls)]
            sid = f"soak-{i}-{round_}"
            try:
                await stream_file(url, media, session_id=sid)
                counts["sessions_started"] += 1
                per_session.setdefault(sid, 0)
                tries = 0
            except Exception as exc:  # noqa: BLE001 - a soak counts failures and goes on
                if _refused(exc):
                    counts["offers_refused"] += 1
                    tries += 1
                    await asyncio.sleep(0.5 if tries % len(urls) else 2.0)
                    continue  # the same session, on the next node
                counts["sessions_started"] += 1
                counts["session_errors"] += 1
                print(f"session {sid} at {url}: {exc}", file=sys.stderr)
                await asyncio.sleep(2)
            round_ += 1

    listener = asyncio.create_task(listen())
    await asyncio.gather(*(session_loop(i) for i in range(args.sessions)))
    await asyncio.sleep(10)  # the last sessions' final windows
    listener.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await listener
    got = [per_session.get(sid, 0) for sid in per_session]
    counts["sessions_without_events"] = sum(1 for n in got if n == 0)
    counts["events_per_session_min"] = min(got, default=0)
    counts["events_per_session_max"] = max(got, default=0)
    return counts


def by_role(samples: list, roles: object, warmup: float) -> dict[str, dict[str, float]]:
    """RSS summed per role (redis, infer, ingest) over the processes that held it at each
    sample: an ingest node recycled is one role before and after its restart."""
    if not isinstance(roles, dict):
        return {}
    out: dict[str, dict[str, float]] = {}
    for role in sorted(set(roles.values())):
        pts = []
        for t, _, parts in samples:
            if t < warmup:
                continue
            mine = [rss for name, rss in parts.items() if roles.get(_pid(name)) == role]
            pts.append((t, sum(mine)))
        if len(pts) >= 10:
            pt, pmb = np.array([p[0] for p in pts]), np.array([p[1] for p in pts]) / 2**20
            out[role] = {
                "rss_mb_start": round(float(pmb[:5].mean()), 1),
                "rss_mb_end": round(float(pmb[-5:].mean()), 1),
                "rss_mb_peak": round(float(pmb.max()), 1),
                "rss_slope_mb_per_min": round(float(np.polyfit(pt, pmb, 1)[0] * 60), 2),
            }
    return out


def generations(samples: list, roles: object) -> list[dict[str, float]]:
    """Each ingest process of a recycling run, in start order: when it was first and last
    seen, its RSS a minute into its life and its peak. Equal peaks from one generation to the
    next mean recycling bounds the memory, whatever each process's own growth."""
    if not isinstance(roles, dict):
        return []
    seen: dict[int, list[tuple[float, int]]] = {}
    for t, _, parts in samples:
        for name, rss in parts.items():
            pid = _pid(name)
            if roles.get(pid) == "ingest":
                seen.setdefault(pid, []).append((t, rss))
    out = []
    for pts in sorted(seen.values(), key=lambda pts: pts[0][0]):
        first, last = pts[0][0], pts[-1][0]
        settled = [rss for t, rss in pts if t >= first + 60] or [pts[-1][1]]
        out.append(
            {
                "first_seen_s": round(first),
                "lifetime_s": round(last - first),
                "rss_mb_at_1_min": round(settled[0] / 2**20, 1),
                "rss_mb_peak": round(max(rss for _, rss in pts) / 2**20, 1),
            }
        )
    return out


def _pid(name: str) -> int:
    """The pid of an RssSeries part name, `python3[1234]`."""
    return int(name.rsplit("[", 1)[1].rstrip("]"))


def redis_memory(url: str) -> dict[str, int]:
    """What the embedded Redis holds at the end: its own accounting, not just its RSS."""
    client = redis.Redis.from_url(url)
    try:
        info = client.info("memory")
        return {"used_memory_mb": round(info["used_memory"] / 2**20, 1), "keys": client.dbsize()}
    finally:
        client.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sessions", type=int, default=3)
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=60.0, help="seconds left out of the slope")
    p.add_argument("--tiny", action="store_true", help="merclip-tiny-live + merclip-tiny-clip")
    p.add_argument(
        "--clip-seconds",
        type=float,
        default=30.0,
        help="length of each session (longer: fewer sessions for the same windows, which tells "
        "growth per session from growth per window)",
    )
    p.add_argument(
        "--ingest-processes",
        type=int,
        default=0,
        help="0: one `merclip serve`; K: K `merclip ingest` nodes (restarted when they exit) "
        "and one `merclip infer` on one Redis, sessions spread over the nodes",
    )
    p.add_argument(
        "--recycle-after-sessions",
        type=int,
        default=0,
        help="with --ingest-processes: each node drains and exits after N sessions, and is "
        "started again (server.recycle_after_sessions)",
    )
    p.add_argument("--json", type=Path, help="also write the result (with all samples) here")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="merclip-soak-"))
    media, _words = make_media(work, args.clip_seconds)
    env = {"MERCLIP_SERVER_MAX_SESSIONS": str(max(8, args.sessions))}
    if args.tiny:
        env["MERCLIP_MODEL_NAME"] = "merclip-tiny-live"
        env["MERCLIP_CLIP_MODEL"] = "merclip-tiny-clip"
        env["MERCLIP_FEATURES_SPACE"] = "live"
        env["MERCLIP_MODEL_CHECKPOINT"] = ""
    redis_stats: dict[str, int] = {}
    recycling: dict[str, object] = {}
    service: ServeProcess | Fleet
    if args.ingest_processes:
        ingest_args = ["--max-sessions", env["MERCLIP_SERVER_MAX_SESSIONS"]]
        if args.recycle_after_sessions:
            ingest_args += ["--recycle-after-sessions", str(args.recycle_after_sessions)]
        service = Fleet(env, ingest=args.ingest_processes, ingest_args=ingest_args, supervise=True)
    else:
        service = ServeProcess(env, work)
    with service as serve:
        series = RssSeries(serve.pids)
        series.start()
        try:
            counts = asyncio.run(soak(serve.urls, serve.redis_url, media, args))
            redis_stats = redis_memory(serve.redis_url)
        finally:
            series.stop.set()
        if isinstance(serve, Fleet):
            recycling = {
                "ingest_processes": args.ingest_processes,
                "recycle_after_sessions": args.recycle_after_sessions,
                "ingest_restarts": serve.restarts,
                "ingest_exit_codes": sorted(set(serve.exit_codes)),
                "roles": serve.roles,
            }

    samples = [(t, rss) for t, rss, _ in series.samples if t >= args.warmup]
    if len(samples) < 10:
        print("run too short for a slope after the warm-up", file=sys.stderr)
        return 1
    t = np.array([s[0] for s in samples])
    mb = np.array([s[1] for s in samples]) / 2**20
    slope_per_min = float(np.polyfit(t, mb, 1)[0] * 60)
    by_process = {}
    names = series.samples[-1][2] if not recycling else {}
    for name in names:
        pts = [(t, ps[name]) for t, _, ps in series.samples if t >= args.warmup and name in ps]
        if len(pts) >= 10:
            pt, pmb = np.array([p[0] for p in pts]), np.array([p[1] for p in pts]) / 2**20
            by_process[name] = {
                "rss_mb_start": round(float(pmb[:5].mean()), 1),
                "rss_mb_end": round(float(pmb[-5:].mean()), 1),
                "rss_slope_mb_per_min": round(float(np.polyfit(pt, pmb, 1)[0] * 60), 2),
            }
    result = {
        "sessions": args.sessions,
        "minutes": args.minutes,
        "models": "tiny" if args.tiny else "service defaults",
        "clip_seconds": args.clip_seconds,
        "warmup_s": args.warmup,
        "rss_mb_start": round(float(mb[:5].mean()), 1),
        "rss_mb_end": round(float(mb[-5:].mean()), 1),
        "rss_mb_peak": round(float(mb.max()), 1),
        "rss_slope_mb_per_min": round(slope_per_min, 2),
        "by_process": by_process,
        "by_role": by_role(series.samples, recycling.get("roles"), args.warmup),
        "ingest_generations": generations(series.samples, recycling.get("roles")),
        "recycling": {k: v for k, v in recycling.items() if k != "roles"},
        "redis_at_end": redis_stats,
        **counts,
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        result["samples"] = [(round(t, 1), rss, parts) for t, rss, parts in series.samples]
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
