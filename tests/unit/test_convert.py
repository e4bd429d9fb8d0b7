"""StreamConverter and the body decoders: upstream bytes in, exact event-stream bytes out."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.config import EventsConfig
from proxy.convert import StreamConverter
from proxy.decoders import (
    DocumentToEvent,
    EventsToEvents,
    LinesOrDocument,
    LinesToEvents,
    body_decoder,
)
from proxy.errors import LineTooLong, StreamError
from proxy.sse import SSEEvent, SSEParser, SSERetry
from tests.support.chunking import CHUNKERS, splits


def convert(chunks: list[bytes], framing: str = "ndjson", max_line_bytes: int = 1024, **rules):
    """The events ``chunks`` become, less the end event (its tests are below); a failure other
    than ``incomplete`` (also below) is raised, as the decoder's next call would."""
    rules.setdefault("end_event", None)
    decoder = body_decoder(framing, StreamConverter(EventsConfig(**rules).rules), max_line_bytes)
    wire = b"".join(decoder.feed(chunk) for chunk in chunks) + decoder.flush()
    if decoder.failure is not None and decoder.failure.code != "incomplete":
        raise decoder.failure
    return wire


def error_data(wire: bytes) -> dict:
    """The JSON payload of the one error event in ``wire``."""
    (event,) = SSEParser().feed(wire)
    assert event.event == "error"
    return orjson.loads(event.data)


# -- line mode: data is the line -------------------------------------------------------------------

