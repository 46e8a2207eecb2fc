"""Raw mode takes token ids as the prompt (``/v1/completions`` and remote clients send them): the
engine is fed exactly those ids, no BOS added, and what cannot be ids is refused in one line."""

from __future__ import annotations

import numpy as np
import pytest

from phi_backends.errors import UsageError
from phi_backends.generator import EMPTY_PROMPT, RAW_IDS, Generator
from phi_backends.templates import get_template
from tests.bad_inputs import expect_api_error
from tests.test_empty_prompt import BOS, GREEDY, ByteEngine


@pytest.mark.parametrize("add_bos", [True, False])
def test_ids_are_fed_as_they_are_and_render_as_their_text(add_bos: bool) -> None:
    engine = ByteEngine(add_bos=add_bos)
    with Generator(engine, backend="bytes", model="bytes", template=get_template("chatml")) as gen:
        text_ids = gen.prompt_ids("Hi there", template=None)
        by_text = gen.generate("Hi there", GREEDY, template=None)
        by_ids = gen.generate(text_ids, GREEDY, template=None)
        assert by_ids.text == by_text.text and by_ids.usage == by_text.usage
        assert engine.asked[-1] == engine.asked[-2] == text_ids
        gen.generate(list(b"Hi"), GREEDY, template=None)
        assert engine.asked[-1] == list(b"Hi")  # no BOS added, even where the model adds one to text
        gen.generate(tuple(np.array([72, 105])), GREEDY, template=None)  # NumPy ints, a tuple
        assert engine.asked[-1] == [72, 105]
        assert gen.render([BOS, 72, 105], template=None) == "Hi"  # a control token has no text
        assert gen.prompt_ids([72, 105], template=None) == [72, 105]


@pytest.mark.parametrize(
    ("prompt", "template", "needles", "what"),
    [
        (
            [72, 300],
            None,
            ["ids[1] is 300, not a token id", "[0, 257)"],
            "generate from a token id past the vocabulary",
        ),
        ([72, -1], None, ["ids[1] is -1"], "generate from a negative token id"),
        ([72, "a"], None, ["ids[1] is 'a'"], "generate from token ids with a str among them"),
        ([72, 105], "chatml", [RAW_IDS], "generate from token ids with a chat template"),
        ([BOS], None, [EMPTY_PROMPT], "generate from token ids that are only the BOS"),
    ],
)
def test_what_cannot_be_ids_is_one_line(
    prompt: list[object], template: str | None, needles: list[str], what: str
) -> None:
    engine = ByteEngine(add_bos=True)
    with Generator(engine, backend="bytes", model="bytes", template=get_template("chatml")) as gen:
        with pytest.raises(UsageError) as caught:
            gen.generate(prompt, GREEDY, template=template)  # type: ignore[arg-type]
        expect_api_error(caught.value, UsageError, *needles, what=what)
        assert engine.asked == []  # nothing reached the engine
