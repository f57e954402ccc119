"""One transcript per session out of overlapping windows: every recognised word published once.

Windows overlap (4 s long, 2 s hop), so each moment of speech is transcribed by two windows, and
Whisper's word boundaries differ between them (the same word ends 40 ms apart, "three" in one
window is "free" in the next, a word cut by a window's end is guessed from half its sound).
`SessionTranscript.own` is called by the session's ingest task for each window, in window order,
with the words the window recognised; it returns the words the window owns, which go in its
FeatureWindow and then its event. The rule, decided from each word's media end time:

- A window owns the words that end in [until, limit): `until` is where the previous owned window
  stopped (0 for the first window, which so owns everything up to its limit), `limit` is the
  window's end minus GUARD_SECONDS, or its very end for the session's last window. With no window
  lost in between that is the window's last hop, moved GUARD_SECONDS earlier.
- A window moves `until` only up to the end of the last word it heard before its limit (the
  hand-back): tiny.en stops some windows early, or gives a window that starts mid-phrase one
  stray word at its very end, and the stretch it did not hear is then owned by the next window,
  which hears it at its start, instead of being lost. Nothing the window published lies beyond,
  so nothing is repeated. Measured by `benchmarks/word_timing.py` (one run, tiny.en, guard
  0.25 s), word errors without / with the hand-back: the five sentences back to back, ten
  lead-ins (a person who keeps talking), 123 -> 86 of 1360 (missing 79 -> 32); each sentence
  alone, 109 -> 86.
- GUARD_SECONDS (0.25 s): a word ending that close to a window's end may be cut by it, and Whisper
  writes a guess for the half it heard ("recognise" for "recog-"). It is left to the next window,
  which hears it whole. Measured (`python benchmarks/word_timing.py`: 5 espeak-ng sentences
  after 10 lead-ins each, 50 sessions, 1360 words, tiny.en on the service windows), word errors
  of the stitched transcript against the script: guard 0: 147 (31 extra: a cut word's guess,
  often 0 s long at the window's end, published beside the whole word); 0.25 s: 106 (5 extra,
  Whisper's: "World War II." on the trailing silence, "removing a drinker" for "morning I
  drink"); 0.5 s: 107; 1 s: 121 (65 missing instead of 52: the next window then owns words
  from 1 s after its start, where Whisper drops more). A word that ends in the guard waits for
  the next window's event, so of 0.25 and 0.5 the smaller guard, which delays less.
- SLACK_SECONDS (0.3 s): words ending in [until - SLACK, until) are candidates too, and a candidate
  that is a word already published heard again (their times overlap by half the shorter word, or
  the same spelling starts and ends within SLACK / 2 of it) is dropped. Without the slack a word
  whose end moved, between two windows, from just after a border (so left to the next window)
  to just before it would be lost; without the overlap test, one that moved the other way would
  be published twice.
- A window that never reaches `own` (dropped as backlog, extraction failed, NaN features) does not
  move `until`: the next window owns the words it heard in its place. Lost are only the words
  no later window heard: with one window dropped, those ending in the guard before it (they
  began before the next window's audio), more with several dropped in a row; the words of a
  window dropped after ownership (the unsent buffer of a Redis outage, the inference deadline);
  and a word ending in the guard of a session's last full window when the session ends less
  than `min_tail_seconds` after it (no window follows, and that one was cut before the end).

Whisper's own errors stay: a word misheard in its owning window is published misheard, and a
word the owning window did not recognise at all (Whisper skips some at a window's start) is
missing, although the other window that heard it may have it right.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from workers.schemas import Word

__all__ = ["GUARD_SECONDS", "SLACK_SECONDS", "SessionTranscript", "normalise"]

GUARD_SECONDS = 0.25
SLACK_SECONDS = 0.3
_MEMORY_SECONDS = 2.0
"""How far back published words are kept to compare candidates with (longer than any word)."""
_NOT_WORD = re.compile(r"[^\w']+")


def normalise(text: str) -> str:
    """Lowercase, punctuation dropped: how two spellings of one word are compared."""
    return _NOT_WORD.sub("", text.lower()).strip("'")


def _same_word(a: Word, b: Word, slack: float) -> bool:
    """Whether `a` and `b` are one spoken word recognised twice (by two windows)."""
    overlap = min(a.media_end, b.media_end) - max(a.media_start, b.media_start)
    shorter = min(a.media_end - a.media_start, b.media_end - b.media_start)
    # Strictly positive: words that only touch are neighbours, and a 0-length alignment (Whisper
    # gives some at a window's end) overlaps nothing; those match by spelling and times alone.
    if overlap > 0 and overlap >= 0.5 * shorter:
        return True
    # Both ends close, not just one: "no, no" is two words whose ends are 0.3 s apart.
    near = max(abs(a.media_start - b.media_start), abs(a.media_end - b.media_end)) <= slack / 2
    return near and normalise(a.text) == normalise(b.text)


@dataclass
class SessionTranscript:
    """Word ownership for one connection's windows, called in window order (not thread-safe:
    the session's ingest task owns it)."""

    guard: float = GUARD_SECONDS
    slack: float = SLACK_SECONDS
    handback: bool = True
    """Move `until` only as far as the window heard words (False: to its limit, always)."""
    until: float = 0.0
    """Media time up to which words have been handed out."""
    _recent: list[Word] = field(default_factory=list)

    def own(self, words: Iterable[Word], media_end: float, last: bool = False) -> list[Word]:
        """The words (in time order, media clock) of the window ending at `media_end` that it
        owns; `last`: no window follows, so it owns everything up to its end."""
        words = tuple(words)
        limit = float("inf") if last else max(self.until, media_end - self.guard)
        owned: list[Word] = []
        for w in words:
            if w.media_end >= limit or w.media_end < self.until - self.slack:
                continue  # the next window's, or well inside what an earlier window owned
            if any(_same_word(w, p, self.slack) for p in self._recent):
                continue  # an earlier window published it already, with other times
            owned.append(w)
        if last or not self.handback:
            self.until = max(self.until, media_end if last else limit)
        else:
            # Up to the last word this window heard before its limit: when Whisper stopped early
            # or heard nothing (tiny.en gives some windows that start mid-phrase one stray word
            # at their very end), the next window, which hears that stretch too, owns it
            # instead of it being lost. Nothing this window published lies beyond, so nothing
            # is repeated.
            heard = max((w.media_end for w in words if w.media_end < limit), default=self.until)
            self.until = max(self.until, min(limit, heard))
        keep = self.until - self.slack - _MEMORY_SECONDS
        self._recent = [p for p in (*self._recent, *owned) if p.media_end >= keep]
        return owned
