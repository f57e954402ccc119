"""The inference worker: FeatureWindows from Redis in, EmotionEvents out (`merclip infer` runs one:
workers/app/commands/infer.py).

One `InferenceWorker` is one consumer in the group `inference.consumer_group` on the windows
stream (on every partition of it, `redis.partitions`: the bus reads and claims across them and
acks each window where it came from); workers on other machines join the same group to add
throughput. Each cycle it:

1. every claim_idle_ms / 2, takes over windows other (dead) consumers left pending longer than
   `inference.claim_idle_ms` (XAUTOCLAIM);
2. reads new windows so that at most `inference.batch_size` are in hand (blocking up to
   `block_ms` only when it has nothing);
3. sorts out what cannot be inferred: undecodable entries, windows delivered more than
   `max_deliveries` times (a window that keeps killing workers) and windows whose features do
   not fit the model go to the dead-letter stream and are acked; windows whose end is older than
   `deadline_seconds` are skipped (counted) and acked: a late emotion is worth nothing live;
4. runs `predictor.predict(samples)` on all the rest as ONE batch in an executor thread (never on
   the event loop); if the batch fails, each window is retried alone so one bad window cannot
   sink the others; a window that still fails stays pending for a later retry, or is dead-lettered
   once it has had max_deliveries attempts;
5. builds one EmotionEvent per window (the session's moving average and the event itself:
   workers/events.py), writes it (idempotent: the event id is deterministic, a redelivered window
   adds no second event), and only then acks the window.

Redis outages (errors whose `retryable` is true) end the cycle; the worker retries it with
redis-py's `EqualJitterBackoff`, driven by its count of failed cycles in a row.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from redis.backoff import EqualJitterBackoff

from workers import metrics
from workers.bus import Bus, Delivery, retryable
from workers.events import Smoother, Timings, build_event
from workers.schemas import FeatureWindow
from workers.settings import WorkerSettings

if TYPE_CHECKING:  # torch, open_clip, faster-whisper: imported when a worker is built, so
    # `merclip infer --help` and configuration errors answer at once.
    from merclip.batch import Sample
    from merclip.predictor import Prediction, Predictor

__all__ = ["InferenceCounters", "InferenceWorker"]

log = logging.getLogger(__name__)

MAX_LANGUAGE_ROWS = 512
MAX_VISUAL_ROWS = 64
MAX_AUDIO_ROWS = 1200
"""Row limits of a window's features (see InferenceWorker._max_rows), generous on purpose."""
_ERROR_BACKOFF_S = 1.0
_RECONNECT_BASE_S = 0.1
_MAX_RECONNECT_DELAY_S = 2.0
_MAX_DOUBLINGS = 30  # 2**n of a long outage's failure count would overflow a float


@dataclass
class InferenceCounters:
    """One worker's counters (exported as metrics, summed over the process's workers at scrape
    time: workers/metrics.py)."""

    processed: int = 0
    """Events written, or found already written."""
    duplicates: int = 0
    """Of those, already written by an earlier delivery."""
    skipped: int = 0
    """Past the deadline (acked unprocessed)."""
    dead_lettered: int = 0
    failed: int = 0
    """Attempts that raised; the window is retried."""
    claimed: int = 0
    """Taken over from other consumers."""
    batches: int = 0
    """Predictor calls on a batch."""
    redis_errors: int = 0
    """Cycles that failed because Redis was unreachable; retried with backoff."""
    last_batch_size: int = 0
    last_inference_ms: float = 0.0
    """Of the latest batch, rounded to microseconds."""


@dataclass
class _Ready:
    delivery: Delivery
    window: FeatureWindow
    sample: Sample
    read_wall: float


