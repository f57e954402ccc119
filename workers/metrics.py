"""Prometheus metrics of ingest and inference, on prometheus-client's default registry.

The default registry is the one stream/ already uses (GET /metrics of `merclip serve` and
`merclip ingest` renders it), so one scrape shows WebRTC, ingest, inference and Redis numbers.
`merclip infer` serves the same registry with `--metrics-port` (`start_metrics_server`).

One counter pattern for the stages: a stage keeps a dataclass of plain ints (`IngestCounters`,
`InferenceCounters`) and a collector sums every tracked one at scrape time (`track_ingest`,
`track_inference`), so the stages make no Prometheus calls for their counts. Histograms (times,
sizes) are observed as they happen.

Names (counters get `_total`, histograms `_bucket`/`_sum`/`_count` in the exposition):

- ingest (read at scrape time from every `IngestCounters` this process created, see
  `track_ingest`):
  `merclip_ingest_sessions_active`, `merclip_ingest_sessions_started_total`,
  `merclip_ingest_windows_cut_total`, `merclip_ingest_windows_published_total`,
  `merclip_ingest_windows_dropped_total{reason=backlog|windowing|extraction_error|
  publish_error|unsent}`, `merclip_ingest_windows_unsent` (held during a Redis outage),
  `merclip_ingest_frames_extracted_ahead_total`, `merclip_ingest_frames_deferred_total`,
  `merclip_ingest_frames_dropped_late_total`, `merclip_ingest_frames_encoded_total`,
  `merclip_ingest_frame_batches_total` (frames from all sessions are encoded in batches),
  `merclip_ingest_partials_published_total`, `merclip_ingest_partial_rounds_skipped_busy_total`
  (partials shed under load), `merclip_ingest_partial_errors_total`,
  `merclip_ingest_partial_asr_seconds_total` (busy time of the partials' Whisper thread),
  `merclip_ingest_asr_batches_total`, `merclip_ingest_asr_windows_total` (windows of several
  sessions are transcribed in one batch)
- extraction and queueing time per window: `merclip_stage_seconds{stage=asr|faces|face_encoder|
  text_encoder|audio|queue}` (`observe_extraction`, `observe_event`)
- inference (read at scrape time from every `InferenceCounters`, see `track_inference`):
  `merclip_inference_windows_processed_total`, `..._duplicates_total`,
  `..._skipped_total` (past the deadline), `..._dead_lettered_total`, `..._claimed_total`,
  `merclip_inference_failures_total`, `merclip_inference_batch_seconds`,
  `merclip_inference_batch_size`
- end-to-end latency from the window's end: `merclip_event_latency_seconds{stage=
  features_ready|inference_done|published}`
- from Redis, refreshed by `workers.monitor.Monitor` about once a second:
  `merclip_sessions_active` (sessions with an event in the last minute),
  `merclip_inference_pending_windows` (delivered to the group, not acked),
  `merclip_windows_stream_length` (entries in the work stream), `merclip_events_per_second`,
  `merclip_redis_up`, `merclip_redis_ping_seconds`
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from workers.schemas import EXTRACTION_STAGES

if TYPE_CHECKING:
    from workers.inference import InferenceCounters
    from workers.ingest import IngestCounters
    from workers.schemas import EmotionEvent

__all__ = [
    "BATCH_SECONDS",
    "BATCH_SIZE",
    "EVENT_LATENCY",
    "EVENTS_PER_SECOND",
    "EXTRACTION_STAGES",
    "PENDING_WINDOWS",
    "REDIS_PING",
    "REDIS_UP",
    "SESSIONS_ACTIVE",
    "STAGE_SECONDS",
    "WINDOWS_STREAM_LENGTH",
    "observe_batch",
    "observe_event",
    "observe_extraction",
    "start_metrics_server",
    "track_inference",
    "track_ingest",
]

log = logging.getLogger(__name__)

# Latencies in a live service run from a few ms (one stage) to the 10 s inference deadline.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)

STAGE_SECONDS = Histogram(
    "merclip_stage_seconds",
    "Time one window spends in a stage: extraction stages (asr, faces, face_encoder, text_encoder, "
    "audio) in ingest; queue (features ready -> read by a worker) in inference",
    ["stage"],
    buckets=_LATENCY_BUCKETS,
)
EVENT_LATENCY = Histogram(
    "merclip_event_latency_seconds",
    "Seconds from the window's end to: features_ready, inference_done, published",
    ["stage"],
    buckets=_LATENCY_BUCKETS,
)
BATCH_SECONDS = Histogram(
    "merclip_inference_batch_seconds",
    "Wall time of one predictor call on a batch (including one-by-one retries)",
    buckets=_LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "merclip_inference_batch_size",
    "Windows per predictor batch",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
SESSIONS_ACTIVE = Gauge(
    "merclip_sessions_active", "Sessions with an event in the last minute (from Redis)"
)
PENDING_WINDOWS = Gauge(
    "merclip_inference_pending_windows",
    "Windows delivered to the consumer group and not yet acknowledged (inference lag)",
)
WINDOWS_STREAM_LENGTH = Gauge(
    "merclip_windows_stream_length",
    "Entries in the windows work stream: waiting for a worker or pending (inference lag)",
)
EVENTS_PER_SECOND = Gauge(
    "merclip_events_per_second", "Events (windows inferred) per second over the last 10 s"
)
REDIS_UP = Gauge("merclip_redis_up", "1 when Redis answered the last PING, else 0")
REDIS_PING = Gauge("merclip_redis_ping_seconds", "Round trip of the last PING to Redis")


class _SummingCollector(Collector):
    """Sums a field over every tracked counters object at scrape time.

    The counters objects only ever grow, and are kept after their stage closes (a few ints
    each), so the sums never go down while the process lives: valid Prometheus counters.
    """

    def __init__(self) -> None:
        self._tracked: list[Any] = []
        self._lock = threading.Lock()

    def track(self, counters: Any) -> None:
        with self._lock:
            if not any(c is counters for c in self._tracked):
                self._tracked.append(counters)

    def _sum(self, field: str) -> int:
        with self._lock:
            return sum(int(getattr(c, field, 0)) for c in self._tracked)


class _IngestCollector(_SummingCollector):
    """Every IngestCounters of the process (`track_ingest`)."""

    _DROPS = {
        "backlog": "windows_dropped_backlog",
        "windowing": "windows_dropped_windowing",
        "extraction_error": "extraction_errors",
        "bad_features": "windows_dropped_bad_features",
        "publish_error": "publish_errors",
        "unsent": "windows_dropped_unsent",
    }

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "merclip_ingest_sessions_active",
            "Sessions whose media this process is windowing now",
            value=self._sum("sessions_active"),
        )
        yield GaugeMetricFamily(
            "merclip_ingest_windows_unsent",
            "Windows held back while Redis is unreachable (sent in order once it answers)",
            value=self._sum("windows_unsent"),
        )
        simple = (
            ("sessions_started", "Sessions started in this process"),
            ("windows_cut", "Windows cut from the media streams"),
            ("windows_published", "Windows whose features went to the work stream"),
            ("frames_extracted_ahead", "Sampled frames whose visual features ran on arrival"),
            ("frames_deferred", "Sampled frames skipped: their session's frame jobs were full"),
            ("frames_dropped_late", "Sampled frames shed: their job had not started by window end"),
            ("frames_encoded", "Sampled frames run through faces + CLIP"),
            ("frame_batches", "Batches those frames ran in (frames_encoded / this = batch size)"),
            (
                "audio_samples_dropped_ahead",
                "16 kHz audio samples dropped because a sender ran ahead of real time",
            ),
            ("partials_published", "Partial transcripts published between windows"),
            (
                "partial_rounds_skipped_busy",
                "Partial transcripts not started: a window was waiting for extraction (shed)",
            ),
            ("partial_errors", "Partial transcripts that failed"),
            ("asr_batches", "Whisper calls for windows (windows of several sessions share one)"),
            ("asr_windows", "Windows those calls transcribed (asr_windows / asr_batches = batch)"),
        )
        for field, doc in simple:
            yield CounterMetricFamily(f"merclip_ingest_{field}", doc, value=self._sum(field))
        with self._lock:
            asr_ms = sum(float(getattr(c, "partial_asr_ms", 0.0)) for c in self._tracked)
        yield CounterMetricFamily(
            "merclip_ingest_partial_asr_seconds",
            "Time the partial transcripts' one Whisper thread was busy",
            value=asr_ms / 1000,
        )
        drops = CounterMetricFamily(
            "merclip_ingest_windows_dropped",
            "Windows that never reached the work stream, by reason",
            labels=["reason"],
        )
        for reason, field in self._DROPS.items():
            drops.add_metric([reason], self._sum(field))
        yield drops


class _InferenceCollector(_SummingCollector):
    """Every InferenceCounters of the process (`track_inference`)."""

    _COUNTERS = (
        ("windows_processed", "processed", "Windows whose event was written (or already was)"),
        (
            "windows_duplicates",
            "duplicates",
            "Processed windows whose event an earlier delivery had already written",
        ),
        ("windows_skipped", "skipped", "Windows acked unprocessed: past inference.deadline"),
        ("windows_dead_lettered", "dead_lettered", "Windows moved to the dead-letter stream"),
        (
            "windows_claimed",
            "claimed",
            "Windows taken over from idle consumers (XAUTOCLAIM)",
        ),
        ("failures", "failed", "Window inference attempts that raised (retried later)"),
    )

    def collect(self) -> Iterable[Metric]:
        for name, field, doc in self._COUNTERS:
            yield CounterMetricFamily(f"merclip_inference_{name}", doc, value=self._sum(field))


_INGEST = _IngestCollector()
REGISTRY.register(_INGEST)
_INFERENCE = _InferenceCollector()
REGISTRY.register(_INFERENCE)


def track_ingest(counters: IngestCounters) -> None:
    """Export an ingest pipeline's counters (call once per IngestPipeline)."""
    _INGEST.track(counters)