# (upstream body, route rules, client bytes); each runs whole, byte by byte and at random splits.
LINE_CASES = [
    pytest.param(
        b'{"a":1}\n{"b":2}\n{"c":3}\n',
        {},
        b'id: 1\ndata: {"a":1}\n\nid: 2\ndata: {"b":2}\n\nid: 3\ndata: {"c":3}\n\n',
        id="sequence-ids-1-2-3",
    ),
    pytest.param(
        b"a\nb\n", {"id": "none"}, b"data: a\n\ndata: b\n\n", id="id-none-writes-no-id-lines"
    ),
    pytest.param(
        b"a\nb\n",
        {"event": "token"},
        b"id: 1\nevent: token\ndata: a\n\nid: 2\nevent: token\ndata: b\n\n",
        id="constant-event-name",
    ),
    pytest.param(
        b"a\n", {"event": "message"}, b"id: 1\ndata: a\n\n", id="event-message-is-not-written"
    ),
    pytest.param(
        b"a\n\n \t\r\n\r\nb\n",
        {},
        b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n",
        id="empty-and-whitespace-lines-skipped-without-using-an-id",
    ),
    pytest.param(b"a\r\nb\r\n", {}, b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n", id="crlf-lines"),
    pytest.param(b"a\nb", {}, b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n", id="unterminated-last"),
    pytest.param(
        b"\xffa\xc3\n",
        {},
        b"id: 1\ndata: \xef\xbf\xbda\xef\xbf\xbd\n\n",
        id="invalid-utf8-replaced",
    ),
    pytest.param(
        "é€😀\n".encode(), {}, "id: 1\ndata: é€😀\n\n".encode(), id="valid-utf8-untouched"
    ),
    pytest.param(
        b"a\rb\n",
        {},
        b"id: 1\ndata: a\ndata: b\n\n",
        id="stray-cr-is-a-second-data-line-not-an-event-boundary",
    ),
    pytest.param(b"a\r\r\n", {}, b"id: 1\ndata: a\ndata: \n\n", id="cr-before-the-crlf-is-content"),
    pytest.param(
        b'\x1e{"a":1}\n\x1e{"b":2}\n',
        {"_framing": "json-seq"},
        b'id: 1\ndata: {"a":1}\n\nid: 2\ndata: {"b":2}\n\n',
        id="json-seq-record-separators-removed",
    ),
    pytest.param(b"\xef\xbb\xbfa\n", {}, b"id: 1\ndata: a\n\n", id="bom-at-the-start-dropped"),
    pytest.param(b"", {}, b"", id="empty-body-no-events"),
]


def run_case(chunks, rules):
    rules = dict(rules)
    framing = rules.pop("_framing", "ndjson")
    return convert(chunks, framing, **rules)


@pytest.mark.parametrize("chunker", CHUNKERS)
@pytest.mark.parametrize(("raw", "rules", "wire"), LINE_CASES)
def test_line_mode_gives_the_tables_bytes_whole_and_byte_by_byte(raw, rules, wire, chunker):
    assert run_case(chunker(raw), rules) == wire


@settings(max_examples=30, deadline=None)
@given(data=st.data())
@pytest.mark.parametrize(("raw", "rules", "wire"), LINE_CASES)
def test_line_mode_gives_the_tables_bytes_at_random_split_points(raw, rules, wire, data):
    assert run_case(data.draw(splits(raw)), rules) == wire


def test_line_mode_never_parses_json():
    converter = StreamConverter(EventsConfig().rules)
    assert not converter.needs_json
    assert converter.lines([b"not json"]) == b"id: 1\ndata: not json\n\n"


def test_sequence_counts_events_not_lines():
    converter = StreamConverter(EventsConfig().rules)
    converter.lines([b"a", b"", b"b"])
    assert converter.sequence == 2


@pytest.mark.parametrize(
    ("last_event_id", "first_id"),
    [
        pytest.param("7", b"8", id="numeric-goes-on"),
        pytest.param("0", b"1", id="zero"),
        pytest.param("abc", b"1", id="not-a-number-starts-over"),
        pytest.param("-3", b"1", id="negative-starts-over"),
        pytest.param("\uff17", b"1", id="non-ascii-digit-starts-over"),
        pytest.param("", b"1", id="empty-starts-over"),
        pytest.param(None, b"1", id="none"),
    ],
)
def test_sequence_goes_on_from_a_reconnecting_clients_last_event_id(last_event_id, first_id):
    converter = StreamConverter(EventsConfig().rules, last_event_id=last_event_id)
    assert converter.lines([b"a"]) == b"id: " + first_id + b"\ndata: a\n\n"


def test_sequence_continues_across_batches():
    converter = StreamConverter(EventsConfig().rules)
    assert converter.lines([b"a"]) == b"id: 1\ndata: a\n\n"
    assert converter.lines([]) == b""
    assert converter.lines([b"b"]) == b"id: 2\ndata: b\n\n"


# -- JSON Pointer mode -----------------------------------------------------------------------------

CHAT = EventsConfig(data="/message/content")


def test_data_pointer_takes_the_string_value():
    body = (
        b'{"message":{"role":"assistant","content":"Hel"},"done":false}\n'
        b'{"message":{"role":"assistant","content":"lo"},"done":false}\n'
        b'{"message":{"role":"assistant","content":"!"},"done":false}\n'
    )
    assert convert([body], data="/message/content") == (
        b"id: 1\ndata: Hel\n\nid: 2\ndata: lo\n\nid: 3\ndata: !\n\n"
    )


def test_data_pointer_string_with_line_breaks_becomes_several_data_lines():
    body = b'{"message":{"content":"a\\nb\\r\\nc\\rd"}}\n'
    assert convert([body], data="/message/content") == (
        b"id: 1\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
    )


def test_data_pointer_string_that_forges_an_event_stays_data():
    body = b'{"message":{"content":"x\\n\\nevent: evil\\ndata: forged"}}\n'
    wire = convert([body], data="/message/content")
    assert SSEParser().feed(wire) == [SSEEvent("x\n\nevent: evil\ndata: forged", id="1")]


@pytest.mark.parametrize(
    ("value", "data"),
    [
        pytest.param(b'{"x": [1, 2]}', b'{"x":[1,2]}', id="object-as-compact-json"),
        pytest.param(b"5", b"5", id="number"),
        pytest.param(b"null", b"null", id="null"),
        pytest.param(b"true", b"true", id="boolean"),
        pytest.param(b'""', b"", id="empty-string"),
        pytest.param('"é"'.encode(), "é".encode(), id="non-ascii-string"),
    ],
)
def test_data_pointer_value_that_is_not_a_string_is_json(value, data):
    body = b'{"message":{"content":' + value + b"}}\n"
    expected = b"id: 1\ndata:\n\n" if not data else b"id: 1\ndata: " + data + b"\n\n"
    assert convert([body], data="/message/content") == expected


def test_data_pointer_missing_gives_pointer_not_found_error_event():
    wire = convert([b'{"message":{}}\n'], data="/message/content")
    payload = error_data(wire)
    assert payload["code"] == "pointer_not_found"
    assert payload["line"] == 1
    assert payload["message"].startswith("line 1: JSON Pointer /message/content does not resolve")


def test_json_mode_without_data_pointer_sends_the_line_as_data():
    assert convert([b'{"type":"A","v":1}\n'], event_from="/type") == (
        b'id: 1\nevent: A\ndata: {"type":"A","v":1}\n\n'
    )


@pytest.mark.parametrize(
    ("line", "rules", "wire"),
    [
        pytest.param(
            b'{"type":"ADDED","object":{}}',
            {"event_from": "/type"},
            b'id: 1\nevent: ADDED\ndata: {"type":"ADDED","object":{}}\n\n',
            id="event-from-string",
        ),
        pytest.param(
            b'{"object":{}}',
            {"event_from": "/type"},
            b'id: 1\ndata: {"object":{}}\n\n',
            id="event-from-missing-falls-back-to-message",
        ),
        pytest.param(
            b'{"object":{}}',
            {"event_from": "/type", "event": "update"},
            b'id: 1\nevent: update\ndata: {"object":{}}\n\n',
            id="event-from-missing-falls-back-to-event",
        ),
        pytest.param(
            b'{"type":"A\\r\\nB\\nC\\rD"}',
            {"event_from": "/type", "data": "/type"},
            b"id: 1\nevent: ABCD\ndata: A\ndata: B\ndata: C\ndata: D\n\n",
            id="event-from-line-breaks-removed",
        ),
        pytest.param(
            b'{"type":"","x":1}',
            {"event_from": "/type", "event": "update", "data": "/x"},
            b"id: 1\nevent: update\ndata: 1\n\n",
            id="event-from-empty-string-falls-back-to-event",
        ),
        pytest.param(
            b'{"type":"message","x":1}',
            {"event_from": "/type", "event": "update", "data": "/x"},
            b"id: 1\ndata: 1\n\n",
            id="event-from-message-is-not-written",
        ),
    ],
)
def test_event_from_pointer_names_the_event_or_falls_back_to_event(line, rules, wire):
    assert convert([line + b"\n"], **rules) == wire


def test_event_from_only_line_breaks_falls_back_to_event():
    wire = convert([b'{"type":"\\r\\n","x":1}\n'], event_from="/type", event="update", data="/x")
    assert wire == b"id: 1\nevent: update\ndata: 1\n\n"


@pytest.mark.parametrize("value", [b"1", b"true", b"null", b"{}", b"[]"])
def test_event_from_non_string_gives_invalid_event_name_error_event(value):
    wire = convert([b'{"type":' + value + b"}\n"], event_from="/type")
    payload = error_data(wire)
    assert payload == {
        "code": "invalid_event_name",
        "message": "line 1: /type is not a string",
        "line": 1,
    }


@pytest.mark.parametrize(
    ("value", "id_line"),
    [
        pytest.param(b'"abc"', b"id: abc\n", id="string"),
        pytest.param(b"7", b"id: 7\n", id="integer"),
        pytest.param(b"-3", b"id: -3\n", id="negative-integer"),
        pytest.param(b'""', b"id: \n", id="empty-string"),
        pytest.param(b'"1\\r\\n2\\u00003"', b"id: 123\n", id="cr-lf-nul-removed"),
    ],
)
def test_id_pointer_string_or_integer(value, id_line):
    assert convert([b'{"id":' + value + b',"x":"a"}\n'], id="/id", data="/x") == (
        id_line + b"data: a\n\n"
    )


@pytest.mark.parametrize("value", [b"true", b"1.5", b"null", b"{}", b"[1]"])
def test_id_pointer_other_value_gives_invalid_event_id_error_event(value):
    payload = error_data(convert([b'{"id":' + value + b"}\n"], id="/id"))
    assert payload == {
        "code": "invalid_event_id",
        "message": "line 1: /id is not a string or integer",
        "line": 1,
    }


def test_id_pointer_missing_sends_the_event_without_an_id_line():
    # A Kubernetes ERROR event (a Status object) has no resourceVersion: the event still goes
    # out, and the browser keeps the last id it had.
    assert convert([b'{"id":"7"}\n{"x":1}\n'], id="/id") == (
        b'id: 7\ndata: {"id":"7"}\n\ndata: {"x":1}\n\n'
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        pytest.param(b'{"error": "model not found"}', "model not found", id="string"),
        pytest.param(b'{"error": {"code": 5}}', '{"code":5}', id="object-as-json"),
    ],
)
def test_error_from_turns_an_upstream_error_line_into_an_error_event(line, message):
    wire = convert([b'{"t": "a"}\n', line + b"\n", b'{"t": "b"}\n'], data="/t", error_from="/error")
    first, error, last = SSEParser().feed(wire)
    assert (first.data, last.data) == ("a", "b")
    assert error.event == "error"
    assert orjson.loads(error.data) == {"code": "upstream_error", "message": message, "line": 2}


def test_error_from_ignores_a_null_or_missing_member():
    wire = convert(
        [b'{"t": "a", "error": null}\n', b'{"t": "b"}\n'], data="/t", error_from="/error"
    )
    assert [e.data for e in SSEParser().feed(wire)] == ["a", "b"]


def test_line_that_is_not_json_gives_error_event_and_the_stream_goes_on():
    body = b'{"m":"a"}\n\nnot json\n{"m":"b"}\n'
    wire = convert([body], data="/m")
    first, error, last = SSEParser().feed(wire)
    assert first == SSEEvent("a", id="1")
    assert error.event == "error"
    payload = orjson.loads(error.data)
    assert payload["code"] == "invalid_json"
    # The empty line counts: "not json" is the third line of the upstream body.
    assert payload["line"] == 3
    assert payload["message"].startswith("line 3 is not valid JSON: ")
    # Error events take no id, so the sequence has no gap.
    assert last == SSEEvent("b", id="2")
    assert wire.startswith(b"id: 1\ndata: a\n\nevent: error\ndata: {")
    assert wire.endswith(b"}\n\nid: 2\ndata: b\n\n")


def test_invalid_utf8_line_in_json_mode_is_an_invalid_json_error():
    assert error_data(convert([b'{"m":"\xff"}\n'], data="/m"))["code"] == "invalid_json"


def test_whitespace_lines_count_for_line_numbers_in_json_mode():
    payload = error_data(convert([b"  \n\r\n\t\n{\n"], data="/m"))
    assert payload["line"] == 4


def test_error_event_uses_the_routes_error_event_name():
    converter = StreamConverter(EventsConfig(data="/m", error_event="oops").rules)
    wire = converter.lines([b"nope"])
    assert wire.startswith(b"event: oops\ndata: {")


# -- the stream's frame: start, end, error, heartbeat ----------------------------------------------


def test_start_sends_the_routes_retry():
    assert StreamConverter(EventsConfig().rules).start() == b"retry: 3000\n\n"
    assert StreamConverter(EventsConfig(retry=250).rules).start() == b"retry: 250\n\n"


def test_start_sends_nothing_without_retry():
    assert StreamConverter(EventsConfig(retry=None).rules).start() == b""


def test_end_is_an_end_event_with_empty_data():
    assert StreamConverter(EventsConfig().rules).end_event() == b"event: end\ndata:\n\n"
    done = StreamConverter(EventsConfig(end_event="done").rules)
    assert done.end_event() == b"event: done\ndata:\n\n"


def test_end_sends_nothing_when_the_route_has_no_end_event():
    assert StreamConverter(EventsConfig(end_event=None).rules).end_event() == b""


def test_flush_ends_with_the_end_event_after_the_last_line():
    decoder = body_decoder("ndjson", StreamConverter(EventsConfig().rules), 64)
    assert decoder.feed(b"a\nb") == b"id: 1\ndata: a\n\n"
    assert decoder.flush() == b"id: 2\ndata: b\n\nevent: end\ndata:\n\n"


def test_error_is_json_data_with_code_and_message():
    converter = StreamConverter(EventsConfig().rules)
    assert converter.error("upstream_timeout", "no data for 60 s", line=3) == (
        b'event: error\ndata: {"code":"upstream_timeout","message":"no data for 60 s","line":3}\n\n'
    )


def test_error_message_with_line_breaks_cannot_forge_framing():
    wire = StreamConverter(EventsConfig().rules).error("x", "a\n\ndata: forged")
    assert wire == b'event: error\ndata: {"code":"x","message":"a\\n\\ndata: forged"}\n\n'


def test_heartbeat_is_a_comment():
    assert StreamConverter.heartbeat() == b": ping\n\n"


# -- SSE passthrough -------------------------------------------------------------------------------


def test_sse_passthrough_is_re_encoded_with_ids_only_when_they_change():
    upstream = (
        b"retry: 500\n\n"
        b": upstream heartbeat\n\n"
        b"id: 1\nevent: tick\ndata: a\n\n"
        b"event: message\ndata: b\nfoo: ignored\n\n"
        b"id: 2\ndata: c\rdata: d\n\n"
        b"id: 2\ndata: e\n\n"
        b"id\ndata: f\n\n"
    )
    assert convert([upstream], "sse") == (
        b"retry: 500\n\n"
        b"id: 1\nevent: tick\ndata: a\n\n"
        b"data: b\n\n"
        b"id: 2\ndata: c\ndata: d\n\n"
        b"data: e\n\n"
        b"id: \ndata: f\n\n"
    )


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_sse_passthrough_does_not_depend_on_chunking(chunker):
    upstream = b"\xef\xbb\xbfid: 1\r\ndata: a\r\n\r\ndata: b\r\r"
    assert convert(chunker(upstream), "sse") == b"id: 1\ndata: a\n\ndata: b\n\n"


def test_sse_passthrough_counts_events_sent():
    converter = StreamConverter(EventsConfig().rules)
    converter.sse([SSERetry(1), SSEEvent("a"), SSEEvent("b")])
    assert converter.sequence == 2


def test_sse_upstream_that_stops_mid_event_raises_incomplete_event():
    decoder = EventsToEvents(StreamConverter(EventsConfig().rules), 1024)
    assert decoder.feed(b"data: a\n\ndata: b\n") == b"data: a\n\n"
    assert decoder.flush() == b""
    with pytest.raises(StreamError) as caught:
        decoder.flush()
    assert caught.value is decoder.failure
    assert caught.value.code == "incomplete_event"
    assert not isinstance(caught.value, LineTooLong)


def test_sse_upstream_that_ends_between_events_finishes_cleanly():
    decoder = EventsToEvents(StreamConverter(EventsConfig().rules), 1024)
    decoder.feed(b"data: a\n\n")
    assert decoder.flush() == b"event: end\ndata:\n\n"
    assert decoder.failure is None


def test_sse_line_too_long_returns_the_events_before_it_and_the_next_call_raises():
    decoder = EventsToEvents(StreamConverter(EventsConfig().rules), 16)
    assert decoder.feed(b"id: 1\ndata: a\n\ndata: " + b"x" * 20 + b"\n\n") == (
        b"id: 1\ndata: a\n\n"
    )
    with pytest.raises(LineTooLong):
        decoder.feed(b"data: b\n\n")


# -- limits and decoders ---------------------------------------------------------------------------


def test_lines_line_too_long_returns_the_events_of_the_lines_before_it():
    decoder = LinesToEvents(StreamConverter(EventsConfig().rules), 16)
    output = decoder.feed(b'{"a":1}\n\n{"b":2}\n' + b"x" * 20 + b"\n{}\n")
    assert output == b'id: 1\ndata: {"a":1}\n\nid: 2\ndata: {"b":2}\n\n'
    assert isinstance(decoder.failure, LineTooLong)
    assert decoder.failure.line_number == 4
    with pytest.raises(LineTooLong):
        decoder.flush()


def test_lines_line_too_long_on_a_partial_line_returns_the_lines_before_it():
    decoder = LinesToEvents(StreamConverter(EventsConfig(data="/a").rules), 16)
    assert decoder.feed(b'{"a":1}\n' + b"x" * 20) == b"id: 1\ndata: 1\n\n"
    with pytest.raises(LineTooLong) as caught:
        decoder.feed(b"\n")
    assert caught.value.line_number == 2


def test_document_becomes_one_event():
    decoder = DocumentToEvent(StreamConverter(EventsConfig(data="/message/content").rules), 1024)
    assert decoder.feed(b'{"message":') == b""
    assert decoder.feed(b'{"content":"hi"}}') == b""
    assert decoder.flush() == b"id: 1\ndata: hi\n\nevent: end\ndata:\n\n"


def test_document_of_exactly_the_limit_passes():
    decoder = DocumentToEvent(StreamConverter(EventsConfig().rules), 8)
    decoder.feed(b'{"a":12}')
    assert decoder.flush() == b'id: 1\ndata: {"a":12}\n\nevent: end\ndata:\n\n'


def test_document_over_the_limit_raises_line_too_long():
    decoder = DocumentToEvent(StreamConverter(EventsConfig().rules), 8)
    decoder.feed(b'{"a":')
    assert decoder.feed(b"123}") == b""
    with pytest.raises(LineTooLong) as caught:
        decoder.flush()
    assert caught.value.line_number == 1
    assert caught.value.limit == 8


def test_pretty_printed_document_cannot_forge_event_framing():
    # A JSON document is often pretty-printed: its line breaks must become data: lines, never
    # bare lines on the wire (a bare line is a field name, an empty one ends the event).
    document = b'{\n  "a": 1,\n\n  "b": "data: forged"\n}\n'
    wire = convert([document], "json")
    events = SSEParser().feed(wire)
    # Whitespace aside (a fix may keep the line breaks or compact the JSON), one whole document.
    assert [event.data.replace("\n", "").replace(" ", "") for event in events] == [
        '{"a":1,"b":"data:forged"}'
    ], wire
    assert all(
        line.startswith((b"id:", b"data:")) for line in wire.split(b"\n\n")[0].split(b"\n")
    ), wire


@pytest.mark.parametrize(
    ("framing", "kind"),
    [
        ("ndjson", LinesToEvents),
        ("json-seq", LinesToEvents),
        ("sse", EventsToEvents),
        ("json", DocumentToEvent),
        ("json-or-ndjson", LinesOrDocument),
    ],
)
def test_body_decoder_picks_the_decoder_for_the_framing(framing, kind):
    assert isinstance(body_decoder(framing, StreamConverter(EventsConfig().rules), 64), kind)


def test_json_seq_decoder_strips_separators_but_ndjson_does_not():
    assert convert([b'\x1e"a"\n'], "json-seq") == b'id: 1\ndata: "a"\n\n'
    assert convert([b"\x1ea\n"], "ndjson") == b"id: 1\ndata: \x1ea\n\n"


# -- properties ------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(
        st.sampled_from(
            [b'{"m":"a"}', b'{"m":"b\\nc"}', b'{"m":1}', b"", b"  ", b"nope", b'{"x":0}', b"\xff"]
        ),
        max_size=10,
    ),
    separator=st.sampled_from([b"\n", b"\r\n"]),
    pointer=st.booleans(),
    data=st.data(),
)
def test_output_does_not_depend_on_chunking(lines, separator, pointer, data):
    raw = b"".join(line + separator for line in lines)
    rules = {"data": "/m"} if pointer else {}
    assert convert(data.draw(splits(raw)), **rules) == convert([raw], **rules)


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.binary(max_size=20).map(lambda b: b.replace(b"\n", b"")), max_size=8))
def test_line_mode_gives_one_event_per_non_blank_line_whatever_the_bytes(lines):
    raw = b"".join(line + b"\n" for line in lines)
    events = SSEParser().feed(convert([raw]))
    kept = [line.removesuffix(b"\r") for line in lines]
    kept[:1] = [line.removeprefix(b"\xef\xbb\xbf") for line in kept[:1]]
    kept = [line for line in kept if line and not line.isspace()]
    assert events == [
        SSEEvent(line.decode("utf-8", "replace").replace("\r", "\n"), id=str(number))
        for number, line in enumerate(kept, 1)
    ]


