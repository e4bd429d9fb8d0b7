"""The fuzz target: arbitrary bytes through framer, converter and SSE parser, with an oracle.

Strategy: :func:`one_input` reads its input as a small header and an upstream body (layout in
:func:`decode_input`), so one byte string picks the framing, the route's ``events`` rules, the
line limit and where the body is cut into chunks. The body then goes through the gateway's own
pipeline exactly as the relay drives it (``start()``, ``feed()`` per chunk, ``flush()``; a
failure the decoder keeps, a :class:`~proxy.errors.StreamError`, ends the wire with one error
event) and the client's bytes are checked four ways:

1. only the documented failures happen (``StreamError`` and its ``LineTooLong``, kept by the
   decoder and turned into error events; anything raised is a crash);
2. the output does not depend on where the body was cut;
3. the wire is well formed: no CR anywhere, blocks of ``[id] [event] data+`` or one ``retry``,
   every line a known field, so no upstream byte can have become a line or event boundary;
4. ``SSEParser`` reads back exactly the events an independent model of the route rules expects
   (whole and at the same cuts), and no event is left open at the end.

No atheris here: ``fuzz_stream.py`` drives this with atheris (coverage-guided) or, without it,
with random inputs; ``tests/unit/test_fuzz.py`` runs it on the seed corpus and on hypothesis' bytes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import orjson

from proxy.convert import EventRules, StreamConverter
from proxy.decoders import body_decoder
from proxy.errors import StreamError
from proxy.pointer import JsonPointer
from proxy.sse import SSEEvent, SSEParser, SSERetry

__all__ = ["FRAMINGS", "Case", "decode_input", "encode_input", "one_input"]

FRAMINGS: Final = ("ndjson", "json-seq", "sse", "json")
LIMITS: Final = (16, 64, 1024, 1 << 20)
EVENTS: Final = (("message", None), ("tok", None), ("message", "/e"), ("tok", "/e"))
IDS: Final = ("sequence", "none", "/i", "sequence")
HEADER_BYTES: Final = 3
MAX_CUTS: Final = 15
BOM: Final = b"\xef\xbb\xbf"
RS: Final = b"\x1e"
CLIENT_MAX_BYTES: Final = 1 << 26
_BREAKS: Final = re.compile(r"\r\n|\r|\n")
_RETRY_LINE: Final = re.compile(rb"retry: [0-9]+")

Expected = tuple[Any, ...]
"""``("retry", ms)``, ``("event", data, name, id)`` or ``("error", code, line, message, id)``
(``line`` None when the payload has none, ``message`` None when not checked)."""


@dataclass(frozen=True)
class Case:
    framing: str
    rules: tuple[str, str, str | None, str, str | None, str | None]
    """data, event, event_from, id, error_from, complete_when."""
    max_line_bytes: int
    cuts: tuple[int, ...]
    body: bytes

    @property
    def config(self) -> EventRules:
        return _config(self.rules)

    def chunks(self) -> list[bytes]:
        return cut(self.body, self.cuts)


@functools.cache
def _config(rules: tuple[str, str, str | None, str, str | None, str | None]) -> EventRules:
    data, event, event_from, id_rule, error_from, complete_when = rules
    return EventRules(
        data=_pointer_or(data),
        event=event,
        event_from=_pointer_or(event_from),
        id=_pointer_or(id_rule),
        end_event="end",
        error_event="error",
        retry=3000,
        error_from=_pointer_or(error_from),
        complete_when=_pointer_or(complete_when),
    )


def _pointer_or(value: Any) -> Any:
    """A rule's value as the config model would give it: a JSON Pointer, or the keyword."""
    return JsonPointer(value) if isinstance(value, str) and value.startswith("/") else value


def decode_input(data: bytes) -> Case:
    """Header byte 0: framing (bits 0-1), ``data: /d`` (bit 2), event rule (bits 3-4), id rule
    (bits 5-6), ``error_from: /err`` (bit 7). Byte 1: ``complete_when: /done`` (bit 0), line limit
    (bits 1-2). Byte 2: the number of cuts (low 4 bits), each then two bytes (big-endian, taken
    modulo the body's length + 1). The rest is the upstream body."""
    b0, b1, b2 = (data[:HEADER_BYTES] + bytes(HEADER_BYTES))[:HEADER_BYTES]
    count = b2 & MAX_CUTS
    raw_cuts = data[HEADER_BYTES : HEADER_BYTES + 2 * count]
    body = data[HEADER_BYTES + 2 * count :]
    cuts = tuple(
        int.from_bytes(raw_cuts[i : i + 2], "big") % (len(body) + 1)
        for i in range(0, len(raw_cuts) - 1, 2)
    )
    event, event_from = EVENTS[(b0 >> 3) & 3]
    rules = (
        "/d" if b0 & 4 else "line",
        event,
        event_from,
        IDS[(b0 >> 5) & 3],
        "/err" if b0 & 0x80 else None,
        "/done" if b1 & 1 else None,
    )
    return Case(FRAMINGS[b0 & 3], rules, LIMITS[(b1 >> 1) & 3], tuple(sorted(cuts)), body)


