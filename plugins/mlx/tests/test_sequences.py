"""MLX sequences through open/step/release: the cache a call leaves for the next, and the logits step.

A prompt that starts like the ids the last call's cache holds is computed only from where they
part; what it generates must not change (greedy and seeded sampling, penalty window included).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

import phi_backends as pb
from phi_backends.backend import Engine, SequenceRequest
from phi_backends.logits import LogitsStep, TokenLogprob
from phi_backends.testing import drive_sequence

GREEDY = pb.SamplingConfig(temperature=0, repeat_penalty=1.0)
CONFIGS = {
    "greedy": GREEDY,  # mlx-lm's own argmax path
    # a reward (< 1) moves greedy decoding on these models; its window must never hold prompt ids
    "greedy-penalty": pb.SamplingConfig(temperature=0, repeat_penalty=0.3, repeat_last_n=-1),
    "sampled": pb.SamplingConfig(temperature=1.0, top_p=0.95, repeat_penalty=1.3, repeat_last_n=-1),
}


def run(
    engine: Engine,
    prompt: Sequence[int],
    config: pb.SamplingConfig,
    n: int,
    *,
    seed: int = 7,
    reuse: bool = True,
    step: LogitsStep | None = None,
) -> tuple[list[int], int, list[TokenLogprob]]:
    """``n`` tokens of one call: its ids, how many prompt ids came from the cache, and its logprobs."""
    request = SequenceRequest(tuple(prompt), config, seed, budget=n, logits_step=step, reuse_prefix=reuse)
    done = drive_sequence(engine, request)
    return done.tokens, done.reused_tokens, [logprob for logprob in done.logprobs if logprob is not None]


@pytest.fixture(params=["tiny", "smol"])
def gen(request: pytest.FixtureRequest) -> pb.Generator:
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


def model(request: pytest.FixtureRequest, name: str) -> pb.Generator:
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


#: Every config on the tiny model; SmolLM2 (slow on MLX's CPU backend) in the one that needs most.
MODEL_CONFIGS = [("tiny", name) for name in CONFIGS] + [("smol", "sampled")]


def engine_of(gen: pb.Generator) -> Engine:
    return gen._engine  # type: ignore[attr-defined,no-any-return]


def test_capacity_is_one_call_that_reuses_its_prefix(tiny: pb.Generator) -> None:
    capacity = engine_of(tiny).capacity
    assert (capacity.max_sequences, capacity.kv_tokens, capacity.reuses_prefix) == (1, None, True)


@pytest.mark.parametrize(("which", "name"), MODEL_CONFIGS)
def test_second_turn_from_the_cache_equals_a_fresh_one(request: pytest.FixtureRequest, which: str, name: str) -> None:
    """A chat's second turn: the prompt repeats the first turn's prompt and answer, re-rendered."""
    gen = model(request, which)
    engine, config = engine_of(gen), CONFIGS[name]
    question = [{"role": "user", "content": "Tell me about ice hockey on frozen ponds."}]
    first = gen.prompt_ids(question)
    answer, reused, _ = run(engine, first, config, 12, reuse=False)
    assert reused == 0
    text = b"".join(engine.token_bytes(t) for t in answer).decode("utf-8", "replace")
    follow_up = [*question, {"role": "assistant", "content": text}, {"role": "user", "content": "And in summer?"}]
    second = gen.prompt_ids(follow_up)
    reused_ids, reused, _ = run(engine, second, config, 16)
    assert reused >= len(first) - 1, "at least the first turn's prompt came from the cache"
    fresh_ids, fresh_reused, _ = run(engine, second, config, 16, reuse=False)
    assert fresh_reused == 0
    assert reused_ids == fresh_ids


@pytest.mark.parametrize(("which", "name"), MODEL_CONFIGS)
def test_the_cache_holds_the_prompt_and_every_token_generated(
    request: pytest.FixtureRequest, which: str, name: str
) -> None:
    """generate_step runs a token ahead, so it has fed each token it yielded: all of them are reused."""
    gen = model(request, which)
    engine, config = engine_of(gen), CONFIGS[name]
    prompt = gen.prompt_ids("Once upon a time there was a hockey team that", template=None)
    ids, _, _ = run(engine, prompt, config, 9, reuse=False)
    tail = engine.tokenize(" and then", add_bos=False)
    longer = [*prompt, *ids, *tail]
    reused_ids, reused, _ = run(engine, longer, config, 10)
    assert reused == len(prompt) + len(ids)
    assert reused_ids == run(engine, longer, config, 10, reuse=False)[0]


def test_a_prompt_that_parts_early_trims_the_cache(tiny: pb.Generator) -> None:
    engine = engine_of(tiny)
    prompt = tiny.prompt_ids("The quick brown fox jumps over the lazy dog", template=None)
    run(engine, prompt, CONFIGS["sampled"], 6, reuse=False)
    other = [*prompt[:5], *engine.tokenize(" sat on the mat", add_bos=False)]
    ids, reused, _ = run(engine, other, CONFIGS["sampled"], 8)
    assert reused == 5
    assert ids == run(engine, other, CONFIGS["sampled"], 8, reuse=False)[0]
    # the very same prompt again: all but its last id (generate_step needs one to feed)
    again, reused, _ = run(engine, other, CONFIGS["sampled"], 8)
    assert reused == len(other) - 1 and again == ids


def test_a_call_released_before_its_first_step_leaves_a_usable_cache(tiny: pb.Generator) -> None:
    engine = engine_of(tiny)
    prompt = tiny.prompt_ids("Once upon a time", template=None)
    want = run(engine, prompt, GREEDY, 5, reuse=False)[0]
    engine.open(SequenceRequest(tuple(prompt), GREEDY, 0, budget=5)).release()
    ids, reused, _ = run(engine, prompt, GREEDY, 5)
    assert reused == len(prompt) - 1 and ids == want


def test_a_wrapped_rotating_cache_is_not_reused(tiny_phi3_mlx: Path) -> None:
    """max_kv_size: once the cache has rotated it holds no prefix any more; the next call starts afresh."""
    with pb.load(str(tiny_phi3_mlx), backend="mlx", max_kv_size=16) as gen:
        engine = engine_of(gen)
        prompt = gen.prompt_ids("The quick brown fox jumps over the lazy dog. " * 3, template=None)
        assert len(prompt) > 16
        ids, _, _ = run(engine, prompt, GREEDY, 4)
        again, reused, _ = run(engine, [*prompt, *ids], GREEDY, 4)
        assert reused == 0
        assert again == run(engine, [*prompt, *ids], GREEDY, 4, reuse=False)[0]


# -- the logits step ---------------------------------------------------------------------------


def test_logit_bias_bans_the_greedy_token(gen: pb.Generator) -> None:
    engine = engine_of(gen)
    prompt = gen.prompt_ids([{"role": "user", "content": "Name a winter sport."}])
    [first], _, _ = run(engine, prompt, GREEDY, 1)
    config = GREEDY.replace(logit_bias={first: -100})
    step = LogitsStep.for_call(config, engine.info.vocab_size)
    ids, _, _ = run(engine, prompt, config, 4, step=step)
    assert ids[0] != first and first not in ids


@pytest.mark.parametrize(("which", "name"), [("tiny", "greedy"), ("tiny", "sampled"), ("smol", "greedy")])
def test_logprobs_are_the_log_softmax_of_the_models_logits(
    request: pytest.FixtureRequest, which: str, name: str
) -> None:
    gen = model(request, which)
    engine = engine_of(gen)
    config = CONFIGS[name].replace(logprobs=True, top_logprobs=5)
    prompt = gen.prompt_ids("Once upon a time there was a hockey team that", template=None)
    step = LogitsStep.for_call(config, engine.info.vocab_size)
    ids, _, logprobs = run(engine, prompt, config, 8, reuse=False, step=step)
    assert ids == run(engine, prompt, CONFIGS[name], 8, reuse=False)[0], "reading logprobs changes no token"
    assert [lp.token for lp in logprobs] == ids
    rows = engine.logits([*prompt, *ids[:-1]])[len(prompt) - 1 :].astype(np.float64)  # type: ignore[attr-defined]
    want = rows - rows.max(axis=1, keepdims=True)
    want -= np.log(np.exp(want).sum(axis=1, keepdims=True))
    for i, lp in enumerate(logprobs):
        assert lp.logprob == pytest.approx(want[i, ids[i]], abs=1e-4)
        assert len(lp.top) == 5
        values = [v for _, v in lp.top]
        assert values == sorted(values, reverse=True), "most likely first"
        best = np.argsort(-want[i], kind="stable")[:5]
        assert [t for t, _ in lp.top] == [int(t) for t in best]
        assert values == pytest.approx(want[i, best], abs=1e-4)
        if name == "greedy":
            assert lp.top[0][0] == ids[i]


def test_logprobs_of_a_second_turn_read_the_reused_calls_rows(tiny: pb.Generator) -> None:
    """With a reused prefix the step sees only the rows of generated tokens, the same as afresh."""
    engine = engine_of(tiny)
    config = CONFIGS["sampled"].replace(logprobs=True)
    prompt = tiny.prompt_ids("Once upon a time", template=None)
    ids, _, _ = run(engine, prompt, config, 4, reuse=False)
    longer = [*prompt, *ids, *engine.tokenize(" then", add_bos=False)]
    step = LogitsStep.for_call(config, engine.info.vocab_size)
    again, reused, logprobs = run(engine, longer, config, 6, step=step)
    assert reused > 0
    fresh_step = LogitsStep.for_call(config, engine.info.vocab_size)
    fresh, _, fresh_logprobs = run(engine, longer, config, 6, reuse=False, step=fresh_step)
    assert again == fresh
    assert [lp.logprob for lp in logprobs] == pytest.approx([lp.logprob for lp in fresh_logprobs], abs=1e-4)
