"""Streaming ingest: one MediaSink per WebRTC session, rolling windows, feature extraction off the
event loop, FeatureWindows published to the bus.

Per session: the stream reader tasks push audio and sampled frames into a `SessionWindower` (on the
loop: cheap appends). Finished windows go to a small per-session queue (settings.ingest.
max_pending_windows, a `DropOldestQueue`); when extraction falls behind, the OLDEST pending window
is dropped and counted, so latency stays bounded instead of growing. One extraction task per
session takes windows in order and runs `WindowExtractor.extract` in a thread pool shared by all
sessions of the process (settings.ingest.extract_threads), then publishes the features.

While Redis is unreachable, extracted windows wait in the process's one bounded `Outbox`
(workers/outbox.py), sent in order with backoff once Redis answers; sessions go on streaming and
windowing meanwhile.

Words: windows overlap, so each session's `SessionTranscript` (workers/transcript.py) keeps, of
the words a window recognised, those it owns, in window order on the session task, before the
window is published: every word of the session goes out in one window only.

Visual features are computed per sampled frame as soon as the frame arrives (faces + CLIP in
threads of their own, so a window's ASR never queues behind frames; frames waiting from several
sessions are encoded in one batch): overlapping windows share that work, and a window's end waits
only for ASR and the text encoder. When the frame threads fall behind, stale frames are shed, never
queued without bound: at most MAX_FRAME_JOBS frames per session are in flight (a frame beyond that
is skipped: `frames_deferred`), and when a window is extracted, its frames whose job has not
started yet are cancelled and left out (`frames_dropped_late`); the window then has fewer face
rows, and no face only if none was ready.

Partial transcripts: between windows, a `PartialTranscriber` (workers/partials.py; one thread and
a Whisper model of its own) transcribes each session's words that no event carries yet and
publishes them as partials; it starts nothing while any session's window waits for extraction.
What is shed under load, first to last: partials, frames (deferred, then dropped late), windows
(the oldest pending one of a session). Each is counted (IngestCounters, /metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from stream.drop_oldest import DropOldestQueue
from stream.sink import MediaSink, SessionInfo
from workers.batcher import Batcher
from workers.features.asr import BatchedTranscriber, Transcriber
from workers.features.extractor import FrameFeature, WindowExtractor
from workers.outbox import Outbox, Publish
from workers.partials import PartialAudio, PartialTranscriber, PublishPartial
from workers.schemas import FeatureWindow
from workers.settings import WorkerSettings
from workers.transcript import SessionTranscript
from workers.windowing import RawWindow, SessionWindower

__all__ = ["IngestCounters", "IngestPipeline", "SessionIngest"]

log = logging.getLogger(__name__)

# A track that stops sending must not hold its session's windows back forever: once the session
# clock is this far past a window's end, the window is cut with whatever media arrived.
STALL_GRACE_SECONDS = 0.5
TICK_SECONDS = 0.25
UNSENT_FLUSH_SECONDS = 5.0
"""On close, how long to keep trying to send windows held during a Redis outage."""
MAX_FRAME_JOBS = 4


@dataclass
class IngestCounters:
    """Process-wide counters (exported as metrics)."""

    sessions_started: int = 0
    sessions_active: int = 0
    windows_cut: int = 0
    windows_published: int = 0
    windows_dropped_backlog: int = 0
    """Dropped because extraction was behind (oldest pending window first)."""
    windows_dropped_windowing: int = 0
    """Skipped by the windower because nobody popped them (should stay 0)."""
    extraction_errors: int = 0
    windows_dropped_bad_features: int = 0
    """Extracted with NaN/inf features (never published: inference would dead-letter them)."""
    publish_errors: int = 0
    windows_unsent: int = 0
    """Windows waiting in the outbox now (Redis unreachable)."""
    windows_dropped_unsent: int = 0
    """Dropped because the outbox was full during a Redis outage (oldest first)."""
    publish_retries: int = 0
    audio_samples_dropped_ahead: int = 0
    """16 kHz samples dropped: a sender ran more than 0.5 s ahead of real time (windowing)."""
    frames_extracted_ahead: int = 0
    frames_deferred: int = 0
    """Frames skipped because MAX_FRAME_JOBS of their session were already in flight."""
    frames_dropped_late: int = 0
    """Frames whose job had not started when their window was extracted (cancelled)."""
    frames_encoded: int = 0
    """Frames whose faces + CLIP job ran; frames_encoded / frame_batches = mean batch size."""
    frame_batches: int = 0
    partials_published: int = 0
    partial_rounds_skipped_busy: int = 0
    """Partial transcripts not started because a window was waiting for extraction."""
    partial_errors: int = 0
    partial_asr_ms: float = 0.0
    """Time spent transcribing partials (one thread: / wall time = the share of a core)."""
    asr_batches: int = 0
    """Whisper calls for windows; asr_windows / asr_batches = mean batch size."""
    asr_windows: int = 0


class IngestPipeline:
    """Shared models and threads for every session of one ingest process."""

    def __init__(
        self,
        settings: WorkerSettings,
        extractor: WindowExtractor,
        publish: Publish,
        *,
        partial_asr: Transcriber | None = None,
        publish_partial: PublishPartial | None = None,
    ) -> None:
        """`partial_asr` and `publish_partial` (both, and asr.partial_seconds > 0) turn on
        partial transcripts (workers/partials.py)."""
        self.settings = settings
        self.extractor = extractor
        self.publish = publish
        self.counters = IngestCounters()
        self.outbox = Outbox(publish, self.counters, settings.ingest.max_unsent_windows)
        """Every session's windows go to Redis through this one bounded, ordered publisher."""
        self._pool = ThreadPoolExecutor(
            max_workers=settings.ingest.extract_threads, thread_name_prefix="extract"
        )
        # Per-frame work has its own threads, so a window's ASR never queues behind frames;
        # frames waiting from all sessions are encoded together (workers/batcher.py).
        # Windows of several sessions that reach Whisper together share one call.
        self.asr = (
            BatchedTranscriber(extractor.asr, on_batch=self._count_asr_batch)
            if extractor.asr is not None
            else None
        )
        self.frames: Batcher[np.ndarray, FrameFeature] = Batcher(
            extractor.frame_features,
            threads=settings.ingest.extract_threads,
            name="frames",
            on_batch=self._count_frame_batch,
        )
        # By connection, not session id: after a reconnect the old connection's last windows may
        # still be in extraction while the new one streams, and both must be waited for on close.
        self._sessions: dict[str, SessionIngest] = {}
        self._closed = False
        self.partials: PartialTranscriber | None = None
        if partial_asr is not None and publish_partial is not None:
            if settings.asr.partial_seconds > 0:
                self.partials = PartialTranscriber(
                    partial_asr,
                    settings.asr.partial_seconds,
                    publish_partial,
                    lambda: [s for s in self._sessions.values() if not s.closing],
                    self.counters,
                    settings.asr.partial_max_share,
                )

    def sink_factory(self, info: SessionInfo) -> SessionIngest:
        """Called by the WebRTC server for each new session (on the event loop)."""
        if self._closed:
            raise RuntimeError("ingest pipeline is closed")
        session = SessionIngest(self, info)
        session.start()
        if self.partials is not None:
            self.partials.start()
        self._sessions[info.connection_id] = session
        self.counters.sessions_started += 1
        self.counters.sessions_active = len(self._sessions)
        return session

    @property
    def sessions(self) -> dict[str, SessionIngest]:
        """The sessions whose windows are still being cut or extracted, by session id (the
        newest connection of each)."""
        return {s.info.session_id: s for s in self._sessions.values()}

    async def extract(
        self, raw: RawWindow, session_id: str, frames: dict[float, FrameFeature]
    ) -> FeatureWindow:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, self.extractor.extract, raw, session_id, frames, False, self.asr
        )

    def _count_asr_batch(self, size: int) -> None:
        self.counters.asr_batches += 1
        self.counters.asr_windows += size

    def _count_frame_batch(self, size: int) -> None:
        self.counters.frame_batches += 1
        self.counters.frames_encoded += size

    def frame_feature(self, rgb: np.ndarray) -> Future[FrameFeature]:
        """A concurrent future, so that a job still queued can be cancelled (shed)."""
        return self.frames.submit(rgb)

    def _forget(self, session: SessionIngest) -> None:
        if self._sessions.get(session.info.connection_id) is session:
            del self._sessions[session.info.connection_id]
        self.counters.sessions_active = len(self._sessions)

    async def aclose(self) -> None:
        """Finish every session's pending windows (bounded), then stop the threads."""
        self._closed = True
        await asyncio.gather(
            *(s.aclose() for s in list(self._sessions.values())), return_exceptions=True
        )
        if self.partials is not None:
            await self.partials.aclose()
        await self.outbox.aclose(UNSENT_FLUSH_SECONDS)
        # Off the loop: a job still running must not freeze every other task while it ends.
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)
        await asyncio.to_thread(self.frames.shutdown, cancel_waiting=True)
        if self.asr is not None:
            await asyncio.to_thread(self.asr.shutdown)

    async def __aenter__(self) -> IngestPipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _finite(x: np.ndarray | None) -> bool:
    return x is None or x.dtype.kind != "f" or bool(np.isfinite(x).all())


