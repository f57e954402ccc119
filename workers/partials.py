"""Partial transcripts: the words of each talking session, between its windows.

A window's words reach subscribers when its event does: up to a hop (2 s) after they were said,
plus extraction. In between, this transcribes each session's audio whose words no window cut so
far will publish (from the last cut window's end minus the ownership guard, with LEAD_SECONDS
before it as context, up to the audio received so far: at most a hop and a half) every
`asr.partial_seconds`, and publishes the words that end after that point as a
`PartialTranscript` on the partials channels (workers/bus.py). Every word so has its chances to
appear in a partial between its end and the cut of the window that owns it. A page shows it after
the final transcript, marked as partial, and forgets its words once events carry them. Nothing
of it is stored, and the events are unchanged: their words are still decided by the windows.

CPU budget: one thread and one Whisper model of its own (`cpu_threads=1`, so it never waits for
the windows' ASR lock), one session at a time, the session that waited longest first, its audio
padded to PARTIAL_CONTEXT_SECONDS, not the windows' 10 s, and busy at most
`asr.partial_max_share` of the time (after a call of b seconds it rests b * (1 / share - 1)): with
many talkers each session's partials come less often instead of taking the windows' CPU.
Windows come first: while any session has a window waiting for extraction (the extraction pool
is behind), no partial starts (`IngestCounters.partial_rounds_skipped_busy`): partials are the
first thing shed under load, then frames (workers/ingest.py), then windows (oldest first).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from workers.features.asr import Transcriber
from workers.schemas import PartialTranscript, Word

__all__ = [
    "LEAD_SECONDS",
    "PARTIAL_CONTEXT_SECONDS",
    "PartialAudio",
    "PartialSource",
    "PartialTranscriber",
    "PublishPartial",
]

log = logging.getLogger(__name__)

PARTIAL_CONTEXT_SECONDS = 4.0
"""Whisper context of a partial call: LEAD_SECONDS plus up to a hop and a quarter of new audio."""
LEAD_SECONDS = 1.0
"""Audio before `until` given to Whisper with the new audio: a word is not cut at the start."""
MIN_NEW_SECONDS = 0.25
"""A session is transcribed again only once this much audio has arrived since its last partial."""
IDLE_SECONDS = 0.05

PublishPartial = Callable[[PartialTranscript], Awaitable[None]]


@dataclass(frozen=True)
class PartialAudio:
    """A session's audio to transcribe for a partial (taken on the event loop)."""

    audio: np.ndarray
    audio_start: float
    """Media time of audio[0]."""
    final_until: float
    media_end: float
    wall_end: float


class PartialSource(Protocol):
    """What the partial transcriber needs of a session (workers.ingest.SessionIngest)."""

    @property
    def session_id(self) -> str: ...

    @property
    def connection_id(self) -> str: ...

    @property
    def audio_end(self) -> float:
        """Media time up to which audio has arrived."""
        ...

    @property
    def extraction_behind(self) -> bool:
        """A window of this session is waiting for extraction."""
        ...

    def partial_audio(self, lead: float, longest: float) -> PartialAudio | None: ...


@dataclass
class _State:
    seq: int = 0
    heard_until: float = 0.0
    """audio_end at the session's last partial (attempt)."""
    last_text: str = ""


class PartialTranscriber:
    """Partial transcripts of every session of one ingest process (see the module doc)."""

    def __init__(
        self,
        asr: Transcriber,
        interval: float,
        publish: PublishPartial,
        sessions: Callable[[], Iterable[PartialSource]],
        counters: PartialCounters,
        max_share: float = 1.0,
    ) -> None:
        self.asr = asr
        self.interval = interval
        self.max_share = max_share
        self.publish = publish
        self.sessions = sessions
        self.counters = counters
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="partial-asr")
        self._state: dict[str, _State] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="partials")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)

    def _next(self, live: list[PartialSource]) -> PartialSource | None:
        """The due session that waited longest (its last partial heard the least), or None."""
        due = []
        for s in live:
            state = self._state.setdefault(s.connection_id, _State())
            waited = s.audio_end - state.heard_until
            if waited >= max(self.interval, MIN_NEW_SECONDS):
                due.append((state.heard_until, s))
        return min(due, key=lambda d: d[0])[1] if due else None

    async def _run(self) -> None:
        while True:
            live = list(self.sessions())
            gone = self._state.keys() - {s.connection_id for s in live}
            for cid in gone:
                del self._state[cid]
            session = self._next(live)
            if session is None:
                await asyncio.sleep(IDLE_SECONDS)
                continue
            if any(s.extraction_behind for s in live):
                self.counters.partial_rounds_skipped_busy += 1
                await asyncio.sleep(IDLE_SECONDS)
                continue
            try:
                busy = await self._partial(session)
                if busy > 0 and self.max_share < 1.0:
                    await asyncio.sleep(busy * (1.0 / self.max_share - 1.0))
            except asyncio.CancelledError:
                raise
            except Exception:
                self.counters.partial_errors += 1
                log.exception("session %s: partial transcript failed", session.session_id)
                await asyncio.sleep(self.interval)

    async def _partial(self, session: PartialSource) -> float:
        """One partial of `session`; the seconds Whisper took (0 when it was not called)."""
        state = self._state[session.connection_id]
        state.heard_until = session.audio_end
        taken = session.partial_audio(LEAD_SECONDS, PARTIAL_CONTEXT_SECONDS - 0.5)
        if taken is None:
            return 0.0
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(
            self._pool, self.asr.transcribe_window, taken.audio, taken.audio_start
        )
        self.counters.partial_asr_ms += result.elapsed_ms
        # Words an event has given out already (or will: they end before `until`) are not new.
        words: list[Word] = [w for w in result.words if w.media_end > taken.final_until]
        text = " ".join(w.text for w in words)
        busy = result.elapsed_ms / 1000 if result.asr_called else 0.0
        if text == state.last_text:
            return busy  # nothing new to show (silence, or the same words again)
        state.last_text = text
        partial = PartialTranscript(
            session_id=session.session_id,
            connection_id=session.connection_id,
            seq=state.seq,
            final_until=round(taken.final_until, 3),
            media_end=round(taken.media_end, 3),
            wall_end=taken.wall_end,
            words=words,
            text=text,
            asr_ms=round(result.elapsed_ms, 1),
        )
        state.seq += 1
        await self.publish(partial)
        self.counters.partials_published += 1
        return busy


class PartialCounters(Protocol):
    """The counters the partial transcriber adds to (workers.ingest.IngestCounters)."""

    partials_published: int
    partial_rounds_skipped_busy: int
    partial_errors: int
    partial_asr_ms: float
