"""W3C Trace Context for one hop, table-driven: which ``traceparent`` values the spec says to
accept and which to ignore, which ``tracestate`` values may be passed on (and how one is cut to
size), and the pair the upstream gets: the same trace with a new parent, or a new trace."""

from __future__ import annotations

import re

import pytest

from proxy.tracecontext import (
    MAX_TRACESTATE,
    NEW_TRACE_FLAGS,
    SAMPLED,
    TraceContext,
    TraceParent,
    incoming_context,
    new_span_id,
    new_trace_id,
    next_hop,
    parse_traceparent,
    parse_tracestate,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
VALID = f"00-{TRACE_ID}-{PARENT_ID}-01"
HEADER = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


@pytest.mark.parametrize(
    ("values", "parsed"),
    [
        pytest.param([VALID], TraceParent(TRACE_ID, PARENT_ID, 1), id="the-specs-example"),
        pytest.param(
            [f"00-{TRACE_ID}-{PARENT_ID}-00"], TraceParent(TRACE_ID, PARENT_ID, 0), id="unsampled"
        ),
        pytest.param(
            [f" \t{VALID}\t "], TraceParent(TRACE_ID, PARENT_ID, 1), id="optional-whitespace"
        ),
        pytest.param(
            [f"00-{TRACE_ID}-{PARENT_ID}-03"],
            TraceParent(TRACE_ID, PARENT_ID, 3),
            id="level-2s-random-flag-is-kept",
        ),
        pytest.param(
            [f"00-{TRACE_ID}-{PARENT_ID}-ff"],
            TraceParent(TRACE_ID, PARENT_ID, 3),
            id="unknown-flags-are-set-to-zero",
        ),
        pytest.param(
            [f"01-{TRACE_ID}-{PARENT_ID}-01"],
            TraceParent(TRACE_ID, PARENT_ID, 1),
            id="a-later-version-is-read-for-the-fields-we-know",
        ),
        pytest.param(
            [f"cc-{TRACE_ID}-{PARENT_ID}-01-what-the-future-holds"],
            TraceParent(TRACE_ID, PARENT_ID, 1),
            id="a-later-version-may-append-fields-after-a-dash",
        ),
        pytest.param([], None, id="absent"),
        pytest.param([""], None, id="empty"),
        pytest.param([VALID, VALID], None, id="two-field-lines"),
        pytest.param([f"{VALID},{VALID}"], None, id="two-values-in-one-line"),
        pytest.param([f"ff-{TRACE_ID}-{PARENT_ID}-01"], None, id="version-ff-is-forbidden"),
        pytest.param([f"0g-{TRACE_ID}-{PARENT_ID}-01"], None, id="version-not-hex"),
        pytest.param([f"{VALID}-more"], None, id="version-00-with-a-fifth-field"),
        pytest.param([f"{VALID}x"], None, id="version-00-one-character-too-long"),
        pytest.param([VALID[:-1]], None, id="version-00-one-character-short"),
        pytest.param(
            [f"01-{TRACE_ID}-{PARENT_ID}-01x"], None, id="a-later-version-with-no-dash-after-flags"
        ),
        pytest.param([f"00-{'0' * 32}-{PARENT_ID}-01"], None, id="trace-id-all-zero"),
        pytest.param([f"00-{TRACE_ID}-{'0' * 16}-01"], None, id="parent-id-all-zero"),
        pytest.param([VALID.upper()], None, id="upper-case-hex"),
        pytest.param([f"00-{TRACE_ID[:-1]}g-{PARENT_ID}-01"], None, id="trace-id-not-hex"),
        pytest.param([f"00-{TRACE_ID[:-1]}-{PARENT_ID}0-01"], None, id="fields-misaligned"),
        pytest.param([f"00-{TRACE_ID}-{PARENT_ID}-1"], None, id="one-digit-flags"),
        pytest.param([f"00_{TRACE_ID}_{PARENT_ID}_01"], None, id="not-dashes"),
        pytest.param([f"00-{TRACE_ID}-{PARENT_ID}-0x"], None, id="flags-not-hex"),
    ],
)
def test_a_traceparent_is_accepted_only_as_the_spec_says(values, parsed):
    assert parse_traceparent(values) == parsed


def test_the_header_a_hop_sends_is_version_00_whatever_it_received():
    parsed = parse_traceparent([f"cc-{TRACE_ID}-{PARENT_ID}-01-future"])
    assert parsed is not None
    assert parsed.header == VALID


LONG_VALUE = "v" * 120  # a member of 122 characters: not one of the "long" ones
LONGER_VALUE = "w" * 200  # a member of 202 characters: one of them


@pytest.mark.parametrize(
    ("values", "kept"),
    [
        pytest.param(["congo=t61rcWkgMzE"], "congo=t61rcWkgMzE", id="one-member"),
        pytest.param(
            ["rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"],
            "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
            id="two-members-in-order",
        ),
        pytest.param(
            ["rojo=1", "congo=2"], "rojo=1,congo=2", id="field-lines-joined-as-a-list-header"
        ),
        pytest.param(["rojo=1 ,\t congo=2"], "rojo=1,congo=2", id="whitespace-around-commas"),
        pytest.param(["rojo=1,,  ,congo=2"], "rojo=1,congo=2", id="empty-members-are-dropped"),
        pytest.param(["tenant@vendor=x"], "tenant@vendor=x", id="a-multi-tenant-key"),
        pytest.param(
            ["k_-*/9=a value with spaces!"],
            "k_-*/9=a value with spaces!",
            id="key-and-value-characters",
        ),
        pytest.param([], None, id="absent"),
        pytest.param([" , "], None, id="only-empty-members"),
        pytest.param(["rojo=1,rojo=2"], None, id="a-key-twice"),
        pytest.param(["Rojo=1"], None, id="an-upper-case-key"),
        pytest.param(["rojo"], None, id="no-equals-sign"),
        pytest.param(["rojo="], None, id="an-empty-value"),
        pytest.param([f"rojo={'v' * 256}"], f"rojo={'v' * 256}", id="a-value-of-256-characters"),
        pytest.param([f"rojo={'v' * 257}"], None, id="a-value-of-257-characters"),
        pytest.param(["rojo = 1"], None, id="whitespace-around-the-equals-sign"),
        pytest.param(["rojo=a=b"], None, id="an-equals-sign-in-the-value"),
        pytest.param(["rojo=caf\u00e9"], None, id="a-non-ascii-value"),
        pytest.param(["@vendor=x"], None, id="an-empty-tenant"),
        pytest.param(["tenant@=x"], None, id="an-empty-system"),
        pytest.param(["tenant@vendorvendorvendor=x"], None, id="a-system-id-too-long"),
        pytest.param([",".join(f"k{n}=v" for n in range(33))], None, id="more-than-32-members"),
    ],
)
def test_a_tracestate_is_passed_on_only_when_it_is_well_formed(values, kept):
    assert parse_tracestate(values) == kept


def test_thirty_two_members_are_allowed():
    members = ",".join(f"k{n}=v" for n in range(32))
    assert parse_tracestate([members]) == members


def test_a_tracestate_over_the_size_loses_its_long_members_first():
    front = [f"a{n}={LONG_VALUE}" for n in range(3)]
    members = [*front, f"long={LONGER_VALUE}", f"b={LONG_VALUE}"]
    kept = parse_tracestate([",".join(members)])
    assert kept == ",".join([*front, f"b={LONG_VALUE}"])


def test_a_tracestate_still_over_the_size_loses_members_from_the_end():
    members = [f"k{n}={LONG_VALUE}" for n in range(6)]  # 6 x 124 + 5 commas
    kept = parse_tracestate([",".join(members)])
    assert kept == ",".join(members[:4])
    assert len(kept) <= MAX_TRACESTATE


def test_a_tracestate_of_exactly_the_size_is_kept_whole():
    head = "k0=" + "v" * 250
    tail = "k1=" + "v" * (MAX_TRACESTATE - len(head) - 1 - 3)
    whole = f"{head},{tail}"
    assert len(whole) == MAX_TRACESTATE
    assert parse_tracestate([whole]) == whole


@pytest.mark.parametrize(
    ("traceparents", "tracestates", "expected"),
    [
        pytest.param(
            [VALID],
            ["rojo=1"],
            TraceContext(TraceParent(TRACE_ID, PARENT_ID, 1), "rojo=1"),
            id="both",
        ),
        pytest.param(
            [VALID], [], TraceContext(TraceParent(TRACE_ID, PARENT_ID, 1)), id="no-tracestate"
        ),
        pytest.param(
            [VALID],
            ["Bad"],
            TraceContext(TraceParent(TRACE_ID, PARENT_ID, 1)),
            id="a-bad-tracestate-alone-is-dropped",
        ),
        pytest.param([], ["rojo=1"], None, id="a-tracestate-without-traceparent-is-ignored"),
        pytest.param(
            ["00-bad"], ["rojo=1"], None, id="an-invalid-traceparent-takes-its-tracestate-along"
        ),
    ],
)
def test_the_incoming_context_needs_a_valid_traceparent(traceparents, tracestates, expected):
    assert incoming_context(traceparents, tracestates) == expected


def test_the_next_hop_keeps_the_trace_and_its_state_with_a_new_parent():
    incoming = TraceContext(TraceParent(TRACE_ID, PARENT_ID, 0), "rojo=1")
    sent = next_hop(incoming, "b7ad6b7169203331")
    assert sent.headers() == {
        "traceparent": f"00-{TRACE_ID}-b7ad6b7169203331-00",
        "tracestate": "rojo=1",
    }


def test_the_next_hop_makes_a_new_span_id_when_given_none():
    incoming = TraceContext(TraceParent(TRACE_ID, PARENT_ID, 1))
    sent = {next_hop(incoming).parent for _ in range(20)}
    assert {parent.trace_id for parent in sent} == {TRACE_ID}
    assert PARENT_ID not in {parent.parent_id for parent in sent}
    assert len({parent.parent_id for parent in sent}) == 20


def test_without_an_incoming_context_a_new_sampled_random_trace_starts():
    sent = [next_hop(None) for _ in range(20)]
    assert len({hop.parent.trace_id for hop in sent}) == 20
    for hop in sent:
        assert hop.parent.flags == NEW_TRACE_FLAGS == SAMPLED | 0x02  # sampled, random id
        assert hop.state is None
        assert HEADER.fullmatch(hop.headers()["traceparent"])
        assert set(hop.headers()) == {"traceparent"}
        assert parse_traceparent([hop.headers()["traceparent"]]) == hop.parent


def test_new_ids_are_random_hex_of_the_right_size_and_never_all_zero():
    for _ in range(50):
        trace_id, span_id = new_trace_id(), new_span_id()
        assert re.fullmatch(r"[0-9a-f]{32}", trace_id)
        assert re.fullmatch(r"[0-9a-f]{16}", span_id)
        assert trace_id.strip("0")
        assert span_id.strip("0")
