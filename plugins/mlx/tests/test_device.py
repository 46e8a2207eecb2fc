"""The device option and what `phi-backends backends` says about MLX on this machine."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import mlx.core as mx
import pytest
from phi_backends_mlx import MlxBackend

import phi_backends as pb
from phi_backends.errors import OptionError
from phi_backends.testing import GREEDY, HAIKU, SCRIPT_TEXT
from tests.bad_inputs import expect_api_error, expect_cli_error
from tests.cli import run_cli

HAS_GPU = bool(mx.is_available(mx.gpu))


def test_availability_names_metal_and_the_device_used() -> None:
    available = MlxBackend().availability()
    assert available.ok, available.reason
    assert "mlx-lm 0.32." in available.reason
    if mx.metal.is_available():
        assert available.devices == ("gpu", "cpu") and "Metal is available" in available.reason
    elif HAS_GPU:
        assert available.devices == ("gpu", "cpu") and "CUDA is available" in available.reason
    else:
        assert available.devices == ("cpu",)
        assert "Metal is not available" in available.reason and "device=cpu" in available.reason


def test_backends_command_prints_reason_and_devices() -> None:
    rows = json.loads(run_cli("backends", "--json", timeout=60).stdout)
    row = next(r for r in rows if r["name"] == "mlx")
    available = MlxBackend().availability()
    assert row["available"] and row["formats"] == ["mlx"]
    assert tuple(row["devices"]) == available.devices
    table = run_cli("backends", timeout=60).stdout
    assert available.reason in table


def test_default_device_is_the_best_one(tiny_phi3_mlx: Path) -> None:
    with pb.load(str(tiny_phi3_mlx), backend="mlx") as gen:
        assert gen.info.metadata["device"] == ("gpu" if HAS_GPU else "cpu")


def test_cpu_device_runs_on_its_own_stream_and_leaves_mlx_defaults_alone(tiny_phi3_mlx: Path) -> None:
    default_device = mx.default_device()
    with pb.load(str(tiny_phi3_mlx), backend="mlx", device="cpu") as gen:
        engine = gen._engine
        assert gen.info.metadata["device"] == "cpu"
        assert engine.stream.device == mx.Device(mx.cpu)  # type: ignore[attr-defined]
        assert gen.generate(HAIKU, GREEDY).text == SCRIPT_TEXT
    assert mx.default_device() == default_device, "loading a model never changes MLX's default device"


def test_gpu_runs_beside_cpu_or_is_refused_where_there_is_none(tiny_phi3_mlx: Path) -> None:
    """With a GPU: a model on it and one on the CPU in one process (after mlx-lm was imported),
    each on its own device. Without: device=gpu is a usage error, not a silent fall-back."""
    if not HAS_GPU:
        with pytest.raises(OptionError) as caught:
            pb.load(str(tiny_phi3_mlx), backend="mlx", device="gpu")
        message = expect_api_error(caught.value, OptionError, what="mlx option device='gpu' on a machine without a GPU")
        assert re.search(r"device 'gpu' is not available .*has: cpu.*device=cpu", message), message
        return
    with (
        pb.load(str(tiny_phi3_mlx), backend="mlx", device="gpu") as gpu,
        pb.load(str(tiny_phi3_mlx), backend="mlx", device="cpu") as cpu,
    ):
        assert gpu._engine.stream.device == mx.Device(mx.gpu)  # type: ignore[attr-defined]
        assert cpu._engine.stream.device == mx.Device(mx.cpu)  # type: ignore[attr-defined]
        assert gpu.generate(HAIKU, GREEDY).text == cpu.generate(HAIKU, GREEDY).text == SCRIPT_TEXT


@pytest.mark.parametrize(
    ("what", "options", "needle"),
    [
        ("mlx option device='tpu'", {"device": "tpu"}, "device must be one of gpu, cpu"),
        (
            "mlx option n_gpu_layers=-1 (a llama-cpp option)",
            {"n_gpu_layers": -1},
            "no option 'n_gpu_layers'; its options are: device, n_ctx",
        ),
        ("mlx option kv_bits=7", {"kv_bits": 7}, "kv_bits must be one of"),
        ("mlx options kv_bits and max_kv_size together", {"kv_bits": 4, "max_kv_size": 256}, "exclude each other"),
        ("mlx option n_ctx='lots'", {"n_ctx": "lots"}, "n_ctx must be a whole number"),
        ("mlx option trust_remote_code='maybe'", {"trust_remote_code": "maybe"}, "true or false"),
    ],
)
def test_bad_options_are_usage_errors(tiny_phi3_mlx: Path, what: str, options: dict[str, Any], needle: str) -> None:
    with pytest.raises(OptionError) as caught:
        pb.load(str(tiny_phi3_mlx), backend="mlx", **options)
    expect_api_error(caught.value, OptionError, needle, what=what)


def test_cli_device_option_errors_exit_2(tiny_phi3_mlx: Path) -> None:
    result = run_cli(
        "run", "--backend", "mlx", "--model", str(tiny_phi3_mlx), "--option", "device=tpu", "hi", timeout=60
    )
    expect_cli_error(result, 2, "device must be one of gpu, cpu", what="--backend mlx --option device=tpu")
