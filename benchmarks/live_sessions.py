"""Live pipeline benchmark: N concurrent WebRTC sessions for T seconds against `merclip serve`.

Starts `merclip serve` as a separate process (embedded Redis, models as configured), streams N
synthetic sessions (a moving face and espeak-ng sentences spoken back to back: a person talking
without pauses, the normal load; `--pause S` puts S seconds of silence between sentences) with
the `stream-file` client, subscribes to every event and partial transcript, and prints:
- word latency p50 / p95: from a spoken word's end reaching the server to the first event or
  partial transcript carrying it (`word_latency`), and to the first event (`word_latency_events`),
  against reference word timings of the test speech (benchmarks/word_latency.py),
- p50 / p95 latency from window end to published event (and to features ready / inference done),
- per-stage extraction times (ASR, faces, CLIP image, CLIP text, audio features),
- real-time factor = mean extraction time per window / hop (per session; < 1 keeps up),
- lag trend: p95 latency of the second half of the run vs the first half (growing lag = not
  keeping up), windows expected vs received (drops),
- peak RSS of all processes of `merclip serve` together (server + embedded Redis),
- what was shed (the service's own counters from /metrics: partials skipped, frames deferred or
  dropped late, windows dropped) and the partials' ASR busy time.

    python benchmarks/live_sessions.py --sessions 1 --seconds 60
    python benchmarks/live_sessions.py --sessions 1,2,4,6,8 --seconds 40   # one serve, in turn

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

import word_latency  # noqa: E402
from fleet import Fleet  # noqa: E402
from media import face_frame, read_wav_16k, speech_wav  # noqa: E402
from serve_process import RssSeries, ServeProcess  # noqa: E402
from word_latency import RefWord, WordClock  # noqa: E402

from stream.clients.file import stream_file  # noqa: E402
from workers.schemas import EmotionEvent, PartialTranscript  # noqa: E402
from workers.settings import IngestSettings  # noqa: E402
from workers.subscriber import subscribe  # noqa: E402

SENTENCES = [
    "Hello world, this is a test of the emotion recognition system.",
    "I am really happy to see you today.",
    "That was a terrible and sad thing to hear.",
]


def reference_words(directory: Path) -> list[list[RefWord]]:
    """Each sentence's words with their times in the clean sentence alone (word_latency.py)."""
    from workers.features.asr import Transcriber

    asr = Transcriber("bundled", context_seconds=30.0)
    return [
        word_latency.sentence_words(asr, read_wav_16k(speech_wav(directory, s)), s)
        for s in SENTENCES
    ]


def speech_track(
    directory: Path, seconds: float, pause: float = 0.0
) -> tuple[np.ndarray, list[RefWord]]:
    """16 kHz speech: SENTENCES back to back from 0.5 s, `pause` s between them; and the
    reference timings of its words (seconds into the track)."""
    rate = 16000
    speech = [read_wav_16k(speech_wav(directory, s)) for s in SENTENCES]
    per_sentence = reference_words(directory)
    ref: list[RefWord] = []
    track = np.zeros(int(seconds * rate), np.float32)
    pos, i = int(0.5 * rate), 0
    while pos < track.size:
        clip = speech[i % len(speech)]
        n = min(clip.size, track.size - pos)
        track[pos : pos + n] = clip[:n]
        start = pos / rate
        ref += [
            RefWord(w.text, start + w.start, start + w.end)
            for w in per_sentence[i % len(speech)]
            if start + w.end <= seconds
        ]
        pos += n + int(pause * rate)
        i += 1
    return track, ref


def make_media(
    directory: Path, seconds: float, fps: int = 15, pause: float = 0.0
) -> tuple[Path, list[RefWord]]:
    """A VP8/Opus webm: drifting face, speech_track's sentences; and its reference words."""
    out = directory / f"bench-{int(seconds)}s-pause{pause:g}-v3.webm"
    words_file = out.with_suffix(".words.json")
    if out.exists() and words_file.exists():
        return out, word_latency.load(words_file)
    rate = 48000
    speech16k, ref = speech_track(directory, seconds, pause)
    track = np.repeat(speech16k, 3)  # 16 kHz -> 48 kHz (good enough for ASR)
    word_latency.save(ref, words_file)
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
    return out, ref


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values), q))


