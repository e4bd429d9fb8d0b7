"""Stateful and adversarial property tests: LineFramer and SSEParser as state machines fed random
chunks, and the promise that no upstream value can forge SSE framing, under every ``events``
combination that changes the converter's path. The coverage-guided fuzzer is ``fuzz/``; its target
runs here too, on its seeds and on hypothesis' bytes, so it cannot rot between long runs.

Each machine keeps everything it has fed and compares the object under test, after every step,
with a reference that reads that whole input at once (the spec's algorithm, written plainly), so
any dependence on where chunks were cut shows up as a difference.
"""

from __future__ import annotations

import re

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from fuzz import fuzz_stream, stream_target
from proxy.config import EventsConfig
from proxy.convert import StreamConverter
from proxy.decoders import body_decoder
from proxy.errors import LineTooLong, StreamError
from proxy.framing import LineFramer
from proxy.sse import SSEEvent, SSEParser, SSERetry
from tests.support import ROOT
from tests.support.chunking import splits

BOM = b"\xef\xbb\xbf"
RS = b"\x1e"
FUZZ = ROOT / "fuzz"

# -- LineFramer as a state machine ---------------------------------------------------------------

framer_piece = st.sampled_from(
    [b"\n", b"\r", b"\r\n", BOM, BOM[:1], BOM[1:], RS, b"a", b"{}", "é".encode()[:1], b"xxxxxxx"]
) | st.binary(max_size=6)
framer_chunk = st.lists(framer_piece, max_size=5).map(b"".join)


def reference_frame(raw: bytes, limit: int, json_seq: bool, *, final: bool):
    """(lines, number of the first line over the limit or None, bytes held for the next line).

    One leading BOM is dropped; only LF ends a line and one CR before it goes; at the end, any
    bytes held (even a BOM alone) are the last line. A line is over
    the limit when its content (after the CR, before the json-seq RS) is longer than ``limit``,
    and an unfinished one as soon as it cannot end within it (one CR may still be dropped)."""
    body = raw.removeprefix(BOM)
    *complete, tail = body.split(b"\n")
    held = len(tail) if complete else len(raw)  # a BOM is held until its line ends
    if final and held:
        complete, tail, held = [*complete, tail], b"", 0
    lines = []
    for number, piece in enumerate(complete, 1):
        line = piece.removesuffix(b"\r")
        if len(line) > limit:
            return lines, number, None
        lines.append(line.removeprefix(RS) if json_seq else line)
    if len(tail) > limit + 1 or (len(tail) == limit + 1 and not tail.endswith(b"\r")):
        return lines, len(complete) + 1, None
    return lines, None, held


class LineFramerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.fed = b""
        self.out: list[bytes] = []
        self.failed = False
        self.flushed = False

    @initialize(limit=st.integers(min_value=2, max_value=12), json_seq=st.booleans())
    def start(self, limit, json_seq):
        self.limit, self.json_seq = limit, json_seq
        self.framer = LineFramer(limit, json_seq=json_seq)

    def _step(self, call, *, final: bool) -> None:
        lines, bad, _held = reference_frame(self.fed, self.limit, self.json_seq, final=final)
        got = call()  # a failure is kept by the call that meets it, and raised by the next
        error = self.framer.failure
        if error is not None:
            # Documented: every line before the bad one reaches the caller (returned earlier, or
            # by this call), the error names the bad line, and the stream ends there.
            assert bad is not None, f"unexpected LineTooLong on {self.fed!r}"
            assert self.out + got == lines
            with pytest.raises(LineTooLong) as again:
                self.framer.feed(b"\n")
            assert again.value is error
            assert error.line_number == bad
            assert error.limit == self.limit
            assert error.code == "line_too_long"
            assert str(error) == f"line {bad} is longer than max_line_bytes ({self.limit})"
            self.failed = True
            return
        assert bad is None, f"line {bad} of {self.fed!r} is over {self.limit} and was accepted"
        self.out += got

    @precondition(lambda self: not self.failed and not self.flushed)
    @rule(chunk=framer_chunk)
    def feed(self, chunk):
        self.fed += chunk
        self._step(lambda: self.framer.feed(chunk), final=False)

    @precondition(lambda self: not self.failed and not self.flushed)
    @rule(before=framer_chunk, after=framer_chunk)
    def feed_crlf_split_across_chunks(self, before, after):
        self.feed(before + b"\r")
        if not self.failed:
            self.feed(b"\n" + after)

    @precondition(lambda self: not self.failed and not self.flushed)
    @rule()
    def flush(self):
        self._step(self.framer.flush, final=True)
        self.flushed = True
        if not self.failed:
            assert self.framer.flush() == [], "a second flush returned lines again"

    @precondition(lambda self: not self.failed)
    @rule()
    def empty_feed_is_harmless(self):
        # Anywhere, after the end too: an empty chunk returns nothing, changes nothing.
        held = self.framer.pending_bytes
        assert self.framer.feed(b"") == []
        assert self.framer.pending_bytes == held

    @precondition(lambda self: self.failed)
    @rule(chunk=framer_chunk)
    def after_a_failure_every_call_raises_it(self, chunk):
        with pytest.raises(LineTooLong) as caught:
            self.framer.feed(chunk)
        assert caught.value is self.framer.failure
        with pytest.raises(LineTooLong):
            self.framer.flush()

    @invariant()
    def lines_and_held_bytes_match_the_reference(self):
        if self.failed:
            return
        lines, _bad, held = reference_frame(self.fed, self.limit, self.json_seq, final=self.flushed)
        assert self.out == lines
        assert self.framer.lines_seen == len(lines)
        assert self.framer.pending_bytes == held
        # The bound (a BOM still waiting at the start is not line content).
        assert self.framer.pending_bytes <= self.limit + 1 + (3 if not lines else 0)


TestLineFramerMachine = LineFramerMachine.TestCase
TestLineFramerMachine.settings = settings(max_examples=500, stateful_step_count=25, deadline=None)


def test_lines_seen_after_line_too_long_counts_every_line_before_the_bad_one():
    counts = []
    for raw in (b"one\ntwo\n" + b"x" * 10 + b"\n", b"one\ntwo\n" + b"x" * 10):
        framer = LineFramer(5)
        assert framer.feed(raw) == [b"one", b"two"]
        with pytest.raises(LineTooLong) as caught:
            framer.flush()
        assert caught.value.line_number == 3
        counts.append(framer.lines_seen)
    assert counts == [2, 2]


def test_bom_split_across_chunks_never_counts_against_a_limit_of_one():
    framer = LineFramer(1)
    lines = []
    for byte in BOM + b"\n":
        lines += framer.feed(bytes([byte]))
    assert lines == [b""]


# -- SSEParser as a state machine ----------------------------------------------------------------

sse_piece = st.sampled_from(
    [
        b"data",
        b"event",
        b"id",
        b"retry",
        b":",
        b": ",
        b" ",
        b"\r",
        b"\n",
        b"\r\n",
        b"x",
        b"7",
        b"\x00",
        BOM,
        BOM[:2],
        b"\xc3\xa9",
        b"\xff",
        b"\xe2\x82",
        "\u2028".encode(),
        b"yyyyyyyyyyyy",
        # Whole fields, so that events actually form.
        b"data: a\n",
        b"data: b\r",
        b"id: 1\n",
        b"id: 2\x00\n",
        b"id\n",
        b"event: e\n",
        b"retry: 5\n",
        b"\n\n",
    ]
)
sse_chunk = st.lists(sse_piece, max_size=6).map(b"".join)
_SSE_BREAK = re.compile(rb"\r\n|\r|\n")


