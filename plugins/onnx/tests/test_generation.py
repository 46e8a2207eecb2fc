"""What this engine does differently, checked end to end: its max_length counts the prompt, it
ends the sequence itself at its EOS ids, and it has its own notion of a context cap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from onnx_drive import drive

import phi_backends as pb
from phi_backends.testing import SCRIPT_TEXT
from tests.fixtures.tiny_phi3 import END_ID, SCRIPT_IDS

GREEDY = pb.SamplingConfig(temperature=0.0, repeat_penalty=1.0)
SAMPLED = pb.SamplingConfig(temperature=1.0, seed=7)


def long_prompt(gen: pb.Generator, room: int) -> str:
    """A raw prompt that leaves exactly ``room`` tokens of the context."""
    words = ["ice"] * gen.info.context_length  # one token each; off the fixture's script
    target = gen.info.context_length - room
    low, high = 1, len(words)
    while low < high:  # the longest prefix that fits
        mid = (low + high + 1) // 2
        if len(gen.prompt_ids(" ".join(words[:mid]), template=None)) <= target:
            low = mid
        else:
            high = mid - 1
    text = " ".join(words[:low])
    assert len(gen.prompt_ids(text, template=None)) == target, "the tokenizer gives one token per word here"
    return text


@pytest.mark.parametrize("config", [GREEDY, SAMPLED], ids=["engine-greedy", "emulated"])
@pytest.mark.parametrize("max_tokens", [1, 7, 90])
@pytest.mark.parametrize("prompt", ["short", "long"])
def test_max_tokens_is_exact_whatever_the_prompt_length(
    phi3: pb.Generator, config: pb.SamplingConfig, max_tokens: int, prompt: str
) -> None:
    text = "Once upon a time" if prompt == "short" else long_prompt(phi3, room=100)
    out = phi3.generate(text, config.replace(max_tokens=max_tokens), template=None)
    assert (out.usage.completion_tokens, out.finish_reason) == (max_tokens, "length")


@pytest.mark.parametrize("config", [GREEDY, SAMPLED], ids=["engine-greedy", "emulated"])
def test_generation_stops_at_the_end_of_the_context(phi3: pb.Generator, config: pb.SamplingConfig) -> None:
    text = long_prompt(phi3, room=5)
    out = phi3.generate(text, config.replace(max_tokens=50), template=None)
    assert (out.usage.completion_tokens, out.finish_reason) == (5, "length")
    assert out.usage.total_tokens == phi3.info.context_length


@pytest.mark.parametrize(
    "config",
    [GREEDY, pb.SamplingConfig(temperature=0.0, repeat_penalty=1.3)],
    ids=["engine-greedy", "emulated"],
)
def test_the_engine_hands_its_end_of_sequence_id_to_the_core(phi3: pb.Generator, config: pb.SamplingConfig) -> None:
    """<|end|> is an EOS id of this folder: onnxruntime-genai would end the sequence there by
    itself. The engine yields it like any token, and it is in the set the core stops at."""
    engine: Any = phi3._engine
    run = drive(engine, phi3.prompt_ids("Write a haiku about ice hockey"), config, 0, 20)
    assert run.tokens == [*SCRIPT_IDS, END_ID]
    assert END_ID in engine.info.eog_token_ids
    out = phi3.generate("Write a haiku about ice hockey", config)
    assert (out.text, out.finish_reason, out.token_ids) == (SCRIPT_TEXT, "stop", SCRIPT_IDS)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_end_of_turn_text_never_appears(smol: pb.Generator, seed: int) -> None:
    out = smol.generate("Say hello in three words.", pb.SamplingConfig(temperature=0.8, seed=seed, max_tokens=48))
    assert out.finish_reason == "stop", "the model ended its turn (else this test proves nothing)"
    assert "<|im_end|>" not in out.text and "<|im_start|>" not in out.text
    assert 2 not in out.token_ids


def test_same_seed_same_text_twice_and_seeds_differ(smol: pb.Generator) -> None:
    cfg = pb.SamplingConfig(temperature=1.0, top_p=0.95, min_p=0.02, seed=1234, max_tokens=32)
    first, second = smol.generate("Name a winter sport.", cfg), smol.generate("Name a winter sport.", cfg)
    assert first.text == second.text and first.token_ids == second.token_ids
    others = {smol.generate("Name a winter sport.", cfg.replace(seed=s)).text for s in (1, 2, 3)}
    assert len(others | {first.text}) > 1


def test_max_length_option_caps_the_context(tiny_phi3_onnx: Path) -> None:
    with pb.load(str(tiny_phi3_onnx), backend="onnx", max_length=64) as gen:
        assert gen.info.context_length == 64 and gen.info.metadata["context_length"] == 4096
        with pytest.raises(pb.ContextLengthError, match="context window is 64"):
            gen.stream("hockey " * 80, GREEDY, template=None)
        out = gen.generate(long_prompt(gen, room=3), GREEDY.replace(max_tokens=10), template=None)
        assert (out.usage.completion_tokens, out.finish_reason) == (3, "length")
        assert gen.generate("Write a haiku about ice hockey", GREEDY).text == SCRIPT_TEXT


def test_threads_option_runs(tiny_phi3_onnx: Path) -> None:
    with pb.load(str(tiny_phi3_onnx), backend="onnx", threads=1) as gen:
        assert gen.info.metadata["threads"] == 1
        assert gen.generate("Write a haiku about ice hockey", GREEDY).text == SCRIPT_TEXT


def test_empty_prompt_is_a_usage_error(smol: pb.Generator) -> None:
    assert smol.prompt_ids("", template=None) == []  # SmolLM2 adds no BOS
    with pytest.raises(pb.UsageError, match="the prompt is empty"):
        smol.generate("", GREEDY, template=None)
    assert smol.generate("Hi", GREEDY.replace(max_tokens=2), template=None).usage.completion_tokens == 2
