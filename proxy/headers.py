"""Header names that are the business of each hop, never forwarded: shared by the configuration
(which refuses them in ``forward_headers``) and the request builder (which drops them)."""

from __future__ import annotations

from typing import Final

__all__ = ["HOP_BY_HOP_HEADERS"]

HOP_BY_HOP_HEADERS: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        # Not hop-by-hop by RFC 9110, but always the gateway's own business on each leg.
        "host",
        "content-length",
    }
)