def reference_sse(raw: bytes, max_bytes: int):
    """(items, last event id, in an event, over the bound) for everything fed so far.

    WHATWG's algorithm on the whole input, with Chromium's one quirk that the parser documents:
    the byte right after a leading BOM is never read as a line end (it starts the first line).
    The bound: a line, an unfinished line, or an event's data lines (in bytes) over max_bytes."""
    glue = raw.startswith(BOM)
    if glue:
        raw = raw[len(BOM) :]
    elif len(raw) < len(BOM) and BOM.startswith(raw):
        return [], "", bool(raw), False  # it may still become a BOM
    items: list = []
    data: list[str] = []
    data_bytes, event_type, id_buffer, last_id, started = 0, "", "", "", False
    start = 0
    while (
        found := _SSE_BREAK.search(raw, start + 1 if glue and start == 0 else start)
    ) is not None:
        line, start = raw[start : found.start()], found.end()
        if len(line) > max_bytes:
            return items, last_id, True, True
        if not line:
            last_id = id_buffer
            if data:
                items.append(SSEEvent("\n".join(data), event_type or "message", last_id))
            data, data_bytes, event_type, started = [], 0, "", False
            continue
        text = line.decode("utf-8", "replace")
        if text.startswith(":"):
            continue
        name, colon, value = text.partition(":")
        value = value.removeprefix(" ") if colon else value
        if name == "data":
            started = True
            data_bytes += len(line)
            if data_bytes > max_bytes:
                return items, last_id, True, True
            data.append(value)
        elif name == "event":
            started, event_type = True, value
        elif name == "id":
            started = True
            id_buffer = value if "\x00" not in value else id_buffer
        elif name == "retry" and re.fullmatch("[0-9]+", value):
            items.append(SSERetry(int(value)))
    tail = raw[start:]
    return items, last_id, started or bool(tail), len(tail) > max_bytes


class SSEParserMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.fed = b""
        self.out: list = []
        self.ended = False

    @initialize(
        max_bytes=st.sampled_from([4, 8, 16, 1 << 20]),
        lead=st.sampled_from([b"", BOM, BOM + b"\n", BOM + b"\r", BOM + b"\r\n", b"\r"]),
    )
    def start(self, max_bytes, lead):
        self.max_bytes = max_bytes
        self.parser = SSEParser(max_bytes)
        self.feed(lead)  # the start of a stream is where a BOM (and Chromium's quirk) lives

    @precondition(lambda self: not self.ended)
    @rule(chunk=sse_chunk)
    def feed(self, chunk):
        self.fed += chunk
        items, _last_id, _in_event, over = reference_sse(self.fed, self.max_bytes)
        got = self.parser.feed(chunk)  # a failure is kept here, and raised by the next call
        error = self.parser.failure
        self.out += got
        if error is not None:
            assert over, f"unexpected LineTooLong on {self.fed!r}"
            assert self.out == items
            with pytest.raises(LineTooLong) as again:
                self.parser.flush()
            assert again.value is error
            assert (error.line_number, error.limit) == (None, self.max_bytes)
            self.ended = True
            return
        assert not over, f"{self.fed!r} is over the bound {self.max_bytes} and was accepted"

    @precondition(lambda self: self.parser.failure is None)
    @rule()
    def empty_feed_is_harmless(self):
        in_event = self.parser.in_event
        assert self.parser.feed(b"") == []
        assert self.parser.in_event == in_event

    @precondition(lambda self: self.parser.failure is not None)
    @rule(chunk=sse_chunk)
    def after_a_failure_every_call_raises_it(self, chunk):
        with pytest.raises(LineTooLong) as caught:
            self.parser.feed(chunk)
        assert caught.value is self.parser.failure

    @precondition(lambda self: not self.ended)
    @rule(before=sse_chunk, after=sse_chunk)
    def feed_crlf_split_across_chunks(self, before, after):
        self.feed(before + b"\r")
        if not self.ended:
            self.feed(b"\n" + after)

    @invariant()
    def items_last_id_and_open_event_match_the_reference(self):
        if self.ended:
            return
        items, last_id, in_event, _over = reference_sse(self.fed, self.max_bytes)
        assert self.out == items
        assert self.parser.last_event_id == last_id
        assert self.parser.in_event == in_event

    @precondition(lambda self: not self.ended)
    @rule()
    def flush_dispatches_nothing(self):
        # flush() is the end of input; as in browsers, an unfinished event is not dispatched.
        assert self.parser.flush() == []
        self.ended = True


TestSSEParserMachine = SSEParserMachine.TestCase
TestSSEParserMachine.settings = settings(max_examples=500, stateful_step_count=25, deadline=None)


# -- nothing from upstream can forge SSE framing -------------------------------------------------

