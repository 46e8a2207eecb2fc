"""The streaming layer: never split a character, never emit a stop string, never lose text."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from phi_backends.streaming import Detokenizer, StopMatcher, TextAssembler

SCRIPTS = st.sampled_from(
    ["Ice hockey 🏒🥅 on ponds", "世界の氷", "नमस्ते", "Γειά σου", "שלום עולם", "é = e\u0301", "👩‍👩‍👧"]
)
TEXT = st.one_of(st.text(max_size=60), SCRIPTS, st.lists(SCRIPTS, max_size=4).map(" ".join))


def byte_tokens(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@settings(max_examples=500)
@given(TEXT, st.lists(st.integers(min_value=0), max_size=30))
def test_detokenizer_never_splits_characters(text: str, cuts: list[int]) -> None:
    tokens = byte_tokens(text.encode(), cuts)
    detok = Detokenizer(tokens.__getitem__)
    pieces = [detok.add(i) for i in range(len(tokens))] + [detok.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces) or "\ufffd" in text


def test_detokenizer_strips_one_leading_space_for_sentencepiece() -> None:
    vocab = [b"", b" Ice", b" hockey"]
    detok = Detokenizer(vocab.__getitem__, strip_leading_space=True)
    assert [detok.add(0), detok.add(1), detok.add(2)] == ["", "Ice", " hockey"]


def test_incomplete_character_at_the_end_becomes_a_replacement_character() -> None:
    vocab = ["🏒".encode()[:2]]
    detok = Detokenizer(vocab.__getitem__)
    assert detok.add(0) == "" and detok.flush() == "\ufffd"


@settings(max_examples=1000)
@given(
    TEXT,
    st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=3),
    st.lists(st.integers(min_value=0), max_size=20),
)
def test_stop_strings_are_never_emitted_and_nothing_before_them_is_lost(
    text: str, stops: list[str], cuts: list[int]
) -> None:
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    matcher = StopMatcher(stops)
    out = []
    for a, b in itertools.pairwise(points):
        out.append(matcher.feed(text[a:b]))
        if matcher.stopped:
            break
    if not matcher.stopped:
        out.append(matcher.flush())
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    expected = text[: min(hits)] if hits else text
    assert "".join(out) == expected
    assert matcher.stopped == bool(hits)


def test_text_assembler_holds_back_a_partial_stop_then_releases_it() -> None:
    vocab = [b"Ice ", b"hoc", b"key"]
    asm = TextAssembler(vocab.__getitem__, stops=["hocus"])
    assert asm.add(0) == "Ice " and asm.add(1) == "" and asm.add(2) == "hockey"
    assert asm.finish() == ""


def test_text_assembler_cuts_at_the_stop_and_finish_adds_nothing() -> None:
    vocab = [b"Ice ", b"hoc", b"key on"]
    asm = TextAssembler(vocab.__getitem__, stops=["key"])
    assert asm.add(0) + asm.add(1) + asm.add(2) == "Ice hoc"
    assert asm.stopped and asm.finish() == ""


def test_held_back_text_never_outgrows_the_longest_stop_string() -> None:
    """Per-token work is bounded: the matcher only ever rescans a short tail, not the output."""
    matcher = StopMatcher(["<|stop-here|>", "\n\n"])
    for _ in range(5000):
        matcher.feed("<|stop-")
        assert len(matcher._pending) < len("<|stop-here|>")
        matcher.feed("there ")
    assert not matcher.stopped
