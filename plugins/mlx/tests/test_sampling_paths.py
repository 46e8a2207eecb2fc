"""Our MLX sampling chain means exactly what SamplingConfig says (the cases: phi_backends.testing).

1. Same logits and history in: the tokens :func:`filtered_logits` keeps and their
   probabilities equal :class:`ReferenceSampler`'s (the NumPy statement of the semantics).
2. Wired into mlx-lm's ``generate_step``: the penalty sees only generated tokens, and
   greedy decoding (native, and with a penalty) gives exactly the ids the reference picks
   from the model's own logits, step by step.
3. The keyed sampler draws from the distribution it is given.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from phi_backends_mlx.sampling import KeyedSampler, SamplingPlan, filtered_logits, sampling_probabilities

import phi_backends as pb
from phi_backends.backend import SequenceRequest
from phi_backends.sampling import ReferenceSampler
from phi_backends.testing import SAMPLING_CONFIGS, SamplingContract
from phi_backends.testing.sampling import SamplingPath, random_case


def mlx_probabilities(config: pb.SamplingConfig, logits: np.ndarray, history: list[int]) -> np.ndarray:
    x = filtered_logits(config, mx.array(logits)[None], mx.array(history, dtype=mx.int32))
    if config.greedy:  # the engine takes the argmax of the penalised logits
        probs = np.zeros(logits.size)
        probs[int(mx.argmax(x, axis=-1).item())] = 1.0
        return probs
    return np.array(mx.softmax(x, axis=-1))[0].astype(np.float64)


def case_logits(case: int, *, ties: bool = False) -> tuple[np.ndarray, list[int]]:
    row = random_case(case, ties=ties)
    return row.logits, row.history


@pytest.mark.parametrize("config", SAMPLING_CONFIGS, ids=repr)
@pytest.mark.parametrize("case", range(6))
def test_filtered_logits_equal_reference(config: pb.SamplingConfig, case: int) -> None:
    logits, history = case_logits(case)
    expected = ReferenceSampler(config, seed=1).probabilities(logits, history)
    got = mlx_probabilities(config, logits, history)
    assert set(np.flatnonzero(got)) == set(np.flatnonzero(expected)), "the same tokens survive the filters"
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


#: top_p values no sum of equal probabilities hits exactly: there the kept set would depend on the
#: last bit of a float sum (float32 here, float64 in the reference), not on the semantics.
TIE_CONFIGS = [
    pb.SamplingConfig(temperature=1.0, top_p=0.937, repeat_penalty=1.0),
    pb.SamplingConfig(temperature=0.8, top_k=37, top_p=0.613),
    pb.SamplingConfig(temperature=1.3, top_k=90, min_p=0.031),
]


@pytest.mark.parametrize("config", TIE_CONFIGS, ids=repr)
@pytest.mark.parametrize("case", range(4))
def test_ties_are_broken_like_the_reference(config: pb.SamplingConfig, case: int) -> None:
    """top_k keeps every token tied with the k-th; top_p keeps the lower ids of a tied group."""
    logits, history = case_logits(case, ties=True)
    expected = ReferenceSampler(config, seed=1).probabilities(logits, history)
    got = mlx_probabilities(config, logits, history)
    assert set(np.flatnonzero(got)) == set(np.flatnonzero(expected))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    kept = np.flatnonzero(got)
    boundary = logits[kept].min()
    assert (logits == boundary).sum() > (logits[kept] == boundary).sum() or config.min_p, "a tie straddles the cut"


class TestMlxSamplingContract(SamplingContract):
    """The kit's cases on the path the engine samples with (``sampling_probabilities``)."""

    sums_in_float32 = True  # MLX normalizes with a float32 sum over the vocabulary

    @pytest.fixture(scope="class")
    @classmethod
    def sampling_probabilities(cls) -> SamplingPath:
        return lambda config, logits, history: sampling_probabilities(config, logits, history)[0]


def test_penalty_window_counts_only_generated_tokens() -> None:
    """generate_step hands the processor the prompt too; the plan slices it off."""
    config = pb.SamplingConfig(temperature=0, repeat_penalty=2.0, repeat_last_n=3)  # greedy: logits not shifted
    plan = SamplingPlan(config, seed=0, prompt_length=4)
    assert plan.logits_processors is not None and not plan.native
    process = plan.logits_processors[0]
    logits = mx.full((1, 10), 4.0)
    prompt, generated = [1, 2, 3, 4], [5, 6, 7, 8]  # the window is the last 3 generated: 6, 7, 8
    out = np.array(process(mx.array(prompt + generated), logits))[0]
    assert list(np.flatnonzero(out < 4.0)) == [6, 7, 8]
    np.testing.assert_allclose(out[[6, 7, 8]], 2.0)
    before_any = np.array(process(mx.array(prompt), logits))[0]
    assert (before_any == 4.0).all(), "nothing generated yet: the prompt is never penalised"