def encode_input(
    body: bytes,
    *,
    framing: str = "ndjson",
    data: str = "line",
    event: int = 0,
    id_rule: int = 0,
    error_from: bool = False,
    complete_when: bool = False,
    limit: int = 3,
    cuts: Iterable[int] = (),
) -> bytes:
    """The input that :func:`decode_input` reads back as these settings (for seeds and tests)."""
    cut_list = list(cuts)[:MAX_CUTS]
    b0 = FRAMINGS.index(framing) | (4 if data == "/d" else 0) | event << 3 | id_rule << 5
    b0 |= 0x80 if error_from else 0
    b1 = (1 if complete_when else 0) | limit << 1
    head = bytes([b0, b1, len(cut_list)])
    return head + b"".join(c.to_bytes(2, "big") for c in cut_list) + body


def cut(data: bytes, points: Iterable[int]) -> list[bytes]:
    chunks, start = [], 0
    for point in sorted(points):
        chunks.append(data[start:point])
        start = point
    chunks.append(data[start:])
    return chunks


# -- the pipeline, as the handler drives it ------------------------------------------------------


def run_pipeline(case: Case, chunks: list[bytes]) -> bytes:
    """The wire, as the relay writes a decoded source: each output as it comes; a failure (a
    documented :class:`StreamError`, kept by the decoder) ends it with its error event. Anything
    raised instead is a finding."""
    converter = StreamConverter(case.config)
    decoder = body_decoder(case.framing, converter, case.max_line_bytes)
    out = [converter.start()]
    for chunk in chunks:
        out.append(decoder.feed(chunk))
        if decoder.failure is not None:
            break
    else:
        out.append(decoder.flush())
    failure = decoder.failure
    if failure is not None:
        assert isinstance(failure, StreamError)
        out.append(converter.error(failure.code, str(failure)))
    return b"".join(out)


