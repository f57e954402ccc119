"""GET /metrics for the apps of stream/: the service (stream/app.py) and `merclip dashboard`.

The answer is the Prometheus text format of this process's default registry: stream/'s own
counters (sessions, offers by result, video frames, audio seconds, sessions closed by reason,
events dropped for slow pages, event streams) and anything else in the process that registers
there (ingest, inference, the Redis monitor).
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["metrics_handler"]


async def metrics_handler(request: web.Request) -> web.Response:
    # Prometheus text format of this process's default registry (stream/ and anything else
    # in the process that registers there).
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})
