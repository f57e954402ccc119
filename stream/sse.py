"""Server-sent events: relay an async source of JSON-able events to one HTTP client.

Both the events endpoint (`/events`, stream/app.py) and the dashboard feed (stream/dashboard.py)
relay a Redis subscription to a browser, each through `serve_feed`. A pump task fills a bounded
`DropOldestQueue`, so a slow page never stalls the subscription behind it: when the queue is
full the oldest queued event is dropped and counted. A comment line every `keepalive_s` keeps
proxies from closing an idle stream.

Streams are capped per app (`StreamLimit`, from server.max_event_streams): beyond the cap a new
stream is refused with 503 + Retry-After before anything is opened for it (review M3: streams
were unbounded, each with Redis connections of its own, until the fds ran out). The same
`StreamLimit` tracks the streams open now, so that the app's shutdown cancels them
(`add_stream_limit`): an open stream otherwise waits for its next event or keep-alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import Counter, Gauge

from stream.drop_oldest import DropOldestQueue

__all__ = [
    "EVENT_ID_RE",
    "KEEPALIVE_SECONDS",
    "STREAM_LIMIT",
    "StreamLimit",
    "add_stream_limit",
    "relay",
    "serve_feed",
    "sse_message",
]

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 15.0
RETRY_AFTER_SECONDS = 5

STREAMS_OPEN = Gauge("merclip_sse_streams", "Server-sent event streams open now")
STREAMS_REFUSED = Counter(
    "merclip_sse_streams_refused",
    "Event streams refused because server.max_event_streams were open",
)


class StreamLimit:
    """At most `limit` event streams open at once (all SSE routes of one app together), and the
    tasks serving the open ones (`relay` adds and removes them)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self.tasks: set[asyncio.Task[Any]] = set()
        """The request tasks of the open streams, cancelled on shutdown."""

    def refusal(self) -> web.Response | None:
        """The 503 to send when every stream slot is taken, else None."""
        if self.open < self.limit:
            return None
        STREAMS_REFUSED.inc()
        return web.json_response(
            {
                "error": "too_many_streams",
                "detail": f"all {self.limit} event streams of this server are open "
                "(server.max_event_streams); retry later",
            },
            status=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    def cancel_all(self) -> None:
        """Cancel every open stream (the app is shutting down)."""
        for task in list(self.tasks):
            task.cancel()


STREAM_LIMIT = web.AppKey("merclip_stream_limit", StreamLimit)
"""app[STREAM_LIMIT]: the cap shared by /events/* and /dashboard/events of one app."""


def add_stream_limit(app: web.Application, max_streams: int) -> StreamLimit:
    """Give `app` a stream cap of `max_streams` (unless it has one: the first caller sets it) and
    cancel its open streams on shutdown. Before the app starts; idempotent."""
    if STREAM_LIMIT not in app:
        app[STREAM_LIMIT] = StreamLimit(max_streams)
    if _cancel_streams not in app.on_shutdown:
        app.on_shutdown.append(_cancel_streams)
    return app[STREAM_LIMIT]


async def _cancel_streams(app: web.Application) -> None:
    app[STREAM_LIMIT].cancel_all()


async def serve_feed(
    request: web.Request,
    open_source: Callable[[], AsyncIterator[Mapping[str, Any]]],
    *,
    queue_size: int,
    dropped_counter: Counter,
    what: str,
) -> web.StreamResponse:
    """An SSE route's answer: 503 when the app's streams are all open (before `open_source` is
    called, so nothing is opened for a refused stream), else `relay` of the source it opens,
    counted and tracked by the app's StreamLimit (`add_stream_limit`)."""
    limit = request.app[STREAM_LIMIT]
    refused = limit.refusal()  # before the factory opens anything
    if refused is not None:
        return refused
    return await relay(
        request,
        open_source(),
        queue_size=queue_size,
        dropped_counter=dropped_counter,
        what=what,
        limit=limit,
    )


async def relay(
    request: web.Request,
    source: AsyncIterator[Mapping[str, Any]],
    *,
    queue_size: int,
    dropped_counter: Counter,
    what: str,
    keepalive_s: float = KEEPALIVE_SECONDS,
    limit: StreamLimit | None = None,
) -> web.StreamResponse:
    """Stream `source` to the client until it ends or the client goes away; then close it.
    `what` names the feed in logs; `dropped_counter` counts events dropped for a slow client.
    With `limit` full, the stream is refused (503) and `source` is closed unread; otherwise the
    stream counts against `limit` and its task is tracked there (cancelled on shutdown)."""
    refused = limit.refusal() if limit is not None else None
    if refused is not None:
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
        return refused
    task = asyncio.current_task()
    assert task is not None  # aiohttp runs each request handler in a task
    if limit is not None:
        limit.open += 1
        limit.tasks.add(task)
    STREAMS_OPEN.inc()
    try:
        return await _relay(request, source, queue_size, dropped_counter, what, keepalive_s)
    finally:
        STREAMS_OPEN.dec()
        if limit is not None:
            limit.open -= 1
            limit.tasks.discard(task)


async def _relay(
    request: web.Request,
    source: AsyncIterator[Mapping[str, Any]],
    queue_size: int,
    dropped_counter: Counter,
    what: str,
    keepalive_s: float,
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    queue: DropOldestQueue[Mapping[str, Any]] = DropOldestQueue(queue_size)

    async def pump() -> None:
        try:
            async for event in source:
                if queue.put(event) is not None:
                    dropped_counter.inc()
        except Exception as exc:  # noqa: BLE001 - the feed ends; the client reconnects
            log.warning("%s feed ended: %s", what, exc)
        finally:
            queue.close()

    pump_task = asyncio.create_task(pump(), name=f"{what}-sse-pump")
    try:
        await response.write(b"retry: 2000\n\n")
        while True:
            if not await queue.wait(keepalive_s):
                await response.write(b": keep-alive\n\n")
                continue
            if not queue:  # closed, and everything before the end was sent
                break
            await response.write(sse_message(queue.get_nowait()))
    except ConnectionResetError:
        pass  # the page went away
    finally:
        pump_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pump_task
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
        if queue.dropped:
            log.info("%s: dropped %d events for a slow page", what, queue.dropped)
    return response


EVENT_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
"""Event ids sent as `id:` (event_id_for gives 24 hex digits). Anything else, e.g. an id with
`\r` that a parser reads as a line end and so as a second field (review M6), is left out: the
page still gets the event in `data:`."""


def sse_message(event: Mapping[str, Any]) -> bytes:
    """One SSE message: `id:` the event id (so a reconnecting page can say where it was), `data:`
    the event as compact JSON. Non-finite numbers are sent as null: NaN is not JSON, and a page's
    JSON.parse drops the whole event over one (review M5). A partial transcript (`"partial":
    true`) is sent as `event: partial` with no id: EventSource's onmessage never sees it, so a
    client that knows only events is unaffected, and a reconnect does not resume from it."""
    if event.get("partial") is True:
        data = json.dumps(_finite_or_null(event), separators=(",", ":"), allow_nan=False)
        return f"event: partial\ndata: {data}\n\n".encode()
    lines = []
    event_id = event.get("event_id")
    if isinstance(event_id, str) and EVENT_ID_RE.fullmatch(event_id):
        lines.append(f"id: {event_id}")
    try:
        data = json.dumps(event, separators=(",", ":"), allow_nan=False)
    except ValueError:
        data = json.dumps(_finite_or_null(event), separators=(",", ":"), allow_nan=False)
    lines.append("data: " + data)
    return ("\n".join(lines) + "\n\n").encode()


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value