TRICKY = [
    "\r",
    "\n",
    "\r\n",
    "\n\r",
    "\x00",
    "\u2028",
    "\u2029",
    "\x85",
    "\ufeff",
    " ",
    ":",
    "\n\ndata: x\n\n",
    "\r\rdata: x\r\r",
    "event: y",
    "\nevent: y\n",
    "id: z",
    "\nid: z\n",
    "retry: 1",
    "\n\nretry: 1\n\n",
    ": c",
    "data:",
    "message",
    "error",
    "end",
]
tricky_text = st.lists(st.sampled_from(TRICKY) | st.text(max_size=4), max_size=6).map("".join)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | tricky_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(tricky_text, inner, max_size=3),
    max_leaves=6,
)
ABSENT = object()
NOT_JSON = object()


@st.composite
def upstream_line(draw):
    """(line bytes, its JSON document, or NOT_JSON)."""
    kind = draw(st.sampled_from(["doc"] * 6 + ["blank", "text"]))
    if kind == "blank":
        return draw(st.sampled_from([b"", b" ", b"\t ", b"\r", b"\x0b"])), NOT_JSON
    if kind == "text":
        line = draw(tricky_text).replace("\n", "").encode()
        try:
            return line, orjson.loads(line)  # "1" or " 2 " are JSON after all
        except orjson.JSONDecodeError:
            return line, NOT_JSON
    members = {
        "d": draw(st.just(ABSENT) | tricky_text | json_value),
        "t": draw(st.just(ABSENT) | tricky_text | tricky_text | json_value),
        "i": draw(st.just(ABSENT) | tricky_text | st.integers(-(2**63), 2**63 - 1) | json_value),
        "err": draw(st.just(ABSENT) | st.none() | st.none() | tricky_text | json_value),
        "done": draw(st.just(ABSENT) | st.booleans() | st.just(1)),
    }
    document = {key: value for key, value in members.items() if value is not ABSENT}
    pad = st.sampled_from([b"", b" ", b"\r", b"\t\r "])
    return draw(pad) + orjson.dumps(document) + draw(pad), document


def lines_body(lines: list[bytes], separators: list[bytes], framing: str, bom: bool) -> bytes:
    body = BOM if bom else b""
    for line, separator in zip(lines, separators, strict=True):
        # A line that ends in CR needs CRLF after it: with LF alone that CR is the line end's.
        separator = b"\r\n" if line.endswith(b"\r") else separator
        body += (RS if framing == "json-seq" else b"") + line + separator
    return body


def _clean(text: str, forbidden: str) -> str:
    return "".join(c for c in text if c not in forbidden)


def _normalise(text: str) -> str:
    return re.sub(r"\r\n|\r|\n", "\n", text)


def intended_events(lines, documents, rules: dict) -> list[tuple]:
    """What the client must see, stated from the values (not from the bytes the converter read):
    ``("event", data, name, id)`` or ``("error", code, line, message or None, id)``."""
    json_mode = any(rules[key] is not None for key in ("event_from", "error_from", "complete_when"))
    json_mode = json_mode or rules["data"] != "line" or rules["id"] not in ("sequence", "none")
    out: list[tuple] = [("retry", 3000)]
    sequence, last_id, complete = 0, "", rules["complete_when"] is None
    for number, (line, document) in enumerate(zip(lines, documents, strict=True), 1):
        if not line or line.isspace():
            continue
        if not json_mode:
            sequence += 1
            last_id = str(sequence) if rules["id"] == "sequence" else last_id
            out.append(("event", _normalise(line.decode()), rules["event"], last_id))
            continue
        if document is NOT_JSON:
            out.append(("error", "invalid_json", number, None, last_id))
            continue
        document = document if isinstance(document, dict) else {}  # pointers find nothing
        if rules["complete_when"] and document.get("done") is True:
            complete = True
        failure = document.get("err")
        if rules["error_from"] and failure is not None:
            message = failure if isinstance(failure, str) else orjson.dumps(failure).decode()
            out.append(("error", "upstream_error", number, message, last_id))
            continue
        if rules["data"] == "line":
            data = _normalise(line.decode())
        elif "d" not in document:
            out.append(("error", "pointer_not_found", number, None, last_id))
            continue
        else:
            value = document["d"]
            data = _normalise(value) if isinstance(value, str) else orjson.dumps(value).decode()
        name = rules["event"]
        if rules["event_from"] and "t" in document:
            if not isinstance(document["t"], str):
                out.append(("error", "invalid_event_name", number, None, last_id))
                continue
            name = _clean(document["t"], "\r\n") or rules["event"]
        new_id = None
        if rules["id"] == "/i" and "i" in document:
            value = document["i"]
            if not isinstance(value, str | int) or isinstance(value, bool):
                out.append(("error", "invalid_event_id", number, None, last_id))
                continue
            new_id = _clean(str(value), "\r\n\x00")
        sequence += 1
        if rules["id"] == "sequence":
            new_id = str(sequence)
        last_id = last_id if new_id is None else new_id
        out.append(("event", data, name, last_id))
    if complete:
        out.append(("event", "", "end", last_id))
    else:
        message = "the upstream stream ended without its terminal line (/done true)"
        out.append(("error", "incomplete", None, message, last_id))
    return out


