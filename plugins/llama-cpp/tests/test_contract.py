"""The shared backend contract, run on llama.cpp."""

from __future__ import annotations

from pathlib import Path

import pytest

from phi_backends.testing import BackendContract, ContractModels


class TestLlamaCppContract(BackendContract):
    @pytest.fixture(scope="class")
    @classmethod
    def contract_models(cls, tiny_phi3: Path, smollm2: Path) -> ContractModels:
        return ContractModels(backend="llama-cpp", tiny_phi3=tiny_phi3, smollm2=smollm2)
