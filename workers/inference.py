"""The inference worker (`merclip infer`): FeatureWindows from Redis in, EmotionEvents out.

One `InferenceWorker` is one consumer in the group `inference.consumer_group` on the windows
stream; workers on other machines join the same group to add throughput. Each cycle it:

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
5. builds one EmotionEvent per window, writes it (idempotent: the event id is deterministic, a
   redelivered window adds no second event), and only then acks the window.

Smoothing: `emotion_smoothed` / `sentiment_smoothed` are an exponential moving average per
session (weight `smoothing_alpha` on the new window), kept in this worker's memory. With several
workers each sees only some of a session's windows, so smoothing is per worker; the raw
probabilities are always exact.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import signal
import socket
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from merclip.errors import ConfigError
from merclip.settings import Settings
from workers import metrics
from workers.bus import Backoff, Bus, BusError, Delivery
from workers.schemas import EmotionEvent, FeatureWindow, Latency, event_id_for

if TYPE_CHECKING:  # torch, open_clip, faster-whisper: imported when a worker is built, so
    # `merclip infer --help` and configuration errors answer at once.
    from merclip.batch import Sample
    from merclip.predictor import Prediction, Predictor

__all__ = ["InferenceWorker", "add_arguments", "run", "run_inference"]

log = logging.getLogger(__name__)

_MAX_SMOOTHING_SESSIONS = 10_000
MAX_LANGUAGE_ROWS = 512
MAX_VISUAL_ROWS = 64
MAX_AUDIO_ROWS = 1200
"""Row limits of a window's features (see InferenceWorker._max_rows), generous on purpose."""
_ERROR_BACKOFF_S = 1.0
_MAX_RECONNECT_DELAY_S = 2.0


@dataclass
class _Smoothed:
    seq: int
    emotion: np.ndarray
    sentiment: np.ndarray
    connection_id: str = ""
    wall_start: float = 0.0


@dataclass
class _Ready:
    delivery: Delivery
    window: FeatureWindow
    sample: Sample
    read_wall: float


