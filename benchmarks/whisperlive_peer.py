"""The peer, side by side: word latency of WhisperLive on the same speech, scored the same way.

    python benchmarks/whisperlive_peer.py --python /path/to/whisperlive-venv/bin/python \\
        --sessions 1,4 --seconds 40

WhisperLive (github.com/collabora/WhisperLive, MIT) is not a dependency of this project: install
it into a virtualenv of its own and name that venv's python with --python (or WHISPERLIVE_PYTHON).
Its PyPI package pulls in GPU wheels and OpenVINO; what its faster_whisper server needs on this
machine, installed and used here on 2026-12-02:

    python3 -m venv /tmp/wl && /tmp/wl/bin/pip install --no-deps whisper-live==0.10.0
    /tmp/wl/bin/pip install faster-whisper==1.2.0 websockets websocket-client torch==2.13.0 \\
        fastapi uvicorn python-multipart onnxruntime tokenizers==0.20.3 scipy soundfile av

Configuration (its best here, as the issue measured it): the faster_whisper backend, a model per
client (the client names the model directory: the same bundled tiny.en int8 this service uses),
one OpenMP thread per model (OMP_NUM_THREADS=1), no VAD. Each of N WebSocket clients sends the
16 kHz speech of benchmarks/live_sessions.py (speech_track: the same sentences back to back,
the same reference word timings) as float32 chunks of 4096 samples in real time, and every
segment message the server sends is scored by benchmarks/word_latency.py: word latency = the
message's arrival - (the moment the client sent the audio's first sample + the word's reference
end). Loopback: the client's send time is the server's arrival time.

Run it in the same sitting as `python benchmarks/live_sessions.py --sessions 1,4 ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import word_latency  # noqa: E402
from live_sessions import speech_track  # noqa: E402
from word_latency import RefWord, WordClock  # noqa: E402

from workers.features.asr import bundled_model_path  # noqa: E402

CHUNK = 4096
"""Samples per message (WhisperLive's own client sends 4096)."""
MARGIN = 1.0
"""Segment times of WhisperLive are coarser than word times: a wider span to align words in."""

SERVER = """
from whisper_live.server import TranscriptionServer
TranscriptionServer().run("127.0.0.1", port={port}, backend="faster_whisper",
                          max_clients={clients}, max_connection_time=3600)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def one_client(
    port: int, audio: np.ndarray, ref: list[RefWord], seconds: float, drain: float
) -> dict:
    clock = WordClock(ref, margin=MARGIN)
    t0 = 0.0
    messages = 0
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"ws://127.0.0.1:{port}", max_msg_size=0) as ws:
            await ws.send_str(
                json.dumps(
                    {
                        "uid": uuid.uuid4().hex,
                        "language": "en",
                        "task": "transcribe",
                        "model": str(bundled_model_path()),
                        "use_vad": False,
                        "send_last_n_segments": 10,
                    }
                )
            )
            while True:  # the model loads before SERVER_READY
                msg = json.loads((await ws.receive(timeout=120)).data)
                if msg.get("message") == "SERVER_READY":
                    break
                if msg.get("status") in ("ERROR", "WAIT"):
                    raise RuntimeError(f"WhisperLive refused the client: {msg}")

            async def receive() -> None:
                nonlocal messages
                async for m in ws:
                    if m.type != aiohttp.WSMsgType.TEXT:
                        continue
                    at = time.time()
                    body = json.loads(m.data)
                    for seg in body.get("segments", ()):
                        messages += 1
                        clock.observe(
                            seg["text"].split(), float(seg["start"]), float(seg["end"]), at
                        )

            reader = asyncio.create_task(receive())
            t0 = time.time()
            n = min(audio.size, int(seconds * 16000))
            for i in range(0, n, CHUNK):
                await ws.send_bytes(audio[i : i + CHUNK].astype(np.float32).tobytes())
                await asyncio.sleep(max(0.0, t0 + (i + CHUNK) / 16000 - time.time()))
            await asyncio.sleep(drain)
            await ws.send_bytes(b"END_OF_AUDIO")
            await asyncio.sleep(0.5)
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
    latencies, missed = clock.latencies(t0, seconds - 1.0)
    return {"latencies": latencies, "missed": missed, "messages": messages}


async def run(
    port: int, n: int, audio: np.ndarray, ref: list[RefWord], args: argparse.Namespace
) -> list[dict]:
    return await asyncio.gather(
        *(one_client(port, audio, ref, args.seconds, args.drain) for _ in range(n))
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--python", default=os.environ.get("WHISPERLIVE_PYTHON"), required=False)
    p.add_argument("--sessions", default="1", help="client counts, comma-separated")
    p.add_argument("--seconds", type=float, default=40.0)
    p.add_argument("--drain", type=float, default=5.0)
    p.add_argument("--rest", type=float, default=5.0)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if not args.python or not Path(args.python).exists():
        p.error("name WhisperLive's python with --python or WHISPERLIVE_PYTHON (see --help)")
    counts = [int(x) for x in args.sessions.split(",")]
    work = Path(tempfile.mkdtemp(prefix="merclip-wl-"))
    audio, ref = speech_track(work, args.seconds + 2)
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(
        [args.python, "-c", SERVER.format(port=port, clients=max(counts))],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(work / "server.log").open("w"),
    )
    results = []
    try:
        deadline = time.monotonic() + 120
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"WhisperLive did not start: {(work / 'server.log').read_text()}"
                )
            time.sleep(0.5)
        proc = psutil.Process(server.pid)
        for k, n in enumerate(counts):
            if k:
                time.sleep(args.rest)
            cpu0, wall0 = sum(proc.cpu_times()[:2]), time.monotonic()
            clients = asyncio.run(run(port, n, audio, ref, args))
            cores = (sum(proc.cpu_times()[:2]) - cpu0) / (time.monotonic() - wall0)
            latencies = [x for c in clients for x in c["latencies"]]
            missed = sum(c["missed"] for c in clients)
            result = {
                "peer": "WhisperLive faster_whisper, tiny.en int8, a model per client, "
                "1 thread, no VAD",
                "sessions": n,
                "seconds": args.seconds,
                "word_latency": word_latency.summary(latencies, missed),
                "segment_messages": sum(c["messages"] for c in clients),
                "server_cores": round(cores, 2),
                "cpu_count": os.cpu_count(),
            }
            results.append(result)
            w = result["word_latency"]
            print(
                f"WhisperLive N={n}: words p50/p95 {w['p50_s']:.2f}/{w['p95_s']:.2f} s "
                f"({w['words_missed']} of {w['words_seen'] + w['words_missed']} missed), "
                f"server {cores:.2f} cores",
                file=sys.stderr,
            )
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
    out = results[0] if len(results) == 1 else results
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
