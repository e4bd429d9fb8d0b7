"""W3C Trace Context (https://www.w3.org/TR/trace-context/) for one hop: the ``traceparent`` and
``tracestate`` a client sent, checked, and the pair the gateway sends upstream.

Strategy: plain strings in, plain strings out, no aiohttp and no OpenTelemetry (the glue in
:mod:`proxy.tracing` takes the span ids from OpenTelemetry's SDK when one is set up). The gateway
is a hop of the trace: the upstream gets the client's trace-id with a new parent-id (the
gateway's own span id), the client's sampled flag and its tracestate. A request with no valid
traceparent starts a new trace; an invalid one is ignored as if it were absent, and its
tracestate with it, as the spec says (a vendor MUST NOT propagate a tracestate it could not
parse, nor one whose traceparent it did not accept).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "MAX_TRACESTATE",
    "NEW_TRACE_FLAGS",
    "SAMPLED",
    "TRACEPARENT",
    "TRACESTATE",
    "TRACE_HEADER_NAMES",
    "TraceContext",
    "TraceParent",
    "incoming_context",
    "new_span_id",
    "new_trace_id",
    "next_hop",
    "parse_traceparent",
    "parse_tracestate",
]

TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"
TRACE_HEADER_NAMES: Final = frozenset({TRACEPARENT, TRACESTATE})

SAMPLED: Final = 0x01
_RANDOM: Final = 0x02
"""Level 2's "random trace-id" flag: true of the trace-id, which a hop keeps, so it is kept."""
_KNOWN_FLAGS: Final = SAMPLED | _RANDOM
"""Flags this hop understands; the others it sets to zero, as level 1 tells a vendor to."""
NEW_TRACE_FLAGS: Final = SAMPLED | _RANDOM

_VERSION_00_LENGTH: Final = 55
_TRACEPARENT: Final = re.compile(
    r"(?P<version>[0-9a-f]{2})-(?P<trace_id>[0-9a-f]{32})-(?P<parent_id>[0-9a-f]{16})"
    r"-(?P<flags>[0-9a-f]{2})"
)

MAX_TRACESTATE: Final = 512
"""Characters of tracestate passed on: the least the spec asks a vendor to propagate."""
_MAX_MEMBERS: Final = 32
_LONG_MEMBER: Final = 128
"""Members longer than this go first when a tracestate is cut to size (the spec's order)."""
_KEY_CHARS: Final = r"[a-z0-9_\-*/]"
_MEMBER: Final = re.compile(
    rf"(?P<key>[a-z]{_KEY_CHARS}{{0,255}}|[a-z0-9]{_KEY_CHARS}{{0,240}}@[a-z]{_KEY_CHARS}{{0,13}})"
    r"="
    r"(?P<value>[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e])"
)


@dataclass(frozen=True, slots=True)
class TraceParent:
    trace_id: str
    """32 lower-case hex digits, not all zero."""
    parent_id: str
    """16 lower-case hex digits, not all zero: the span of the hop that sent it."""
    flags: int

    @property
    def header(self) -> str:
        """Always version 00: the version this hop speaks, whatever it received."""
        return f"00-{self.trace_id}-{self.parent_id}-{self.flags:02x}"


@dataclass(frozen=True, slots=True)
class TraceContext:
    parent: TraceParent
    state: str | None = None
    """The tracestate, checked and cut to size; None when there is none to send."""

    def headers(self) -> dict[str, str]:
        headers = {TRACEPARENT: self.parent.header}
        if self.state is not None:
            headers[TRACESTATE] = self.state
        return headers


def parse_traceparent(values: Sequence[str]) -> TraceParent | None:
    """The request's ``traceparent`` (every field line of it), or None when it has none, more
    than one, or one the spec says to ignore."""
    if len(values) != 1:
        return None  # two traceparents cannot both be the parent
    value = values[0].strip(" \t")
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    version = match["version"]
    if version == "ff":
        return None  # forbidden
    if version == "00":
        if len(value) != _VERSION_00_LENGTH:
            return None
    elif len(value) > _VERSION_00_LENGTH and value[_VERSION_00_LENGTH] != "-":
        # A later version may append fields, each after a dash; a hop that knows only 00 reads
        # the fields it knows.
        return None
    trace_id, parent_id = match["trace_id"], match["parent_id"]
    if _all_zero(trace_id) or _all_zero(parent_id):
        return None
    return TraceParent(trace_id, parent_id, int(match["flags"], 16) & _KNOWN_FLAGS)


def parse_tracestate(values: Sequence[str]) -> str | None:
    """The request's ``tracestate`` (its field lines joined, as a list header's are), each
    member well formed and each key once, cut to :data:`MAX_TRACESTATE` characters; None when
    there is none, or when it breaks a rule (then none of it may be passed on)."""
    members: list[str] = []
    keys: set[str] = set()
    for value in values:
        for member in value.split(","):
            member = member.strip(" \t")
            if not member:
                continue  # empty members are allowed, and not sent on
            match = _MEMBER.fullmatch(member)
            if match is None or match["key"] in keys:
                return None
            keys.add(match["key"])
            members.append(member)
    if not members or len(members) > _MAX_MEMBERS:
        return None
    return _cut_to_size(members)


def _cut_to_size(members: list[str]) -> str | None:
    """Members dropped until the header fits: the long ones first, then from the end (the
    members in front are the most recent vendors')."""
    if _joined_length(members) > MAX_TRACESTATE:
        members = [member for member in members if len(member) <= _LONG_MEMBER]
    while members and _joined_length(members) > MAX_TRACESTATE:
        members.pop()
    return ",".join(members) or None


def _joined_length(members: list[str]) -> int:
    return sum(map(len, members)) + max(len(members) - 1, 0)


def incoming_context(
    traceparents: Sequence[str], tracestates: Sequence[str]
) -> TraceContext | None:
    """The context the client sent, or None when its traceparent is missing or invalid (its
    tracestate is then ignored too)."""
    parent = parse_traceparent(traceparents)
    if parent is None:
        return None
    return TraceContext(parent, parse_tracestate(tracestates))


def next_hop(incoming: TraceContext | None, span_id: str | None = None) -> TraceContext:
    """What the upstream gets: the same trace with ``span_id`` (a new one by default) as its
    parent, or a new trace."""
    span_id = span_id or new_span_id()
    if incoming is None:
        # A new trace is sampled: an upstream tracer's default sampler (ParentBased) follows
        # the flag, so an unsampled root here would silence the traces the upstream records
        # today, when it starts them itself. Its trace-id is random, which level 2's flag
        # says (OpenTelemetry's SDK sets it too; a level 1 reader ignores it).
        return TraceContext(TraceParent(new_trace_id(), span_id, NEW_TRACE_FLAGS))
    return TraceContext(
        TraceParent(incoming.parent.trace_id, span_id, incoming.parent.flags), incoming.state
    )


def new_trace_id() -> str:
    return _random_hex(16)


def new_span_id() -> str:
    return _random_hex(8)


def _random_hex(size: int) -> str:
    while _all_zero(value := secrets.token_hex(size)):
        pass  # all zero is the invalid id; 2^-64 at worst
    return value


def _all_zero(hex_digits: str) -> bool:
    return not hex_digits.strip("0")
