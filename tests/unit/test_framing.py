"""LineFramer: NDJSON / JSON Lines / JSON-seq framing on bytes, checked whatever the chunking."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from proxy.errors import LineTooLong, StreamError
from proxy.framing import LineFramer
from tests.support.chunking import CHUNKERS, bytewise, every_two_way_split, splits, whole

BOM = b"\xef\xbb\xbf"


def frame(chunks: list[bytes], max_line_bytes: int = 64, *, json_seq: bool = False) -> list[bytes]:
    framer = LineFramer(max_line_bytes, json_seq=json_seq)
    lines: list[bytes] = []
    for chunk in chunks:
        lines += framer.feed(chunk)
    return lines + framer.flush()


def frame_until_error(
    chunks: list[bytes], max_line_bytes: int
) -> tuple[list[bytes], LineTooLong | None]:
    """Every line the caller got before the framer gave up: each call returns what it completed,
    the failure is kept, and the call after it raises it."""
    framer = LineFramer(max_line_bytes)
    lines: list[bytes] = []
    try:
        for chunk in chunks:
            lines += framer.feed(chunk)
        lines += framer.flush()
    except LineTooLong as exc:
        raised = exc
    else:
        raised = None
    # The call that met it returned what was complete; the next one raised it.
    assert raised is None or raised is framer.failure
    return lines, framer.failure


# (input, framer options, lines); every case runs whole, byte by byte and at random splits.
CASES = [
    pytest.param(b"a\nb\n", {}, [b"a", b"b"], id="lf-ends-a-line"),
    pytest.param(b"a\r\nb\r\n", {}, [b"a", b"b"], id="crlf-ends-a-line"),
    pytest.param(b"a\r\r\n", {}, [b"a\r"], id="only-one-trailing-cr-is-dropped"),
    pytest.param(b"a\rb\n", {}, [b"a\rb"], id="lone-cr-inside-a-line-is-kept"),
    pytest.param(b"a\rb\rc", {}, [b"a\rb\rc"], id="lone-cr-never-ends-a-line"),
    pytest.param(b"\n\na\n\n", {}, [b"", b"", b"a", b""], id="empty-lines-are-returned"),
    pytest.param(b"\r\n\r\n", {}, [b"", b""], id="crlf-empty-lines-are-returned"),
    pytest.param(b"a\nb", {}, [b"a", b"b"], id="unterminated-last-line-comes-from-flush"),
    pytest.param(b"a\nb\r", {}, [b"a", b"b"], id="unterminated-last-line-loses-its-trailing-cr"),
    pytest.param(b"", {}, [], id="no-input-no-lines"),
    pytest.param(b"a\n", {}, [b"a"], id="terminated-last-line-leaves-nothing-for-flush"),
    pytest.param(BOM + b"a\nb\n", {}, [b"a", b"b"], id="bom-at-the-start-is-dropped"),
    pytest.param(BOM + b"\na\n", {}, [b"", b"a"], id="bom-before-an-empty-first-line"),
    pytest.param(b"a\n" + BOM + b"b\n", {}, [b"a", BOM + b"b"], id="bom-after-the-start-is-kept"),
    pytest.param(BOM + BOM + b"a\n", {}, [BOM + b"a"], id="only-one-bom-is-dropped"),
    pytest.param(b"\n" + BOM + b"a\n", {}, [b"", BOM + b"a"], id="bom-on-the-second-line-is-kept"),
    pytest.param("é€😀\n".encode(), {}, ["é€😀".encode()], id="multibyte-utf8-is-kept-whole"),
    pytest.param(b"\xff\xfe\n", {}, [b"\xff\xfe"], id="invalid-utf8-is-not-the-framers-business"),
    pytest.param(
        "a\u2028b\x85c\x0bd\x0ce\n".encode(),
        {},
        ["a\u2028b\x85c\x0bd\x0ce".encode()],
        id="unicode-line-separators-do-not-end-a-line",
    ),
    pytest.param(b"a\x00b\n", {}, [b"a\x00b"], id="nul-is-kept"),
    pytest.param(b"\x1e{}\n", {}, [b"\x1e{}"], id="record-separator-kept-without-json-seq"),
    pytest.param(
        b"\x1e{}\n\x1e[1]\n",
        {"json_seq": True},
        [b"{}", b"[1]"],
        id="json-seq-strips-the-leading-record-separator",
    ),
    pytest.param(b"{}\n", {"json_seq": True}, [b"{}"], id="json-seq-line-without-separator"),
    pytest.param(
        b"\x1e\x1e{}\n", {"json_seq": True}, [b"\x1e{}"], id="json-seq-strips-only-one-separator"
    ),
    pytest.param(
        b'\x1e{"a":"\x1e"}\n',
        {"json_seq": True},
        [b'{"a":"\x1e"}'],
        id="json-seq-inner-separator-kept",
    ),
    pytest.param(b"\x1e1\r\n", {"json_seq": True}, [b"1"], id="json-seq-with-crlf"),
    pytest.param(BOM + b"\x1e1\n", {"json_seq": True}, [b"1"], id="json-seq-after-a-bom"),
    pytest.param(b"\x1e1", {"json_seq": True}, [b"1"], id="json-seq-unterminated-last-record"),
    pytest.param(b"abcd\n", {"max_line_bytes": 4}, [b"abcd"], id="line-of-exactly-the-limit"),
    pytest.param(b"abcd\r\n", {"max_line_bytes": 4}, [b"abcd"], id="crlf-not-counted-in-the-limit"),
    pytest.param(b"abcd", {"max_line_bytes": 4}, [b"abcd"], id="unterminated-line-of-the-limit"),
    pytest.param(
        b"abcd\r", {"max_line_bytes": 4}, [b"abcd"], id="unterminated-line-of-the-limit-and-cr"
    ),
    pytest.param(
        b"ab\n\nabcd\nabc\n",
        {"max_line_bytes": 4},
        [b"ab", b"", b"abcd", b"abc"],
        id="several-lines-under-the-limit",
    ),
]


@pytest.mark.parametrize("chunker", CHUNKERS)
@pytest.mark.parametrize(("raw", "options", "lines"), CASES)
def test_table_case_gives_the_same_lines_whole_and_byte_by_byte(raw, options, lines, chunker):
    assert frame(chunker(raw), **options) == lines


@settings(max_examples=40, deadline=None)
@given(data=st.data())
@pytest.mark.parametrize(("raw", "options", "lines"), CASES)
def test_table_case_gives_the_same_lines_at_random_split_points(raw, options, lines, data):
    assert frame(data.draw(splits(raw)), **options) == lines


def test_crlf_split_across_chunks_is_one_line_end():
    framer = LineFramer(64)
    assert framer.feed(b"a\r") == []
    assert framer.feed(b"\nb\r") == [b"a"]
    assert framer.feed(b"\n") == [b"b"]
    assert framer.flush() == []


def test_bom_split_across_chunks_is_dropped():
    framer = LineFramer(64)
    assert framer.feed(BOM[:1]) == []
    assert framer.feed(BOM[1:2]) == []
    assert framer.feed(BOM[2:] + b"a\nb") == [b"a"]
    assert framer.flush() == [b"b"]


def test_multibyte_character_split_across_chunks_is_whole_again():
    encoded = "€\n".encode()
    framer = LineFramer(64)
    assert framer.feed(encoded[:1]) == []
    assert framer.feed(encoded[1:2]) == []
    assert framer.feed(encoded[2:]) == ["€".encode()]


def test_empty_feed_returns_nothing_and_changes_nothing():
    framer = LineFramer(64)
    assert framer.feed(b"") == []
    assert framer.feed(b"ab") == []
    assert framer.feed(b"") == []
    assert framer.pending_bytes == 2
    assert framer.feed(b"\n") == [b"ab"]


def test_flush_twice_returns_the_last_line_once():
    framer = LineFramer(64)
    framer.feed(b"a")
    assert framer.flush() == [b"a"]
    assert framer.flush() == []


def test_lines_seen_counts_empty_lines_and_the_flushed_line():
    framer = LineFramer(64)
    framer.feed(b"a\n\n\r\nb")
    assert framer.lines_seen == 3
    framer.flush()
    assert framer.lines_seen == 4


def test_max_line_bytes_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        LineFramer(0)


# -- the limit -------------------------------------------------------------------------------------

# (input, limit, lines the caller gets before the error, line number of the bad line)
TOO_LONG = [
    pytest.param(b"abcde\n", 4, [], 1, id="limit-plus-one-on-the-first-line"),
    pytest.param(b"a\nabcde\nb\n", 4, [b"a"], 2, id="limit-plus-one-on-the-second-line"),
    pytest.param(b"a\n\n\r\nabcde\n", 4, [b"a", b"", b""], 4, id="line-number-counts-empty-lines"),
    pytest.param(b"a\nabcde", 4, [b"a"], 2, id="unterminated-line-over-the-limit"),
    pytest.param(b"abcd\r\r\n", 4, [], 1, id="a-second-cr-counts-as-content"),
    pytest.param(b"ok\nabcd\rx\n", 4, [b"ok"], 2, id="cr-inside-a-line-counts"),
    pytest.param(b"ok\n" + b"x" * 1000, 4, [b"ok"], 2, id="line-that-never-ends"),
]


@pytest.mark.parametrize("chunker", CHUNKERS)
@pytest.mark.parametrize(("raw", "limit", "before", "line_number"), TOO_LONG)
def test_line_over_the_limit_raises_with_its_line_number(raw, limit, before, line_number, chunker):
    lines, error = frame_until_error(chunker(raw), limit)
    assert error is not None
    assert error.line_number == line_number
    assert error.limit == limit
    assert error.code == "line_too_long"
    assert str(error) == f"line {line_number} is longer than max_line_bytes ({limit})"
    assert lines == before


@settings(max_examples=40, deadline=None)
@given(data=st.data())
@pytest.mark.parametrize(("raw", "limit", "before", "line_number"), TOO_LONG)
def test_line_over_the_limit_raises_the_same_at_random_split_points(
    raw, limit, before, line_number, data
):
    lines, error = frame_until_error(data.draw(splits(raw)), limit)
    assert error is not None
    assert error.line_number == line_number
    assert lines == before


def test_line_too_long_is_a_stream_error_raised_by_the_next_call():
    framer = LineFramer(2)
    assert framer.feed(b"abc\n") == []
    assert isinstance(framer.failure, StreamError)
    with pytest.raises(StreamError):
        framer.feed(b"d\n")
    with pytest.raises(StreamError):
        framer.flush()


def test_partial_line_over_the_limit_raises_before_any_lf_arrives():
    framer = LineFramer(8)
    assert framer.feed(b"x" * 8) == []
    assert framer.feed(b"x") == []
    assert framer.failure is not None
    assert framer.failure.line_number == 1
    assert framer.pending_bytes == 0
    with pytest.raises(LineTooLong) as caught:
        framer.feed(b"\n")
    assert caught.value.line_number == 1


def test_partial_line_of_the_limit_and_a_cr_waits_for_its_lf():
    framer = LineFramer(4)
    assert framer.feed(b"abcd\r") == []
    assert framer.pending_bytes == 5
    assert framer.feed(b"\n") == [b"abcd"]
    assert framer.pending_bytes == 0


def test_partial_line_of_the_limit_and_a_cr_then_more_raises():
    framer = LineFramer(4)
    framer.feed(b"abcd\r")
    assert framer.feed(b"x") == []
    with pytest.raises(LineTooLong):
        framer.flush()


def test_the_feed_that_meets_a_long_line_returns_the_lines_before_it_and_the_next_raises():
    framer = LineFramer(5)
    assert framer.feed(b"zero\n") == [b"zero"]
    assert framer.feed(b"one\r\n\ntwo\n" + b"x" * 10 + b"\nthree\n") == [b"one", b"", b"two"]
    with pytest.raises(LineTooLong) as caught:
        framer.feed(b"four\n")
    assert caught.value.line_number == 5


def test_the_lines_before_an_unterminated_long_line_are_returned_and_flush_raises():
    framer = LineFramer(5)
    assert framer.feed(b"one\ntwo\n" + b"x" * 10) == [b"one", b"two"]
    with pytest.raises(LineTooLong) as caught:
        framer.flush()
    assert caught.value.line_number == 3


def test_the_lines_returned_before_a_long_line_have_json_seq_separators_stripped():
    framer = LineFramer(5, json_seq=True)
    assert framer.feed(b"\x1e1\n\x1e2\r\n" + b"x" * 10 + b"\n") == [b"1", b"2"]
    assert framer.failure is not None


def test_bom_does_not_count_against_the_line_limit_whatever_the_chunking():
    # The BOM is dropped, so it is not part of the line: a first line of exactly the limit must
    # pass however the bytes arrive, as it does when they arrive in one chunk.
    raw = BOM + b"abcde\n"
    for chunks in [whole(raw), bytewise(raw), *every_two_way_split(raw)]:
        assert frame_until_error(chunks, 5) == ([b"abcde"], None), chunks


@settings(max_examples=200, deadline=None)
@given(
    raw=st.lists(st.sampled_from([b"a", b"bc", b"\r", b"\n", b"\r\n", b"xxxxxx"])).map(b"".join),
    limit=st.integers(min_value=1, max_value=8),
    data=st.data(),
)
def test_pending_bytes_never_exceed_the_limit_plus_one(raw, limit, data):
    framer = LineFramer(limit)
    lines: list[bytes] = []
    try:
        for chunk in data.draw(splits(raw)):
            lines += framer.feed(chunk)
            assert framer.pending_bytes <= limit + 1
        lines += framer.flush()
    except LineTooLong:
        pass
    assert all(len(line) <= limit for line in lines)


# -- properties ------------------------------------------------------------------------------------

line_without_lf = st.binary(max_size=24).map(lambda b: b.replace(b"\n", b""))


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(line_without_lf, max_size=12),
    separator=st.sampled_from([b"\n", b"\r\n"]),
    terminated=st.booleans(),
    data=st.data(),
)
def test_joined_lines_rechunked_at_random_come_back_unchanged(lines, separator, terminated, data):
    assume(not (lines and lines[0].startswith(BOM)))
    if separator == b"\n":
        # A CR right before the LF is the tolerated CRLF, not content.
        assume(not any(line.endswith(b"\r") for line in lines))
    raw = b"".join(line + separator for line in lines)
    if not terminated and lines and lines[-1] and not lines[-1].endswith(b"\r"):
        raw = raw[: -len(separator)]
    assert frame(data.draw(splits(raw)), max_line_bytes=64) == lines