class InferenceWorker:
    """A consumer of the windows stream that writes one event per window.

    Counters (plain attributes): processed (events written or found already written),
    duplicates (of those, already written by an earlier delivery), skipped (past the deadline),
    dead_lettered, failed (attempts that raised; the window is retried), claimed (taken over
    from other consumers), batches (predictor calls on a batch), redis_errors (cycles that
    failed because Redis was unreachable; retried with backoff).
    """

    def __init__(
        self,
        settings: Settings,
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
        self.processed = 0
        self.duplicates = 0
        self.skipped = 0
        self.dead_lettered = 0
        self.failed = 0
        self.claimed = 0
        self.batches = 0
        self.redis_errors = 0
        self.last_batch_size = 0
        self.last_inference_ms = 0.0
        self._smooth: OrderedDict[str, _Smoothed] = OrderedDict()
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
            "inference worker %s joined group %s on %s (batch %d)",
            self.consumer,
            self.group,
            self.bus.keys.windows,
            self.cfg.batch_size,
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
        backoff = Backoff(initial=0.1, maximum=_MAX_RECONNECT_DELAY_S)
        while not self._stopping:
            try:
                await self.step()
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except BusError as exc:
                # Redis is down: the bus logs the outage once; pace the retries. Windows in hand
                # stay pending and are claimed again (their events are idempotent) once it is up.
                self.redis_errors += 1
                log.debug("inference worker %s: %s; retrying", self.consumer, exc)
                await backoff.sleep()
            except Exception:
                log.exception("inference worker %s: unexpected error; going on", self.consumer)
                await asyncio.sleep(_ERROR_BACKOFF_S)

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
                self.claimed += len(deliveries)
                metrics.INFER_CLAIMED.inc(len(deliveries))
                log.info("claimed %d stale windows", len(deliveries))
        room = self.cfg.batch_size - len(deliveries)
        if room > 0:
            block = 0 if deliveries else self.cfg.block_ms
            deliveries += await self.bus.read_windows(self.group, self.consumer, room, block)
        if deliveries:
            await self._handle(deliveries)
        return len(deliveries)

    async def _dead(self, d: Delivery, reason: str, ack: list[str]) -> None:
        await self.bus.dead_letter(d, reason)
        self.dead_lettered += 1
        metrics.INFER_DEAD_LETTERED.inc()
        ack.append(d.entry_id)

    async def _handle(self, deliveries: list[Delivery]) -> None:
        read_wall = time.time()
        ack: list[str] = []
        ready: list[_Ready] = []
        for d in deliveries:
            # One window at a time: a window that breaks the checks in an unforeseen way is
            # dead-lettered alone; before, it raised out of the loop and nothing of its batch
            # was acked, so its good neighbours were redelivered to death with it (review M5).
            try:
                item = await self._sort_out(d, read_wall, ack)
            except BusError:
                raise
            except Exception as exc:
                log.exception("window %s: unexpected error while checking it", d.entry_id)
                await self._dead(d, f"unexpected error: {type(exc).__name__}: {exc}", ack)
                continue
            if item is not None:
                ready.append(item)
        if ready:
            ack += await self._infer_and_publish(ready)
        if ack:
            await self.bus.ack(self.group, ack)

    async def _sort_out(self, d: Delivery, read_wall: float, ack: list[str]) -> _Ready | None:
        """The window ready for inference, or None when it was dead-lettered or skipped (then
        its entry id is in `ack`)."""
        fw = d.message
        if fw is None:
            await self._dead(d, f"undecodable: {d.error}", ack)
        elif d.deliveries > self.cfg.max_deliveries:
            reason = f"delivered {d.deliveries} times (max_deliveries {self.cfg.max_deliveries})"
            await self._dead(d, reason, ack)
        elif read_wall - fw.wall_end > self.cfg.deadline_seconds:
            self.skipped += 1
            metrics.INFER_SKIPPED.inc()
            ack.append(d.entry_id)
            log.debug("window %s:%d past its deadline: skipped", fw.session_id, fw.seq)
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

    async def _infer_and_publish(self, ready: list[_Ready]) -> list[str]:
        """Predict, write events; returns the entry ids that may now be acked."""
        t0 = time.perf_counter()
        results: list[Prediction | BaseException]
        try:
            results = list(await self._predict([r.sample for r in ready]))
            self.batches += 1
        except Exception as exc:
            log.warning("batch of %d failed (%s); retrying one by one", len(ready), exc)
            results = []
            for r in ready:
                try:
                    results.extend(await self._predict([r.sample]))
                except Exception as one_exc:
                    results.append(one_exc)
        infer_ms = (time.perf_counter() - t0) * 1000.0
        metrics.observe_batch(len(ready), infer_ms / 1000.0)
        done_wall = time.time()
        self.last_batch_size = len(ready)
        self.last_inference_ms = infer_ms
        ack: list[str] = []
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
                self.failed += 1
                metrics.INFER_FAILURES.inc()
                if r.delivery.deliveries >= self.cfg.max_deliveries:
                    await self._dead(r.delivery, f"inference failed: {result}", ack)
                else:
                    log.warning("window %s failed (%s); will retry", r.delivery.entry_id, result)
                continue
            event = self._event(r, result, infer_ms, done_wall)
            if not await self.bus.write_event(event):
                self.duplicates += 1
                metrics.INFER_DUPLICATES.inc()
            else:
                metrics.observe_event(event)
            self.processed += 1
            metrics.INFER_PROCESSED.inc()
            ack.append(r.delivery.entry_id)
        return ack

    def _smoothed(self, fw: FeatureWindow, pred: Prediction) -> tuple[np.ndarray, np.ndarray]:
        a = self.cfg.smoothing_alpha
        state = self._smooth.get(fw.session_id)
        known = state
        if state is not None and state.connection_id != fw.connection_id:
            # A reconnect under the same session id: seq starts again at 0 and the old average
            # says nothing about the new connection, so its first window starts afresh.
            state = None
        if state is None or state.emotion.shape != pred.emotion_probs.shape:
            emo, sen = pred.emotion_probs, pred.sentiment_probs
        else:
            emo = a * pred.emotion_probs + (1.0 - a) * state.emotion
            # A window without words says nothing about sentiment: the running value stays.
            b = a if pred.sentiment is not None else 0.0
            sen = b * pred.sentiment_probs + (1.0 - b) * state.sentiment
        # A redelivered older window is smoothed against the state but does not rewind it; a
        # late window of an earlier connection does not take the state back to that connection.
        if state is not None:
            newer = fw.seq > state.seq
        else:
            newer = known is None or fw.wall_start >= known.wall_start
        if newer and np.isfinite(emo).all() and np.isfinite(sen).all():  # never NaN in state
            self._smooth[fw.session_id] = _Smoothed(
                fw.seq, emo, sen, fw.connection_id, fw.wall_start
            )
            self._smooth.move_to_end(fw.session_id)
            if len(self._smooth) > _MAX_SMOOTHING_SESSIONS:
                self._smooth.popitem(last=False)
        return emo, sen

    def _event(
        self, r: _Ready, pred: Prediction, infer_ms: float, done_wall: float
    ) -> EmotionEvent:
        fw, p = r.window, self.predictor
        emo_s, sen_s = self._smoothed(fw, pred)

        def ms(t: float) -> float:
            return round((t - fw.wall_end) * 1000.0, 3)

        stage_ms = dict(fw.stage_ms)
        stage_ms["queue"] = round(max(0.0, r.read_wall - fw.features_ready_wall) * 1000.0, 3)
        stage_ms["inference"] = round(infer_ms, 3)
        return EmotionEvent(
            event_id=event_id_for(
                fw.session_id, fw.seq, p.model_name, p.model_version, fw.connection_id
            ),
            session_id=fw.session_id,
            seq=fw.seq,
            media_start=fw.media_start,
            media_end=fw.media_end,
            wall_start=fw.wall_start,
            wall_end=fw.wall_end,
            transcript=fw.transcript,
            emotion_labels=list(p.emotion_labels),
            emotion_probs=[float(x) for x in pred.emotion_probs],
            emotion_smoothed=[float(x) for x in emo_s],
            emotions_predicted=list(pred.emotions),
            emotion_threshold=float(p.threshold),
            sentiment_labels=list(p.sentiment_labels),
            sentiment_probs=[float(x) for x in pred.sentiment_probs],
            sentiment_smoothed=[float(x) for x in sen_s],
            sentiment=pred.sentiment,
            face_present=fw.face_present and fw.visual is not None,
            speech_present=fw.speech_present,
            model_name=p.model_name,
            model_version=p.model_version,
            zero_shot=bool(p.zero_shot),
            pretrained=bool(p.pretrained),
            latency=Latency(
                features_ready_ms=ms(fw.features_ready_wall),
                inference_done_ms=ms(done_wall),
                published_ms=ms(time.time()),
            ),
            stage_ms=stage_ms,
            trained_on=p.trained_on,
            words=list(fw.words),
            new_text=" ".join(w.text for w in fw.words),
        )

    def stats(self) -> dict[str, float]:
        return {
            "processed": self.processed,
            "duplicates": self.duplicates,
            "skipped": self.skipped,
            "dead_lettered": self.dead_lettered,
            "failed": self.failed,
            "claimed": self.claimed,
            "batches": self.batches,
            "redis_errors": self.redis_errors,
            "last_batch_size": self.last_batch_size,
            "last_inference_ms": round(self.last_inference_ms, 3),
        }


def _finite(pred: Prediction) -> bool:
    return bool(np.isfinite(pred.emotion_probs).all() and np.isfinite(pred.sentiment_probs).all())


# -- `merclip infer` --------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", default=None, help="shared Redis (overrides redis.url)")
    parser.add_argument("--consumer", default=None, help="consumer name (default: host-pid-rand)")
    parser.add_argument("--batch-size", type=int, default=None, help="overrides batch_size")
    parser.add_argument(
        "--stats-every", type=float, default=30.0, help="log counters every N seconds (0: never)"
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics at http://HOST:PORT/metrics (0: any free port)",
    )
    parser.add_argument(
        "--metrics-host", default="0.0.0.0", help="address for --metrics-port (default 0.0.0.0)"
    )


async def run_inference(
    settings: Settings,
    url: str,
    *,
    predictor: Predictor | None = None,
    consumer: str | None = None,
    stop: asyncio.Event | None = None,
    stats_every_s: float = 30.0,
    metrics_port: int | None = None,
    metrics_host: str = "0.0.0.0",
) -> InferenceWorker:
    """Run one worker against `url` until `stop` is set (or SIGINT/SIGTERM when stop is None).

    Loads the model first (before joining the group), so a worker never takes windows it cannot
    serve yet. Returns the stopped worker (its counters). With `metrics_port`, Prometheus
    metrics (this worker's counters, and the lag gauges refreshed from Redis each second) are
    served at http://metrics_host:metrics_port/metrics.
    """
    if predictor is None:
        from merclip.predictor import Predictor

        loop = asyncio.get_running_loop()
        predictor = await loop.run_in_executor(None, Predictor.from_settings, settings)
    if not predictor.pretrained:
        log.warning(
            "CLIP %s has RANDOM weights (clip.pretrained is empty): every event says "
            "pretrained=false and its emotions are meaningless",
            predictor.clip_model,
        )
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
    async with Bus.connect(url, settings.redis) as bus, contextlib.AsyncExitStack() as stack:
        if metrics_port is not None:
            from workers.monitor import Monitor

            metrics.start_metrics_server(metrics_port, metrics_host)
            await stack.enter_async_context(Monitor(bus, settings, count_events=False))
        async with InferenceWorker(settings, bus, predictor, consumer=consumer) as worker:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), stats_every_s or None)
                if not worker.running:
                    raise BusError("the inference worker stopped unexpectedly")
                if stats_every_s:
                    log.info("inference stats %s", worker.stats())
    log.info("inference worker %s stopped: %s", worker.consumer, worker.stats())
    return worker


def run(args: argparse.Namespace, settings: Settings) -> int:
    url = args.redis_url or settings.redis.url
    if not url:
        raise ConfigError(
            "merclip infer needs a shared Redis: set redis.url (or MERCLIP_REDIS_URL) or pass "
            "--redis-url; `merclip serve` runs inference on its embedded Redis by itself"
        )
    if args.batch_size is not None:
        settings = settings.replace("inference", batch_size=args.batch_size)
    asyncio.run(
        run_inference(
            settings,
            url,
            consumer=args.consumer,
            stats_every_s=args.stats_every,
            metrics_port=args.metrics_port,
            metrics_host=args.metrics_host,
        )
    )
    return 0
