"""The console's tap, pure: each upstream unit as an ``upstream-line`` event before what it became."""

from __future__ import annotations

import orjson
import pytest

from proxy.config import EventsConfig
from proxy.console.tap import RAW_TEXT_LIMIT, TAP_EVENT, TappedConverter
from proxy.convert import StreamConverter
from proxy.decoders import body_decoder
from proxy.sse import SSEEvent, SSEParser
from tests.support.chunking import CHUNKERS


def run(chunks: list[bytes], framing: str = "ndjson", converter_class=TappedConverter, **rules):
    rules.setdefault("end_event", None)  # the tap's events only
    converter = converter_class(EventsConfig(**rules).rules)
    decoder = body_decoder(framing, converter, 1 << 20)
    wire = b"".join(decoder.feed(chunk) for chunk in chunks) + decoder.flush()
    return [e for e in SSEParser().feed(wire) if isinstance(e, SSEEvent)]


def pairs(events: list[SSEEvent]) -> list[tuple[dict, list[tuple[str, str, str]]]]:
    """Each tap with the events that followed it."""
    out: list[tuple[dict, list[tuple[str, str, str]]]] = []
    for event in events:
        if event.event == TAP_EVENT:
            out.append((orjson.loads(event.data), []))
        else:
            out[-1][1].append((event.event, event.id, event.data))
    return out


LINES = b'{"type": "ADDED", "v": 1}\n\n{"type": "DELETED", "v": 2}\nnot json\n'


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_each_line_is_tapped_before_the_event_it_became(chunker):
    tapped = pairs(run(chunker(LINES), event_from="/type", data="/v"))
    assert [(tap["raw"], tap["events"], after) for tap, after in tapped[:3]] == [
        ('{"type": "ADDED", "v": 1}', ["ADDED"], [("ADDED", "1", "1")]),
        ("", [], []),  # a blank line: shown, and it became nothing
        ('{"type": "DELETED", "v": 2}', ["DELETED"], [("DELETED", "2", "2")]),
    ]
    bad_line, ((name, _, data),) = tapped[3]
    assert (bad_line["raw"], bad_line["events"], name) == ("not json", ["error"], "error")
    assert orjson.loads(data)["code"] == "invalid_json"
    assert orjson.loads(data)["line"] == 4


def test_without_the_tap_the_same_events_arrive():
    tapped = [e for e in run([LINES], event_from="/type") if e.event != TAP_EVENT]
    plain = run([LINES], converter_class=StreamConverter, event_from="/type")
    assert tapped == plain


def test_upstream_sse_events_are_tapped_as_their_fields():
    events = run([b"event: delta\nid: 7\ndata: a\ndata: b\n\ndata: [DONE]\n\n"], "sse")
    assert [(tap["raw"], after) for tap, after in pairs(events)] == [
        ("event: delta\nid: 7\ndata: a\ndata: b", [("delta", "7", "a\nb")]),
        ("id: 7\ndata: [DONE]", [("message", "7", "[DONE]")]),
    ]


def test_a_json_document_is_tapped_whole():
    events = run([b'{"a":\n 1}'], "json")
    ((tap, after),) = pairs(events)
    assert tap["raw"] == '{"a":\n 1}'
    assert after == [("message", "1", '{"a":\n 1}')]


def test_a_long_line_is_tapped_cut_short_with_its_full_size():
    line = b'"' + b"x" * (3 * RAW_TEXT_LIMIT) + b'"'
    ((tap, after),) = pairs(run([line + b"\n"]))
    assert tap["bytes"] == len(line)
    assert tap["truncated"] is True
    assert len(tap["raw"]) == RAW_TEXT_LIMIT
    assert after[0][2] == line.decode()  # the event itself is whole
