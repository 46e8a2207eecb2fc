"""The sampling-conformance suite: one list of cases every backend's sampling path must pass.

:class:`~phi_backends.sampling.ReferenceSampler` is the one definition of
:class:`~phi_backends.SamplingConfig`. A backend package subclasses :class:`SamplingContract`
and provides one fixture, ``sampling_probabilities``: its ``(config, logits, history) ->
probabilities`` function, running the very code its engine samples with. For every config of
:data:`SAMPLING_CONFIGS` and every row of :func:`sampling_cases`, the probabilities must equal
the reference's within 1e-5 and a greedy pick must be the reference's.

One allowance, for engines that normalize with a float32 sum (set ``sums_in_float32 = True``):
where the reference's cumulative probability lies within :data:`FLOAT32_TOP_P_MARGIN` of
``top_p``, the nucleus may end one token earlier or later (:func:`top_p_boundary`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

from ..sampling import ReferenceSampler, SamplingConfig

__all__ = [
    "FLOAT32_TOP_P_MARGIN",
    "SAMPLING_CONFIGS",
    "LogitsCase",
    "SamplingContract",
    "SamplingPath",
    "assert_same_distribution",
    "check_sampling_path",
    "large_vocab_cases",
    "random_case",
    "sampling_cases",
    "top_p_boundary",
]

SC = SamplingConfig
#: Every sampling case any backend is tested with: each stage of the documented order alone and
#: combined, the penalty on and off, greedy with and without it, and the edges of each range.
SAMPLING_CONFIGS: tuple[SamplingConfig, ...] = (
    SC(temperature=1.0),  # the defaults: penalty 1.2 over the last 64 generated tokens
    SC(temperature=1.0, repeat_penalty=1.0),  # plain softmax
    SC(temperature=0.7, top_p=0.9),
    SC(temperature=0.7, top_p=0.9, repeat_penalty=1.0),
    SC(temperature=1.3, top_k=40, top_p=0.95, min_p=0.05),  # every filter at once
    SC(temperature=0.5, min_p=0.1, repeat_penalty=1.5, repeat_last_n=8),
    SC(temperature=2.0, top_k=5, repeat_penalty=0.8, repeat_last_n=-1),  # a reward over all generated tokens
    SC(temperature=1.0, top_k=1),
    SC(temperature=0.9, top_k=1),
    SC(temperature=0.9, top_p=0.5, repeat_penalty=1.2, repeat_last_n=64),
    SC(temperature=0.3, top_p=0.5, min_p=0.02, repeat_penalty=1.1, repeat_last_n=3),
    SC(temperature=1.0, top_k=100000),  # larger than the vocabulary: off
    SC(temperature=1e-30, top_p=0.9),  # logits / temperature beyond float32's range
    SC(temperature=0.0, repeat_penalty=1.0),  # greedy: the engines' own argmax paths
    SC(temperature=0.0, repeat_penalty=1.3),  # greedy with a penalty: every backend's processor
    SC(temperature=0.0, repeat_penalty=1.3, repeat_last_n=2),
)
#: How far (as a share of top_p) the reference's cumulative probability may lie from top_p for a
#: float32 engine to cut the nucleus one token earlier or later: llama.cpp and MLX normalize with a
#: float32 sum over the whole vocabulary (relative error up to ~1.3e-4 over 49,152 tokens in the
#: parity tests), the reference with a float64 one.
FLOAT32_TOP_P_MARGIN = 3e-4
ATOL = 1e-5
#: The vocabulary sizes of the repository's two test models (tiny Phi-3, SmolLM2).
VOCAB_SIZES = (32064, 49152)

#: A backend's sampling path: the distribution it draws the next token from, given the raw
#: ``logits`` and the tokens generated so far (zeros for filtered tokens; one-hot for greedy).
SamplingPath = Callable[[SamplingConfig, np.ndarray, Sequence[int]], np.ndarray]


@dataclass(frozen=True)
class LogitsCase:
    """One row of logits and the tokens generated before it (which the penalty looks at)."""

    name: str
    logits: np.ndarray
    history: list[int]


def random_case(seed: int, *, ties: bool = False) -> LogitsCase:
    """512 logits (std 3, or integers -4..4 in large groups of exact ties) and 12 generated tokens.

    The tie rows are not among :func:`sampling_cases`: llama.cpp's native top-k and top-p keep
    other members of a tied group than the reference's (lowest ids first), so only a backend that
    promises the reference's tie-breaking (MLX) tests them.
    """
    rng = np.random.default_rng(seed)
    if ties:
        logits = rng.integers(-4, 5, size=512).astype(np.float32)
    else:
        logits = (rng.standard_normal(512) * 3).astype(np.float32)
    history = [int(t) for t in rng.integers(0, 512, size=12)]
    return LogitsCase(f"{'ties' if ties else 'random'}-512-{seed}", logits, history)


def large_vocab_cases(rng: np.random.Generator, vocab_sizes: Sequence[int] = VOCAB_SIZES) -> list[LogitsCase]:
    """Rows of real vocabulary sizes, where float32 sums drift most, and a three-way tie at the top.

    Drawn from ``rng`` (a test that adds rows of its own goes on drawing from it).
    """
    out: list[LogitsCase] = []
    for vocab in sorted(vocab_sizes):
        for i in range(2):
            logits = (rng.standard_normal(vocab) * 3).astype(np.float32)
            out.append(LogitsCase(f"random-{vocab}-{i}", logits, [int(t) for t in rng.integers(0, vocab, size=24)]))
    tied = rng.standard_normal(32064).astype(np.float32)
    tied[[900, 17, 30000]] = 9.5  # a three-way tie at the top: the lowest id wins a greedy pick
    out.append(LogitsCase("tie-at-top", tied, [17, 5, 5, 900]))  # the penalty breaks the tie where it applies
    return out


def sampling_cases() -> list[LogitsCase]:
    """The rows :class:`SamplingContract` checks every config of :data:`SAMPLING_CONFIGS` on."""
    return [random_case(seed) for seed in range(6)] + large_vocab_cases(np.random.default_rng(5))


def top_p_boundary(config: SamplingConfig, logits: np.ndarray, history: Sequence[int]) -> set[int]:
    """The tokens whose place in the nucleus a float32 sum may decide: the last one the reference
    keeps, when the mass before it is within the margin below top_p, and the first one it drops,
    when the mass it keeps is within the margin above top_p."""
    if config.greedy or config.top_p is None or config.top_p >= 1.0:
        return set()
    x = ReferenceSampler(config.replace(top_p=None, min_p=None), seed=0).probabilities(logits, history)
    order = np.argsort(-x, kind="stable")
    cumulative = np.cumsum(x[order])
    cut = int(np.searchsorted(cumulative, config.top_p))  # the reference keeps order[: cut + 1]
    margin = FLOAT32_TOP_P_MARGIN * config.top_p
    near: set[int] = set()
    if cut > 0 and config.top_p - cumulative[cut - 1] < margin:
        near.add(int(order[cut]))
    if cut + 1 < order.size and cumulative[cut] - config.top_p < margin:
        near.add(int(order[cut + 1]))
    return near


def assert_same_distribution(probs: np.ndarray, expected: np.ndarray, boundary: set[int], where: str) -> None:
    """Equal to 1e-5, or, where a float32 sum moved the top_p cut by one boundary token, equal to
    1e-5 once both are renormalized over the tokens they share."""
    got, want = set(np.flatnonzero(probs)), set(np.flatnonzero(expected))
    differ = got ^ want
    assert differ <= boundary, f"{where}: the filters keep other tokens: {sorted(differ)[:10]}"
    if differ:
        shared = np.array(sorted(got & want))
        probs = np.where(np.isin(np.arange(probs.size), shared), probs, 0.0)
        expected = np.where(np.isin(np.arange(expected.size), shared), expected, 0.0)
        probs, expected = probs / probs.sum(), expected / expected.sum()
    np.testing.assert_allclose(probs, expected, rtol=0, atol=ATOL, err_msg=where)


def check_sampling_path(
    path: SamplingPath, config: SamplingConfig, case: LogitsCase, *, sums_in_float32: bool, where: str = ""
) -> None:
    """Assert that ``path`` draws from the reference's distribution on ``case`` (see the module)."""
    where = f"{where or 'the sampling path'} on {case.name} with {config!r}"
    expected = ReferenceSampler(config, seed=0).probabilities(case.logits, case.history)
    probs = np.asarray(path(config, case.logits, list(case.history)), dtype=np.float64).reshape(-1)
    assert probs.shape == expected.shape, f"{where}: {probs.shape[0]} probabilities for {expected.size} logits"
    boundary = top_p_boundary(config, case.logits, case.history) if sums_in_float32 else set()
    assert_same_distribution(probs, expected, boundary, where)
    if config.greedy:
        assert int(probs.argmax()) == int(expected.argmax()), f"{where}: greedy picks another token"


class SamplingContract:
    """Subclass in a backend package's tests and define the ``sampling_probabilities`` fixture
    (a :data:`SamplingPath`); override ``sampling_cases`` to add rows (a real model's logits)."""

    #: True for an engine that normalizes with a float32 sum: allows :func:`top_p_boundary`.
    sums_in_float32: ClassVar[bool] = False

    @pytest.fixture(scope="class")
    @classmethod
    def sampling_cases(cls) -> list[LogitsCase]:
        return sampling_cases()

    @pytest.mark.parametrize("config", SAMPLING_CONFIGS, ids=repr)
    def test_probabilities_equal_the_reference(
        self, sampling_probabilities: SamplingPath, sampling_cases: list[LogitsCase], config: SamplingConfig
    ) -> None:
        for case in sampling_cases:
            check_sampling_path(sampling_probabilities, config, case, sums_in_float32=self.sums_in_float32)
