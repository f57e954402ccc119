"""Word latency: from a spoken word's end reaching the server to the first message carrying it.

Shared by benchmarks/live_sessions.py (this project: events and partial transcripts) and
benchmarks/whisperlive_peer.py (WhisperLive's segments), so that both are scored alike.

Reference word timings: each test sentence is transcribed ALONE, clean, by faster-whisper's own
path (30 s context, word timestamps), and its words are aligned to the script (difflib on
normalised words); a script word Whisper did not write gets no reference time and is left out.
The sentences are placed back to back in the test media, so a word's reference end is its
sentence's start in the media plus its end in the sentence.

Scoring: a message is a run of hypothesis words with a media span (an event's or a partial's
words and their times; a WhisperLive segment's text and its start/end). Its words are aligned
(difflib, in order) to the reference words whose times fall in that span widened by
`margin`; each reference word matched for the first time is "seen" at the message's arrival.
Latency = arrival - (the wall time at which media time 0 reached the server + the word's end).
Words never seen count as missed; they do not enter the percentiles.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_NOT_WORD = re.compile(r"[^\w']+")


def normalise(text: str) -> str:
    return _NOT_WORD.sub("", text.lower()).strip("'")


@dataclass(frozen=True)
class RefWord:
    text: str
    start: float
    """Seconds into the media."""
    end: float


def sentence_words(transcriber: object, speech16k: np.ndarray, script: str) -> list[RefWord]:
    """The script's words with the times Whisper gives them in the clean sentence alone."""
    result = transcriber.transcribe_window(speech16k, 0.0)  # type: ignore[attr-defined]
    hyp = [w for w in result.words if normalise(w.text)]
    script_words = [w for w in script.split() if normalise(w)]
    sm = difflib.SequenceMatcher(
        None, [normalise(w) for w in script_words], [normalise(w.text) for w in hyp], False
    )
    out = []
    for a, b, size in sm.get_matching_blocks():
        for i in range(size):
            w = hyp[b + i]
            out.append(RefWord(script_words[a + i], w.media_start, w.media_end))
    return out


def save(words: Sequence[RefWord], path: Path) -> None:
    path.write_text(json.dumps([[w.text, w.start, w.end] for w in words]))


def load(path: Path) -> list[RefWord]:
    return [RefWord(t, float(s), float(e)) for t, s, e in json.loads(path.read_text())]


class WordClock:
    """First arrival of each reference word of one session (see the module doc)."""

    def __init__(self, ref: Sequence[RefWord], margin: float = 0.5) -> None:
        self.ref = list(ref)
        self.margin = margin
        self.seen: list[float | None] = [None] * len(self.ref)
        self._norm = [normalise(r.text) for r in self.ref]

    def observe(self, words: Sequence[str], start: float, end: float, at: float) -> None:
        """A message with `words` (in order) spanning media [start, end], received at `at`."""
        idx = [
            k
            for k, r in enumerate(self.ref)
            if r.end >= start - self.margin and r.start <= end + self.margin
        ]
        hyp = [normalise(w) for w in words]
        sm = difflib.SequenceMatcher(None, [self._norm[k] for k in idx], hyp, False)
        for a, _b, size in sm.get_matching_blocks():
            for i in range(size):
                k = idx[a + i]
                if self.seen[k] is None or at < self.seen[k]:  # type: ignore[operator]
                    self.seen[k] = at

    def latencies(self, media0_wall: float, until: float) -> tuple[list[float], int]:
        """Latencies (s) of the words ending before media time `until`, and how many of them
        were never seen."""
        out, missed = [], 0
        for r, t in zip(self.ref, self.seen, strict=True):
            if r.end > until:
                continue
            if t is None:
                missed += 1
            else:
                out.append(t - (media0_wall + r.end))
        return out, missed


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def summary(latencies: Sequence[float], missed: int) -> dict[str, float | int]:
    return {
        "p50_s": round(pct(latencies, 50), 3),
        "p95_s": round(pct(latencies, 95), 3),
        "min_s": round(min(latencies), 3) if latencies else float("nan"),
        "words_seen": len(latencies),
        "words_missed": missed,
    }
