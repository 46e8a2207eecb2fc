"""The shared backend contract, run on ONNX Runtime GenAI (fp32 CPU folders of the test models)."""

from __future__ import annotations

from pathlib import Path

import pytest

from phi_backends.testing import BackendContract, ContractModels


class TestOnnxContract(BackendContract):
    @pytest.fixture(scope="class")
    @classmethod
    def contract_models(cls, tiny_phi3_onnx: Path, smollm2_onnx: Path) -> ContractModels:
        return ContractModels(backend="onnx", tiny_phi3=tiny_phi3_onnx, smollm2=smollm2_onnx)
