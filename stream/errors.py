"""Errors of stream/, server and clients. Each says what failed and what the client should do.

`StreamError` (under merclip.errors.MerClipError, the one root) is the base of them all.

Server: `OfferError` and its subclasses carry the HTTP status and a short machine-readable
`error` code; the server turns them into `{"error": code, "detail": message}` JSON responses
(`error_response`, the one shape of every error answer).

Clients (stream/clients/): `OfferRejectedError` is the server's answer to an offer as the client
sees it; `CaptureError` and `NoDeviceError` are what `merclip capture` reports.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from merclip.errors import MerClipError

__all__ = [
    "BadOfferError",
    "CaptureError",
    "DrainingError",
    "ForbiddenError",
    "NoDeviceError",
    "OfferError",
    "OfferRejectedError",
    "PayloadTooLargeError",
    "RequestTimeoutError",
    "ServerFullError",
    "SessionBusyError",
    "StreamError",
    "UnsupportedMediaTypeError",
    "error_response",
]


class StreamError(MerClipError):
    """Base class of the errors raised by stream/."""


def error_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> web.Response:
    """The JSON answer `{"error": code, "detail": detail}` with HTTP `status`."""
    return web.json_response({"error": code, "detail": detail}, status=status, headers=headers)


# -- server -----------------------------------------------------------------------------------


class OfferError(StreamError):
    """A POST /offer that cannot be served. `status` is the HTTP status to answer with."""

    status: int = 400
    code: str = "bad_offer"

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code

    def to_json(self) -> dict[str, str]:
        return {"error": self.code, "detail": self.detail}


class BadOfferError(OfferError):
    """The offer body is malformed: bad JSON, missing or wrong fields, unusable SDP."""


class ForbiddenError(OfferError):
    """The access token does not grant this offer (another session)."""

    status = 403
    code = "forbidden"


class PayloadTooLargeError(OfferError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaTypeError(OfferError):
    status = 415
    code = "unsupported_media_type"


class RequestTimeoutError(OfferError):
    """The body did not arrive within `server.read_timeout_seconds` (a stalled or slowloris
    client); the connection is closed after the answer."""

    status = 408
    code = "body_timeout"


class SessionBusyError(OfferError):
    """Another offer for the same session id is being set up; the client should retry."""

    status = 409
    code = "session_busy"


class ServerFullError(OfferError):
    """Every session slot is taken; the client should retry after `retry_after` seconds."""

    status = 503
    code = "server_full"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class DrainingError(ServerFullError):
    """The server is draining (about to be recycled): it finishes its live sessions but takes no
    new one; the client should retry, and a load balancer sends it to another node."""

    code = "draining"


# -- clients ----------------------------------------------------------------------------------


class OfferRejectedError(StreamError):
    """The server answered the offer with an error (its JSON `error` and `detail` included)."""

    def __init__(self, status: int, body: Any, retry_after: float | None = None) -> None:
        self.status = status
        self.body = body
        self.retry_after = retry_after
        """Seconds from the Retry-After header (a full server), else None."""
        detail = body.get("detail") if isinstance(body, dict) else body
        super().__init__(f"the server refused the offer (HTTP {status}): {detail}")


class CaptureError(StreamError):
    """The capture client could not run (a device failed, the connection failed)."""


class NoDeviceError(CaptureError):
    """The camera and/or microphone asked for is not there."""

    exit_code = 2  # name another device (--camera/--mic) or none: fix the command, not retry
