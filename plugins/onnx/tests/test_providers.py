"""Execution providers: what availability() reports, how a provider is chosen, and the errors."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
from pathlib import Path
from typing import Any

import onnxruntime
import onnxruntime_genai as og
import pytest
from phi_backends_onnx.providers import PROVIDERS, canonical_provider

import phi_backends as pb
from phi_backends import plugins
from phi_backends.testing import SCRIPT_TEXT
from tests.bad_inputs import expect_api_error, expect_cli_error
from tests.cli import run_cli

GREEDY = pb.SamplingConfig(temperature=0.0, repeat_penalty=1.0)


def unusable_providers() -> list[str]:
    available = plugins.get_backend("onnx").availability()
    return [name for name in PROVIDERS if name not in available.devices]


# -- availability ------------------------------------------------------------------------------------


def test_availability_names_the_distribution_and_the_usable_providers() -> None:
    available = plugins.get_backend("onnx").availability()
    assert available.ok, available.reason
    assert available.devices[0] == "cpu"
    assert f"{og.__id__} {importlib.metadata.version(og.__id__)}" in available.reason
    assert f"onnxruntime {onnxruntime.__version__}" in available.reason or onnxruntime.__version__ in available.reason
    assert "\n" not in available.reason


def test_availability_agrees_with_the_engine_build() -> None:
    """cuda is usable exactly when this build and onnxruntime both have it (False on the CPU package)."""
    devices = plugins.get_backend("onnx").availability().devices
    has_cuda = og.is_cuda_available() and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    assert ("cuda" in devices) == has_cuda
    assert ("dml" in devices) == (
        og.is_dml_available() and "DmlExecutionProvider" in onnxruntime.get_available_providers()
    )
    if og.__id__ == "onnxruntime-genai":  # the CPU build
        assert "cuda" not in devices and "dml" not in devices


def test_availability_says_why_each_other_provider_is_unusable() -> None:
    reason = plugins.get_backend("onnx").availability().reason
    unusable = unusable_providers()
    assert unusable, "no onnxruntime-genai build has every provider"
    for name in unusable:
        assert f"{name} (" in reason, name
    if "cuda" in unusable:
        assert "onnxruntime-genai-cuda" in reason


def test_backends_command_shows_providers_and_reasons() -> None:
    result = run_cli("backends", "--json", timeout=60)
    row = next(r for r in json.loads(result.stdout) if r["name"] == "onnx")
    assert row["available"] and row["devices"][0] == "cpu" and row["formats"] == ["onnx"]
    assert "not usable" in row["reason"]


# -- choosing a provider ------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["cpu", "CPU", "CPUExecutionProvider"])
def test_cpu_in_any_spelling(tiny_phi3_onnx: Path, spelling: str) -> None:
    with pb.load(str(tiny_phi3_onnx), backend="onnx", provider=spelling) as gen:
        assert (gen.info.metadata["provider"], gen.info.metadata["device"]) == ("cpu", "CPU")
        assert gen.generate("Write a haiku about ice hockey", GREEDY).text == SCRIPT_TEXT


def test_default_provider_is_the_folders_else_cpu(tiny_phi3_onnx: Path) -> None:
    config = json.loads((tiny_phi3_onnx / "genai_config.json").read_text())
    assert config["model"]["decoder"]["session_options"]["provider_options"] == []
    with pb.load(str(tiny_phi3_onnx), backend="onnx") as gen:
        assert gen.info.metadata["provider"] == "cpu"


def test_aliases() -> None:
    assert canonical_provider("DirectML") == "dml"
    assert canonical_provider("CUDAExecutionProvider") == "cuda"
    assert canonical_provider("nvtensorrtrtx") == "NvTensorRtRtx"


def test_unknown_provider_lists_the_known_ones(tiny_phi3_onnx: Path) -> None:
    with pytest.raises(pb.OptionError) as caught:
        pb.load(str(tiny_phi3_onnx), backend="onnx", provider="rocm")
    expect_api_error(caught.value, pb.OptionError, "'rocm'", *PROVIDERS, what="onnx provider='rocm' (no such provider)")


def test_unusable_provider_names_the_usable_ones(tiny_phi3_onnx: Path) -> None:
    for name in unusable_providers():
        with pytest.raises(pb.BackendUnavailableError) as caught:
            pb.load(str(tiny_phi3_onnx), backend="onnx", provider=name)
        what = f"onnx provider={name!r}, which this onnxruntime-genai build cannot use"
        expect_api_error(caught.value, pb.BackendUnavailableError, f"'{name}'", "providers usable here: cpu", what=what)


@pytest.fixture
def cuda_folder(tiny_phi3_onnx: Path, tmp_path: Path) -> Path:
    """The tiny Phi-3 as Microsoft's CUDA folders are configured: genai_config.json asks for cuda."""
    for item in tiny_phi3_onnx.iterdir():
        os.symlink(item, tmp_path / item.name)
    config = json.loads((tiny_phi3_onnx / "genai_config.json").read_text())
    config["model"]["decoder"]["session_options"]["provider_options"] = [{"cuda": {"enable_cuda_graph": "0"}}]
    (tmp_path / "genai_config.json").unlink()
    (tmp_path / "genai_config.json").write_text(json.dumps(config))
    return tmp_path


