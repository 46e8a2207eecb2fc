"""`phi-backends run --backend mlx`, as a user runs it: a real process, a real engine, real files."""

from __future__ import annotations

import json
from pathlib import Path

from phi_backends.testing import SCRIPT_TEXT
from tests.cli import run_cli


def test_run_tiny_phi3_folder_greedy_prints_the_script(tiny_phi3_mlx: Path) -> None:
    result = run_cli("run", "--backend", "mlx", "--model", str(tiny_phi3_mlx), "--temperature", "0", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["text"] == SCRIPT_TEXT and data["finish_reason"] == "stop" and data["backend"] == "mlx"
    assert result.stderr == ""


def test_folder_is_detected_as_mlx_without_naming_the_backend(tiny_phi3_mlx: Path) -> None:
    """With llama.cpp installed too, a safetensors folder still goes to the backend that reads it."""
    result = run_cli("run", "--model", str(tiny_phi3_mlx), "--temperature", "0", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["backend"] == "mlx"
