"""Re-chunking helpers shared by the framer, parser and converter tests.

Every incremental decoder must give the same result whatever the chunk boundaries are (h11's
``t_body_reader``, eventsource-parser's random re-chunking): each case is fed whole, one byte at
a time, and at split points that hypothesis picks. Empty chunks are allowed on purpose, since
``feed(b"")`` must be harmless anywhere in a stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest
from hypothesis import strategies as st

__all__ = ["CHUNKERS", "Chunker", "bytewise", "every_two_way_split", "split_at", "splits", "whole"]


def whole(data: bytes) -> list[bytes]:
    return [data]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def split_at(data: bytes, points: Iterable[int]) -> list[bytes]:
    """``data`` cut at ``points`` (sorted, repeats give empty chunks)."""
    chunks = []
    start = 0
    for point in sorted(points):
        chunks.append(data[start:point])
        start = point
    chunks.append(data[start:])
    return chunks


def every_two_way_split(data: bytes) -> list[list[bytes]]:
    """Each way of cutting ``data`` into two chunks: small inputs can afford to try them all."""
    return [[data[:i], data[i:]] for i in range(len(data) + 1)]


def splits(data: bytes) -> st.SearchStrategy[list[bytes]]:
    """``data`` cut at random points."""
    points = st.lists(st.integers(min_value=0, max_value=len(data)), max_size=max(1, len(data)))
    return points.map(lambda cuts: split_at(data, cuts))


#: The deterministic chunkings, for ``pytest.mark.parametrize("chunker", CHUNKERS)``.
CHUNKERS = [pytest.param(whole, id="whole"), pytest.param(bytewise, id="bytewise")]

Chunker = Callable[[bytes], list[bytes]]
