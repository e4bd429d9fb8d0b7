"""The pure parts behind the LLM figures: a stream's timeline of gaps (buckets, percentiles) and
the token counts read from its lines."""

from __future__ import annotations

import pytest

from proxy.pointer import JsonPointer
from proxy.timeline import GAP_BUCKETS, Timeline
from proxy.usage import UsagePointers, UsageTally


def timeline_of(*gaps: float) -> Timeline:
    timeline = Timeline()
    now = 100.0
    timeline.mark(now)
    for gap in gaps:
        now += gap
        timeline.mark(now)
    return timeline


def test_one_mark_is_no_gap_and_holds_no_buckets():
    timeline = timeline_of()
    assert (timeline.gaps, timeline.counts, timeline.percentile(0.5)) == (0, [], None)


def test_percentiles_are_the_upper_bounds_of_the_buckets_where_the_rank_falls():
    timeline = timeline_of(*([0.004] * 98), 0.2, 0.7)
    assert timeline.gaps == 100
    assert timeline.percentile(0.5) == 0.005
    assert timeline.percentile(0.98) == 0.005
    assert timeline.percentile(0.99) == 0.25
    assert timeline.percentile(1.0) == pytest.approx(0.7)  # its bucket goes to 1 s; no gap did
    assert timeline.longest == pytest.approx(0.7)
    assert timeline.total == pytest.approx(98 * 0.004 + 0.9)


def test_a_percentile_is_never_past_the_longest_gap():
    timeline = timeline_of(0.0002, 0.0001)
    assert timeline.percentile(0.5) == pytest.approx(0.0002)
    assert timeline.percentile(0.99) == pytest.approx(0.0002)


def test_a_gap_past_the_last_bound_is_reported_as_the_longest_gap():
    timeline = timeline_of(0.01, 75.0)
    assert timeline.counts[len(GAP_BUCKETS)] == 1
    assert timeline.percentile(0.99) == pytest.approx(75.0)


OLLAMA = UsagePointers(
    prompt_tokens=JsonPointer("/prompt_eval_count"),
    completion_tokens=JsonPointer("/eval_count"),
)
OPENAI = UsagePointers(
    prompt_tokens=JsonPointer("/usage/prompt_tokens"),
    completion_tokens=JsonPointer("/usage/completion_tokens"),
)


def test_ollamas_counts_come_from_its_last_line():
    tally = UsageTally(OLLAMA)
    tally.scan([b'{"message": {"content": "Hi"}, "done": false}'])
    assert (tally.prompt_tokens, tally.completion_tokens) == (None, None)
    tally.scan([b'{"done": true, "prompt_eval_count": 26, "eval_count": 298}'])
    assert (tally.prompt_tokens, tally.completion_tokens) == (26, 298)


def test_openais_usage_chunk_is_read_and_the_last_value_wins():
    tally = UsageTally(OPENAI)
    tally.scan(
        [
            b'{"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1}}',
            b'{"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7}}',
        ]
    )
    assert (tally.prompt_tokens, tally.completion_tokens) == (5, 7)


@pytest.mark.parametrize(
    "line",
    [
        b"not json but eval_count appears",
        b'{"eval_count": "many"}',
        b'{"eval_count": -3}',
        b'{"eval_count": 1.5}',
        b'{"nested": {"eval_count": 4}}',
    ],
)
def test_a_line_without_a_count_at_the_pointer_counts_nothing(line):
    tally = UsageTally(OLLAMA)
    tally.scan([line])
    assert tally.completion_tokens is None
