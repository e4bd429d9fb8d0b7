"""JsonPointer (RFC 6901), for reading: the RFC's own examples, then the edges."""

from __future__ import annotations

import pytest

from proxy.errors import InvalidPointer, PointerError, PointerNotFound
from proxy.pointer import JsonPointer

# RFC 6901, section 5.
RFC_DOCUMENT = {
    "foo": ["bar", "baz"],
    "": 0,
    "a/b": 1,
    "c%d": 2,
    "e^f": 3,
    "g|h": 4,
    "i\\j": 5,
    'k"l': 6,
    " ": 7,
    "m~n": 8,
}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        pytest.param("", RFC_DOCUMENT, id="empty-is-the-whole-document"),
        pytest.param("/foo", ["bar", "baz"], id="/foo"),
        pytest.param("/foo/0", "bar", id="/foo/0"),
        pytest.param("/", 0, id="/-is-the-empty-key"),
        pytest.param("/a~1b", 1, id="/a~1b"),
        pytest.param("/c%d", 2, id="/c%d"),
        pytest.param("/e^f", 3, id="/e^f"),
        pytest.param("/g|h", 4, id="/g|h"),
        pytest.param("/i\\j", 5, id="/i\\j"),
        pytest.param('/k"l', 6, id='/k"l'),
        pytest.param("/ ", 7, id="/space"),
        pytest.param("/m~0n", 8, id="/m~0n"),
    ],
)
def test_rfc_6901_section_5_examples_resolve(text, value):
    assert JsonPointer(text).resolve(RFC_DOCUMENT) == value


def test_empty_pointer_returns_the_document_itself():
    document = {"a": [1]}
    assert JsonPointer("").resolve(document) is document


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        pytest.param("", (), id="empty"),
        pytest.param("/", ("",), id="one-empty-token"),
        pytest.param("//", ("", ""), id="two-empty-tokens"),
        pytest.param("/a~1b/m~0n", ("a/b", "m~n"), id="escapes"),
        pytest.param("/~01", ("~1",), id="tilde-zero-one-is-tilde-one-not-slash"),
        pytest.param("/~10", ("/0",), id="tilde-one-zero-is-slash-zero"),
        pytest.param("/~0~1", ("~/",), id="both-escapes"),
        pytest.param("/~00", ("~0",), id="tilde-zero-zero"),
    ],
)
def test_reference_tokens_are_decoded_tilde_one_first(text, tokens):
    assert JsonPointer(text).tokens == tokens


def test_tilde_zero_one_resolves_the_key_tilde_one():
    assert JsonPointer("/~01").resolve({"~1": "right", "/": "wrong"}) == "right"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("a", id="no-leading-slash"),
        pytest.param("foo/bar", id="relative"),
        pytest.param("#/foo", id="uri-fragment-form"),
        pytest.param("/~2", id="tilde-two"),
        pytest.param("/~", id="trailing-tilde"),
        pytest.param("/a~", id="trailing-tilde-after-text"),
        pytest.param("/~a", id="tilde-letter"),
        pytest.param("/ok/~/x", id="lone-tilde-in-the-middle"),
    ],
)
def test_invalid_syntax_raises_invalid_pointer(text):
    with pytest.raises(InvalidPointer) as caught:
        JsonPointer(text)
    assert repr(text) in str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, PointerError)


ARRAY_DOCUMENT = {"list": ["a", "b", "c"], "n": 1, "s": "text", "t": True, "z": None}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        pytest.param("/list/0", "a", id="zero"),
        pytest.param("/list/2", "c", id="last"),
    ],
)
def test_array_index_in_range_resolves(text, value):
    assert JsonPointer(text).resolve(ARRAY_DOCUMENT) == value


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("/list/01", id="leading-zero"),
        pytest.param("/list/00", id="double-zero"),
        pytest.param("/list/-", id="dash-never-resolves-when-reading"),
        pytest.param("/list/3", id="one-past-the-end"),
        pytest.param("/list/99999999999999999999", id="huge"),
        pytest.param("/list/-1", id="negative"),
        pytest.param("/list/+1", id="plus-sign"),
        pytest.param("/list/ 1", id="leading-space"),
        pytest.param("/list/1 ", id="trailing-space"),
        pytest.param("/list/1.0", id="decimal-point"),
        pytest.param("/list/x", id="non-numeric"),
        pytest.param("/list/\u0661", id="non-ascii-digit"),
        pytest.param("/list/", id="empty-token"),
        pytest.param("/missing", id="missing-key"),
        pytest.param("/list/0/x", id="into-a-string"),
        pytest.param("/list/0/0", id="index-into-a-string"),
        pytest.param("/n/x", id="into-a-number"),
        pytest.param("/t/x", id="into-a-boolean"),
        pytest.param("/z/x", id="into-null"),
        pytest.param("/s/0", id="index-into-a-top-level-string"),
    ],
)
def test_unresolvable_pointer_raises_pointer_not_found(text):
    with pytest.raises(PointerNotFound) as caught:
        JsonPointer(text).resolve(ARRAY_DOCUMENT)
    assert text in str(caught.value)
    assert isinstance(caught.value, LookupError)
    assert isinstance(caught.value, PointerError)


@pytest.mark.parametrize("document", [None, 1, "x", True, 1.5])
def test_walking_into_a_scalar_document_raises_pointer_not_found(document):
    with pytest.raises(PointerNotFound):
        JsonPointer("/0").resolve(document)


def test_numeric_token_is_an_object_key_in_an_object():
    assert JsonPointer("/0").resolve({"0": "zero"}) == "zero"
    assert JsonPointer("/01").resolve({"01": "leading zeros"}) == "leading zeros"
    assert JsonPointer("/-").resolve({"-": "dash"}) == "dash"


def test_not_found_message_names_the_missing_token():
    with pytest.raises(PointerNotFound, match="'content' is missing"):
        JsonPointer("/message/content").resolve({"message": {"role": "assistant"}})


def test_pointers_compare_and_hash_by_text():
    assert JsonPointer("/a") == JsonPointer("/a")
    assert JsonPointer("/a") != JsonPointer("/b")
    assert JsonPointer("/a") != "/a"
    assert len({JsonPointer("/a"), JsonPointer("/a")}) == 1
    assert repr(JsonPointer("/a~1b")) == "JsonPointer('/a~1b')"