def word_latencies(
    ref: list[RefWord],
    events: list[tuple[float, EmotionEvent]],
    partials: list[tuple[float, PartialTranscript]],
    seconds: float,
) -> tuple[tuple[list[float], int], tuple[list[float], int]]:
    """Word latencies of one session's words (word_latency.py) and how many were missed: to the
    first event or partial carrying each, and to the first event."""
    finals = sorted(events, key=lambda te: te[1].seq)
    said = [w for _, ev in finals for w in ev.words]
    if not said:
        return ([], len(ref)), ([], len(ref))
    # Media clock of the session vs the file's: the shift that puts the most event words within
    # 0.3 s of a reference word of the same spelling (the sentences repeat every ~10 s, so an
    # alignment of the text alone can pair the wrong repetitions).
    ends: dict[str, list[float]] = {}
    for r in ref:
        ends.setdefault(word_latency.normalise(r.text), []).append(r.end)

    def fits(shift: float) -> int:
        return sum(
            any(
                abs(w.media_end - shift - e) < 0.3
                for e in ends.get(word_latency.normalise(w.text), ())
            )
            for w in said
        )

    offset = max((k * 0.05 for k in range(-40, 201)), key=fits)
    media0_wall = float(np.median([ev.wall_end - ev.media_end for _, ev in finals]))
    shifted = [RefWord(r.text, r.start + offset, r.end + offset) for r in ref]
    first, events_only = WordClock(shifted), WordClock(shifted)
    for at, ev in finals:
        if ev.words:
            span = (ev.words[0].media_start, ev.words[-1].media_end)
            for clock in (first, events_only):
                clock.observe([w.text for w in ev.words], *span, at)
    for at, p in partials:
        if p.words:
            first.observe(
                [w.text for w in p.words], p.words[0].media_start, p.words[-1].media_end, at
            )
    until = offset + seconds - 1.0  # words the stream carried whole
    return first.latencies(media0_wall, until), events_only.latencies(media0_wall, until)


