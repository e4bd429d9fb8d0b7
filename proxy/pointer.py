"""JSON Pointer (RFC 6901), for reading only.

A pointer is parsed once, when the configuration is loaded, into a tuple of reference tokens; a
lookup is then a short loop over already-decoded documents. ``""`` is the whole document; ``~1``
decodes to ``/`` and ``~0`` to ``~`` (in that order, so ``~01`` is ``~1``); an array index is
decimal without leading zeros; ``-`` (the element after the last) never resolves when reading.
"""

from __future__ import annotations

import re
from typing import Any, Final

from .errors import InvalidPointer, PointerNotFound

__all__ = ["JsonPointer"]

_BAD_ESCAPE: Final = re.compile(r"~(?![01])")
_ARRAY_INDEX: Final = re.compile(r"0|[1-9][0-9]*")


class JsonPointer:
    __slots__ = ("text", "tokens")

    def __init__(self, text: str) -> None:
        if text and not text.startswith("/"):
            raise InvalidPointer(f"JSON Pointer {text!r} must be empty or start with '/'")
        if _BAD_ESCAPE.search(text):
            raise InvalidPointer(f"JSON Pointer {text!r}: '~' must be followed by '0' or '1'")
        self.text = text
        self.tokens: tuple[str, ...] = tuple(
            token.replace("~1", "/").replace("~0", "~") for token in text.split("/")[1:]
        )

    def resolve(self, document: Any) -> Any:
        """Return the value the pointer names, or raise :class:`PointerNotFound`."""
        # Fast path: a walk through objects only, which is nearly every real pointer. On decoded
        # JSON it can only succeed where every step was a dict lookup (a list, str or number
        # given a str token raises TypeError), so everything else, every error included, is left
        # to the exact walk below.
        value = document
        try:
            for token in self.tokens:
                value = value[token]
        except (KeyError, TypeError):
            return self._walk(document)
        return value

    def _walk(self, document: Any) -> Any:
        value = document
        for depth, token in enumerate(self.tokens):
            if isinstance(value, dict):
                try:
                    value = value[token]
                except KeyError:
                    raise self._not_found(depth) from None
            elif isinstance(value, list):
                if _ARRAY_INDEX.fullmatch(token) is None or int(token) >= len(value):
                    raise self._not_found(depth)
                value = value[int(token)]
            else:
                raise self._not_found(depth)
        return value

    def _not_found(self, depth: int) -> PointerNotFound:
        return PointerNotFound(
            f"JSON Pointer {self.text} does not resolve ({self.tokens[depth]!r} is missing)"
        )

    def __repr__(self) -> str:
        return f"JsonPointer({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JsonPointer) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)
