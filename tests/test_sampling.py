"""SamplingConfig validation and the reference semantics it documents."""

from __future__ import annotations

import numpy as np
import pytest

from phi_backends import SamplingConfig, SamplingConfigError
from phi_backends.sampling import ReferenceSampler, penalty_window
from tests.bad_inputs import expect_api_error


def test_defaults_are_the_tutorials() -> None:
    cfg = SamplingConfig()
    assert (cfg.temperature, cfg.top_p, cfg.top_k, cfg.min_p) == (1.0, None, None, None)
    assert (cfg.repeat_penalty, cfg.repeat_last_n, cfg.seed, cfg.max_tokens, cfg.stop) == (1.2, 64, None, 100, ())
    assert SamplingConfig(stop=None).stop == ()  # OpenAI's stop: null


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("temperature", -0.1, "temperature must be >= 0"),
        ("temperature", float("nan"), "finite"),
        ("temperature", "hot", "must be a number"),
        ("top_p", 0.0, "top_p must be in (0, 1]"),
        ("top_p", 1.01, "top_p must be in (0, 1]"),
        ("top_k", -1, "top_k must be >= 0"),
        ("top_k", 2.5, "whole number"),
        ("min_p", 1.5, "min_p must be in [0, 1]"),
        ("repeat_penalty", 0.0, "repeat_penalty must be > 0"),
        ("repeat_last_n", -2, "repeat_last_n must be >= -1"),
        ("seed", -1, "seed must be in"),
        ("seed", True, "whole number"),
        ("max_tokens", 0, "max_tokens must be > 0"),
        ("stop", [""], "non-empty strings"),
        ("stop", [3], "non-empty strings"),
        ("stop", 5, "stop must be a string or a list of strings"),
        ("stop", b"###", "stop must be a string or a list of strings"),
    ],
)
def test_bad_values_name_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(SamplingConfigError) as info:
        SamplingConfig(**{field: value})
    expect_api_error(info.value, SamplingConfigError, message, what=f"SamplingConfig({field}={value!r})")


def test_unknown_field_is_an_error_with_a_suggestion() -> None:
    with pytest.raises(SamplingConfigError) as info:
        SamplingConfig(temprature=0.5)
    needle = "unknown sampling field 'temprature'; did you mean 'temperature'"
    expect_api_error(info.value, SamplingConfigError, needle, what="SamplingConfig with a misspelt field (temprature)")
    with pytest.raises(SamplingConfigError) as info:
        SamplingConfig.from_mapping({"frequency_penalty": 0.1})
    what = "a sampling field phi-backends does not have (frequency_penalty)"
    expect_api_error(info.value, SamplingConfigError, "unknown sampling field 'frequency_penalty'", what=what)


def test_replace_validates_and_stop_accepts_a_string() -> None:
    cfg = SamplingConfig(stop="\n\n")
    assert cfg.stop == ("\n\n",)
    assert cfg.replace(seed=3).seed == 3
    with pytest.raises(SamplingConfigError):
        cfg.replace(top_p=2)


def test_random_seed_is_fresh_per_call_and_fixed_seed_is_kept() -> None:
    assert SamplingConfig(seed=5).resolved_seed() == 5
    assert len({SamplingConfig().resolved_seed() for _ in range(5)}) > 1


def test_penalty_window_counts_generated_tokens_only() -> None:
    generated = list(range(100))
    assert list(penalty_window(SamplingConfig(repeat_last_n=3), generated)) == [97, 98, 99]
    assert list(penalty_window(SamplingConfig(repeat_last_n=-1), generated)) == generated
    assert list(penalty_window(SamplingConfig(repeat_last_n=0), generated)) == []
    assert list(penalty_window(SamplingConfig(repeat_penalty=1.0), generated)) == []


LOGITS = np.array([4.0, 3.0, 2.0, 1.0, -1.0, 0.0])


def probs(logits: np.ndarray = LOGITS, generated: tuple[int, ...] = (), **cfg: object) -> np.ndarray:
    return ReferenceSampler(SamplingConfig(repeat_penalty=1.0, **cfg), seed=0).probabilities(logits, list(generated))  # type: ignore[arg-type]