def track_inference(counters: InferenceCounters) -> None:
    """Export an inference worker's counters (InferenceWorker does, when it is built)."""
    _INFERENCE.track(counters)


def observe_extraction(stage_ms: Mapping[str, float]) -> None:
    """Record a FeatureWindow's extraction times (FeatureWindow.stage_ms, milliseconds).

    Every key is a stage (EXTRACTION_STAGES, plus any the extractor adds later): the label set
    stays small because the extractor's code, not the data, names the stages.
    """
    for stage, ms in stage_ms.items():
        STAGE_SECONDS.labels(stage).observe(max(0.0, float(ms)) / 1000.0)


def observe_event(event: EmotionEvent) -> None:
    """Record a written event's end-to-end latency and its queueing time."""
    lat = event.latency
    EVENT_LATENCY.labels("features_ready").observe(max(0.0, lat.features_ready_ms) / 1000.0)
    EVENT_LATENCY.labels("inference_done").observe(max(0.0, lat.inference_done_ms) / 1000.0)
    EVENT_LATENCY.labels("published").observe(max(0.0, lat.published_ms) / 1000.0)
    queue_ms = event.stage_ms.get("queue")
    if queue_ms is not None:
        STAGE_SECONDS.labels("queue").observe(max(0.0, float(queue_ms)) / 1000.0)


def observe_batch(size: int, seconds: float) -> None:
    BATCH_SIZE.observe(size)
    BATCH_SECONDS.observe(seconds)


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> int:
    """Serve the default registry at http://addr:port/metrics in a daemon thread (for `merclip
    infer`, which has no HTTP server of its own). port 0 picks a free port; returns the port."""
    server, _thread = start_http_server(port, addr=addr)
    bound = int(server.server_port)
    log.info("Prometheus metrics at http://%s:%d/metrics", addr, bound)
    return bound