def received(items, intended) -> list[tuple]:
    out = []
    for index, item in enumerate(items):
        if isinstance(item, SSERetry):
            out.append(("retry", item.milliseconds))
            continue
        due = intended[index] if index < len(intended) else ()
        if due[:1] == ("error",) and item.event == "error":
            payload = orjson.loads(item.data)
            message = payload["message"] if due[3] is not None else None
            out.append(("error", payload["code"], payload.get("line"), message, item.id))
        else:
            out.append(("event", item.data, item.event, item.id))
    return out


EVENT_RULES = {
    "event-message": {"event": "message", "event_from": None},
    "event-constant": {"event": "tok", "event_from": None},
    "event-from": {"event": "message", "event_from": "/t"},
    "event-from-or-constant": {"event": "tok", "event_from": "/t"},
}
COMBINATIONS = [
    pytest.param(
        {
            "data": data,
            **EVENT_RULES[event],
            "id": id_rule,
            "error_from": error_from,
            "complete_when": complete_when,
        },
        id=f"data-{data.strip('/')}-{event}-id-{id_rule.strip('/')}"
        f"{'-error_from' if error_from else ''}{'-complete_when' if complete_when else ''}",
    )
    for data in ("line", "/d")
    for event in EVENT_RULES
    for id_rule in ("sequence", "none", "/i")
    for error_from in (None, "/err")
    for complete_when in (None, "/done")
]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(upstream_line(), max_size=6),
    separator=st.sampled_from([b"\n", b"\r\n"]),
    framing=st.sampled_from(["ndjson", "json-seq"]),
    bom=st.booleans(),
    data=st.data(),
)
@pytest.mark.parametrize("rules", COMBINATIONS)
def test_no_upstream_value_forges_sse_framing(rules, lines, separator, framing, bom, data):
    raw_lines = [line for line, _ in lines]
    body = lines_body(raw_lines, [separator] * len(lines), framing, bom)
    upstream_chunks = data.draw(splits(body), label="upstream chunks")
    wire = assert_no_forgery(rules, lines, separator, framing, bom, upstream_chunks)
    client_chunks = data.draw(splits(wire), label="client chunks")
    assert_no_forgery(rules, lines, separator, framing, bom, upstream_chunks, client_chunks)


