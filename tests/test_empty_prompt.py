"""An empty prompt is refused once, by the Generator, before the engine generates anything.

The engine here is a complete one (one token per byte, an optional BOS) that records what it is
asked to generate from: an empty prompt must never reach it, raw or templated, whether or not
the model adds a BOS.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from phi_backends.backend import EngineInfo, SequenceRequest, SerialEngine
from phi_backends.errors import UsageError
from phi_backends.generator import EMPTY_PROMPT, Generator
from phi_backends.sampling import SamplingConfig
from phi_backends.templates import get_template, jinja_template
from tests.bad_inputs import expect_api_error

BOS = 256
GREEDY = SamplingConfig(temperature=0.0, max_tokens=3)


class ByteEngine(SerialEngine):
    """One token per UTF-8 byte (ids 0-255), BOS 256; "samples" the byte ``x`` forever."""

    def __init__(self, *, add_bos: bool) -> None:
        self.asked: list[list[int]] = []
        self._info = EngineInfo(
            context_length=64,
            vocab_size=257,
            add_bos=add_bos,
            bos_token="<s>" if add_bos else None,
            eos_token=None,
            eog_token_ids=frozenset(),
        )

    @property
    def info(self) -> EngineInfo:
        return self._info

    def tokenize(self, text: str, *, add_bos: bool, special: bool = True) -> list[int]:
        ids = [BOS] if add_bos else []
        rest = text.encode("utf-8")
        while rest:  # the BOS text is the BOS token, as a tokenizer parses special tokens
            if special and self._info.add_bos and rest.startswith(b"<s>"):
                ids.append(BOS)
                rest = rest[3:]
            else:
                ids.append(rest[0])
                rest = rest[1:]
        return ids

    def token_bytes(self, token_id: int) -> bytes:
        return bytes([token_id]) if token_id < BOS else b""

    def tokens(self, request: SequenceRequest) -> Iterator[int]:
        self.asked.append(list(request.prompt_ids))
        while True:
            yield ord("x")

    def close(self) -> None:
        pass


@pytest.fixture(params=[True, False], ids=["adds-bos", "no-bos"])
def engine(request: pytest.FixtureRequest) -> ByteEngine:
    return ByteEngine(add_bos=request.param)


def generator(engine: ByteEngine) -> Generator:
    return Generator(engine, backend="bytes", model="bytes", template=get_template("chatml"))


def test_raw_and_templated_empty_prompts_are_one_usage_error(engine: ByteEngine) -> None:
    gen = generator(engine)
    renders_nothing = jinja_template("{{ bos_token }}", bos_token=engine.info.bos_token, eos_token=None)
    writes_only_bos = jinja_template("<s>", bos_token=engine.info.bos_token, eos_token=None)
    empty = [("", None, 'a raw prompt ""'), ("Hi", renders_nothing, "a chat template that renders nothing")]
    if engine.info.add_bos:  # only then is "<s>" a BOS: a template or raw text may write it again
        empty += [("Hi", writes_only_bos, "a chat template that renders only the BOS"), ("<s><s>", None, "")]
    refusals = set()
    for prompt, template, what in empty:
        with pytest.raises(UsageError) as raised:
            gen.stream(prompt, GREEDY, template=template)
        if what:
            expect_api_error(raised.value, UsageError, "the prompt is empty", what=what)
        refusals.add((type(raised.value), str(raised.value)))
    assert refusals == {(UsageError, EMPTY_PROMPT)}
    assert engine.asked == [], "the engine never saw the empty prompt"
    assert gen.generate("Hi", GREEDY, template=None).text == "xxx", "the Generator is usable after"


def test_a_prompt_of_one_character_or_an_empty_user_turn_is_not_empty(engine: ByteEngine) -> None:
    gen = generator(engine)
    assert gen.generate(" ", GREEDY, template=None).text == "xxx"
    assert gen.generate("", GREEDY).text == "xxx", "an empty user message still renders the turn's markers"
    bos = [BOS] if engine.info.add_bos else []
    assert engine.asked[0] == [*bos, ord(" ")]
    assert len(engine.asked[1]) > len(bos) + 10


def test_prompt_ids_of_an_empty_prompt_are_still_reported(engine: ByteEngine) -> None:
    """Only generating is refused: asking what the ids would be is not an error."""
    gen = generator(engine)
    assert gen.prompt_ids("", template=None) == ([BOS] if engine.info.add_bos else [])
