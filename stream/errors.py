"""Errors of the WebRTC ingest server. Each says what failed and what the client should do.

`OfferError` and its subclasses carry the HTTP status and a short machine-readable `error` code;
the server turns them into `{"error": code, "detail": message}` JSON responses.
"""

from __future__ import annotations

from merclip.errors import MerClipError

__all__ = [
    "BadOfferError",
    "ForbiddenError",
    "OfferError",
    "PayloadTooLargeError",
    "ServerFullError",
    "SessionBusyError",
    "StreamError",
    "UnsupportedMediaTypeError",
]


class StreamError(MerClipError):
    """Base class of the errors raised by stream/."""


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
