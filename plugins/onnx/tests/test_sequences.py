"""The engine's sequences, driven directly: multi-turn reuse of a kept generator, and the logits step.

A call that reuses the generator of the call before it (rewound to the shared prefix, the rest
of the prompt appended) gives the tokens a fresh generator gives for the same seed, on both
token paths (the engine's argmax, and ReferenceSampler on the raw logits) and when sampling.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from onnx_drive import drive
from phi_backends_onnx.sequence import reusable_prefix, rope_switch

import phi_backends as pb
from phi_backends.backend import ScoringEngine, SequenceRequest
from phi_backends.logits import LogitsStep
from phi_backends.testing import SequenceRun
from tests.fixtures.tiny_phi3 import END_ID, SCRIPT_IDS

GREEDY = pb.SamplingConfig(temperature=0.0, repeat_penalty=1.0)
LOGPROBS = GREEDY.replace(logprobs=True)  # a logits step sends greedy decoding down the emulated path
SAMPLED = pb.SamplingConfig(temperature=1.0, top_p=0.95, min_p=0.02)
CASES = {"engine-greedy": GREEDY, "emulated-greedy": LOGPROBS, "sampled": SAMPLED}
TURNS = ["Tell me about frozen ponds.", "And what about hockey on them?", "Is it safe?"]
STEPS = 16


@pytest.fixture(params=["smol", "phi3"])
def gen(request: pytest.FixtureRequest) -> pb.Generator:
    generator: pb.Generator = request.getfixturevalue(request.param)
    return generator


def stepper(engine: Any, config: pb.SamplingConfig) -> Callable[[], LogitsStep | None]:
    return lambda: LogitsStep.for_call(config, engine.info.vocab_size)


def chat(
    gen: pb.Generator, config: pb.SamplingConfig, *, reuse: bool, between: Callable[[], object] = lambda: None
) -> list[tuple[list[int], SequenceRun]]:
    """The prompts and runs of a three-turn chat, each turn's prompt holding the answers before it."""
    engine: Any = gen._engine
    messages: list[dict[str, str]] = []
    turns = []
    for k, text in enumerate(TURNS):
        messages.append({"role": "user", "content": text})
        prompt = gen.prompt_ids(messages)
        run = drive(engine, prompt, config, 100 + k, STEPS, reuse=reuse, step=stepper(engine, config)())
        answer = [t for t in run.tokens if t not in engine.info.eog_token_ids]
        messages.append({"role": "assistant", "content": b"".join(map(engine.token_bytes, answer)).decode()})
        turns.append((prompt, run))
        between()
    return turns


@pytest.mark.parametrize("config", CASES.values(), ids=CASES.keys())
def test_each_turn_reuses_the_last_and_gives_the_tokens_of_a_fresh_generator(
    gen: pb.Generator, config: pb.SamplingConfig
) -> None:
    reused = chat(gen, config, reuse=True)
    fresh = chat(gen, config, reuse=False)
    assert [run.tokens for _, run in reused] == [run.tokens for _, run in fresh]
    assert [run.reused_tokens for _, run in fresh] == [0, 0, 0]
    for (before, _), (prompt, run) in itertools.pairwise(reused):
        assert len(before) <= run.reused_tokens < len(prompt), "the whole previous prompt came from the kept generator"
        assert prompt[: len(before)] == before


def test_a_turn_after_an_end_of_sequence_id_reuses_through_it(phi3: pb.Generator) -> None:
    """The fixture ends its answer with <|end|>, an EOS id of the folder: onnxruntime-genai ends the
    sequence there and does not put the id in it, yet the next turn keeps all it had."""
    engine: Any = phi3._engine
    first = phi3.prompt_ids("Write a haiku about ice hockey")
    assert drive(engine, first, GREEDY, 0, 40).tokens == [*SCRIPT_IDS, END_ID]
    second = [*first, *SCRIPT_IDS, END_ID, *phi3.prompt_ids("Once more", template=None)]
    again = drive(engine, second, GREEDY, 0, 40)
    assert again.reused_tokens == len(first) + len(SCRIPT_IDS) - 1  # the last id the engine took is computed again
    assert again.tokens == drive(engine, second, GREEDY, 0, 40, reuse=False).tokens


@pytest.mark.parametrize("config", [GREEDY, SAMPLED], ids=["engine-greedy", "sampled"])
def test_a_budget_the_kept_generator_cannot_hold_starts_afresh(smol: pb.Generator, config: pb.SamplingConfig) -> None:
    engine: Any = smol._engine
    prompt = smol.prompt_ids(TURNS[0])
    longer = [*prompt, *smol.prompt_ids(" More.", template=None)]
    drive(engine, prompt, config, 1, 4, reuse=False)  # leaves no generator to reuse
    drive(engine, prompt, config, 1, 4)  # a new generator, of the smallest room
    fits = drive(engine, longer, config, 2, STEPS)
    assert fits.reused_tokens > 0
    drive(engine, prompt, config, 1, 4)
    room = engine.info.context_length - len(longer)  # far past the kept generator's max_length
    too_big = drive(engine, longer, config, 2, STEPS, budget=room)
    assert (too_big.reused_tokens, too_big.tokens) == (0, fits.tokens)