@pytest.mark.parametrize(
    "lines",
    [
        pytest.param([(BOM, NOT_JSON)], id="a-bom-alone"),
        pytest.param([(BOM + b"1", NOT_JSON), (b"{}", {})], id="a-bom-before-json"),
        pytest.param([(BOM + b"x", NOT_JSON)], id="a-bom-before-text"),
    ],
)
@pytest.mark.parametrize("rules", COMBINATIONS[:: len(COMBINATIONS) // 8])
def test_a_first_line_that_starts_with_a_bom_is_read_without_it_even_with_no_body_bom(rules, lines):
    """Hypothesis found it: the framer cannot tell the body's BOM from a first line's own, so the
    first line loses it either way, and what the client reads must say so."""
    assert_no_forgery(rules, lines, b"\n", "ndjson", False, None)


def assert_no_forgery(
    rules, lines, separator, framing, bom, upstream_chunks=None, client_chunks=None
) -> bytes:
    """The wire that the upstream ``lines`` become, after checking that a client reading it (whole,
    or in ``client_chunks``) reads exactly the intended events; the wire is returned."""
    raw_lines = [line for line, _ in lines]
    body = lines_body(raw_lines, [separator] * len(lines), framing, bom)
    read_lines = as_framed(lines, framing, bom)
    intended = intended_events(
        [line for line, _ in read_lines], [document for _, document in read_lines], rules
    )
    converter = StreamConverter(EventsConfig(**rules).rules)
    decoder = body_decoder(framing, converter, 1 << 20)
    chunks = [body] if upstream_chunks is None else upstream_chunks
    wire = converter.start() + b"".join(map(decoder.feed, chunks)) + decoder.flush()
    if decoder.failure is not None:  # incomplete: as the relay writes it
        wire += converter.error(decoder.failure.code, str(decoder.failure))
    stream_target.check_wire(wire)
    for chunks_read in ([wire], client_chunks or [wire]):
        parser = SSEParser()
        items = [item for chunk in chunks_read for item in parser.feed(chunk)]
        assert not parser.in_event
        assert received(items, intended) == intended, wire
    return wire


def as_framed(lines, framing: str, bom: bool):
    """The (line, document) pairs as the framer reads them: a UTF-8 BOM at the very start of the
    body is dropped, whether it is the body's own or the first line's (nothing tells them apart),
    so without ``bom`` an NDJSON first line that starts with one loses it."""
    if bom or framing != "ndjson" or not lines or not lines[0][0].startswith(BOM):
        return lines
    first = lines[0][0].removeprefix(BOM)
    try:
        document = orjson.loads(first)
    except orjson.JSONDecodeError:
        document = NOT_JSON
    return [(first, document), *lines[1:]]


@settings(max_examples=300, deadline=None)
@given(raw=st.lists(sse_piece | st.sampled_from([b"\n\n", b"data: "]), max_size=40), data=st.data())
def test_upstream_sse_events_come_out_the_same_after_re_encoding(raw, data):
    """An upstream that speaks SSE: whatever its bytes, the client reads the events (names,
    data, ids in force, retries) that the upstream's bytes meant, and nothing else."""
    upstream = b"".join(raw)
    reference = SSEParser()
    meant = reference.feed(upstream)
    cut_off = reference.in_event
    converter = StreamConverter(EventsConfig().rules)
    decoder = body_decoder("sse", converter, 1 << 20)
    wire = converter.start() + b"".join(map(decoder.feed, data.draw(splits(upstream))))
    wire += decoder.flush()
    error: StreamError | None = decoder.failure
    if error is not None:
        wire += converter.error(error.code, str(error))
    assert (error.code if error else None) == ("incomplete_event" if cut_off else None)
    stream_target.check_wire(wire)
    items = SSEParser().feed(wire)
    assert items[0] == SSERetry(3000)
    assert items[1:-1] == meant
    assert items[-1].event == ("error" if cut_off else "end")


# -- the fuzz target -----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", sorted((FUZZ / "corpus").iterdir()), ids=lambda path: path.name)
def test_fuzz_target_passes_on_its_seed(seed):
    stream_target.one_input(seed.read_bytes())


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400))
def test_fuzz_target_passes_on_arbitrary_bytes(data):
    stream_target.one_input(data)


def test_fuzz_target_catches_a_data_encoder_that_lets_a_cr_through(monkeypatch):
    # The oracle has teeth: with a naive encoder (the value pasted after "data: "), a CR inside an
    # upstream line reaches the wire as a line end, and the target must say so.
    monkeypatch.setattr("proxy.convert.encode_data", lambda data: b"data: " + data + b"\n")
    with pytest.raises(AssertionError, match="CR reached the wire"):
        stream_target.one_input(stream_target.encode_input(b"a\rdata: forged\n"))


def test_fuzz_target_catches_a_lost_line(monkeypatch):
    real = LineFramer.feed
    monkeypatch.setattr(LineFramer, "feed", lambda self, chunk: real(self, chunk)[1:])
    with pytest.raises(AssertionError):
        stream_target.one_input(stream_target.encode_input(b"a\nb\n", cuts=[2]))


def test_pure_fuzz_driver_runs_the_target_on_mutated_seeds(capsys):
    assert fuzz_stream.main(["--pure", "-runs=300", "-seed=7"]) == 0
    assert "300 runs" in capsys.readouterr().out