# -- complete_when: a stream is whole only with its terminal line ----------------------------------


def finish(chunks: list[bytes], framing: str = "ndjson", **rules) -> tuple[bytes, bool]:
    """The wire as the relay writes it: the events, then the end event or the failure's."""
    converter = StreamConverter(EventsConfig(**rules).rules)
    decoder = body_decoder(framing, converter, 1024)
    wire = b"".join(decoder.feed(chunk) for chunk in chunks) + decoder.flush()
    if decoder.failure is not None:
        wire += converter.error(decoder.failure.code, str(decoder.failure))
    return wire, converter.complete


@pytest.mark.parametrize(
    ("lines", "complete"),
    [
        pytest.param([b'{"done": false}\n', b'{"done": true}\n'], True, id="terminal-line"),
        pytest.param([b'{"done": true}\n', b'{"done": false}\n'], True, id="stays-complete"),
        pytest.param([b'{"done": false}\n'], False, id="cut-before-it"),
        pytest.param([], False, id="empty-stream"),
        pytest.param([b'{"done": "true"}\n'], False, id="a-string-is-not-true"),
        pytest.param([b'{"done": 1}\n'], False, id="one-is-not-true"),
        pytest.param([b'{"other": 1}\n'], False, id="missing-member"),
        pytest.param([b'{"done": tru'], False, id="cut-inside-the-line"),
    ],
)
def test_complete_when_decides_between_end_and_incomplete(lines, complete):
    wire, is_complete = finish(lines, complete_when="/done")
    assert is_complete is complete
    last = [e for e in SSEParser().feed(wire) if isinstance(e, SSEEvent)][-1]
    if complete:
        assert last.event == "end"
    else:
        assert last.event == "error"
        assert orjson.loads(last.data)["code"] == "incomplete"


def test_complete_when_applies_to_upstream_sse_events_whose_data_is_json():
    wire, complete = finish(
        [b'data: {"done": true}\n\ndata: [DONE]\n\n'], "sse", complete_when="/done"
    )
    assert complete
    assert wire.endswith(b"event: end\ndata:\n\n")


def test_without_complete_when_every_eof_is_an_end():
    wire, complete = finish([b'{"done": false}\n'])
    assert complete
    assert wire.endswith(b"event: end\ndata:\n\n")
