"""``framing: auto`` with a JSON label: the body's first line says whether it is NDJSON (a
Kubernetes watch, etcd's ``/v3/watch``) or one document, whatever the chunk boundaries."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from proxy.config import EventsConfig
from proxy.convert import StreamConverter
from proxy.decoders import DocumentToEvent, LinesOrDocument
from proxy.errors import LineTooLong
from proxy.sse import SSEParser
from tests.support.chunking import CHUNKERS, splits

ETCD_WATCH = (
    b'{"result":{"header":{"revision":"7"},"created":true}}\n'
    b'{"result":{"header":{"revision":"8"},"events":[{"kv":{"key":"YQ=="}}]}}\n'
    b'{"result":{"header":{"revision":"9"},"events":[{"kv":{"key":"Yg=="}}]}}\n'
)
PRETTY = b'{\n  "items": [\n    1,\n    2\n  ]\n}\n'


def decoder(max_line_bytes: int = 1024, **rules) -> LinesOrDocument:
    rules.setdefault("end_event", None)
    return LinesOrDocument(StreamConverter(EventsConfig(**rules).rules), max_line_bytes)


def datas(wire: bytes) -> list[str]:
    return [event.data for event in SSEParser().feed(wire)]


def run(chunks: list[bytes], **rules) -> list[str]:
    body = decoder(**rules)
    wire = b"".join(body.feed(chunk) for chunk in chunks) + body.flush()
    assert body.failure is None
    return datas(wire)


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_json_lines_under_a_json_label_are_an_event_each(chunker):
    assert run(chunker(ETCD_WATCH)) == [line.decode() for line in ETCD_WATCH.splitlines()]


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_a_pretty_printed_document_is_one_event(chunker):
    (data,) = run(chunker(PRETTY))
    assert data.replace("\n", "").replace(" ", "") == '{"items":[1,2]}'


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"a": 1}', id="no-line-break"),
        pytest.param(b'{"a": 1}\n', id="one-line"),
        pytest.param(b'{"a": 1}\r\n\n  \n', id="trailing-blank-lines"),
        pytest.param(b'\n\n{"a": 1}\n', id="leading-blank-lines"),
        pytest.param(b'\xef\xbb\xbf{"a": 1}\n', id="byte-order-mark"),
    ],
)
def test_a_single_line_document_is_one_event_as_before(body):
    assert run([body]) == ['{"a": 1}']


def test_the_first_line_is_an_event_as_soon_as_it_ends():
    # A watch sends its first line and then may stay quiet for minutes: no waiting for more.
    body = decoder()
    first = ETCD_WATCH.splitlines(keepends=True)[0]
    assert datas(body.feed(first)) == [first.strip().decode()]
    assert not body.holding_document


def test_until_the_first_line_ends_nothing_is_decided_or_sent():
    body = decoder()
    assert body.feed(b'{"result": {"hea') == b""
    assert body.holding_document
    assert datas(body.feed(b'der": {}}}\n{"n": 2}\n')) == ['{"result": {"header": {}}}', '{"n": 2}']


def test_a_document_that_is_still_coming_is_held():
    body = decoder()
    assert body.feed(b"{\n") == b""
    assert body.feed(b'  "a": 1\n') == b""
    assert body.holding_document


def test_with_a_data_pointer_each_line_of_a_watch_is_read_on_its_own():
    lines = b'{"type":"ADDED","object":{"n":1}}\n{"type":"MODIFIED","object":{"n":2}}\n'
    assert run([lines], data="/object/n", event_from="/type") == ["1", "2"]


def test_a_later_line_that_is_not_json_is_that_line_s_error_and_the_stream_goes_on():
    body = decoder(data="/n")
    events = SSEParser().feed(body.feed(b'{"n": 1}\nnot json\n{"n": 3}\n') + body.flush())
    assert [(e.event, e.data) for e in events if e.event != "error"] == [
        ("message", "1"),
        ("message", "3"),
    ]
    assert [e.event for e in events].count("error") == 1


def test_a_first_line_that_never_ends_is_bounded():
    body = decoder(max_line_bytes=16)
    assert body.feed(b'{"a": "' + b"x" * 8) == b""
    assert body.feed(b"x" * 16) == b""
    assert isinstance(body.failure, LineTooLong)
    assert body.failure.line_number == 1
    with pytest.raises(LineTooLong):
        body.feed(b"more")


def test_blank_lines_before_the_first_value_do_not_count_against_the_bound():
    body = decoder(max_line_bytes=16)
    output = body.feed(b"\n" * 64) + body.feed(b'{"a": 1}\n') + body.flush()
    assert body.failure is None
    assert datas(output) == ['{"a": 1}']


def test_a_long_line_after_the_first_is_bounded_as_ndjson_lines_are():
    body = decoder(max_line_bytes=16)
    output = body.feed(b'{"a": 1}\n{"b": "' + b"y" * 32 + b'"}\n')
    assert datas(output) == ['{"a": 1}']
    assert isinstance(body.failure, LineTooLong)
    assert body.failure.line_number == 2


@pytest.mark.parametrize("body", [b"", b"   ", b"{\n"], ids=["empty", "blank", "cut-document"])
def test_a_body_that_is_no_line_ends_as_framing_json_would(body):
    document = DocumentToEvent(StreamConverter(EventsConfig(end_event=None).rules), 1024)
    sniffing = decoder()
    assert sniffing.feed(body) + sniffing.flush() == document.feed(body) + document.flush()
    assert repr(sniffing.failure) == repr(document.failure)


@settings(max_examples=200, deadline=None)
@given(chunks=splits(ETCD_WATCH))
def test_any_chunking_of_a_watch_gives_the_same_events(chunks):
    assert run(chunks) == [line.decode() for line in ETCD_WATCH.splitlines()]


@settings(max_examples=200, deadline=None)
@given(chunks=splits(PRETTY))
def test_any_chunking_of_a_document_gives_the_same_event(chunks):
    (data,) = run(chunks)
    assert data.replace("\n", "").replace(" ", "") == '{"items":[1,2]}'
