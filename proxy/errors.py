"""The gateway's exceptions, one small tree.

    GatewayError
    ├── ConfigError            the config file is wrong; the message names the key
    ├── PointerError           JSON Pointer (RFC 6901) trouble
    │   ├── InvalidPointer     bad pointer syntax (a ValueError, caught at config time)
    │   └── PointerNotFound    the document has nothing there (a LookupError)
    ├── StreamError            the upstream body broke a rule mid-stream; becomes an SSE error event
    │   └── LineTooLong        a line (or SSE event) longer than max_line_bytes
    └── HTTPFailure            a request that ends before the stream starts, with an HTTP status
        ├── BadRequest         400/413: the client's body or query cannot be used
        └── UpstreamFailure    502/504 or the upstream's own 4xx/5xx

A decoder that meets a :class:`StreamError` returns what was complete before it and raises it on
its next call, so an exception never carries partial output.

Every error that reaches a client carries a stable ``code`` (snake_case) next to its message, so
clients can branch on it without parsing English.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "BadRequest",
    "ConfigError",
    "GatewayError",
    "HTTPFailure",
    "InvalidPointer",
    "LineTooLong",
    "PointerError",
    "PointerNotFound",
    "StreamError",
    "UpstreamFailure",
]


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The configuration cannot be used. ``str()`` is one line that names the offending key."""


class PointerError(GatewayError):
    pass


class InvalidPointer(PointerError, ValueError):
    pass


class PointerNotFound(PointerError, LookupError):
    pass


class StreamError(GatewayError):
    """The upstream body cannot be converted any further; the stream ends with an error event."""

    code = "upstream_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class LineTooLong(StreamError):
    def __init__(self, line_number: int | None, limit: int) -> None:
        what = "an event stream line or event" if line_number is None else f"line {line_number}"
        super().__init__(f"{what} is longer than max_line_bytes ({limit})", code="line_too_long")
        self.line_number = line_number
        self.limit = limit


class HTTPFailure(GatewayError):
    """Ends a request before any stream byte was sent: an HTTP status and a JSON error body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        upstream_status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.upstream_status = upstream_status
        self.headers = dict(headers or {})
        """Sent with the JSON error: ``Retry-After`` for a 503, ``WWW-Authenticate`` for a 401."""


class BadRequest(HTTPFailure):
    def __init__(self, message: str, *, code: str = "bad_request", status: int = 400) -> None:
        super().__init__(status, code, message)


class UpstreamFailure(HTTPFailure):
    pass