def test_penalty_divides_positive_and_multiplies_negative_logits_once_per_token() -> None:
    sampler = ReferenceSampler(SamplingConfig(repeat_penalty=2.0, temperature=1.0), seed=0)
    out = sampler.probabilities(LOGITS, [0, 0, 4])
    adjusted = LOGITS.copy()
    adjusted[0], adjusted[4] = 2.0, -2.0  # each distinct token once, whatever its count
    expected = np.exp(adjusted) / np.exp(adjusted).sum()
    np.testing.assert_allclose(out, expected)


def test_greedy_takes_the_highest_logit_and_lowest_id_on_ties() -> None:
    assert probs(temperature=0.0).argmax() == 0
    tie = np.array([1.0, 3.0, 3.0])
    assert ReferenceSampler(SamplingConfig(temperature=0.0), seed=0).sample(tie, []) == 1


def test_top_k_top_p_min_p_keep_what_the_docstring_says() -> None:
    assert np.count_nonzero(probs(top_k=2)) == 2
    full = probs()
    # top_p keeps the smallest head whose mass reaches p: the first two tokens hold ~0.91
    head = full[0] + full[1]
    assert np.count_nonzero(probs(top_p=head - 1e-9)) == 2
    assert np.count_nonzero(probs(top_p=head + 1e-9)) == 3
    kept = probs(min_p=0.3)
    assert set(np.flatnonzero(kept)) == {i for i in range(6) if full[i] >= 0.3 * full.max()}


def test_temperature_is_applied_before_the_filters() -> None:
    # At temperature 0.5 the head is sharper, so top_p=0.9 keeps fewer tokens than at 1.0.
    assert np.count_nonzero(probs(temperature=0.5, top_p=0.9)) < np.count_nonzero(probs(temperature=1.0, top_p=0.9))
    sharp = np.exp(LOGITS / 0.5)
    sharp /= sharp.sum()
    expected = {i for i in range(6) if sharp[i] >= 0.2 * sharp.max()}
    assert set(np.flatnonzero(probs(temperature=0.5, min_p=0.2))) == expected


def test_same_seed_same_draws() -> None:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(1000)
    a = ReferenceSampler(SamplingConfig(), 7)
    b = ReferenceSampler(SamplingConfig(), 7)
    assert [a.sample(logits, []) for _ in range(20)] == [b.sample(logits, []) for _ in range(20)]
    c = ReferenceSampler(SamplingConfig(), 8)
    assert [a.sample(logits, []) for _ in range(20)] != [c.sample(logits, []) for _ in range(20)]


def _nucleus_by_full_sort(probs_: np.ndarray, top_p: float) -> set[int]:
    """top_p the obvious way: sort the whole vocabulary (stable, so the lower id first on ties)."""
    order = np.argsort(-probs_, kind="stable")
    cut = int(np.searchsorted(np.cumsum(probs_[order]), top_p)) + 1
    return set(order[:cut].tolist())


@pytest.mark.parametrize("vocab", [7, 300, 32064, 200064])
def test_top_p_sorts_only_the_head_but_keeps_what_a_full_sort_keeps(vocab: int) -> None:
    rng = np.random.default_rng(vocab)
    for case in range(12):
        logits = rng.standard_normal(vocab) * [0.1, 1.0, 4.0][case % 3]
        if case % 4 == 0:
            logits[rng.integers(0, vocab, 40)] = logits.max()  # ties at the top
        if case % 5 == 0:
            logits = np.round(logits, 1)  # ties everywhere
        for top_p in (0.3, 0.9, 0.999999):
            got = ReferenceSampler(SamplingConfig(top_p=top_p), 0).probabilities(logits, [])
            full = ReferenceSampler(SamplingConfig(), 0).probabilities(logits, [])
            assert set(np.flatnonzero(got).tolist()) == _nucleus_by_full_sort(full, top_p)


def test_greedy_sample_is_the_argmax_of_the_penalized_distribution() -> None:
    logits = np.array([2.0, 2.2, -1.0, 2.1])
    cfg = SamplingConfig(temperature=0.0, repeat_penalty=1.2)
    sampler = ReferenceSampler(cfg, 0)
    assert sampler.sample(logits, [1]) == sampler.probabilities(logits, [1]).argmax() == 3
