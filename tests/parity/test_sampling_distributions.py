"""One SamplingConfig, one token distribution, on every backend.

Given the same logits and the same tokens generated so far, each backend's own sampling path
(llama.cpp: the native sampler chain the engine builds; onnx: its emulation through
ReferenceSampler, and the engine's own argmax for plain greedy decoding; mlx: the logits
processor and sampler it hands to mlx-lm's ``generate_step``) must give the probabilities the
NumPy reference gives. Where the random draw itself is shared (onnx emulates with
ReferenceSampler's generator), the same seed must give the same token; where it is not
(llama.cpp's and MLX's own random streams), each draw must be reproducible for a seed, and
many draws must follow the distribution. The cases, and the float32 top_p allowance, are the
testing kit's (phi_backends.testing.sampling), which each backend's own tests also run.
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
from phi_backends.testing import SAMPLING_CONFIGS
from phi_backends.testing.sampling import assert_same_distribution, large_vocab_cases, top_p_boundary

SC = pb.SamplingConfig
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
    out = [(case.name, case.logits, case.history) for case in large_vocab_cases(rng, sorted(onnx_engines))]
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


@pytest.mark.parametrize("config", SAMPLING_CONFIGS, ids=repr)
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
