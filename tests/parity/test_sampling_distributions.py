"""One SamplingConfig, one token distribution, on every backend.

Given the same logits and the same tokens generated so far, each backend's own sampling path
(llama.cpp: the native sampler chain the engine builds; onnx: its emulation through
ReferenceSampler, and the engine's own argmax for plain greedy decoding; mlx: the logits
processor and sampler it hands to mlx-lm's ``generate_step``) must give the probabilities the
NumPy reference gives. Where the random draw itself is shared (onnx emulates with
ReferenceSampler's generator), the same seed must give the same token; where it is not
(llama.cpp's and MLX's own random streams), each draw must be reproducible for a seed, and
many draws must follow the distribution.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from phi_backends_llama_cpp.sampling import sampling_probabilities as llama_cpp_probabilities
from phi_backends_mlx.sampling import sampling_probabilities as mlx_probabilities
from phi_backends_onnx.sampling import sampling_probabilities as onnx_probabilities

import phi_backends as pb
from phi_backends import plugins
from phi_backends.backend import ModelSource, ScoringEngine
from phi_backends.sampling import ReferenceSampler

SC = pb.SamplingConfig
CONFIGS = [
    SC(temperature=1.0, repeat_penalty=1.0),
    SC(temperature=1.0),  # the defaults: penalty 1.2 over the last 64 generated tokens
    SC(temperature=0.7, top_p=0.9, repeat_penalty=1.0),
    SC(temperature=1.3, top_k=40, top_p=0.95, min_p=0.05),
    SC(temperature=0.5, min_p=0.1, repeat_penalty=1.5, repeat_last_n=8),
    SC(temperature=2.0, top_k=5, repeat_penalty=0.8, repeat_last_n=-1),
    SC(temperature=0.9, top_k=1),
    SC(temperature=0.3, top_p=0.5, min_p=0.02, repeat_penalty=1.1, repeat_last_n=3),
    SC(temperature=1.0, top_k=100000),  # larger than the vocabulary: off
    SC(temperature=0.0, repeat_penalty=1.0),  # greedy: the engines' own argmax paths
    SC(temperature=0.0, repeat_penalty=1.3),  # greedy with a penalty: every backend's processor
    SC(temperature=0.0, repeat_penalty=1.3, repeat_last_n=2),
]
SEEDS = (0, 7, 2024)


@pytest.fixture(scope="module")
def onnx_engines(tiny_phi3_onnx: Path, smollm2_onnx: Path) -> Iterator[dict[int, Any]]:
    """onnx engines by vocabulary size: the engine's own argmax runs on a row of that size."""
    backend = plugins.get_backend("onnx")
    engines = {}
    for path in (tiny_phi3_onnx, smollm2_onnx):
        engine = backend.load(ModelSource(path=path, format="onnx", name=path.name), {})
        engines[engine.info.vocab_size] = engine
    yield engines
    for engine in engines.values():
        engine.close()


@pytest.fixture(scope="module")
def cases(onnx_engines: dict[int, Any]) -> list[tuple[str, np.ndarray, list[int]]]:
    return make_cases(onnx_engines)


def make_cases(onnx_engines: dict[int, Any]) -> list[tuple[str, np.ndarray, list[int]]]:
    """(name, logits, history): random rows of both vocabulary sizes, exact ties, and real model rows."""
    rng = np.random.default_rng(5)
    out: list[tuple[str, np.ndarray, list[int]]] = []
    for vocab in sorted(onnx_engines):
        for i in range(2):
            logits = (rng.standard_normal(vocab) * 3).astype(np.float32)
            out.append((f"random-{vocab}-{i}", logits, [int(t) for t in rng.integers(0, vocab, size=24)]))
    tied = rng.standard_normal(32064).astype(np.float32)
    tied[[900, 17, 30000]] = 9.5  # a three-way tie at the top: the lowest id wins a greedy pick
    out.append(("tie-at-top", tied, [17, 5, 5, 900]))  # the penalty breaks the tie where it applies
    for vocab, engine in onnx_engines.items():
        assert isinstance(engine, ScoringEngine)
        ids = [int(t) for t in rng.integers(10, 2000, size=12)]
        rows = engine.logits(ids)
        out.append((f"model-{vocab}-first", rows[0], []))
        out.append((f"model-{vocab}-last", rows[-1], ids[6:]))
    return out


def backend_paths(onnx_engines: dict[int, Any], logits: np.ndarray) -> dict[str, Callable[..., tuple[np.ndarray, int]]]:
    engine = onnx_engines[logits.size]
    return {
        "llama-cpp": llama_cpp_probabilities,
        "onnx": lambda config, logits, history, seed: onnx_probabilities(
            config, logits, history, seed=seed, engine=engine
        ),
        "mlx": mlx_probabilities,
    }