def test_a_call_with_reuse_off_gets_a_cache_of_its_own_size_and_leaves_none(smol: pb.Generator) -> None:
    """Room for a next turn costs decode speed (docs/backends/onnx.md): a call that will not be
    continued gets a cache of exactly its prompt and budget, and no later call reuses it."""
    engine: Any = smol._engine
    prompt = smol.prompt_ids(TURNS[0])
    drive(engine, prompt, GREEDY, 1, 4)
    assert engine._kept is not None and engine._kept.max_length >= 2 * (len(prompt) + 4)
    request = SequenceRequest(tuple(prompt), GREEDY, 1, 4, None, False)
    sequence = engine.open(request)
    engine.step([sequence])
    assert (sequence.max_length, sequence.reused_tokens) == (len(prompt) + 4, 0)
    sequence.release()
    assert engine._kept is None
    assert drive(engine, prompt, GREEDY, 1, 4).reused_tokens == 0


def test_scoring_between_turns_leaves_reuse_intact(smol: pb.Generator) -> None:
    engine: Any = smol._engine
    assert isinstance(engine, ScoringEngine)
    probe = smol.prompt_ids("Something else entirely.")

    def score() -> None:
        engine.logits(probe)
        engine.engine_argmax(np.zeros(engine.info.vocab_size, dtype=np.float32))

    scored = chat(smol, SAMPLED, reuse=True, between=score)
    plain = chat(smol, SAMPLED, reuse=False)
    assert [run.tokens for _, run in scored] == [run.tokens for _, run in plain]
    assert all(run.reused_tokens > 0 for _, run in scored[1:])


# -- the logits step ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [-100.0, -30.0])
def test_a_negative_bias_on_the_greedy_token_changes_it(smol: pb.Generator, bias: float) -> None:
    engine: Any = smol._engine
    prompt = smol.prompt_ids(TURNS[0])
    greedy = drive(engine, prompt, GREEDY, 0, 1).tokens[0]
    config = GREEDY.replace(logit_bias={greedy: bias})
    biased = drive(engine, prompt, config, 0, 1, step=LogitsStep.for_call(config, engine.info.vocab_size))
    row = engine.logits(prompt)[-1].astype(np.float64)
    row[greedy] += bias
    assert biased.tokens[0] != greedy
    assert biased.tokens[0] == int(np.argmax(row))


@pytest.mark.parametrize("config", [LOGPROBS.replace(top_logprobs=5), SAMPLED.replace(top_logprobs=3)], ids=repr)
def test_logprobs_are_the_log_softmax_of_the_model_logits(gen: pb.Generator, config: pb.SamplingConfig) -> None:
    engine: Any = gen._engine
    prompt = gen.prompt_ids(TURNS[0])
    run = drive(engine, prompt, config, 4, STEPS, step=LogitsStep.for_call(config, engine.info.vocab_size))
    rows = engine.logits([*prompt, *run.tokens[:-1]])[len(prompt) - 1 :].astype(np.float64)
    top = rows.max(axis=1, keepdims=True)
    expected = rows - top - np.log(np.exp(rows - top).sum(axis=1, keepdims=True))
    for i, (token, got) in enumerate(zip(run.tokens, run.logprobs, strict=True)):
        assert got is not None and got.token == token
        assert got.logprob == pytest.approx(expected[i, token], abs=1e-4)
        assert len(got.top) == config.top_logprobs
        for alternative, value in got.top:
            assert value == pytest.approx(expected[i, alternative], abs=1e-4)
        assert got.top[0][1] == pytest.approx(expected[i].max(), abs=1e-4)


def test_no_reuse_across_phi3s_rope_switch(phi3: pb.Generator) -> None:
    """Past 4,096 tokens onnxruntime-genai runs Phi-3 with its long RoPE factors (and recomputes
    the cache with them): a cache computed on one side of the switch is never reused for a
    prompt on the other side, where a fresh generator would compute other values."""
    engine: Any = phi3._engine
    prompt = phi3.prompt_ids(TURNS[0])
    drive(engine, prompt, GREEDY, 0, 4)
    kept = engine._kept
    longer = [*prompt, *phi3.prompt_ids(" More.", template=None)]
    assert (rope_switch("phi3"), rope_switch("llama")) == (4096, None)
    assert reusable_prefix(kept, longer, len(longer) + 4, rope_switch("phi3")) > 0
    kept.long_rope = True  # as if it had run past the switch
    assert reusable_prefix(kept, longer, len(longer) + 4, rope_switch("phi3")) == 0
    assert drive(engine, longer, GREEDY, 0, 4).reused_tokens == 0
