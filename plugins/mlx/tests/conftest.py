"""Fixtures only the MLX tests use (the shared ones are in the repository's root conftest)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_phi3_mlx_4bit() -> Path:
    """The tiny Phi-3 converted by mlx-lm to 4 bits (group size 64)."""
    from tests.fixtures.hf_models import mlx_model

    return mlx_model("tiny_phi3", quantized=True)
