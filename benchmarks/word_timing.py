"""What word timestamps cost, and how well overlapping windows stitch into one transcript.

    python benchmarks/word_timing.py [--calls 30] [--leads 10] [--cost-only]

Cost: the same 4 s windows of espeak-ng speech through two bundled tiny.en (int8) Transcribers,
one timing its words and one not, calls interleaved so that machine load hits both alike; the
median (and minimum) ms per call is printed for the service's short context
(asr.context_seconds = 10) and for faster-whisper's own 30 s path: the evidence for the
numbers in workers/features/asr.py.

Stitching: each sentence of SENTENCES, after `lead` seconds of silence (--leads values from
0.1 s in 0.2 s steps, so the window borders fall at different places in the words), is cut into
service windows (4 s, 2 s hop) by SessionWindower, transcribed once per window, and stitched by
SessionTranscript for several GUARD values; printed per guard: word errors of the stitched
transcript against the script (normalised words: misheard, missing, extra; a word published
twice would be extra), and sessions transcribed exactly. The same for the five sentences back to
back with no pauses (a person who keeps talking), and each case once more without the hand-back
of hops a window did not hear (SessionTranscript.handback). The evidence for GUARD_SECONDS and
the hand-back in workers/transcript.py.
"""

from __future__ import annotations

import argparse
import difflib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from media import read_wav_16k, speech_wav  # noqa: E402

from workers.features.asr import AsrResult, Transcriber  # noqa: E402
from workers.transcript import GUARD_SECONDS, SessionTranscript, normalise  # noqa: E402
from workers.windowing import RawWindow, SessionWindower  # noqa: E402

SENTENCES = (
    "I am very happy to see you again. It has been a long time since we last met, and I have "
    "so many things to tell you about my new job.",
    "Please open the window, it is very hot in here. I think we should turn on the air "
    "conditioning before the meeting starts this afternoon.",
    "Good morning everyone. Today we will talk about the weather in London. It has been "
    "raining for three days, and the streets are full of water.",
    "My name is Peter and I live in a small house near the sea. Every morning I drink a cup of "
    "coffee and read the news before I go to work.",
    "This is the best day of my life. I passed all my exams, and my parents are taking me out "
    "for dinner tonight.",
)
GUARDS = (0.0, 0.25, 0.5, 1.0)


def windows(speech: np.ndarray, lead: float) -> list[RawWindow]:
    """Service windows over `lead` s of silence, the speech, then 1 s of silence (20 ms chunks)."""
    silence = np.zeros(int(lead * 16000), np.float32)
    audio = np.concatenate([silence, speech, np.zeros(16000, np.float32)])
    w = SessionWindower(4.0, 2.0, 1.0)
    out: list[RawWindow] = []
    for i in range(0, audio.size, 320):
        w.push_audio(audio[i : i + 320], (i + 320) / 16000)
        out += w.pop_ready(0.0)
    return out + w.flush(0.0)


def cost(speech: list[np.ndarray], calls: int) -> None:
    load = os.getloadavg()[0]
    print(f"ASR ms per 4 s window, median of {calls} interleaved calls (load average {load:.1f}):")
    clips = [s[:64000] for s in speech]
    for context in (10.0, 30.0):
        timed = Transcriber("bundled", context_seconds=context, words=True)
        plain = Transcriber("bundled", context_seconds=context, words=False)
        ms: dict[bool, list[float]] = {True: [], False: []}
        for i in range(calls + 2):
            for asr in (timed, plain) if i % 2 else (plain, timed):
                t0 = time.perf_counter()
                asr.transcribe_window(clips[i % len(clips)])
                if i >= 2:  # the first two rounds warm up
                    ms[asr.words].append((time.perf_counter() - t0) * 1e3)
        with_, without = statistics.median(ms[True]), statistics.median(ms[False])
        print(
            f"  context {context:4.0f} s: "
            f"without words {without:6.1f} (min {min(ms[False]):6.1f}), "
            f"with words {with_:6.1f} (min {min(ms[True]):6.1f}): {with_ - without:+.1f} ms "
            f"({with_ / without - 1:+.0%})"
        )
    print(f"  load average after: {os.getloadavg()[0]:.1f}")


Session = tuple[list[str], list[tuple[RawWindow, AsrResult]]]
"""The script's normalised words, and each window with what Whisper heard in it."""


def transcribed(asr: Transcriber, text: str, audio: np.ndarray, lead: float) -> Session:
    ws = windows(audio, lead)
    offsets = [w.media_start if w.audio_start is None else w.audio_start for w in ws]
    results = [asr.transcribe_window(w.audio, o) for w, o in zip(ws, offsets, strict=True)]
    return [normalise(x) for x in text.split()], list(zip(ws, results, strict=True))


def stitching(speech: list[np.ndarray], leads: int) -> None:
    """Each sentence alone after a lead-in (GUARD_SECONDS), and the sentences back to back
    without pauses, a person who keeps talking (the hand-back of unheard hops)."""
    asr = Transcriber("bundled", context_seconds=10.0)
    alone = [
        transcribed(asr, text, audio, 0.1 + 0.2 * k)
        for text, audio in zip(SENTENCES, speech, strict=True)
        for k in range(leads)
    ]
    report(f"{len(alone)} sessions ({len(SENTENCES)} sentences x {leads} lead-ins)", alone)
    talk = " ".join(SENTENCES)
    nonstop = np.concatenate(speech)
    talking = [transcribed(asr, talk, nonstop, 0.1 + 0.2 * k) for k in range(leads)]
    seconds = nonstop.size / 16000
    report(f"{leads} sessions of nonstop talk ({seconds:.0f} s each, {leads} lead-ins)", talking)


def report(title: str, sessions: list[Session]) -> None:
    total = sum(len(script) for script, _ in sessions)
    print(f"stitching, {title}:")
    for guard, handback in [(g, True) for g in GUARDS] + [(GUARD_SECONDS, False)]:
        counts = {"replace": 0, "delete": 0, "insert": 0}
        exact = 0
        for script, per_window in sessions:
            st = SessionTranscript(guard=guard, handback=handback)
            got = [
                normalise(w.text)
                for raw, r in per_window
                for w in st.own(r.words, raw.media_end, raw.last)
            ]
            ops = difflib.SequenceMatcher(a=script, b=got, autojunk=False).get_opcodes()
            for op, i1, i2, j1, j2 in ops:
                if op == "replace":  # the longer side's surplus counts as deleted / inserted
                    counts["replace"] += min(i2 - i1, j2 - j1)
                    counts["delete"] += max(0, (i2 - i1) - (j2 - j1))
                    counts["insert"] += max(0, (j2 - j1) - (i2 - i1))
                elif op != "equal":
                    counts[op] += max(i2 - i1, j2 - j1)
            exact += got == script
        errors = sum(counts.values())
        print(
            f"  guard {guard:4.2f} s{'' if handback else ', no hand-back'}: word errors "
            f"{errors}/{total} ({errors / total:.1%}: "
            f"{counts['replace']} misheard, {counts['delete']} missing, {counts['insert']} extra), "
            f"exact {exact}/{len(sessions)}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--leads", type=int, default=10)
    ap.add_argument("--cost-only", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        speech = [read_wav_16k(speech_wav(tmp, s)) for s in SENTENCES]
    cost(speech, args.calls)
    if not args.cost_only:
        stitching(speech, args.leads)


if __name__ == "__main__":
    main()