def _consume_exception(fut: Future[FrameFeature]) -> None:
    """A frame job nobody awaits (its window was dropped) must not log 'never retrieved'."""
    if not fut.cancelled():
        fut.exception()


class SessionIngest(MediaSink):
    """The MediaSink of one session: windowing on the loop, extraction in the pool."""

    def __init__(self, pipeline: IngestPipeline, info: SessionInfo) -> None:
        ingest = pipeline.settings.ingest
        self.pipeline = pipeline
        self.info = info
        self.windower = SessionWindower(ingest.window_seconds, ingest.hop_seconds, ingest.video_fps)
        self.transcript = SessionTranscript()
        """Which window publishes each word (windows overlap): see workers/transcript.py."""
        self._pending: DropOldestQueue[RawWindow] = DropOldestQueue(ingest.max_pending_windows)
        """Cut windows waiting for extraction; the oldest is dropped when extraction is behind."""
        self._frame_jobs: dict[float, Future[FrameFeature]] = {}
        self._cut_until = 0.0
        """Media time up to which the windows cut so far own words (their end minus the guard)."""
        self._closing = False
        self.windows_published = 0
        self._task: asyncio.Task[None] | None = None
        self._log_extra = {"session_id": info.session_id, "stage": "ingest"}
        """`extra=` of this session's log records."""

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the session's extraction task (on the event loop; IngestPipeline.sink_factory
        calls it)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"ingest-{self.info.session_id}"
            )

    async def aclose(self, timeout: float = 30.0) -> None:
        """End the session (as `on_close`), let its pending windows be extracted and published
        for up to `timeout` seconds, then cancel what is left."""
        self.on_close()
        await self.wait_done(timeout)
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait_done(self, timeout: float = 30.0) -> None:
        """Wait until the session's pending windows are extracted and published."""
        if self._task is None:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._task), timeout)

    # ---- PartialSource (workers/partials.py; on the event loop) ----------------------------

    @property
    def session_id(self) -> str:
        return self.info.session_id

    @property
    def connection_id(self) -> str:
        return self.info.connection_id

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def audio_end(self) -> float:
        return self.windower.audio_end

    @property
    def extraction_behind(self) -> bool:
        return bool(self._pending)

    def partial_audio(self, lead: float, longest: float) -> PartialAudio | None:
        """The audio whose words no window cut so far will publish, `lead` s before it, at most
        `longest` s in all (the newest); None when there is less than half a second. The words
        of the windows already cut come with their events within a few hundred ms."""
        end = self.windower.audio_end
        until = max(self.transcript.until, self._cut_until)
        audio, start = self.windower.recent_audio(max(until - lead, end - longest))
        if audio is None or start is None or audio.size < self.windower.sr // 2:
            return None
        wall_end = min(time.time(), self.info.started_wall + end)
        return PartialAudio(audio, start, until, end, wall_end)

    @property
    def windows_dropped(self) -> int:
        """Windows dropped because extraction was behind (the oldest pending first)."""
        return self._pending.dropped

    # ---- MediaSink (called on the event loop; must stay cheap) ----------------------------

    def on_audio(self, samples: np.ndarray, media_time_end: float) -> None:
        if not self._closing:
            dropped = self.windower.audio_dropped_ahead
            self.windower.push_audio(samples, media_time_end)
            self.pipeline.counters.audio_samples_dropped_ahead += (
                self.windower.audio_dropped_ahead - dropped
            )
            self._collect()

    def wants_frame(self, media_time: float) -> bool:
        return not self._closing and self.windower.offer_frame(media_time)

    def on_frame(self, rgb: np.ndarray, media_time: float) -> None:
        if not self._closing:
            self.windower.push_frame(rgb, media_time)
            self._start_frame_job(rgb, media_time)
            self._collect()

    def on_close(self) -> None:
        if self._closing:
            return
        self._closing = True
        # A session that never received media has nothing to say: cutting windows up to the
        # session clock published made-up empty events (and a live-list entry) for offers that
        # never connected (review L1).
        media_now = self._clock() if self.windower.media_time > 0 else None
        self._enqueue(self.windower.flush(self.info.started_wall, media_now))
        self._pending.close()  # the task takes what is left, then ends

    # ---- internals ------------------------------------------------------------------------

    def _clock(self) -> float:
        return time.monotonic() - self.info.started_monotonic

    def _start_frame_job(self, rgb: np.ndarray, media_time: float) -> None:
        counters = self.pipeline.counters
        in_flight = sum(1 for f in self._frame_jobs.values() if not f.done())
        if in_flight >= MAX_FRAME_JOBS:
            counters.frames_deferred += 1
            return
        job = self.pipeline.frame_feature(rgb)
        job.add_done_callback(_consume_exception)
        self._frame_jobs[media_time] = job
        counters.frames_extracted_ahead += 1

    async def _frame_features(self, raw: RawWindow) -> dict[float, FrameFeature]:
        """Per-frame results for this window's frames: done or running jobs are used (waiting
        for the running ones), jobs still queued are cancelled and counted. Frames no later
        window needs are forgotten."""
        out: dict[float, FrameFeature] = {}
        for ts, _ in raw.frames:
            job = self._frame_jobs.get(ts)
            if job is None:
                continue
            if job.cancelled():  # shed by an earlier, overlapping window
                continue
            if not job.done() and job.cancel():
                self.pipeline.counters.frames_dropped_late += 1
                continue
            try:
                out[ts] = await asyncio.wrap_future(job)
            except Exception:
                log.exception(
                    "session %s: frame features failed", self.info.session_id, extra=self._log_extra
                )
        keep_from = raw.media_start + self.windower.hop
        for ts in [t for t in self._frame_jobs if t < keep_from]:
            del self._frame_jobs[ts]
        return out

    def _collect(self, media_now: float | None = None) -> None:
        self._enqueue(self.windower.pop_ready(self.info.started_wall, media_now))

    def _enqueue(self, windows: list[RawWindow]) -> None:
        counters = self.pipeline.counters
        now = time.time()
        for raw in windows:
            counters.windows_cut += 1
            # A window cannot have ended after the moment its media was complete here: if the
            # sender's audio clock runs ahead of ours (drift, bursts under GAP_SECONDS), latency
            # is measured from the cut, never from a window end in the future.
            raw.wall_end = min(raw.wall_end, now)
            self._cut_until = max(self._cut_until, raw.media_end - self.transcript.guard)
            dropped = self._pending.put(raw)
            if dropped is not None:
                counters.windows_dropped_backlog += 1
                log.warning(
                    "session %s: extraction behind, dropped window %d",
                    self.info.session_id,
                    dropped.seq,
                    extra=self._log_extra,
                )

    async def _run(self) -> None:
        try:
            while True:
                if not self._pending:
                    if self._pending.closed:
                        return
                    await self._pending.wait(TICK_SECONDS)
                    if not self._closing and self.windower.media_time > 0:
                        # Stalled tracks: the session clock completes windows on its own.
                        now = max(self.windower.media_time, self._clock() - STALL_GRACE_SECONDS)
                        self._collect(now)
                    continue
                raw = self._pending.get_nowait()
                await self._process(raw)
        finally:
            self.pipeline.counters.windows_dropped_windowing += self.windower.windows_dropped
            self.pipeline._forget(self)

    async def _process(self, raw: RawWindow) -> None:
        counters = self.pipeline.counters
        sid = self.info.session_id
        try:
            fw = await self.pipeline.extract(raw, sid, await self._frame_features(raw))
            # seq restarts at 0 per connection: the connection names the window (event ids).
            fw = dataclasses.replace(fw, connection_id=self.info.connection_id)
        except Exception:
            counters.extraction_errors += 1
            log.exception(
                "session %s: feature extraction failed for window %d",
                sid,
                raw.seq,
                extra=self._log_extra,
            )
            return
        bad = [m for m in ("language", "visual", "audio") if not _finite(getattr(fw, m))]
        if bad:  # NaN in, NaN out: the event would not be JSON (review M5)
            counters.windows_dropped_bad_features += 1
            log.warning(
                "session %s: window %d has NaN/inf %s features: dropped",
                sid,
                raw.seq,
                "/".join(bad),
                extra=self._log_extra,
            )
            return
        # In window order, and only for windows that will be published: a window dropped before
        # this point leaves its words to the next one.
        fw = dataclasses.replace(fw, words=self.transcript.own(fw.words, raw.media_end, raw.last))
        try:
            # Published now, or held in the outbox until Redis answers: counted when sent.
            await self.pipeline.outbox.send(fw, self._published)
        except Exception:
            counters.publish_errors += 1
            log.exception(
                "session %s: publishing window %d failed", sid, raw.seq, extra=self._log_extra
            )

    def _published(self) -> None:
        self.windows_published += 1
        self.pipeline.counters.windows_published += 1