#: How far (as a share of top_p) the reference's cumulative probability may lie from top_p for a
#: float32 engine to cut the nucleus one token earlier or later: llama.cpp and MLX normalize with a
#: float32 sum over the whole vocabulary (relative error up to ~1.3e-4 over 49,152 tokens here),
#: the reference with a float64 one.
FLOAT32_TOP_P_MARGIN = 3e-4


def top_p_boundary(config: pb.SamplingConfig, logits: np.ndarray, history: list[int]) -> set[int]:
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
    np.testing.assert_allclose(probs, expected, rtol=0, atol=1e-5, err_msg=where)


@pytest.mark.parametrize("config", CONFIGS, ids=repr)
def test_same_distribution_on_every_backend(
    config: pb.SamplingConfig, cases: list[tuple[str, np.ndarray, list[int]]], onnx_engines: dict[int, Any]
) -> None:
    for name, logits, history in cases:
        expected = ReferenceSampler(config, seed=0).probabilities(logits, history)
        boundary = top_p_boundary(config, logits, history)
        for backend, path in backend_paths(onnx_engines, logits).items():
            for seed in SEEDS:
                probs, token = path(config, logits, history, seed=seed)
                where = f"{backend} on {name} (seed {seed})"
                assert_same_distribution(probs, expected, boundary if backend != "onnx" else set(), where)
                assert probs[token] > 0, f"{where}: drew token {token}, which the filters drop"
                if config.greedy:
                    assert token == int(expected.argmax()), where
                if backend == "onnx":  # the draw is ReferenceSampler's: the same seed, the same token
                    assert token == ReferenceSampler(config, seed).sample(logits, history), where
                again = path(config, logits, history, seed=seed)[1]
                assert again == token, f"{where}: the same seed drew {again}, then {token}"


def test_the_float32_top_p_margin_is_needed_and_enough(
    cases: list[tuple[str, np.ndarray, list[int]]], onnx_engines: dict[int, Any]
) -> None:
    """The margin above is not a blanket: on these real rows llama.cpp and MLX do cut the nucleus
    one token away from the float64 reference, and only where the reference's mass is that close."""
    config = SC(temperature=0.7, top_p=0.9, repeat_penalty=1.0)
    moved = 0
    for _name, logits, history in cases:
        expected = ReferenceSampler(config, seed=0).probabilities(logits, history)
        for backend in ("llama-cpp", "mlx"):
            probs = backend_paths(onnx_engines, logits)[backend](config, logits, history, seed=0)[0]
            moved += bool(set(np.flatnonzero(probs)) ^ set(np.flatnonzero(expected)))
    assert moved >= 2


def test_engine_argmax_is_used_for_plain_greedy(onnx_engines: dict[int, Any]) -> None:
    """The onnx greedy case above really ran the engine's argmax (not the emulation)."""
    for engine in onnx_engines.values():
        assert engine.uses_engine_greedy(SC(temperature=0.0, repeat_penalty=1.0))
        assert not engine.uses_engine_greedy(SC(temperature=0.0, repeat_penalty=1.3))


#: Draws per backend for the frequency check; a token's frequency must be within 5 standard
#: deviations (plus 0.002) of its probability.
DRAWS = 3000


@pytest.mark.parametrize(
    "config",
    [SC(temperature=0.8, top_k=8, repeat_penalty=1.0), SC(temperature=1.5, top_p=0.6, repeat_penalty=1.4)],
    ids=repr,
)
def test_draws_follow_the_distribution(config: pb.SamplingConfig, onnx_engines: dict[int, Any]) -> None:
    rng = np.random.default_rng(11)
    logits = (rng.standard_normal(512) * 2).astype(np.float32)
    history = [int(t) for t in np.argsort(-logits)[:3]]  # the penalty hits the most likely tokens
    expected = ReferenceSampler(config, seed=0).probabilities(logits, history)
    paths = {"llama-cpp": llama_cpp_probabilities, "mlx": mlx_probabilities, "onnx": onnx_probabilities}
    for backend, path in paths.items():
        counts = np.bincount([path(config, logits, history, seed=seed)[1] for seed in range(DRAWS)], minlength=512)
        freq = counts / DRAWS
        bound = 5 * np.sqrt(expected * (1 - expected) / DRAWS) + 0.002
        worst = int(np.argmax(np.abs(freq - expected) - bound))
        assert np.all(np.abs(freq - expected) <= bound), (
            f"{backend}: token {worst} drawn {freq[worst]:.4f} of the time, probability {expected[worst]:.4f}"
        )
