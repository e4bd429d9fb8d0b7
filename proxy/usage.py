"""Token counts read from an LLM stream's lines (``usage:`` on a route): Ollama puts
``prompt_eval_count`` and ``eval_count`` on its last line, OpenAI a ``usage`` object on its last
chunk. Both are totals, so the last value seen wins.

Cheap on the hot path: a line is parsed only when it holds the pointer's last member name (a
byte search in C), so ordinary token lines cost one ``in`` per pointer.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from .errors import PointerNotFound
from .pointer import JsonPointer

__all__ = ["UsagePointers", "UsageTally"]


@dataclass(frozen=True, slots=True, kw_only=True)
class UsagePointers:
    prompt_tokens: JsonPointer | None
    completion_tokens: JsonPointer | None


class UsageTally:
    __slots__ = ("_needles", "_pointers", "completion_tokens", "prompt_tokens")

    def __init__(self, pointers: UsagePointers) -> None:
        self._pointers = pointers
        self._needles = tuple(
            _needle(pointer)
            for pointer in (pointers.prompt_tokens, pointers.completion_tokens)
            if pointer is not None
        )
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None

    def scan(self, lines: list[bytes]) -> None:
        needles = self._needles
        for line in lines:
            for needle in needles:
                if needle in line:
                    self._read(line)
                    break

    def _read(self, line: bytes) -> None:
        try:
            document = orjson.loads(line)
        except orjson.JSONDecodeError:
            return
        pointers = self._pointers
        if (prompt := _count(pointers.prompt_tokens, document)) is not None:
            self.prompt_tokens = prompt
        if (completion := _count(pointers.completion_tokens, document)) is not None:
            self.completion_tokens = completion


def _needle(pointer: JsonPointer) -> bytes:
    """The member name a line must hold for the pointer to resolve (quoted, as JSON writes it);
    an array index is no such name, so the last name before it is taken."""
    names = [token for token in pointer.tokens if not token.isdigit()]
    return orjson.dumps(names[-1]) if names else b""


def _count(pointer: JsonPointer | None, document: object) -> int | None:
    if pointer is None:
        return None
    try:
        value = pointer.resolve(document)
    except PointerNotFound:
        return None
    return value if type(value) is int and value >= 0 else None