def test_native_path_only_for_plain_greedy() -> None:
    assert SamplingPlan(pb.SamplingConfig(temperature=0, repeat_penalty=1.0), 0, 5).native
    assert SamplingPlan(pb.SamplingConfig(temperature=0, repeat_penalty=1.2, repeat_last_n=0), 0, 5).native
    assert not SamplingPlan(pb.SamplingConfig(temperature=0, repeat_penalty=1.2), 0, 5).native
    assert not SamplingPlan(pb.SamplingConfig(temperature=0.5), 0, 5).native


def test_keyed_sampler_draws_from_the_given_distribution() -> None:
    logits = mx.array([[2.0, 1.0, 0.0, -mx.inf, 1.5]])
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    sampler = KeyedSampler(seed=3)
    draws = np.array([sampler(logprobs).item() for _ in range(3000)])
    expected = np.array(mx.softmax(logits, axis=-1))[0]
    freq = np.bincount(draws, minlength=5) / draws.size
    assert freq[3] == 0, "a filtered token is never drawn"
    np.testing.assert_allclose(freq, expected, atol=0.03)
    again = KeyedSampler(seed=3)
    assert [again(logprobs).item() for _ in range(50)] == list(draws[:50]), "same seed, same draws"


# -- through the engine: ids equal the reference's, computed from the model's own logits ------------


def reference_ids(gen: pb.Generator, prompt: list[int], config: pb.SamplingConfig, n: int) -> list[int]:
    """Greedy (or keyed) decoding by hand: full forward pass per step, reference sampler on its logits."""
    model = gen._engine._model  # type: ignore[attr-defined]
    sampler = ReferenceSampler(config, seed=0)
    out: list[int] = []
    for _ in range(n):
        logits = np.array(model(mx.array([prompt + out]))[0, -1].astype(mx.float32))
        out.append(sampler.sample(logits, out))
    return out


def engine_ids(gen: pb.Generator, prompt: list[int], config: pb.SamplingConfig, n: int) -> list[int]:
    engine = gen._engine  # type: ignore[attr-defined]
    sequence = engine.open(SequenceRequest(tuple(prompt), config, seed=0, budget=n, reuse_prefix=False))
    try:
        return [engine.step([sequence])[0] for _ in range(n)]
    finally:
        sequence.release()


@pytest.mark.parametrize(
    "config",
    [
        pb.SamplingConfig(temperature=0, repeat_penalty=1.0),  # mlx-lm's own argmax path
        # On this random-weight model greedy decoding never picks a token twice, so a penalty > 1
        # changes nothing; one < 1 (a reward) does, through the same code path.
        pb.SamplingConfig(temperature=0, repeat_penalty=0.3, repeat_last_n=4),
        pb.SamplingConfig(temperature=0, repeat_penalty=0.5, repeat_last_n=-1),
    ],
    ids=["native", "penalty-window-4", "penalty-all"],
)
def test_greedy_ids_equal_reference_on_the_model(tiny: pb.Generator, config: pb.SamplingConfig) -> None:
    prompt = tiny.prompt_ids("Once upon a time there was a hockey team that", template=None)
    want = reference_ids(tiny, prompt, config, 16)
    assert engine_ids(tiny, prompt, config, 16) == want
    if config.repeat_penalty != 1.0:  # the penalty changed something, or this test would prove nothing
        assert want != reference_ids(tiny, prompt, config.replace(repeat_penalty=1.0), 16)


def test_sampled_ids_stay_inside_the_reference_support(tiny: pb.Generator) -> None:
    """Every sampled token is one the reference allows, given the same history (top_k=2)."""
    config = pb.SamplingConfig(temperature=1.5, top_k=2, repeat_penalty=1.5, repeat_last_n=3)
    prompt = tiny.prompt_ids("Once upon a time", template=None)
    got = engine_ids(tiny, prompt, config, 16)
    model = tiny._engine._model  # type: ignore[attr-defined]
    reference = ReferenceSampler(config, seed=0)
    for i, token in enumerate(got):
        logits = np.array(model(mx.array([prompt + got[:i]]))[0, -1].astype(mx.float32))
        assert reference.probabilities(logits, got[:i])[token] > 0, (i, token)
