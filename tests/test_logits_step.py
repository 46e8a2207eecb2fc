"""The logits step's log-probabilities against a plain float64 reference, on rows that stress
its shortcuts: ties at the k-th place, banned (-inf) ids, flat rows and wide spreads."""

from __future__ import annotations

import numpy as np
import pytest

from phi_backends import SamplingConfig
from phi_backends.logits import LogitsStep


def reference(row: np.ndarray, k: int) -> tuple[np.ndarray, list[int]]:
    values = row.astype(np.float64)
    finite = values[np.isfinite(values)]
    top = finite.max()
    logprobs = values - (top + np.log(np.exp(finite - top).sum()))
    ids = np.arange(row.size)
    order = np.lexsort((ids, -values))  # largest first, the lower id first on a tie
    return logprobs, [int(i) for i in order[:k]]


def rows() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    out = [rng.normal(0, s, 5000).astype(np.float32) for s in (0.01, 1.0, 3.0, 40.0)]
    tied = np.zeros(5000, dtype=np.float32)
    tied[[10, 20, 30, 4000, 4999]] = 5.0  # five ids tie for first, the rest tie below
    out.append(tied)
    out.append(np.zeros(5000, dtype=np.float32))  # a flat row: the lowest ids win
    banned = rng.normal(0, 2, 5000).astype(np.float32)
    banned[:4990] = -np.inf  # only ten ids left
    out.append(banned)
    steps = np.repeat(np.arange(50, dtype=np.float32), 100)  # wide runs of equal values
    out.append(steps)
    return out


@pytest.mark.parametrize("k", [1, 5, 20])
def test_top_logprobs_match_a_full_sort(k: int) -> None:
    for row in rows():
        step = LogitsStep(SamplingConfig(top_logprobs=k), row.size)
        work = row.copy()
        step(work)
        chosen = int(np.argmax(work))
        entry = step.logprob(chosen)
        assert entry is not None
        wanted, best = reference(row, k)
        assert [t for t, _ in entry.top] == best
        for token, value in entry.top:
            assert value == pytest.approx(wanted[token], abs=1e-4)
        assert entry.logprob == pytest.approx(wanted[chosen], abs=1e-4)


def test_each_row_is_read_once() -> None:
    step = LogitsStep(SamplingConfig(logprobs=True), 10)
    step(np.arange(10, dtype=np.float32))
    assert step.logprob(9) is not None
    assert step.logprob(9) is None  # no row since: nothing to report
