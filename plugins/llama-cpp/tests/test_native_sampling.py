"""llama.cpp's native sampler chain, as we build it, means exactly what SamplingConfig says.

Same logits and history in; the candidates llama.cpp keeps and their probabilities must equal
the NumPy reference implementation of the documented semantics, for the one list of cases
every backend is tested with (phi_backends.testing).
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import numpy as np
import pytest
from phi_backends_llama_cpp.sampling import sampling_probabilities

import phi_backends as pb
from phi_backends.sampling import ReferenceSampler
from phi_backends.testing import SAMPLING_CONFIGS, SamplingContract
from phi_backends.testing.sampling import SamplingPath, random_case


@pytest.fixture(scope="module")
def engine(tiny_phi3: Path) -> Iterator[object]:
    with pb.load(str(tiny_phi3), backend="llama-cpp") as gen:
        yield gen._engine


def native_probabilities(
    engine: object, config: pb.SamplingConfig, logits: np.ndarray, history: list[int]
) -> np.ndarray:
    chain = engine._sampler_chain(config, seed=1)  # type: ignore[attr-defined]
    try:
        for token in history:
            llama_cpp.llama_sampler_accept(chain, token)
        n = logits.size
        data = (llama_cpp.llama_token_data * n)()
        for i, value in enumerate(logits):
            data[i].id, data[i].logit, data[i].p = i, float(value), 0.0
        array = llama_cpp.llama_token_data_array(data=data, size=n, selected=-1, sorted=False)
        llama_cpp.llama_sampler_apply(chain, ctypes.byref(array))
        kept = {data[i].id: data[i].logit for i in range(array.size)}
    finally:
        llama_cpp.llama_sampler_free(chain)
    if config.greedy:
        probs = np.zeros(n)
        probs[data[array.selected].id] = 1.0
        return probs
    ids = np.array(list(kept))
    values = np.array([kept[i] for i in ids], dtype=np.float64)
    e = np.exp(values - values.max())
    probs = np.zeros(n)
    probs[ids] = e / e.sum()
    return probs


@pytest.mark.parametrize("config", SAMPLING_CONFIGS, ids=repr)
@pytest.mark.parametrize("case", range(5))
def test_native_chain_equals_reference(engine: object, config: pb.SamplingConfig, case: int) -> None:
    row = random_case(case)
    logits, history = row.logits, row.history
    expected = ReferenceSampler(config, seed=1).probabilities(logits, history)
    got = native_probabilities(engine, config, logits, history)
    assert set(np.flatnonzero(got)) == set(np.flatnonzero(expected)), "the same tokens survive the filters"
    np.testing.assert_allclose(got, expected, atol=2e-5)


class TestLlamaCppSamplingContract(SamplingContract):
    """The kit's cases on the public path (the chain the engine builds, on any vocabulary size)."""

    sums_in_float32 = True  # llama.cpp's softmax sums in float32

    @pytest.fixture(scope="class")
    @classmethod
    def sampling_probabilities(cls) -> SamplingPath:
        return lambda config, logits, history: sampling_probabilities(config, logits, history)[0]