def test_folder_asking_for_an_unusable_provider(cuda_folder: Path) -> None:
    if "cuda" not in unusable_providers():  # a CUDA machine: the folder's own choice is taken
        with pb.load(str(cuda_folder), backend="onnx") as gen:
            assert gen.info.metadata["provider"] == "cuda"
        return
    with pytest.raises(pb.BackendUnavailableError) as caught:
        pb.load(str(cuda_folder), backend="onnx")
    message = expect_api_error(
        caught.value,
        pb.BackendUnavailableError,
        "providers usable here: cpu",
        what="ONNX folder whose genai_config.json asks for cuda, where cuda cannot be used",
    )
    assert re.search(r"'cuda' \(asked for by .*genai_config.json\)", message), message


def test_provider_option_overrides_the_folders(cuda_folder: Path) -> None:
    with pb.load(str(cuda_folder), backend="onnx", provider="cpu") as gen:
        assert (gen.info.metadata["provider"], gen.info.metadata["device"]) == ("cpu", "CPU")
        assert gen.generate("Write a haiku about ice hockey", GREEDY).text == SCRIPT_TEXT


# -- options -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("what", "options", "needle"),
    [
        (
            "onnx option n_ctx=512 (a llama-cpp option)",
            {"n_ctx": 512},
            "no option 'n_ctx'; its options are: provider, provider_options, max_length, threads, verbose",
        ),
        ("onnx option max_length='long'", {"max_length": "long"}, "max_length must be a whole number"),
        ("onnx option max_length=1", {"max_length": 1}, "max_length must be at least 2"),
        ("onnx option threads=0", {"threads": 0}, "threads must be at least 1"),
        ("onnx option threads=1.5", {"threads": 1.5}, "threads must be a whole number"),
        ("onnx option verbose='maybe'", {"verbose": "maybe"}, "verbose must be true or false"),
        (
            "onnx provider_options as a string",
            {"provider_options": "device_id=0"},
            "provider_options must be a mapping",
        ),
        (
            "onnx provider_options with a list value",
            {"provider_options": {"device_id": [0]}},
            "provider option 'device_id' must be a string or a number",
        ),
        (
            "onnx provider_options for the cpu provider",
            {"provider": "cpu", "provider_options": {"device_id": 0}},
            "the cpu provider takes no provider_options",
        ),
    ],
)
def test_bad_options_are_one_line_option_errors(
    tiny_phi3_onnx: Path, what: str, options: dict[str, Any], needle: str
) -> None:
    with pytest.raises(pb.OptionError) as caught:
        pb.load(str(tiny_phi3_onnx), backend="onnx", **options)
    expect_api_error(caught.value, pb.OptionError, needle, what=what)


@pytest.mark.parametrize(
    ("provider", "code", "needle"), [("rocm", 2, "known providers: cpu, cuda, dml"), ("dml", 1, "usable here: cpu")]
)
def test_cli_provider_errors(tiny_phi3_onnx: Path, provider: str, code: int, needle: str) -> None:
    if provider not in [*unusable_providers(), "rocm"]:
        provider = unusable_providers()[0]
    result = run_cli("run", "--backend", "onnx", "--model", str(tiny_phi3_onnx), "-O", f"provider={provider}")
    why = "no such provider" if code == 2 else "which this onnxruntime-genai build cannot use"
    expect_cli_error(result, code, needle, what=f"-O provider={provider} ({why})")


def test_validate_options_needs_no_model() -> None:
    """What the core can call before resolving (and downloading) a model."""
    backend = plugins.get_backend("onnx")
    backend.validate_options({"provider": "cpu", "threads": 2})  # type: ignore[attr-defined]
    with pytest.raises(pb.OptionError, match="no option 'n_ctx'"):
        backend.validate_options({"n_ctx": 4})  # type: ignore[attr-defined]
    for name in unusable_providers():
        with pytest.raises(pb.BackendUnavailableError, match="providers usable here: cpu"):
            backend.validate_options({"provider": name})  # type: ignore[attr-defined]
