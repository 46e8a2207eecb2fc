"""`phi-backends run --backend mlx`, as a user runs it: a real process, a real engine, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from phi_backends.testing import SCRIPT_TEXT

CLI = str(Path(sys.executable).parent / "phi-backends")


def test_run_tiny_phi3_folder_greedy_prints_the_script(tiny_phi3_mlx: Path) -> None:
    result = subprocess.run(
        [CLI, "run", "--backend", "mlx", "--model", str(tiny_phi3_mlx), "--temperature", "0", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["text"] == SCRIPT_TEXT and data["finish_reason"] == "stop" and data["backend"] == "mlx"
    assert result.stderr == ""


def test_folder_is_detected_as_mlx_without_naming_the_backend(tiny_phi3_mlx: Path) -> None:
    """With llama.cpp installed too, a safetensors folder still goes to the backend that reads it."""
    result = subprocess.run(
        [CLI, "run", "--model", str(tiny_phi3_mlx), "--temperature", "0", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["backend"] == "mlx"
