"""Security headers on every response of the service and of `merclip dashboard` (review L5, L6).

Both pages load only their own script and style (no inline script, no CDN, no frames), so one
policy fits every response:

- `Content-Security-Policy`: scripts, styles and connections (fetch, EventSource) from this
  origin only, so an injected `<script>` or an exfiltrating request is refused even if markup
  ever slipped through (the pages build everything with textContent). `img-src data:` is the
  dashboard's empty favicon; `frame-ancestors 'none'` forbids framing (clickjacking), with
  `X-Frame-Options: DENY` for browsers that predate it.
- `X-Content-Type-Options: nosniff`: a JSON or text answer is never run as script or style.
- `Referrer-Policy: no-referrer`: the page may be opened as `/?token=...`; no request it makes
  (nor a link followed from it) carries that URL to anyone in a Referer header.

Setting a style through the CSSOM (`el.style.width = ...`, as the pages do) is not an inline
style for CSP, so `style-src 'self'` needs no `'unsafe-inline'`.
"""

from __future__ import annotations

from aiohttp import web

__all__ = ["SECURITY_HEADERS", "add_security_headers"]

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def _set_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def add_security_headers(app: web.Application) -> None:
    """Send SECURITY_HEADERS with every response of `app` (before it starts; idempotent)."""
    if _set_headers not in app.on_response_prepare:
        app.on_response_prepare.append(_set_headers)
