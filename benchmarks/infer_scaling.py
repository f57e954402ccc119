"""Inference throughput by worker count: windows per second that 1, 2 and 4 `merclip infer`
processes clear from a fixed backlog on one Redis (issue "Scale out for real").

For each worker count K, on a fresh key prefix of one embedded Redis:
1. start K `merclip infer` processes (service defaults: the shipped MER-CLIP; each with
   `cores // K` torch threads, at least 1, so K workers share the machine instead of
   oversubscribing it) and wait until all K have joined the consumer group;
2. add a backlog of `--windows` windows with the live-pretrained feature shapes of a 4 s window
   (MiniLM tokens 20 x 384, expression features of 4 frames x 135, log-mel 400 x 64);
3. time from the first window added to the last event written.

Model loading is outside the timing (the backlog is added only once every worker is ready).
Prints windows/s per K and the ratio to K = 1, with the core count: on a machine with fewer
cores than workers the ratio shows what the extra processes cost, not what they add.

    python benchmarks/infer_scaling.py --windows 400 --workers 1 2 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from merclip.feature_spaces import LIVE_PRETRAINED_DIMS  # noqa: E402
from workers.app.settings import RedisSettings  # noqa: E402
from workers.bus import Bus  # noqa: E402
from workers.redis_server import EmbeddedRedis  # noqa: E402
from workers.schemas import FeatureWindow  # noqa: E402

GROUP = "infer"


def backlog_window(i: int, rng: np.random.Generator) -> FeatureWindow:
    now = time.time()

    def rows(t: int, modality: str) -> np.ndarray:
        return rng.standard_normal((t, LIVE_PRETRAINED_DIMS[modality])).astype(np.float16)

    return FeatureWindow(
        session_id=f"bench-{i % 40}",
        seq=i // 40,
        media_start=2.0 * (i // 40),
        media_end=2.0 * (i // 40) + 4.0,
        wall_start=now - 4.0,
        wall_end=now,
        transcript="i can't believe you did that, it is wonderful",
        language=rows(20, "language"),
        visual=rows(4, "visual"),
        audio=rows(400, "audio"),
        face_present=True,
        speech_present=True,
        clip_model="",
        clip_pretrained="",
        feature_space="live-pretrained",
        features_ready_wall=now,
    )


def start_workers(url: str, prefix: str, k: int, threads: int) -> list[subprocess.Popen[bytes]]:
    env = {key: v for key, v in os.environ.items() if not key.startswith("MERCLIP_")}
    env.update(
        PYTHONPATH=str(ROOT),
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS=str(threads),
        MERCLIP_REDIS_PREFIX=prefix,
        # The backlog is old by the time the last window is served: nothing may be skipped.
        MERCLIP_INFERENCE_DEADLINE_SECONDS="3600",
    )
    cmd = [sys.executable, "-m", "workers.app", "--log-level", "WARNING", "infer"]
    return [
        subprocess.Popen([*cmd, "--redis-url", url, "--consumer", f"w{j}"], env=env, cwd=ROOT)
        for j in range(k)
    ]


async def wait_joined(bus: Bus, k: int, procs: list[subprocess.Popen[bytes]]) -> None:
    """Until K clients block in XREADGROUP: every worker has loaded its model and joined."""
    while True:
        if any(p.poll() is not None for p in procs):
            raise SystemExit("an inference worker exited before joining")
        clients = await bus._r.client_list()
        if sum(c.get("cmd") == "xreadgroup" for c in clients) >= k:
            return
        await asyncio.sleep(0.2)


async def run_one(url: str, k: int, windows: int, cores: int) -> dict[str, float]:
    prefix = f"scale{k}-{uuid.uuid4().hex[:6]}"
    threads = max(1, cores // k)
    procs = start_workers(url, prefix, k, threads)
    try:
        async with Bus.connect(url, RedisSettings(prefix=prefix)) as bus:
            await wait_joined(bus, k, procs)
            rng = np.random.default_rng(0)
            batch = [backlog_window(i, rng) for i in range(windows)]
            t0 = time.perf_counter()
            for fw in batch:
                last_id = await bus.add_window(fw)
            client = bus._r
            while True:  # every window delivered, and every delivery acked (its event written)
                groups = await client.xinfo_groups(bus.keys.windows)
                info = next(g for g in groups if g["name"] == GROUP.encode())
                delivered = info["last-delivered-id"].decode()
                if delivered == last_id and info["pending"] == 0:
                    break
                if any(p.poll() is not None for p in procs):
                    raise SystemExit("an inference worker died during the run")
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - t0
            dead = await client.xlen(bus.keys.dead)
            if dead:  # a dead-lettered window would count as served without an event
                raise SystemExit(f"{dead} windows were dead-lettered: the backlog is not valid")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)
    return {"workers": k, "torch_threads_each": threads, "seconds": round(elapsed, 2),
            "windows_per_second": round(windows / elapsed, 1)}  # fmt: skip


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--windows", type=int, default=400, help="backlog size per run")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    async with EmbeddedRedis() as url:
        runs = [await run_one(url, k, args.windows, cores) for k in args.workers]
    base = runs[0]["windows_per_second"]
    for r in runs:
        r["ratio_to_first"] = round(r["windows_per_second"] / base, 2)
    print(json.dumps({"cpu_count": cores, "windows": args.windows, "runs": runs}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
