"""The shared backend contract, run on MLX (mlx-lm)."""

from __future__ import annotations

from pathlib import Path

import pytest

from phi_backends.testing import BackendContract, ContractModels


class TestMlxContract(BackendContract):
    @pytest.fixture(scope="class")
    @classmethod
    def contract_models(cls, tiny_phi3_mlx: Path, smollm2_mlx: Path) -> ContractModels:
        return ContractModels(backend="mlx", tiny_phi3=tiny_phi3_mlx, smollm2=smollm2_mlx)
