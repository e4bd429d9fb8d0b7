"""Secrets out of every text the gateway writes: error bodies, error events, log lines."""

from __future__ import annotations

from collections.abc import Collection

__all__ = ["redact"]


def redact(text: str, secrets: Collection[str]) -> str:
    # Longest first, so a token inside a longer header value leaves no tail behind.
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "[redacted]")
    return text
