"""The event-stream parsing cases of the conformance suite, written from the WHATWG spec.

Each case is the exact bytes of one response body and what a browser's EventSource dispatches
from it: ``(type, data, lastEventId)`` per event, in order, with ``SSERetry`` where a valid
``retry`` field is (the browser shows nothing for those). The list of cases follows what
web-platform-tests ``eventsource/format-*`` and rexxars/eventsource-parser's tests cover, plus
the edges around them (BOM placement, CR/LF pairing, UTF-8 replacement, id persistence); the
bytes and expectations are ours, derived from the spec's "event stream interpretation".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from proxy.sse import SSEEvent, SSEParser, SSERetry

__all__ = ["BOM", "CASES", "Case", "Expected", "event_names", "msg", "parse_chunks"]

BOM = b"\xef\xbb\xbf"

#: ``(type, data, lastEventId)`` of a dispatched event, or a valid ``retry``.
Expected = tuple[str, str, str] | SSERetry


def msg(data: str, last_id: str = "", type: str = "message") -> tuple[str, str, str]:
    return (type, data, last_id)


@dataclass(frozen=True)
class Case:
    id: str
    raw: bytes
    expected: tuple[Expected, ...]
    content_type: str = "text/event-stream"
    #: Why Chromium fails the connection before parsing a byte, when it does: then the browser
    #: test checks that refusal, and only the pure tests check the events.
    chromium_refuses: str = ""


def case(
    id: str,
    raw: bytes,
    *expected: Expected,
    content_type: str = "text/event-stream",
    chromium_refuses: str = "",
) -> Case:
    return Case(id, raw, expected, content_type, chromium_refuses)


LONG_VALUE = "é€😀x" * 10_000  # 100,000 bytes; multi-byte characters straddle every chunking
COMMENT_FILLER = b"x" * 2048  # WPT's comment fest uses 2 KiB comments

CASES: list[Case] = [
    # -- byte order mark ---------------------------------------------------------------------------
    case("bom-leading-is-dropped", BOM + b"data: a\n\n", msg("a")),
    case(
        "bom-twice-second-is-part-of-the-field-name",
        BOM + BOM + b"data: 1\n\ndata: 2\n\ndata: 3\n\n",
        msg("2"),
        msg("3"),
    ),
    case(
        "bom-at-start-of-a-later-event-makes-its-line-unknown",
        b"data: a\n\n" + BOM + b"data: b\n\ndata: c\n\n",
        msg("a"),
        msg("c"),
    ),
    case(
        "bom-at-start-of-second-line-makes-it-unknown",
        b"data: a\n" + BOM + b"data: b\n\n",
        msg("a"),
    ),
    case(
        "bom-after-a-leading-blank-line-is-not-dropped",
        b"\n" + BOM + b"data: a\n\ndata: b\n\n",
        msg("b"),
    ),
    # The spec reads the line break right after a leading BOM as an empty line. Chromium (the
    # reference, see FORMATS.md) keeps that byte as the first character of the next line, whose
    # field name ("\ndata") is then unknown and ignored; our parser does the same.
    case("bom-then-lf-glues-to-the-next-line-as-in-chromium", BOM + b"\ndata: a\n\n"),
    case("bom-then-cr-glues-to-the-next-line-as-in-chromium", BOM + b"\rdata: a\n\n"),
    case("bom-then-crlf-leaves-a-lone-lf-line-end", BOM + b"\r\ndata: a\n\n", msg("a")),
    case("bom-inside-a-data-value-is-kept", b"data: " + BOM + b"a\n\n", msg("\ufeffa")),
    case("bom-partial-at-start-is-not-a-bom", b"\xef\xbbdata: a\n\ndata: b\n\n", msg("b")),
    # -- line endings ------------------------------------------------------------------------------
    case("lf", b"data: a\ndata: b\n\n", msg("a\nb")),
    case("crlf", b"data: a\r\ndata: b\r\n\r\n", msg("a\nb")),
    case("cr", b"data: a\rdata: b\r\r", msg("a\nb")),
    case("mixed-cr-lf-crlf", b"data: a\rdata: b\ndata: c\r\n\n", msg("a\nb\nc")),
    case("lf-then-cr-is-two-line-ends", b"data: a\n\rdata: b\n\n", msg("a"), msg("b")),
    case("cr-then-crlf-is-two-line-ends", b"data: a\r\r\ndata: b\n\n", msg("a"), msg("b")),
    case("crlf-then-lf-dispatches", b"data: a\r\n\ndata: b\r\n\r\n", msg("a"), msg("b")),
    case("wpt-newlines", b"data:test\r\ndata\ndata:test\r\n\r", msg("test\n\ntest")),
    case(
        "cr-only-stream-of-several-events",
        b"data: dog\rdata: bark\r\rdata: cat\rdata: meow\r\revent: done\rdata: \xe2\x9c\x94\r\r",
        msg("dog\nbark"),
        msg("cat\nmeow"),
        msg("✔", type="done"),
    ),
    case("only-line-breaks-dispatch-nothing", b"\n\n\r\r\n\r\n\n"),
    case("whitespace-only-line-is-not-blank", b"data: a\n \ndata: b\n\n", msg("a\nb")),
    case(
        "unicode-and-control-separators-are-not-line-ends",
        "data: a\u2028b\x85c\x0bd\x0ce\n\n".encode(),
        msg("a\u2028b\x85c\x0bd\x0ce"),
    ),
    # -- field parsing -----------------------------------------------------------------------------
    case("field-without-colon-is-empty-value", b"data\n\n", msg("")),
    case("data-colon-alone-dispatches-empty-string", b"data:\n\n", msg("")),
    case("two-bare-data-lines-give-one-newline", b"data\ndata\n\n", msg("\n")),
    case(
        "wpt-field-data", b"data:\n\ndata\ndata\n\ndata:test\n\n", msg(""), msg("\n"), msg("test")
    ),
    case("no-space-after-colon", b"data:a\n\n", msg("a")),
    case("only-one-space-removed", b"data:  a\n\n", msg(" a")),
    case("tab-after-colon-kept", b"data:\ta\n\n", msg("\ta")),
    case("trailing-spaces-kept", b"data: a  \n\n", msg("a  ")),
    case("wpt-leading-space", b"data:\ttest\rdata: \ndata:test\n\n", msg("\ttest\n\ntest")),
    case("colons-in-the-value-are-kept", b"data: a:b: c\ndata::x\n\n", msg("a:b: c\n:x")),
    case(
        "space-before-colon-or-line-start-makes-another-field",
        b"data :x\n data: y\ndata: z\n\n",
        msg("z"),
    ),
    case(
        "field-names-are-case-sensitive",
        b"Data: a\nDATA: b\nEvent: x\nID: 5\ndata: c\n\n",
        msg("c"),
    ),
    case(
        "wpt-field-parsing",
        b"data:\x00\ndata:  2\rData:1\ndata\x00:2\ndata:1\r\x00data:4\nda-ta:3\rdata_5\ndata:3\r"
        b"data:\r\n data:32\ndata:4\n\n",
        msg("\x00\n 2\n1\n3\n\n4"),
    ),
    case(
        "unknown-fields-are-ignored",
        b"foo: bar\ndata: a\nretry2: 1\njustsometext\nevents: x\n\n",
        msg("a"),
    ),
    case(
        "wpt-field-unknown",
        b"data:test\n data\ndata\nfoobar:xxx\njustsometext\n:thisisacommentyay\ndata:test\n\n",
        msg("test\n\ntest"),
    ),
    # -- comments ----------------------------------------------------------------------------------
    case(
        "comments-ignored-even-between-data-lines",
        b": first\ndata: a\n: between\ndata: b\n:\n::\n:data: c\n\n",
        msg("a\nb"),
    ),
    case("comment-only-block-is-no-event", b": ping\n\n:\n\n"),
    case(
        "wpt-comment-fest",
        b"data:1\r:\x00\n:\r\ndata:2\n:"
        + COMMENT_FILLER
        + b"\rdata:3\n:data:fail\r:"
        + COMMENT_FILLER
        + b"\ndata:4\n\n",
        msg("1\n2\n3\n4"),
    ),
    case(
        "comments-between-events-and-a-final-unterminated-event",
        b"data:1\r\r:\x00\n:\r\ndata:2\n\n:"
        + COMMENT_FILLER
        + b"\rdata:3\n\n:data:fail\r:"
        + COMMENT_FILLER
        + b"\ndata:4\n\ndata:5",
        msg("1"),
        msg("2"),
        msg("3"),
        msg("4"),
    ),
    # -- event type --------------------------------------------------------------------------------
    case(
        "wpt-field-event-applies-to-one-event",
        b"event: test\ndata: x\n\ndata: x\n\n",
        msg("x", type="test"),
        msg("x"),
    ),
    case(
        "empty-event-name-is-message",
        b"event:\ndata: a\n\nevent: \ndata: b\n\n",
        msg("a"),
        msg("b"),
    ),
    case("event-message-named-explicitly", b"event: message\ndata: a\n\n", msg("a")),
    case("last-event-name-wins", b"event: a\nevent: b\ndata: x\n\n", msg("x", type="b")),
    case("event-name-after-data-applies", b"data: x\nevent: late\n\n", msg("x", type="late")),
    case(
        "event-name-keeps-the-second-space",
        b"event:  spaced\ndata: x\n\n",
        msg("x", type=" spaced"),
    ),
    case("event-name-non-ascii", "event: ünï€\ndata: x\n\n".encode(), msg("x", type="ünï€")),
    case("event-name-with-nul", b"event: a\x00b\ndata: x\n\n", msg("x", type="a\x00b")),
    case(
        "event-without-data-is-not-dispatched-and-its-name-reset",
        b"event: gone\n\ndata: a\n\n",
        msg("a"),
    ),
    case(
        "empty-event-fields-between-events",
        b"event:\ndata: Hello 1\n\nevent:\n\nevent: done\ndata: \xe2\x9c\x94\n\n",
        msg("Hello 1"),
        msg("✔", type="done"),
    ),
    # -- data --------------------------------------------------------------------------------------
    case("data-lines-joined-with-lf", b"data: a\ndata: b\ndata: c\n\n", msg("a\nb\nc")),
    case("data-with-a-trailing-newline", b"data: a\ndata:\n\n", msg("a\n")),
    case("data-of-only-newlines", b"data:\ndata:\ndata\n\n", msg("\n\n")),
    case(
        "multiline-events-with-names",
        b"event: stock\ndata: YHOO\ndata: +2\ndata: 10\n\nevent: stock\ndata: GOOG\ndata: -8\n"
        b"data: 1881\n\n",
        msg("YHOO\n+2\n10", type="stock"),
        msg("GOOG\n-8\n1881", type="stock"),
    ),
    case("nul-in-data", b"data:\x00\ndata: a\x00b\n\n", msg("\x00\na\x00b")),
    case(
        "many-events-in-one-body",
        b"".join(b"data: %d\n\n" % n for n in range(200)),
        *(msg(str(n)) for n in range(200)),
    ),
    case("very-long-line", b"data: " + LONG_VALUE.encode() + b"\n\n", msg(LONG_VALUE)),
    # -- id ----------------------------------------------------------------------------------------
    case(
        "wpt-id-persists",
        b"id: 1\ndata: 1\n\ndata:2\n\n",
        msg("1", "1"),
        msg("2", "1"),
    ),
    case(
        "wpt-id-changes-and-persists",
        b"id: 1\ndata: 1\n\nid: 2\ndata:2\n\ndata:3\n\n",
        msg("1", "1"),
        msg("2", "2"),
        msg("3", "2"),
    ),
    case(
        "wpt-empty-id-resets",
        b"id: 1\ndata: 1\n\nid:\ndata:2\n\ndata:3\n\n",
        msg("1", "1"),
        msg("2", ""),
        msg("3", ""),
    ),
    case(
        "bare-id-without-colon-resets",
        b"id: 1\ndata: a\n\nid\ndata: b\n\n",
        msg("a", "1"),
        msg("b"),
    ),
    case("id-after-data-in-the-block-applies", b"data: a\nid: 9\n\n", msg("a", "9")),
    case("id-only-block-sets-the-id-for-later-events", b"id: 1\n\ndata: a\n\n", msg("a", "1")),
    case(
        "id-with-nul-is-ignored",
        b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n",
        msg("a", "1"),
        msg("b", "1"),
    ),
    case(
        "id-with-nul-keeps-the-earlier-id-of-the-block",
        b"id: 123\nid: bad\x00id\ndata: hello\n\n",
        msg("hello", "123"),
    ),
    case("id-of-only-nul-is-ignored", b"id: 7\n\nid: \x00\ndata: a\n\n", msg("a", "7")),
    case("id-keeps-the-second-space", b"id:  7\ndata: a\n\n", msg("a", " 7")),
    case("id-non-ascii", "id: …\ndata: a\n\n".encode(), msg("a", "…")),
    case("id-invalid-utf8-replaced", b"id: \xff\ndata: a\n\n", msg("a", "\ufffd")),
    case(
        "id-in-an-unfinished-event-is-not-applied",
        b"id: 1\ndata: a\n\nid: 2\ndata: b\n",
        msg("a", "1"),
    ),
    # -- retry -------------------------------------------------------------------------------------
    case("retry-valid", b"retry: 1000\ndata: a\n\n", SSERetry(1000), msg("a")),
    case("retry-only-block-is-no-event", b"retry: 500\n\ndata: a\n\n", SSERetry(500), msg("a")),
    case(
        "retry-with-non-digits-ignored",
        b"retry: 1000x\nretry: -1\nretry: 1.5\nretry:  5\nretry: 1e3\n"
        + "retry: \u0661\u0662\n".encode()
        + b"data: a\n\n",
        msg("a"),
    ),
    case(
        "retry-valid-then-bogus",
        b"retry:1000\nretry:2000x\ndata:x\n\n",
        SSERetry(1000),
        msg("x"),
    ),
    # -- end of stream -----------------------------------------------------------------------------
    case("final-event-without-blank-line-not-dispatched", b"data: a\n"),
    case("stream-ends-mid-line", b"data: a\n\ndata: b", msg("a")),
    case("stream-ends-mid-event", b"data: a\n\nevent: x\ndata: b\n", msg("a")),
    case("stream-ends-after-a-cr", b"data: a\n\ndata: b\r", msg("a")),
    case("stream-ends-with-a-blank-cr-line", b"data: a\n\r", msg("a")),
    case(
        "wpt-data-before-final-empty-line",
        b"retry:1000\ndata:test1\n\nid:test\ndata:test2",
        SSERetry(1000),
        msg("test1"),
    ),
    # -- UTF-8 -------------------------------------------------------------------------------------
    case("utf8-multibyte", "data: é€😀我現在都看實況\n\n".encode(), msg("é€😀我現在都看實況")),
    case(
        "wpt-utf8-whatever-the-charset-parameter",
        b"data:ok\xe2\x80\xa6\n\n",
        msg("ok…"),
        content_type="text/event-stream;charset=windows-1252",
        # The spec ignores the parameter (the stream is always UTF-8); Blink's EventSource
        # aborts on any charset but UTF-8. Our gateway sends "charset=utf-8", which it accepts.
        chromium_refuses="a charset parameter other than UTF-8",
    ),
    case("utf8-invalid-bytes-replaced", b"data: a\xff\xfeb\x80c\n\n", msg("a\ufffd\ufffdb\ufffdc")),
    case(
        "utf8-truncated-before-line-end",
        b"data: \xe2\x82\ndata: \xf0\x9f\x98\n\n",
        msg("\ufffd\n\ufffd"),
    ),
    case(
        "utf8-sequence-split-by-a-line-break",
        b"data: \xe2\x82\ndata: \xac\n\n",
        msg("\ufffd\n\ufffd"),
    ),
    case(
        "utf8-overlong-surrogate-and-out-of-range",
        b"data: \xc0\xaf|\xe0\x80\x80|\xed\xa0\x80|\xf4\x90\x80\x80|\xf8\x88\x80\x80\x80\n\n",
        msg(
            "\ufffd" * 2
            + "|"
            + "\ufffd" * 3
            + "|"
            + "\ufffd" * 3
            + "|"
            + "\ufffd" * 4
            + "|"
            + "\ufffd" * 5
        ),
    ),
    case("utf8-invalid-in-field-name-makes-it-unknown", b"dat\xe1: x\ndata: y\n\n", msg("y")),
    case(
        "blank-lines-before-the-first-event",
        "\n\n\n\nid: 1\ndata: 我現在都看實況不玩遊戲\n\n".encode(),
        msg("我現在都看實況不玩遊戲", "1"),
    ),
]

_LINE_END = re.compile(r"\r\n|\r|\n")


def event_names(cases: list[Case]) -> list[str]:
    """Every event type a case expects or could dispatch: a browser reports an event only to
    listeners of its exact type, so a type nobody listens for would go unseen."""
    names = {"message"}
    for each in cases:
        names.update(item[0] for item in each.expected if isinstance(item, tuple))
        text = each.raw.decode("utf-8", "replace").removeprefix("\ufeff")
        for line in _LINE_END.split(text):
            field, colon, value = line.partition(":")
            if field == "event" and colon:
                names.add(value.removeprefix(" ") or "message")
    return sorted(names)


def parse_chunks(chunks: list[bytes]) -> list[Expected]:
    """What our SSEParser gives for a body fed as ``chunks``, in the table's form."""
    parser = SSEParser()
    items = []
    for chunk in chunks:
        items += parser.feed(chunk)
    items += parser.flush()
    return [(i.event, i.data, i.id) if isinstance(i, SSEEvent) else i for i in items]
