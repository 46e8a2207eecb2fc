"""llama.cpp's native sampler chain, as we build it, means exactly what SamplingConfig says.

Same logits and history in; the candidates llama.cpp keeps and their probabilities must equal
the NumPy reference implementation of the documented semantics.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import numpy as np
import pytest

import phi_backends as pb
from phi_backends.sampling import ReferenceSampler

CONFIGS = [
    pb.SamplingConfig(temperature=1.0),
    pb.SamplingConfig(temperature=0.7, top_p=0.9),
    pb.SamplingConfig(temperature=1.3, top_k=40, top_p=0.95, min_p=0.05),
    pb.SamplingConfig(temperature=0.5, min_p=0.1, repeat_penalty=1.5, repeat_last_n=8),
    pb.SamplingConfig(temperature=2.0, top_k=5, repeat_penalty=0.8, repeat_last_n=-1),
    pb.SamplingConfig(temperature=0.0, repeat_penalty=1.3),
]


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


@pytest.mark.parametrize("config", CONFIGS, ids=repr)
@pytest.mark.parametrize("case", range(5))
def test_native_chain_equals_reference(engine: object, config: pb.SamplingConfig, case: int) -> None:
    rng = np.random.default_rng(case)
    logits = (rng.standard_normal(512) * 3).astype(np.float32)
    history = [int(t) for t in rng.integers(0, 512, size=12)]
    expected = ReferenceSampler(config, seed=1).probabilities(logits, history)
    got = native_probabilities(engine, config, logits, history)
    assert set(np.flatnonzero(got)) == set(np.flatnonzero(expected)), "the same tokens survive the filters"
    np.testing.assert_allclose(got, expected, atol=2e-5)
