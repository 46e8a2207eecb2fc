"""Constraints in the core: what is refused before a call, the value a call returns, and the
vocabulary llguidance is given (on the scripted engine; every backend runs the contract's
constraint tests on real models)."""

from __future__ import annotations

import json
from pathlib import Path

import pydantic
import pytest

import phi_backends as pb
from phi_backends.constraints.vocabulary import Vocabulary
from phi_backends.generator import Generator
from phi_backends.testing import HAIKU, scripted_generator, write_script_model
from phi_backends.testing.contract import run_in_threads
from tests.bad_inputs import expect_api_error

SAMPLED = pb.SamplingConfig(temperature=1.0, repeat_penalty=1.0, max_tokens=120, seed=3)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_script_model(tmp_path_factory.mktemp("constraints") / "tiny-phi3.json", "tiny_phi3")


@pytest.fixture(scope="module")
def gen(tiny: Path) -> Generator:
    return scripted_generator(tiny, max_sequences=4)


@pytest.mark.parametrize(
    ("make", "needles", "what"),
    [
        (
            lambda: pb.Constraint.json_schema({"type": "objekt"}),
            ("JSON schema is not valid", "objekt"),
            "a JSON schema with an unknown type",
        ),
        (lambda: pb.Constraint.json_schema("{not json"), ("not valid JSON",), "a JSON schema that is not JSON"),
        (lambda: pb.Constraint.json_schema(["a"]), ("must be a JSON object",), "a JSON schema that is a list"),
        (
            lambda: pb.Constraint.json_schema(dict),
            ("not a pydantic model class",),
            "a class that is not a pydantic model",
        ),
        (lambda: pb.Constraint.regex("[0-9"), ("regex is not valid", "unclosed character class"), "an invalid regex"),
        (lambda: pb.Constraint.regex(""), ("non-empty pattern",), "an empty regex"),
        (
            lambda: pb.Constraint.grammar("start: item\n"),
            ("grammar is not valid", "unknown name"),
            "a grammar with an undefined rule",
        ),
        (lambda: pb.Constraint.grammar('root ::= "a" ( '), ("grammar is not valid",), "a GBNF grammar cut short"),
        (lambda: pb.Constraint.choice([]), ("one or more non-empty strings",), "an empty choice list"),
        (lambda: pb.Constraint.choice("abc"), ("one or more non-empty strings",), "a choice given as one string"),
    ],
)
def test_a_wrong_constraint_is_one_line_before_any_call(make: object, needles: tuple[str, ...], what: str) -> None:
    with pytest.raises(pb.ConstraintError) as caught:
        make()  # type: ignore[operator]
    expect_api_error(caught.value, pb.ConstraintError, *needles, what=what)
    assert caught.value.exit_code == 2


def test_a_constraint_that_is_not_one_is_a_usage_error(gen: Generator) -> None:
    with pytest.raises(pb.UsageError) as caught:
        gen.stream(HAIKU, SAMPLED, constraint='{"type": "object"}')  # type: ignore[arg-type]
    expect_api_error(
        caught.value, pb.UsageError, "constraint must be a Constraint", what="a constraint given as a string"
    )


class Player(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=10)
    number: int = pydantic.Field(ge=1, le=99)


def test_a_pydantic_model_class_gives_its_instance(gen: Generator) -> None:
    out = gen.generate(HAIKU, SAMPLED, constraint=pb.Constraint.json_schema(Player))
    assert out.finish_reason == "stop", out.text
    assert isinstance(out.value, Player) and out.value == Player.model_validate_json(out.text)


def test_json_object_gives_an_object_and_the_parsed_value(gen: Generator) -> None:
    # any object may go on for ever on random weights: favour the tokens that close one
    closing = {i: 6.0 for text in ('"', "}") for i in gen.prompt_ids(text, template=None)[-1:]}
    out = gen.generate(HAIKU, SAMPLED.replace(logit_bias=closing), constraint=pb.Constraint.json_object())
    assert out.finish_reason == "stop", out.text
    assert isinstance(out.value, dict) and out.value == json.loads(out.text)


def test_batched_calls_keep_their_own_constraint(gen: Generator) -> None:
    options = [["north", "south"], ["red", "green", "blue"], ["yes", "no"], ["one", "two", "three"]]

    def one(i: int) -> str:
        return gen.generate(HAIKU, SAMPLED.replace(seed=i), constraint=pb.Constraint.choice(options[i])).text

    texts = run_in_threads([lambda i=i: one(i) for i in range(len(options))])  # type: ignore[misc]
    assert all(text in choices for text, choices in zip(texts, options, strict=True)), texts


def test_a_stop_string_that_cuts_the_text_leaves_no_value(gen: Generator) -> None:
    constraint = pb.Constraint.json_schema({"type": "array", "items": {"const": "ab"}, "minItems": 3, "maxItems": 3})
    whole = gen.generate(HAIKU, SAMPLED, constraint=constraint)
    assert whole.text == '["ab", "ab", "ab"]' and whole.value == ["ab", "ab", "ab"]
    cut = gen.generate(HAIKU, SAMPLED.replace(stop=[", "]), constraint=constraint)
    assert cut.text == '["ab"' and cut.finish_reason == "stop" and cut.value is None


def test_the_vocabulary_spells_forced_text_exactly_despite_a_sentencepiece_prefix_space() -> None:
    tokens = [b"", b" {", b"{", b'"', b"a", b" "]
    vocabulary = Vocabulary(lambda i: tokens[i], lambda text: [1] if text == "{" else [], len(tokens))
    tokenizer = vocabulary.tokenizer({0})
    assert tokenizer.tokenize_str('{"a') == [2, 3, 4]  # greedy over the exact bytes, not " {"
    assert tokenizer.eos_token == 0


def test_a_constraint_the_vocabulary_cannot_write_is_refused_before_the_call() -> None:
    from phi_backends.constraints import ConstraintMask

    tokens = [b"", b"a", b"b"]  # no token spells "c"
    tokenizer = Vocabulary(lambda i: tokens[i], lambda text: [], len(tokens)).tokenizer({0})
    with pytest.raises(pb.ConstraintError) as caught:
        ConstraintMask(pb.Constraint.choice(["c"]), tokenizer, len(tokens), frozenset({0}))
    expect_api_error(
        caught.value,
        pb.ConstraintError,
        "no token of this model's vocabulary",
        what="a choice the vocabulary cannot spell",
    )