async def run_bench(
    args: argparse.Namespace,
    urls: list[str],
    redis_url: str,
    media: Path,
    ref: list[RefWord],
    n: int,
) -> dict:
    events: list[tuple[float, EmotionEvent]] = []
    partials: list[tuple[float, PartialTranscript]] = []

    async def listen() -> None:
        async for item in subscribe(redis_url, prefix="merclip", partials=True):
            if isinstance(item, PartialTranscript):
                partials.append((time.time(), item))
            else:
                events.append((time.time(), item))

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.5)
    sessions = [f"bench{n}-{i}" for i in range(n)]
    t0 = time.time()
    results = await asyncio.gather(
        *(
            stream_file(
                urls[i % len(urls)],  # spread over the ingest nodes, as a load balancer would
                media,
                session_id=s,
                seconds=args.seconds,
                passthrough=args.passthrough,
            )
            for i, s in enumerate(sessions)
        ),
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
    lat_first: list[float] = []
    lat_events: list[float] = []
    missed_first = missed_events = 0
    per_session_missed: dict[str, tuple[int, int]] = {}
    for sid in sessions:
        mine = [(t, e) for t, e in events if e.session_id == sid]
        said = [(t, p) for t, p in partials if p.session_id == sid]
        (a, ma), (b, mb) = word_latencies(ref, mine, said, args.seconds)
        per_session_missed[sid] = (ma, mb)
        lat_first += a
        lat_events += b
        missed_first += ma
        missed_events += mb
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
    threads = args.extract_threads or IngestSettings().extract_threads
    expected = n * max(0, int((args.seconds - window) // hop) + 1)

    return {
        "sessions": n,
        "seconds": args.seconds,
        "word_latency": word_latency.summary(lat_first, missed_first),
        "word_latency_events": word_latency.summary(lat_events, missed_events),
        "words_missed_per_session": per_session_missed,
        "partials": sum(1 for _, p in partials if p.session_id in sessions),
        "transcripts": {
            sid: " ".join(
                e.new_text for e in sorted(evs, key=lambda e: e.seq) if e.session_id == sid
            )
            for sid in sessions
        },
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
            statistics.fmean(extract_ms) / 1000 / hop / threads if extract_ms else None
        ),
        "models": sorted({f"{e.model_name} {e.model_version}" for e in evs}),
        "windows_with_emotion": sum(1 for e in evs if e.emotions_predicted),
        "transcribed_windows": sum(1 for e in evs if e.transcript),
        "face_windows": sum(1 for e in evs if e.face_present),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--sessions",
        default="1",
        help="session counts, comma-separated (1,2,4): run one after the other on one serve",
    )
    add_service_options(p)
    p.add_argument(
        "--ingest-processes",
        type=int,
        default=0,
        help="0: one `merclip serve` (embedded Redis); K: K `merclip ingest` processes on one "
        "Redis with --infer-workers `merclip infer` workers, sessions spread over them",
    )
    p.add_argument("--infer-workers", type=int, default=1, help="with --ingest-processes")
    p.add_argument("--json", type=Path, help="also write the result here")
    args = p.parse_args()
    counts = [int(x) for x in str(args.sessions).split(",")]
    if args.client_nice is None:
        args.client_nice = 0 if args.passthrough else 10

    work = Path(tempfile.mkdtemp(prefix="merclip-bench-"))
    media, ref = make_media(work, args.seconds + 2, pause=args.pause)
    env = service_env(args, max(counts))
    results = []
    service = (
        Fleet(env, ingest=args.ingest_processes, infer=args.infer_workers)
        if args.ingest_processes
        else ServeProcess(env, work)
    )
    with service as serve:
        # The WebRTC clients share this machine with the server; real clients are browsers
        # elsewhere. Lower their priority so the server is measured, not the contest between
        # the two (their CPU use is still reported).
        if args.client_nice:
            os.nice(args.client_nice)
        for k, n in enumerate(counts):
            if k:
                time.sleep(args.rest)  # the previous run's last windows are done
            print(
                f"streaming {n} session(s) of {media.name} for {args.seconds:.0f} s ...",
                file=sys.stderr,
            )
            result = measure(args, serve, media, ref, n)
            result["pause_seconds"] = args.pause
            result["client_nice"] = args.client_nice
            result["passthrough"] = args.passthrough
            result["cpu_count"] = os.cpu_count()
            results.append(result)
            print(one_line(result), file=sys.stderr)
    out = results[0] if len(results) == 1 else results
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    if len(results) > 1:
        print("\n".join(one_line(r) for r in results), file=sys.stderr)
    return 0


def service_env(args: argparse.Namespace, max_sessions: int) -> dict[str, str]:
    """The MERCLIP_* settings the benchmark gives the service's processes."""
    env = {
        "MERCLIP_INGEST_WINDOW_SECONDS": str(args.window),
        "MERCLIP_INGEST_HOP_SECONDS": str(args.hop),
        "MERCLIP_SERVER_MAX_SESSIONS": str(max(8, max_sessions)),
    }
    for name, value in (
        ("MERCLIP_INGEST_EXTRACT_THREADS", args.extract_threads),
        ("MERCLIP_CLIP_MODEL", args.clip_model),
        ("MERCLIP_MODEL_NAME", args.model),
        ("MERCLIP_FEATURES_SPACE", args.space),
        ("MERCLIP_INGEST_VIDEO_FPS", args.video_fps),
        ("MERCLIP_ASR_PARTIAL_SECONDS", args.partials),
    ):
        if value is not None:
            env[name] = str(value)
    return env


def add_service_options(p: argparse.ArgumentParser) -> None:
    """The options that say what service is measured and how its clients behave."""
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
    p.add_argument(
        "--extract-threads",
        type=int,
        default=None,
        help="ingest.extract_threads per ingest process (default: the service's)",
    )
    p.add_argument(
        "--client-nice",
        type=int,
        default=None,
        help="niceness of the benchmark clients (default: 0 with --passthrough, where they cost "
        "~0.02 cores each and a starved client sends audio in bursts the server has to drop; "
        "10 with --no-passthrough, where their VP8 encoding would compete with the server)",
    )
    p.add_argument(
        "--video-fps", type=float, default=None, help="default: config (ingest.video_fps)"
    )
    p.add_argument("--drain", type=float, default=8.0, help="seconds to wait for late events")
    p.add_argument(
        "--passthrough",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="clients send the file's VP8/Opus packets as they are, like a browser elsewhere "
        "(--no-passthrough: decode and re-encode on this machine)",
    )
    p.add_argument("--partials", type=float, default=None, help="asr.partial_seconds (0: off)")
    p.add_argument("--rest", type=float, default=5.0, help="seconds between runs of a sweep")


def one_line(r: dict) -> str:
    """The row of the README's table for one run."""
    lat, words, shed = r["latency_ms"], r["word_latency"], r["shed"]
    return (
        f"N={r['sessions']}: words p50/p95 {words['p50_s']:.2f}/{words['p95_s']:.2f} s "
        f"(events only {r['word_latency_events']['p50_s']:.2f}/"
        f"{r['word_latency_events']['p95_s']:.2f}; {words['words_missed']} of "
        f"{words['words_seen'] + words['words_missed']} missed) | event p50/p95 "
        f"{lat['published_p50'] / 1000:.2f}/{lat['published_p95'] / 1000:.2f} s "
        f"(2nd half p95 {lat['published_p95_second_half'] / 1000:.2f}) | "
        f"{r['events']}/{r['windows_expected_at_least']} windows | shed: {shed} | "
        f"serve {r['cpu_cores_used']['serve']} cores, partial ASR "
        f"{r['partial_asr_cores']:.2f}"
    )


SHED_METRICS = {
    "windows_backlog": 'merclip_ingest_windows_dropped_total{reason="backlog"}',
    "windows_past_deadline": "merclip_inference_windows_skipped_total",
    "frames_deferred": "merclip_ingest_frames_deferred_total",
    "frames_dropped_late": "merclip_ingest_frames_dropped_late_total",
    "partial_rounds_skipped": "merclip_ingest_partial_rounds_skipped_busy_total",
    "audio_samples_dropped_ahead": "merclip_ingest_audio_samples_dropped_ahead_total",
}
BATCH_METRICS = {
    "asr": ("merclip_ingest_asr_windows_total", "merclip_ingest_asr_batches_total"),
    "frames": ("merclip_ingest_frames_encoded_total", "merclip_ingest_frame_batches_total"),
}


def scrape(urls: list[str]) -> dict[str, float]:
    """The service's /metrics as {name{labels}: value}, summed over its processes."""
    import urllib.request

    out: dict[str, float] = {}
    for url in urls:
        with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=10) as r:
            text = r.read().decode()
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = out.get(name, 0.0) + float(value)
    return out


def measure(
    args: argparse.Namespace, serve: ServeProcess | Fleet, media: Path, ref: list[RefWord], n: int
) -> dict:
    """Run n sessions against `serve` (one process, or a Fleet of ingest nodes and workers); the
    result with CPU use, peak RSS and what was shed."""
    sampler = RssSeries(serve.pids, every=0.5)
    sampler.start()
    before = scrape(serve.metrics_urls)

    def cpu_seconds(p: psutil.Process) -> float:
        """CPU seconds of a process and its children (the client's include the server's)."""
        procs = [p, *p.children(recursive=True)]
        return sum(sum(q.cpu_times()[:2]) for q in procs)

    serve_procs = [psutil.Process(pid) for pid in serve.pids()]
    serve_cpu0, client_cpu0, wall0 = (
        sum(cpu_seconds(p) for p in serve_procs),
        cpu_seconds(psutil.Process()),
        time.monotonic(),
    )
    try:
        result = asyncio.run(run_bench(args, serve.urls, serve.redis_url, media, ref, n))
        wall = time.monotonic() - wall0
        after = scrape(serve.metrics_urls)
        result["shed"] = {
            k: int(after.get(m, 0) - before.get(m, 0)) for k, m in SHED_METRICS.items()
        }
        result["mean_batch"] = {
            k: round(
                (after.get(a, 0) - before.get(a, 0)) / max(1, after.get(b, 0) - before.get(b, 0)), 2
            )
            for k, (a, b) in BATCH_METRICS.items()
        }
        partial_asr = "merclip_ingest_partial_asr_seconds_total"
        result["partial_asr_cores"] = (
            after.get(partial_asr, 0) - before.get(partial_asr, 0)
        ) / wall
        # Cores in use on average: the server's, and the benchmark client's (which shares this
        # machine here; a real client is a browser elsewhere).
        serve_cores = (sum(cpu_seconds(p) for p in serve_procs) - serve_cpu0) / wall
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
