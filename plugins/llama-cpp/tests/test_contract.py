"""The shared backend contract, run on llama.cpp."""

from __future__ import annotations

from pathlib import Path

import pytest

from phi_backends.testing import BackendContract, ContractModels
from tests.parity.float_gguf import float32_gguf


class TestLlamaCppContract(BackendContract):
    @pytest.fixture(scope="class")
    @classmethod
    def contract_models(cls, tiny_phi3: Path, smollm2: Path) -> ContractModels:
        # SmolLM2 in float32: the contract checks that a call's text in a batch is its solo text
        # exactly, which holds on float weights; on Q4_1 a batched row can differ from the solo
        # row by rounding that its 8-bit activations magnify (docs/concurrency.md).
        return ContractModels(backend="llama-cpp", tiny_phi3=tiny_phi3, smollm2=float32_gguf(smollm2))
