"""The CLI without any backend installed (the core's own session)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from phi_backends import plugins


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PHI_BACKENDS_BLOCK_PLUGINS": ",".join(plugins.KNOWN_BACKENDS)}
    return subprocess.run(
        [sys.executable, "-m", "phi_backends.cli", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_help_lists_every_sampling_field() -> None:
    out = cli("run", "--help").stdout
    for flag in [
        "--temperature",
        "--top-p",
        "--top-k",
        "--min-p",
        "--repeat-penalty",
        "--repeat-last-n",
        "--seed",
        "--max-tokens",
        "--stop",
        "--stats",
        "--json",
        "--raw",
        "--system",
        "--model",
        "--backend",
        "--provider",
    ]:
        assert flag in out


def test_no_command_prints_help_and_exits_2() -> None:
    result = cli()
    assert result.returncode == 2 and "run" in result.stdout


def test_backends_without_plugins_say_how_to_install() -> None:
    rows = json.loads(cli("backends", "--json").stdout)
    assert {r["name"] for r in rows} >= {"llama-cpp", "onnx", "mlx"}
    assert all(not r["available"] for r in rows)


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["run", "--model", "smollm2"], 1, "llama-cpp"),
        (["run", "--temperature", "-2"], 2, "temperature must be >= 0"),
        (["run", "--model", "nonexistent-model-name"], 2, "unknown model"),
        (["run", "--provider", "cuda", "-O", "provider=cpu"], 2, "disagree"),
    ],
)
def test_errors_are_one_line(args: list[str], code: int, needle: str) -> None:
    result = cli(*args)
    assert result.returncode == code, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and needle in result.stderr
