"""SSE parsing conformance: our SSEParser against the spec's table.

The cases (tests/support/conformance.py) cover what web-platform-tests ``eventsource/`` and
rexxars/eventsource-parser test, each written as exact bytes and the events the spec's "event
stream interpretation" dispatches. Every case fed to SSEParser whole, one byte at a time, at every
two-way split and at random split points must give the table's events, ids and retries. Chromium,
the reference, reads the same cases in tests/clients/test_sse_conformance_in_chromium.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.chunking import CHUNKERS, split_at
from tests.support.conformance import CASES, Case, event_names, parse_chunks

CASE_PARAMS = [pytest.param(each, id=each.id) for each in CASES]


def two_way_split_points(raw: bytes) -> list[int]:
    """Every split point of a short case. A long one gets the points near its ends and its line
    breaks, and a stride through the middle: all of them would cost seconds for nothing new."""
    if len(raw) <= 8192:
        return list(range(len(raw) + 1))
    points = {*range(64), *range(len(raw) - 64, len(raw) + 1), *range(0, len(raw), 997)}
    for index, byte in enumerate(raw):
        if byte in b"\r\n":
            points.update(range(max(0, index - 4), min(len(raw), index + 5)))
    return sorted(points)


# -- the table itself ------------------------------------------------------------------------------


def test_case_ids_are_unique():
    ids = [each.id for each in CASES]
    assert len(ids) == len(set(ids))


def test_no_case_uses_an_event_type_the_browser_harness_listens_to_itself():
    # The page learns of the end of a case from "error" and of the connection from "open".
    assert not {"error", "open"} & set(event_names(CASES))


# -- pure: our parser against the table -----------------------------------------------------------


@pytest.mark.parametrize("chunker", CHUNKERS)
@pytest.mark.parametrize("case", CASE_PARAMS)
def test_parser_gives_the_spec_events_whole_and_byte_by_byte(case: Case, chunker):
    assert parse_chunks(chunker(case.raw)) == list(case.expected)


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_parser_gives_the_spec_events_at_every_two_way_split(case: Case):
    wrong = {
        point: got
        for point in two_way_split_points(case.raw)
        if (got := parse_chunks(split_at(case.raw, [point]))) != list(case.expected)
    }
    assert not wrong, f"split points giving other events: {sorted(wrong)[:20]}"


@settings(max_examples=20, deadline=None)
@given(data=st.data())
@pytest.mark.parametrize("case", CASE_PARAMS)
def test_parser_gives_the_spec_events_at_random_split_points(case: Case, data):
    # At most a dozen cuts: chunking.splits() would draw up to len(raw) of them.
    cuts = data.draw(st.lists(st.integers(0, len(case.raw)), max_size=12))
    assert parse_chunks(split_at(case.raw, cuts)) == list(case.expected)
