"""The sampling-conformance kit, end to end on the scripted engine's sampler, and proof that it
catches a sampler that means something else."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from phi_backends import SamplingConfig
from phi_backends.sampling import ReferenceSampler
from phi_backends.testing import SAMPLING_CONFIGS, SamplingContract, sampling_cases
from phi_backends.testing.sampling import SamplingPath, check_sampling_path, top_p_boundary
from phi_backends.testing.scripted import sampling_probabilities


class TestScriptedSampling(SamplingContract):
    @pytest.fixture(scope="class")
    @classmethod
    def sampling_probabilities(cls) -> SamplingPath:
        return sampling_probabilities


def temperature_after_top_p(config: SamplingConfig, logits: np.ndarray, history: Sequence[int]) -> np.ndarray:
    """A classic mistake: the nucleus taken on the untempered distribution."""
    if config.greedy or config.top_p is None:
        return ReferenceSampler(config, 0).probabilities(logits, history)
    kept = ReferenceSampler(config.replace(temperature=1.0), 0).probabilities(logits, history) > 0
    tempered = ReferenceSampler(config.replace(top_p=None), 0).probabilities(logits, history)
    probs = np.where(kept, tempered, 0.0)
    return np.asarray(probs / probs.sum())


def penalty_on_the_prompt_too(config: SamplingConfig, logits: np.ndarray, history: Sequence[int]) -> np.ndarray:
    """Another: the penalty also counting tokens it must not (here: token 0, as if from the prompt)."""
    return ReferenceSampler(config, 0).probabilities(logits, [0, *history])


@pytest.mark.parametrize("wrong", [temperature_after_top_p, penalty_on_the_prompt_too])
def test_the_kit_catches_a_sampler_with_another_meaning(wrong: SamplingPath) -> None:
    failures = 0
    for config in SAMPLING_CONFIGS:
        for case in sampling_cases():
            try:
                check_sampling_path(wrong, config, case, sums_in_float32=True)
            except AssertionError:
                failures += 1
    assert failures > 0


def test_the_cases_reach_every_stage() -> None:
    """Each filter of the documented order removes tokens in some case, and some case lies near a top_p edge."""
    cases = sampling_cases()
    for config in (SamplingConfig(top_k=5), SamplingConfig(top_p=0.5), SamplingConfig(min_p=0.1)):
        assert any((ReferenceSampler(config, 0).probabilities(c.logits, c.history) == 0).any() for c in cases)
    near = [c.name for c in cases for cfg in SAMPLING_CONFIGS if top_p_boundary(cfg, c.logits, c.history)]
    assert near, "no case puts a token on the float32 edge of top_p"
