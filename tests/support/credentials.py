"""The credentials of the auth tests: an API key, an HS256 secret, and tokens signed with it."""

from __future__ import annotations

import time
from typing import Any

import jwt

__all__ = ["KEY", "SECRET", "future", "hs256"]

KEY = "k-0123456789abcdef"
SECRET = "s3cret-for-hs256-that-is-long-enough!"


def hs256(claims: dict[str, Any], secret: str = SECRET, **headers: Any) -> str:
    return jwt.encode(claims, secret, algorithm="HS256", headers=headers or None)


def future(seconds: int = 300) -> int:
    """A Unix time ``seconds`` from now (in the past when negative)."""
    return int(time.time()) + seconds
