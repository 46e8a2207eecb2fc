"""Fixtures the onnx tests share (the models' folders are in the repository's root conftest).

A Generator per test module: a module that leaves an engine's kept cache in some state does
not reach into the next one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import phi_backends as pb


@pytest.fixture(scope="module")
def smol(smollm2_onnx: Path) -> Iterator[pb.Generator]:
    with pb.load(str(smollm2_onnx), backend="onnx") as gen:
        yield gen


@pytest.fixture(scope="module")
def phi3(tiny_phi3_onnx: Path) -> Iterator[pb.Generator]:
    with pb.load(str(tiny_phi3_onnx), backend="onnx") as gen:
        yield gen