class InferenceWorker:
    """A consumer of the windows stream that writes one event per window.

    Counters: `counters` (InferenceCounters), also exported as Prometheus metrics.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        bus: Bus,
        predictor: Predictor,
        *,
        consumer: str | None = None,
    ) -> None:
        self.settings = settings
        self.cfg = settings.inference
        self.bus = bus
        self.predictor = predictor
        self.group = self.cfg.consumer_group
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.counters = InferenceCounters()
        metrics.track_inference(self.counters)
        self.smoother = Smoother(self.cfg.smoothing_alpha)
        self.log_extra = {"consumer": self.consumer, "stage": "infer"}
        """`extra=` of this worker's log records (also for its command's)."""
        self._claim_interval_s = max(0.05, self.cfg.claim_idle_ms / 2000.0)
        self._next_claim = 0.0
        # One thread: forward passes run one at a time, off the loop, in arrival order.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="merclip-infer")
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            return
        await self.bus.ensure_group(self.group)
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"merclip-infer[{self.consumer}]")
        log.info(
            "inference worker %s joined group %s on %s (batch %d%s)",
            self.consumer,
            self.group,
            ", ".join(self.bus.keys.windows_streams),
            self.cfg.batch_size,
            ", Redis Cluster" if self.bus.cluster else "",
            extra=self.log_extra,
        )

    async def aclose(self, drain_timeout: float = 5.0) -> None:
        """Finish the batch in hand (up to drain_timeout), then stop. Unacked windows are
        redelivered to another worker after claim_idle_ms."""
        task, self._task = self._task, None
        self._stopping = True
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=drain_timeout)
            if not done:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> InferenceWorker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        backoff = EqualJitterBackoff(cap=_MAX_RECONNECT_DELAY_S, base=_RECONNECT_BASE_S)
        failures = 0
        while not self._stopping:
            try:
                await self.step()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not retryable(exc):
                    log.exception(
                        "inference worker %s: unexpected error; going on",
                        self.consumer,
                        extra=self.log_extra,
                    )
                    await asyncio.sleep(_ERROR_BACKOFF_S)
                    continue
                # Redis is down: the bus logs the outage once; pace the retries. Windows in hand
                # stay pending and are claimed again (their events are idempotent) once it is up.
                self.counters.redis_errors += 1
                log.debug(
                    "inference worker %s: %s; retrying", self.consumer, exc, extra=self.log_extra
                )
                await asyncio.sleep(backoff.compute(failures))
                failures = min(failures + 1, _MAX_DOUBLINGS)

    # -- one cycle ------------------------------------------------------------------------------

    async def step(self) -> int:
        """Claim stale windows (on their timer), read new ones, handle them; returns how many
        entries were handled. `start()` calls this in a loop; tests may call it directly."""
        deliveries: list[Delivery] = []
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + self._claim_interval_s
            deliveries = await self.bus.claim_stale(
                self.group, self.consumer, self.cfg.claim_idle_ms, self.cfg.batch_size
            )
            if deliveries:
                self.counters.claimed += len(deliveries)
                log.info("claimed %d stale windows", len(deliveries), extra=self.log_extra)
        room = self.cfg.batch_size - len(deliveries)
        if room > 0:
            block = 0 if deliveries else self.cfg.block_ms
            deliveries += await self.bus.read_windows(self.group, self.consumer, room, block)
        if deliveries:
            await self._handle(deliveries)
        return len(deliveries)

    async def _dead(self, d: Delivery, reason: str, ack: list[Delivery]) -> None:
        await self.bus.dead_letter(d, reason)
        self.counters.dead_lettered += 1
        ack.append(d)

    async def _handle(self, deliveries: list[Delivery]) -> None:
        read_wall = time.time()
        ack: list[Delivery] = []
        ready: list[_Ready] = []
        for d in deliveries:
            # One window at a time: a window that breaks the checks in an unforeseen way is
            # dead-lettered alone; before, it raised out of the loop and nothing of its batch
            # was acked, so its good neighbours were redelivered to death with it (review M5).
            try:
                item = await self._sort_out(d, read_wall, ack)
            except Exception as exc:
                if retryable(exc):
                    raise  # an outage: the whole cycle is retried
                log.exception(
                    "window %s: unexpected error while checking it",
                    d.entry_id,
                    extra=self.log_extra,
                )
                await self._dead(d, f"unexpected error: {type(exc).__name__}: {exc}", ack)
                continue
            if item is not None:
                ready.append(item)
        if ready:
            ack += await self._infer_and_publish(ready)
        if ack:
            await self.bus.ack_deliveries(self.group, ack)

    async def _sort_out(self, d: Delivery, read_wall: float, ack: list[Delivery]) -> _Ready | None:
        """The window ready for inference, or None when it was dead-lettered or skipped (then
        it is in `ack`)."""
        fw = d.message
        if fw is None:
            await self._dead(d, f"undecodable: {d.error}", ack)
        elif d.deliveries > self.cfg.max_deliveries:
            reason = f"delivered {d.deliveries} times (max_deliveries {self.cfg.max_deliveries})"
            await self._dead(d, reason, ack)
        elif read_wall - fw.wall_end > self.cfg.deadline_seconds:
            self.counters.skipped += 1
            ack.append(d)
            log.debug(
                "window %s:%d past its deadline: skipped",
                fw.session_id,
                fw.seq,
                extra={**self.log_extra, "session_id": fw.session_id},
            )
        else:
            problem = self._misfit(fw)
            if problem:
                await self._dead(d, problem, ack)
            else:
                return _Ready(d, fw, fw.to_sample(), read_wall)
        return None

    def _max_rows(self) -> dict[str, int]:
        """Most rows a window's features may have (review M5: a (100000, 512) window was
        accepted). Real windows: language <= 128 tokens (MiniLM; CLIP 77), visual <=
        ingest.max_faces_per_window, audio 10 log-mel rows per second of window. The margins
        allow ingest and inference to be configured apart."""
        window_s = self.settings.ingest.window_seconds
        return {
            "language": MAX_LANGUAGE_ROWS,
            "visual": max(MAX_VISUAL_ROWS, self.settings.ingest.max_faces_per_window),
            "audio": max(MAX_AUDIO_ROWS, math.ceil(window_s * 10) + 10),
        }

    def _misfit(self, fw: FeatureWindow) -> str:
        """Why these features cannot go into this model ('' when they can)."""
        for name, limit in self._max_rows().items():
            x = getattr(fw, name)
            if x is None:
                continue
            if x.ndim >= 1 and x.shape[0] > limit:
                return f"bad features: {name} has {x.shape[0]} rows, at most {limit} allowed"
            if x.dtype.kind == "f" and not np.isfinite(x).all():
                # NaN in, NaN out: the event would not be JSON and the session's moving average
                # would stay NaN for good.
                return f"bad features: {name} holds NaN or infinite values"
        space = self.predictor.feature_space
        if fw.feature_space != space:
            return (
                f"feature space {fw.feature_space!r}, the worker serves {space!r}: ingest and "
                "inference need the same features.space"
            )
        if space == "live" and fw.clip_model != self.predictor.clip_model:
            return (
                f"features from CLIP {fw.clip_model!r}, the model uses "
                f"{self.predictor.clip_model!r}: ingest and inference need the same clip.model"
            )
        try:
            self.predictor.check([fw.to_sample()])
        except ValueError as exc:
            return f"bad features: {exc}"
        return ""

    async def _predict(self, samples: list[Sample]) -> list[Prediction]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.predictor.predict, samples)

    async def _infer_and_publish(self, ready: list[_Ready]) -> list[Delivery]:
        """Predict, write events; returns the deliveries that may now be acked."""
        t0 = time.perf_counter()
        results: list[Prediction | BaseException]
        try:
            results = list(await self._predict([r.sample for r in ready]))
            self.counters.batches += 1
        except Exception as exc:
            log.warning(
                "batch of %d failed (%s); retrying one by one",
                len(ready),
                exc,
                extra=self.log_extra,
            )
            results = []
            for r in ready:
                try:
                    results.extend(await self._predict([r.sample]))
                except Exception as one_exc:
                    results.append(one_exc)
        infer_ms = (time.perf_counter() - t0) * 1000.0
        metrics.observe_batch(len(ready), infer_ms / 1000.0)
        done_wall = time.time()
        self.counters.last_batch_size = len(ready)
        self.counters.last_inference_ms = round(infer_ms, 3)
        ack: list[Delivery] = []
        # Session order, then window order, so the moving average follows the stream.
        order = sorted(
            range(len(ready)), key=lambda i: (ready[i].window.session_id, ready[i].window.seq)
        )
        for i in order:
            r, result = ready[i], results[i]
            if not isinstance(result, BaseException) and not _finite(result):
                # Finite features should give finite probabilities; if the model does not, the
                # window is dead-lettered (a retry would give the same) and smoothing is spared.
                await self._dead(r.delivery, "the model gave non-finite probabilities", ack)
                continue
            if isinstance(result, BaseException):
                self.counters.failed += 1
                if r.delivery.deliveries >= self.cfg.max_deliveries:
                    await self._dead(r.delivery, f"inference failed: {result}", ack)
                else:
                    log.warning(
                        "window %s failed (%s); will retry",
                        r.delivery.entry_id,
                        result,
                        extra={**self.log_extra, "session_id": r.window.session_id},
                    )
                continue
            smoothed = self.smoother.update(r.window, result)
            timings = Timings(r.read_wall, infer_ms, done_wall, published_wall=time.time())
            event = build_event(r.window, result, smoothed, timings, self.predictor)
            if not await self.bus.write_event(event):
                self.counters.duplicates += 1
            else:
                metrics.observe_event(event)
            self.counters.processed += 1
            ack.append(r.delivery)
        return ack

    def stats(self) -> dict[str, float]:
        return dataclasses.asdict(self.counters)


def _finite(pred: Prediction) -> bool:
    return bool(np.isfinite(pred.emotion_probs).all() and np.isfinite(pred.sentiment_probs).all())
