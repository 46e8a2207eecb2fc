"""Fixtures only the MLX tests use (the shared ones are in the repository's root conftest).

The Generators are one per test module: a module that leaves the engine's kept cache in some
state does not reach into the next one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import phi_backends as pb


@pytest.fixture(scope="session")
def tiny_phi3_mlx_4bit() -> Path:
    """The tiny Phi-3 converted by mlx-lm to 4 bits (group size 64)."""
    from tests.fixtures.hf_models import mlx_model

    return mlx_model("tiny_phi3", quantized=True)


@pytest.fixture(scope="module")
def tiny(tiny_phi3_mlx: Path) -> Iterator[pb.Generator]:
    with pb.load(str(tiny_phi3_mlx), backend="mlx") as gen:
        yield gen


@pytest.fixture(scope="module")
def smol(smollm2_mlx: Path) -> Iterator[pb.Generator]:
    with pb.load(str(smollm2_mlx), backend="mlx") as gen:
        yield gen