def one_input(data: bytes) -> None:
    """The target: raises AssertionError (or any undocumented exception) on a finding."""
    case = decode_input(data)
    wire = run_pipeline(case, case.chunks())
    whole = run_pipeline(case, [case.body])
    assert wire == whole, f"output depends on chunking:\n{wire!r}\n{whole!r}"
    check_wire(wire)
    items = parse_client(cut(wire, (p * len(wire) // (len(case.body) + 1) for p in case.cuts)))
    assert items == parse_client([wire]), "the client parse depends on chunking"
    expected = expected_items(case)
    assert comparable(items, expected) == expected, (
        f"events differ from the model:\n{comparable(items, expected)}\n{expected}"
    )


def check_wire(wire: bytes) -> None:
    """Every byte of the output is framing we wrote: upstream bytes are confined to values."""
    assert b"\r" not in wire, f"a CR reached the wire: {wire!r}"
    if not wire:
        return
    assert wire.endswith(b"\n\n"), f"the output does not end at an event boundary: {wire!r}"
    for block in wire[:-2].split(b"\n\n"):
        lines = block.split(b"\n")
        assert all(lines), f"an empty line inside a block (a forged boundary): {block!r}"
        if lines[0].startswith(b"retry:"):
            assert len(lines) == 1, f"a retry line inside an event: {block!r}"
            assert _RETRY_LINE.fullmatch(lines[0]), block
            continue
        fields = [line.partition(b":")[0] for line in lines]
        head = fields[: len(fields) - len(_trailing(fields, b"data"))]
        assert head in ([], [b"id"], [b"event"], [b"id", b"event"]), f"bad block: {block!r}"
        assert len(head) < len(fields), f"a block without data: {block!r}"
        for line in lines:
            if line.startswith(b"id"):
                assert line.startswith(b"id: "), block
                assert b"\x00" not in line, f"a NUL in an id (browsers drop the id): {block!r}"
            elif line.startswith(b"event"):
                assert line.startswith(b"event: "), block
                assert len(line) > len(b"event: "), f"an empty event name: {block!r}"
            else:
                assert line == b"data:" or line.startswith(b"data: "), block


def _trailing(fields: list[bytes], name: bytes) -> list[bytes]:
    tail: list[bytes] = []
    for field in reversed(fields):
        if field != name:
            break
        tail.append(field)
    return tail


def parse_client(chunks: list[bytes]) -> list[SSEEvent | SSERetry]:
    parser = SSEParser(CLIENT_MAX_BYTES)
    items: list[SSEEvent | SSERetry] = []
    for chunk in chunks:
        items += parser.feed(chunk)
    assert not parser.in_event, "the output ends in the middle of an event"
    return items


def comparable(items: list[SSEEvent | SSERetry], expected: list[Expected]) -> list[Expected]:
    """The parsed items in the model's shape; an error event's JSON is read where one is due."""
    out: list[Expected] = []
    for index, item in enumerate(items):
        if isinstance(item, SSERetry):
            out.append(("retry", item.milliseconds))
            continue
        due = expected[index] if index < len(expected) else ()
        if due[:1] == ("error",) and item.event == "error":
            payload = orjson.loads(item.data)
            message = payload.get("message") if due[3] is not None else None
            out.append(("error", payload.get("code"), payload.get("line"), message, item.id))
        else:
            out.append(("event", item.data, item.event, item.id))
    return out


# -- the model: what the route rules promise ----------------------------------------------------


def normalise(text: str) -> str:
    return _BREAKS.sub("\n", text)


def expected_items(case: Case) -> list[Expected]:
    if case.framing == "sse":
        return _expected_from_sse(case)
    data, event, event_from, id_rule, error_from, complete_when = case.rules
    json_mode = data != "line" or event_from or id_rule not in ("sequence", "none")
    json_mode = json_mode or error_from is not None or complete_when is not None
    lines, too_long = reference_lines(case)
    out: list[Expected] = [("retry", 3000)]
    sequence, last_id, complete = 0, "", complete_when is None

    def error(code: str, line: int | None, message: str | None = None) -> None:
        out.append(("error", code, line, message, last_id))

    for number, line in enumerate(lines, 1):
        if not line or line.isspace():
            continue
        if not json_mode:
            sequence += 1
            last_id = str(sequence) if id_rule == "sequence" else last_id
            out.append(("event", normalise(line.decode("utf-8", "replace")), event, last_id))
            continue
        try:
            document = orjson.loads(line)
        except orjson.JSONDecodeError:
            error("invalid_json", number)
            continue
        members = document if isinstance(document, dict) else {}
        if complete_when and members.get("done") is True:
            complete = True
        if error_from and members.get("err") is not None:
            failure = members["err"]
            error("upstream_error", number, failure if type(failure) is str else _json(failure))
            continue
        if data == "line":
            text = line.decode()
        elif "d" not in members:
            error("pointer_not_found", number)
            continue
        else:
            value = members["d"]
            text = value if type(value) is str else _json(value)
        name = event
        if event_from and "e" in members:
            if type(members["e"]) is not str:
                error("invalid_event_name", number)
                continue
            name = members["e"].replace("\r", "").replace("\n", "") or event
        new_id: str | None = None
        if id_rule == "/i" and "i" in members:
            if type(members["i"]) not in (str, int):
                error("invalid_event_id", number)
                continue
            new_id = re.sub("[\r\n\x00]", "", str(members["i"]))
        sequence += 1
        new_id = str(sequence) if id_rule == "sequence" else new_id
        last_id = last_id if new_id is None else new_id
        out.append(("event", normalise(text), name, last_id))
    if too_long is not None:
        limit = case.max_line_bytes
        error("line_too_long", None, f"line {too_long} is longer than max_line_bytes ({limit})")
    elif complete:
        out.append(("event", "", "end", last_id))
    else:
        error(
            "incomplete", None, "the upstream stream ended without its terminal line (/done true)"
        )
    return out


def reference_lines(case: Case) -> tuple[list[bytes], int | None]:
    """The body's lines as the framing defines them, up to the first one over the limit, and
    that one's number (None if none)."""
    limit = case.max_line_bytes
    if case.framing == "json":
        return ([case.body], None) if len(case.body) <= limit else ([], 1)
    body = case.body.removeprefix(BOM)
    pieces = body.split(b"\n")
    if not pieces[-1]:
        pieces.pop()
    lines: list[bytes] = []
    for number, piece in enumerate(pieces, 1):
        line = piece.removesuffix(b"\r")
        if len(line) > limit:
            return lines, number
        lines.append(line.removeprefix(RS) if case.framing == "json-seq" else line)
    return lines, None


def _expected_from_sse(case: Case) -> list[Expected]:
    """An upstream that speaks SSE: its own events (read by the parser under test, which its own
    state machine checks), each kept with its name, data and id, its retries kept."""
    parser = SSEParser(case.max_line_bytes)
    items: list[SSEEvent | SSERetry] = []
    items = parser.feed(case.body)
    failed = parser.failure is not None
    cut_off = parser.in_event and not failed
    out: list[Expected] = [("retry", 3000)]
    complete = case.rules[5] is None
    last_id = ""
    for item in items:
        if isinstance(item, SSERetry):
            out.append(("retry", item.milliseconds))
            continue
        last_id = item.id
        out.append(("event", item.data, item.event, item.id))
        if not complete:
            try:
                document = orjson.loads(item.data)
            except orjson.JSONDecodeError:
                continue
            complete = isinstance(document, dict) and document.get("done") is True
    if failed:
        limit = case.max_line_bytes
        message = f"an event stream line or event is longer than max_line_bytes ({limit})"
        out.append(("error", "line_too_long", None, message, last_id))
    elif cut_off:
        message = "the upstream event stream ended in the middle of an event"
        out.append(("error", "incomplete_event", None, message, last_id))
    elif complete:
        out.append(("event", "", "end", last_id))
    else:
        message = "the upstream stream ended without its terminal line (/done true)"
        out.append(("error", "incomplete", None, message, last_id))
    return out


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()
