"""Live pipeline benchmark: N concurrent WebRTC sessions for T seconds against `merclip serve`.

Starts `merclip serve` as a separate process (embedded Redis, models as configured), streams N
synthetic sessions (a moving face and espeak-ng sentences spoken back to back: a person talking
without pauses, the normal load; `--pause S` puts S seconds of silence between sentences) with
the `stream-file` client, subscribes to every event, and prints:
- p50 / p95 latency from window end to published event (and to features ready / inference done),
- per-stage extraction times (ASR, faces, CLIP image, CLIP text, audio features),
- real-time factor = mean extraction time per window / hop (per session; < 1 keeps up),
- lag trend: p95 latency of the second half of the run vs the first half (growing lag = not
  keeping up), windows expected vs received (drops),
- peak RSS of all processes of `merclip serve` together (server + embedded Redis).

    python benchmarks/live_sessions.py --sessions 1 --seconds 60
    python benchmarks/live_sessions.py --sessions 3 --seconds 120

The models are the service defaults (today: the live-pretrained feature space, YuNet + the FER
expression net, MiniLM, bundled tiny.en, the shipped MER-CLIP checkpoint) unless --model /
--clip-model / --space say otherwise; the result names the model the events came from.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from media import face_frame, read_wav_16k, speech_wav  # noqa: E402
from serve_process import RssSeries, ServeProcess  # noqa: E402

from stream.clients.file import stream_file  # noqa: E402
from workers.schemas import EmotionEvent  # noqa: E402
from workers.subscriber import subscribe  # noqa: E402

SENTENCES = [
    "Hello world, this is a test of the emotion recognition system.",
    "I am really happy to see you today.",
    "That was a terrible and sad thing to hear.",
]


def make_media(directory: Path, seconds: float, fps: int = 15, pause: float = 0.0) -> Path:
    """A VP8/Opus webm: drifting face, sentences spoken back to back, `pause` s between them."""
    out = directory / f"bench-{int(seconds)}s-pause{pause:g}-v3.webm"
    if out.exists():
        return out
    rate = 48000
    speech = [read_wav_16k(speech_wav(directory, s)) for s in SENTENCES]
    track = np.zeros(int(seconds * rate), np.float32)
    pos, i = int(0.5 * rate), 0
    while pos < track.size:
        up = np.repeat(speech[i % len(speech)], 3)  # 16 kHz -> 48 kHz (good enough for ASR)
        n = min(up.size, track.size - pos)
        track[pos : pos + n] = up[:n]
        pos += n + int(pause * rate)
        i += 1
    with av.open(str(out), "w", format="webm") as c:
        vs = c.add_stream("libvpx", rate=fps)
        vs.width, vs.height, vs.pix_fmt = 320, 240, "yuv420p"
        as_ = c.add_stream("libopus", rate=rate)
        as_.layout = "mono"
        pcm = (np.clip(track, -1, 1) * 32767).astype(np.int16)
        sent = 0  # audio samples encoded so far
        # Interleave audio and video in time order: a player reads the file front to back, so
        # a file with all video first would deliver its audio only after the video ends.
        for k in range(int(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(face_frame(k, fps, (320, 240), True), format="rgb24")
            frame.pts = k
            for p in vs.encode(frame):
                c.mux(p)
            until = min(pcm.size, int((k + 1) * rate / fps))
            while sent + 960 <= until:
                af = av.AudioFrame.from_ndarray(
                    pcm[None, sent : sent + 960], format="s16", layout="mono"
                )
                af.sample_rate, af.pts = rate, sent
                for p in as_.encode(af):
                    c.mux(p)
                sent += 960
        for p in vs.encode():
            c.mux(p)
        for p in as_.encode():
            c.mux(p)
    return out


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values), q))


async def run_bench(args: argparse.Namespace, url: str, redis_url: str, media: Path) -> dict:
    events: list[tuple[float, EmotionEvent]] = []

    async def listen() -> None:
        async for ev in subscribe(redis_url, prefix="merclip"):
            events.append((time.time(), ev))

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.5)
    sessions = [f"bench-{i}" for i in range(args.sessions)]
    t0 = time.time()
    results = await asyncio.gather(
        *(stream_file(url, media, session_id=s, seconds=args.seconds) for s in sessions),
        return_exceptions=True,
    )
    for s, r in zip(sessions, results, strict=True):
        if isinstance(r, BaseException):
            print(f"session {s} failed: {r!r}", file=sys.stderr)
    await asyncio.sleep(args.drain)
    if listener.done() and listener.exception() is not None:
        raise RuntimeError("the event subscriber failed") from listener.exception()
    listener.cancel()
    await asyncio.gather(listener, return_exceptions=True)

    evs = [e for _, e in events if e.session_id in sessions]
    published = [e.latency.published_ms for e in evs]
    half = t0 + args.seconds / 2
    first = [e.latency.published_ms for e in evs if e.wall_end < half]
    second = [e.latency.published_ms for e in evs if e.wall_end >= half]
    stages: dict[str, list[float]] = {}
    for e in evs:
        for k, v in e.stage_ms.items():
            stages.setdefault(k, []).append(v)
    # Extraction thread-time per window: the window's own stages plus its share of the per-frame
    # work done ahead (each frame sits in window/hop windows, so count it once).
    share = args.hop / args.window
    extract_ms = [
        sum(v for k, v in e.stage_ms.items() if k not in ("inference", "queue", "frames_ahead"))
        + share * e.stage_ms.get("frames_ahead", 0.0)
        for e in evs
    ]
    hop, window = args.hop, args.window
    expected = args.sessions * max(0, int((args.seconds - window) // hop) + 1)
    return {
        "sessions": args.sessions,
        "seconds": args.seconds,
        "events": len(evs),
        "events_per_session": {s: sum(1 for e in evs if e.session_id == s) for s in sessions},
        "windows_expected_at_least": expected,
        "latency_ms": {
            "published_p50": pct(published, 50),
            "published_p95": pct(published, 95),
            "features_ready_p50": pct([e.latency.features_ready_ms for e in evs], 50),
            "inference_done_p50": pct([e.latency.inference_done_ms for e in evs], 50),
            "published_p95_first_half": pct(first, 95),
            "published_p95_second_half": pct(second, 95),
        },
        "stage_ms_mean": {k: round(statistics.fmean(v), 1) for k, v in sorted(stages.items())},
        # Extraction busy time per second of media, per session, over the extraction threads:
        # the share of the ingest's capacity one session takes (N sessions keep up while N x
        # this stays below 1 and the lag does not grow).
        "real_time_factor": (
            statistics.fmean(extract_ms) / 1000 / hop / args.extract_threads if extract_ms else None
        ),
        "models": sorted({f"{e.model_name} {e.model_version}" for e in evs}),
        "windows_with_emotion": sum(1 for e in evs if e.emotions_predicted),
        "transcribed_windows": sum(1 for e in evs if e.transcript),
        "face_windows": sum(1 for e in evs if e.face_present),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sessions", type=int, default=1)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--clip-model", default=None, help="default: the service's (clip.model)")
    p.add_argument("--model", default=None, help="default: the service's (model.name)")
    p.add_argument(
        "--space", default=None, help="features.space (default: the service's); live = CLIP"
    )
    p.add_argument(
        "--pause", type=float, default=0.0, help="silence between sentences (0: nonstop talk)"
    )
    p.add_argument("--window", type=float, default=4.0)
    p.add_argument("--hop", type=float, default=2.0)
    p.add_argument("--extract-threads", type=int, default=2)
    p.add_argument("--client-nice", type=int, default=10, help="niceness of the benchmark clients")
    p.add_argument(
        "--video-fps", type=float, default=None, help="default: config (ingest.video_fps)"
    )
    p.add_argument("--drain", type=float, default=8.0, help="seconds to wait for late events")
    p.add_argument("--json", type=Path, help="also write the result here")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="merclip-bench-"))
    media = make_media(work, args.seconds + 2, pause=args.pause)
    env = {
        "MERCLIP_INGEST_WINDOW_SECONDS": str(args.window),
        "MERCLIP_INGEST_HOP_SECONDS": str(args.hop),
        "MERCLIP_INGEST_EXTRACT_THREADS": str(args.extract_threads),
        "MERCLIP_SERVER_MAX_SESSIONS": str(max(8, args.sessions)),
    }
    for name, value in (
        ("MERCLIP_CLIP_MODEL", args.clip_model),
        ("MERCLIP_MODEL_NAME", args.model),
        ("MERCLIP_FEATURES_SPACE", args.space),
        ("MERCLIP_INGEST_VIDEO_FPS", args.video_fps),
    ):
        if value is not None:
            env[name] = str(value)
    print(
        f"streaming {args.sessions} session(s) of {media.name} for {args.seconds:.0f} s ...",
        file=sys.stderr,
    )
    with ServeProcess(env, work) as serve:
        result = measure(args, serve, media)
    result["pause_seconds"] = args.pause
    result["client_nice"] = args.client_nice
    result["cpu_count"] = os.cpu_count()
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


def measure(args: argparse.Namespace, serve: ServeProcess, media: Path) -> dict:
    """Run the sessions against `serve`; the result with CPU use and peak RSS."""
    sampler = RssSeries(serve.pid, every=0.5)
    sampler.start()
    # The WebRTC clients (file decoding + VP8/Opus encoding) share this machine with the server;
    # real clients are browsers elsewhere. Lower their priority so the server is measured, not the
    # contest between the two (their CPU use is still reported).
    if args.client_nice:
        os.nice(args.client_nice)

    def cpu_seconds(p: psutil.Process) -> float:
        """CPU seconds of a process and its children (the client's include the server's)."""
        procs = [p, *p.children(recursive=True)]
        return sum(sum(q.cpu_times()[:2]) for q in procs)

    serve_proc = psutil.Process(serve.pid)
    serve_cpu0, client_cpu0, wall0 = (
        cpu_seconds(serve_proc),
        cpu_seconds(psutil.Process()),
        time.monotonic(),
    )
    try:
        result = asyncio.run(run_bench(args, serve.url, serve.redis_url, media))
        wall = time.monotonic() - wall0
        # Cores in use on average: the server's, and the benchmark client's (which shares this
        # machine here; a real client is a browser elsewhere).
        serve_cores = (cpu_seconds(serve_proc) - serve_cpu0) / wall
        result["cpu_cores_used"] = {
            "serve": round(serve_cores, 2),
            "client": round((cpu_seconds(psutil.Process()) - client_cpu0) / wall - serve_cores, 2),
        }
    finally:
        sampler.stop.set()
    result["peak_rss_mb_all_serve_processes"] = round(sampler.peak / 2**20)
    return result


if __name__ == "__main__":
    sys.exit(main())
