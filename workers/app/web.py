"""Serving an aiohttp app on a TCP port, for `serve`/`ingest` and `dashboard`."""

from __future__ import annotations

from typing import Any

from aiohttp import web

__all__ = ["shown_url", "start_site"]

_LOOPBACK_NAMES = ("127.0.0.1", "::1", "localhost")


async def start_site(runner: web.AppRunner, host: str, port: int) -> int:
    """Open `host:port` (0 = any free port) for an already set-up runner; the bound port."""
    site = web.TCPSite(runner, host, port)
    await site.start()
    addresses: list[Any] = runner.addresses  # (host, port, ...) per listening socket
    return int(addresses[0][1]) if addresses else port


def shown_url(host: str, port: int, path: str = "/") -> str:
    """The address to print: "localhost" for a loopback bind, which a browser treats as a
    secure context (getUserMedia works there without TLS)."""
    shown = "localhost" if host in _LOOPBACK_NAMES else host
    return f"http://{shown}:{port}{path}"
