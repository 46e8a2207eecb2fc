"""Streaming, stop strings and end of turn, fuzzed through the core's real layers.

For any text (any Unicode: emoji and ZWJ sequences, combining marks, CJK, Devanagari, Greek,
Hebrew and Arabic, control characters; and bytes that are not UTF-8 at all) cut into tokens
at any byte boundaries:

(a) the streamed text equals the one-shot decode of all the bytes, and each character is
    emitted as soon as its last byte has arrived, never in halves;
(b) the text is cut at the first occurrence of any stop string, whatever the chunk boundaries:
    no stop string is emitted, no text before it is lost, and no more than a stop string's
    length is ever held back;
(c) an end-of-turn id anywhere ends generation there: its text is never emitted and the
    finish reason is "stop".

(a) and (b) drive :class:`~phi_backends.streaming.TextAssembler` directly; the Generator tests
drive the real :class:`~phi_backends.generator.Generator` loop with a scripted engine whose
tokens are the cut byte slices (the engine is scaffolding; what is tested is the core's
streaming, stop and end-of-turn handling). 10,000 generated cases in all, plus the explicit examples.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from phi_backends.backend import EngineInfo, SequenceRequest, SerialEngine
from phi_backends.generator import Generator
from phi_backends.sampling import SamplingConfig
from phi_backends.streaming import TextAssembler
from phi_backends.templates import get_template

# -- what the text is made of ----------------------------------------------------------------

SCRIPT_RANGES = [
    (0x20, 0x7E),  # ASCII
    (0x00, 0x1F),  # C0 controls (incl. NUL, tab, newlines, ESC)
    (0x7F, 0x9F),  # DEL and C1 controls
    (0xA0, 0x24F),  # Latin-1 and Latin Extended
    (0x300, 0x36F),  # combining diacritical marks
    (0x370, 0x3FF),  # Greek
    (0x590, 0x5FF),  # Hebrew (right to left)
    (0x600, 0x6FF),  # Arabic (right to left)
    (0x900, 0x97F),  # Devanagari
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x4E00, 0x9FFF),  # CJK ideographs
    (0xAC00, 0xD7A3),  # Hangul
    (0x1F300, 0x1FAFF),  # emoji
    (0x1F1E6, 0x1F1FF),  # regional indicators (flags)
    (0xE000, 0x10FFFF),  # private use, supplementary planes
]
SEQUENCES = [
    "👩\u200d👩\u200d👧",  # ZWJ family
    "🏳\ufe0f\u200d🌈",  # ZWJ with a variation selector
    "👍🏽",  # skin-tone modifier
    "🇫🇷🇯🇵",  # flags
    "e\u0301\u0327",  # stacked combining marks
    "नमस्ते",
    "שָׁלוֹם עוֹלָם",
    "مَرْحَبًا بِالعالم",
    "\u202eevil\u202c \u200f",  # bidi overrides and marks
    "Γειά σου κόσμε",
    "世界の氷",
    "한국어",
    "Ice hockey 🏒🥅 on ponds.",
    "\ufffd",  # a real replacement character in the text
    "\r\n\t\x00\x1b[0m",
    "<|end|>",  # looks like a control token, but is text
    "\n\n",
]
PIECE = st.one_of(
    *(st.text(st.characters(min_codepoint=lo, max_codepoint=hi), min_size=1, max_size=6) for lo, hi in SCRIPT_RANGES),
    st.sampled_from(SEQUENCES),
    st.text(max_size=6),
)
TEXT = st.lists(PIECE, max_size=8).map("".join)
#: Bytes that are not all UTF-8: stray continuation bytes, truncated, overlong and surrogate sequences.
BAD_BYTES = [b"\x80", b"\xbf\xbf", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x8f", b"\xc0\xaf", b"\xed\xa0\x80", b"\xff"]
RAW_BYTES = st.one_of(
    st.binary(max_size=24),
    st.builds(
        lambda text, bad, at: text[: at % (len(text) + 1)] + bad + text[at % (len(text) + 1) :],
        TEXT.map(str.encode),
        st.lists(st.sampled_from(BAD_BYTES), min_size=1, max_size=3).map(b"".join),
        st.integers(min_value=0, max_value=255),
    ),
)


@dataclass(frozen=True)
class Cut:
    """Bytes cut into tokens; ``b""`` tokens stand for control tokens that carry no text."""

    data: bytes
    tokens: tuple[bytes, ...]


# Fixed strategies, bent to each case's length with %: strategies built per case (flatmap, or
# integers whose bounds depend on the text) cost hypothesis a validation each, and dominated the run time.
CUT_MODES = st.sampled_from(["dense", "sparse", "bytes", "whole"])
MASK_BITS = 256
MASK = st.integers(min_value=0, max_value=(1 << MASK_BITS) - 1)
INDEX = st.integers(min_value=0, max_value=1 << 16)
STOP_KINDS = st.sampled_from(["inside", "inside", "near miss", "arbitrary"])
NEAR_MISS = st.sampled_from([" ", "x", "\u0301", "🏒", "\u200d"])


def draw_cut(draw: st.DrawFn, data: bytes) -> Cut:
    """Any cutting: at random points (dense or sparse), at every byte, one token; plus empty tokens."""
    n = len(data)
    mode = draw(CUT_MODES)
    if mode == "bytes":
        points = list(range(n + 1))
    elif mode == "whole" or n < 2:
        points = [0, n]
    else:  # bit i of the mask: cut after byte i + 1
        mask = draw(MASK) if mode == "dense" else draw(MASK) & draw(MASK)
        points = [0, *(i for i in range(1, n) if mask >> ((i - 1) % MASK_BITS) & 1), n]
    tokens = [data[a:b] for a, b in itertools.pairwise(points)]
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        tokens.insert(draw(INDEX) % (len(tokens) + 1), b"")
    return Cut(data, tuple(tokens))


def draw_stops(draw: st.DrawFn, text: str) -> tuple[str, ...]:
    """One to four stop strings: from inside the text (exact, or a near miss), and arbitrary ones."""
    stops: list[str] = []
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        kind = draw(STOP_KINDS)
        if kind != "arbitrary" and text:
            start = draw(INDEX) % len(text)
            stop = text[start : start + 1 + draw(INDEX) % 8]
            if kind == "near miss":
                stop += draw(NEAR_MISS)
        else:
            stop = draw(PIECE) or "\n"
        stops.append(stop)
    return tuple(stops)


@st.composite
def cut_text(draw: st.DrawFn) -> Cut:
    return draw_cut(draw, draw(TEXT).encode())


@st.composite
def cut_text_or_bytes(draw: st.DrawFn) -> Cut:
    return draw_cut(draw, draw(st.one_of(TEXT.map(str.encode), RAW_BYTES)))


@dataclass(frozen=True)
class StopCase:
    cut: Cut
    stops: tuple[str, ...]
    strip: bool


@st.composite
def stop_cases(draw: st.DrawFn) -> StopCase:
    cut, strip = draw(cut_text()), draw(st.booleans())
    return StopCase(cut, draw_stops(draw, one_shot(cut.data, strip_leading_space=strip)), strip)


def one_shot(data: bytes, *, strip_leading_space: bool = False, errors: str = "replace") -> str:
    """The oracle: decode everything at once (SentencePiece drops one leading space)."""
    if strip_leading_space and data.startswith(b" "):
        data = data[1:]
    return data.decode("utf-8", errors=errors)


def first_stop(text: str, stops: Sequence[str]) -> int | None:
    """Where the oracle cuts: the first occurrence of any stop string."""
    return min((i for i in (text.find(s) for s in stops) if i >= 0), default=None)


# -- (a) and (b) on the TextAssembler -----------------------------------------------------------


@settings(max_examples=3000, deadline=None)
@given(cut_text_or_bytes(), st.booleans())
def test_streamed_text_equals_one_shot_decode(cut: Cut, strip: bool) -> None:
    assembler = TextAssembler(cut.tokens.__getitem__, strip_leading_space=strip)
    pieces = [assembler.add(i) for i in range(len(cut.tokens))]
    pieces.append(assembler.finish())
    assert "".join(pieces) == one_shot(cut.data, strip_leading_space=strip)
    assert not assembler.stopped


@settings(max_examples=1000, deadline=None)
@given(cut_text())
def test_each_character_is_emitted_once_its_last_byte_arrives(cut: Cut) -> None:
    text = cut.data.decode()
    ends = list(itertools.accumulate(len(c.encode()) for c in text))  # byte offset after each character
    assembler = TextAssembler(cut.tokens.__getitem__)
    emitted, received = "", 0
    for i, token in enumerate(cut.tokens):
        emitted += assembler.add(i)
        received += len(token)
        complete = sum(1 for end in ends if end <= received)
        assert emitted == text[:complete], f"after {received} bytes"
    assert assembler.finish() == ""


@settings(max_examples=3000, deadline=None)
@given(stop_cases())
@example(StopCase(Cut(b"abcd", (b"a", b"b", b"c", b"d")), ("bc", "abcd"), False))
def test_stop_strings_cut_at_the_first_occurrence_whatever_the_chunks(case: StopCase) -> None:
    cut, stops, strip = case.cut, case.stops, case.strip
    hold_back = max(map(len, stops)) - 1
    assembler = TextAssembler(cut.tokens.__getitem__, stops=stops, strip_leading_space=strip)
    emitted, received = "", b""
    for i, token in enumerate(cut.tokens):
        emitted += assembler.add(i)
        received += token
        if assembler.stopped:
            break
        decoded = one_shot(received, strip_leading_space=strip, errors="ignore")  # the complete characters
        assert decoded.startswith(emitted)
        assert len(decoded) - len(emitted) <= hold_back, "held back more than a stop string could need"
    emitted += assembler.finish()
    text = one_shot(cut.data, strip_leading_space=strip)
    at = first_stop(text, stops)
    assert emitted == (text if at is None else text[:at])
    assert not any(stop in emitted for stop in stops)
    assert assembler.stopped == (at is not None)


@pytest.mark.parametrize("pieces", [["abcd"], ["a", "b", "c", "d"], ["ab", "cd"], ["abc", "d"]])
def test_a_longer_stop_that_starts_first_wins_whatever_the_chunks(pieces: list[str]) -> None:
    """Found by the fuzzing above: stops "abcd" and "bc" cut "abcd" to "" however it arrives."""
    vocab = [p.encode() for p in pieces]
    assembler = TextAssembler(vocab.__getitem__, stops=["bc", "abcd"])
    assert "".join(assembler.add(i) for i in range(len(vocab))) + assembler.finish() == ""
    assert assembler.stopped


def test_a_shorter_stop_wins_once_the_longer_one_is_ruled_out() -> None:
    vocab = [b"a", b"b", b"c", b"X"]
    assembler = TextAssembler(vocab.__getitem__, stops=["bc", "abcd"])
    assert [assembler.add(i) for i in range(3)] == ["", "", ""]  # "bc" is there, "abcd" may still come
    assert not assembler.stopped
    assert assembler.add(3) == "a" and assembler.stopped


# -- (a), (b), (c) through the Generator loop -------------------------------------------------

PROMPT, EOS, END, ASSISTANT, CONTROL, FIRST_PIECE = 0, 1, 2, 3, 4, 5
END_OF_TURN = (EOS, END, ASSISTANT)
SPECIAL_TOKENS = {"<|endoftext|>": EOS, "<|end|>": END, "<|assistant|>": ASSISTANT}


class ScriptedEngine(SerialEngine):
    """Test scaffolding: an engine that "samples" a fixed script of token ids.

    ``EOS`` is the engine's own end-of-generation id; ``END`` (``<|end|>``) and ``ASSISTANT``
    end a turn only because the Phi-3 template says so: the Generator must stop at all three.
    """

    def __init__(self, pieces: Sequence[bytes], script: Sequence[int], *, strip_leading_space: bool) -> None:
        self.vocab = [b"", b"<|endoftext|>", b"<|end|>", b"<|assistant|>", b"", *pieces]
        self.script = list(script)
        self.open_streams = 0
        self._info = EngineInfo(
            context_length=1 << 20,
            vocab_size=len(self.vocab),
            add_bos=False,
            bos_token=None,
            eos_token="<|endoftext|>",
            eog_token_ids=frozenset({EOS}),
            strip_leading_space=strip_leading_space,
        )

    @property
    def info(self) -> EngineInfo:
        return self._info

    def tokenize(self, text: str, *, add_bos: bool, special: bool = True) -> list[int]:
        return [SPECIAL_TOKENS[text]] if special and text in SPECIAL_TOKENS else [PROMPT]

    def token_bytes(self, token_id: int) -> bytes:
        return self.vocab[token_id]

    def tokens(self, request: SequenceRequest) -> Iterator[int]:
        self.open_streams += 1
        try:
            yield from self.script
            raise AssertionError("the Generator asked for a token after max_tokens")
        finally:
            self.open_streams -= 1

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class Script:
    cut: Cut
    ids: tuple[int, ...]  # token ids as "sampled": pieces, control tokens and end-of-turn ids
    stops: tuple[str, ...]
    strip: bool


@st.composite
def scripts(draw: st.DrawFn) -> Script:
    strip = draw(st.booleans())
    cut = draw(cut_text_or_bytes())
    ids = [CONTROL if not token else FIRST_PIECE + i for i, token in enumerate(cut.tokens)] or [CONTROL]
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
        ids.insert(draw(INDEX) % (len(ids) + 1), draw(st.sampled_from(END_OF_TURN)))
    before = list(itertools.takewhile(lambda i: i not in END_OF_TURN, ids))
    text = one_shot(
        b"".join(cut.tokens[i - FIRST_PIECE] for i in before if i >= FIRST_PIECE), strip_leading_space=strip
    )
    stops = draw_stops(draw, text) if draw(st.booleans()) else ()
    return Script(cut, tuple(ids), stops, strip)


@settings(max_examples=3000, deadline=None)
@given(scripts())
@example(Script(Cut(b"abcd", (b"a", b"b", b"c", b"d")), (5, 6, 7, 8), ("bc", "abcd"), False))
@example(Script(Cut(b"abc", (b"a", b"b", b"c")), (5, 6, 7), ("bc", "abcd"), False))  # settled by max_tokens
@example(Script(Cut(b"ab\xf0\x9f", (b"ab", b"\xf0\x9f")), (5, 6, END), (), False))
def test_generator_streams_stops_and_ends_turns_like_the_one_shot_oracle(script: Script) -> None:
    engine = ScriptedEngine(script.cut.tokens, script.ids, strip_leading_space=script.strip)
    gen = Generator(engine, backend="scripted", model="fuzz", template=get_template("phi3"))
    eog_at = next((i for i, t in enumerate(script.ids) if t in END_OF_TURN), None)
    before = script.ids[:eog_at]
    text = one_shot(b"".join(engine.vocab[i] for i in before), strip_leading_space=script.strip)
    at = first_stop(text, script.stops)
    expected = text if at is None else text[:at]

    # Without an end-of-turn id, max_tokens ends the call exactly at the end of the script;
    # the engine fails the test if it is asked for more.
    config = SamplingConfig(temperature=0.0, max_tokens=max(1, len(script.ids)), stop=script.stops)
    stream = gen.stream("prompt", config, template=None)
    chunks = list(stream)
    completion = stream.completion
    assert completion is not None

    assert "".join(c.text for c in chunks) == completion.text == expected
    assert all(c.finish_reason is None and c.text for c in chunks[:-1]), "only the last chunk may be empty"
    reason = "stop" if at is not None or eog_at is not None else "length"
    assert chunks[-1].finish_reason == completion.finish_reason == reason
    assert not any(stop in completion.text for stop in script.stops)
    assert not set(END_OF_TURN) & set(completion.token_ids)
    assert completion.token_ids == tuple(before[: len(completion.token_ids)])
    if at is None:
        assert completion.usage.completion_tokens == len(before)
    assert engine.open_streams == 0, "the Generator closed the engine's token stream"
