"""The live service of one machine: Redis (embedded or shared), models, ingest, inference, HTTP.

`merclip serve` runs both roles; `merclip ingest` only the WebRTC + extraction role against a
shared Redis (inference workers run elsewhere with `merclip infer`). Models are loaded at start-up,
before the HTTP port opens, so the first session does not pay for them.

Draining (`drain_when_asked`): once the session registry is told to drain (SIGUSR2, or
`server.recycle_after_sessions`), new offers get 503 `draining`, the live sessions go on until
they end (at most `server.drain_timeout_seconds` when set), their last windows are extracted and
handed to Redis, and on the embedded Redis (where no other worker exists) inferred too; then the
caller stops the service as after SIGTERM and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any, Literal

import torch
from aiohttp import web

from stream.app import REGISTRY, create_app, runner_options
from stream.dashboard import DASHBOARD_REPLAY, add_dashboard
from workers import metrics
from workers.app.settings import Settings
from workers.app.web import shown_url, start_site
from workers.bus import Bus
from workers.features.asr import Transcriber
from workers.features.extractor import WindowExtractor
from workers.ingest import IngestPipeline
from workers.monitor import Monitor
from workers.partials import PARTIAL_CONTEXT_SECONDS
from workers.redis_server import EmbeddedRedis
from workers.schemas import FeatureWindow
from workers.subscriber import EventHub

__all__ = ["LiveService", "Role"]

log = logging.getLogger(__name__)

Role = Literal["ingest", "infer"]
EVENT_REPLAY = 50
DRAIN_FLUSH_SECONDS = 60.0
"""After the last session of a drain ends: how long its windows may take to be sent (and, with
the infer role, inferred) before the service stops anyway."""


class LiveService:
    """Start with `async with LiveService(settings) as svc:`; `svc.url` is the page address."""

    def __init__(self, settings: Settings, roles: tuple[Role, ...] = ("ingest", "infer")) -> None:
        unknown = set(roles) - {"ingest", "infer"}
        if unknown:
            raise ValueError(f"unknown roles {sorted(unknown)}")
        self.settings = settings
        self.roles = roles
        self.redis_url = settings.redis.url
        self.embedded_redis: EmbeddedRedis | None = None
        self.bus: Bus | None = None
        self.hub: EventHub | None = None
        self.pipeline: IngestPipeline | None = None
        self.worker: Any = None
        self.monitor: Monitor | None = None
        self.app: web.Application | None = None
        self.port = 0
        self._stack = contextlib.AsyncExitStack()

    @property
    def url(self) -> str:
        return shown_url(self.settings.server.host, self.port)

    async def start(self) -> None:
        stack = self._stack
        s = self.settings
        # Several extraction threads each running torch with all cores would oversubscribe them.
        torch.set_num_threads(max(1, (torch.get_num_threads() or 1) // s.ingest.extract_threads))
        if not self.redis_url:
            # A random password: other local users' processes could otherwise read every
            # transcript and publish forged events on 127.0.0.1 (review M6). Processes of this
            # user find the URL in url_file (0600).
            self.embedded_redis = EmbeddedRedis(password=secrets.token_urlsafe(24))
            await stack.enter_async_context(self.embedded_redis)
            self.redis_url = self.embedded_redis.url
            log.info(
                "started embedded Redis at %s; its URL with the password is in %s (readable by "
                "this user only; set redis.url to share a Redis of your own)",
                self.embedded_redis.redacted_url,
                self.embedded_redis.url_file,
            )
        self.bus = await stack.enter_async_context(Bus.connect(self.redis_url, s.redis))
        # Every event stream of the process on one pub/sub connection (review M3).
        self.hub = EventHub(self.bus)
        stack.push_async_callback(self.hub.aclose)
        # Overview numbers and the Redis-side gauges (sessions, lag, Redis health).
        self.monitor = await stack.enter_async_context(Monitor(self.bus, s))

        extractor = None
        if "ingest" in self.roles:
            extractor = await asyncio.to_thread(WindowExtractor.from_settings, s)
            await asyncio.to_thread(extractor.warm_up)

        if "infer" in self.roles:
            from merclip.predictor import Predictor
            from workers.inference import InferenceWorker

            # One CLIP in memory per process: the zero-shot label prompts use the extractor's.
            shared_clip = extractor.clip if extractor is not None else None
            predictor = await asyncio.to_thread(Predictor.from_settings, s, shared_clip)
            self.worker = InferenceWorker(s, self.bus, predictor)
            await stack.enter_async_context(self.worker)

        if extractor is not None:
            partial_asr = None
            if extractor.asr is not None and s.asr.partial_seconds > 0:
                partial_asr = await asyncio.to_thread(
                    Transcriber.from_settings,
                    s.asr,
                    context_seconds=PARTIAL_CONTEXT_SECONDS,
                    cpu_threads=1,  # at most one core (workers/partials.py)
                )
            self.pipeline = IngestPipeline(
                s,
                extractor,
                self._publish_window,
                partial_asr=partial_asr,
                publish_partial=self.bus.publish_partial,
            )
            metrics.track_ingest(self.pipeline.counters)
            stack.push_async_callback(self.pipeline.aclose)
            self.app = create_app(s, self.pipeline.sink_factory, self._events)
            add_dashboard(self.app, self._all_events, self.overview)
            runner = web.AppRunner(self.app, handle_signals=False, **runner_options(s))
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            self.port = await start_site(runner, s.server.host, s.server.port)
            log.info("serving at %s", self.url)

    def drain(self) -> None:
        """Take no new session from now on (SIGUSR2); `drain_when_asked` does the rest."""
        if self.app is not None:
            self.app[REGISTRY].drain()

    async def drain_when_asked(self) -> None:
        """Wait until a drain is asked for, then until it is done (see the module docstring).
        Never returns for a service without the ingest role."""
        if self.app is None or self.pipeline is None:
            await asyncio.Event().wait()
        assert self.app is not None and self.pipeline is not None and self.bus is not None
        registry = self.app[REGISTRY]
        await registry.wait_drain_requested()
        log.info(
            "draining: new offers get 503 draining; waiting for %d live sessions to end",
            registry.count,
        )
        limit = self.settings.server.drain_timeout_seconds or None
        try:
            async with asyncio.timeout(limit):
                await registry.wait_empty()
        except TimeoutError:
            log.warning("drain: %d sessions still live after %.0f s: closed", registry.count, limit)
            await registry.aclose_all("shutdown")
        pipeline = self.pipeline
        try:
            async with asyncio.timeout(DRAIN_FLUSH_SECONDS):
                # Each ended session's last windows: cut on close, then extracted and sent.
                while pipeline.sessions or pipeline.counters.windows_unsent:
                    await asyncio.gather(*(s.wait_done() for s in pipeline.sessions.values()))
                    await asyncio.sleep(0.1)
                # On the embedded Redis no other worker will infer them. Acked windows are
                # deleted: an empty work stream is one with nothing left to infer.
                while self.embedded_redis is not None and await self.bus.windows_length():
                    await asyncio.sleep(0.1)
        except TimeoutError:
            log.warning("drain: windows still in flight after %.0f s", DRAIN_FLUSH_SECONDS)
        log.info(
            "drained: %d sessions served, %d windows published",
            registry.admitted,
            pipeline.counters.windows_published,
        )

    async def _publish_window(self, fw: FeatureWindow) -> str:
        assert self.bus is not None
        metrics.observe_extraction(fw.stage_ms)
        return await self.bus.add_window(fw)

    async def _all_events(self) -> AsyncIterator[dict[str, Any]]:
        """Every session's events for the dashboard: recent history, then live."""
        assert self.hub is not None
        async for event in self.hub.events(replay=DASHBOARD_REPLAY):
            yield event.to_json_dict()

    async def overview(self) -> dict[str, Any]:
        """The dashboard's overview: Redis numbers plus this process's own counters."""
        assert self.monitor is not None
        out = dict(await self.monitor.overview())
        process: dict[str, Any] = {}
        if self.app is not None:
            process["webrtc_sessions"] = self.app[REGISTRY].count
            process["draining"] = self.app[REGISTRY].draining
        if self.pipeline is not None:
            process["ingest"] = dataclasses.asdict(self.pipeline.counters)
        if self.worker is not None:
            process["inference"] = self.worker.stats()
        out["process"] = process
        return out

    async def _events(self, session_id: str) -> AsyncIterator[dict[str, Any]]:
        """Events of one session for its page: recent history, then live, with the partial
        transcripts between them (SSE `event: partial`)."""
        assert self.hub is not None
        async for event in self.hub.events(session_id, replay=EVENT_REPLAY, partials=True):
            yield event.to_json_dict()

    async def aclose(self, timeout: float = 60.0) -> None:
        """Stop every part, most recent first; give up (logged) after `timeout` seconds."""
        try:
            await asyncio.wait_for(self._stack.aclose(), timeout)
        except TimeoutError:
            log.error("live service did not stop within %.0f s; abandoning what is left", timeout)

    async def __aenter__(self) -> LiveService:
        try:
            await self.start()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
