"""The CLI without any backend installed (the core's own session)."""

from __future__ import annotations

import json
import subprocess

import pytest

from phi_backends import plugins
from tests.bad_inputs import expect_cli_error
from tests.cli import run_cli


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``phi-backends`` with every backend hidden, as if none were installed."""
    return run_cli(*args, block_plugins=plugins.KNOWN_BACKENDS)


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
        "--logit-bias",
        "--logprobs",
        "--top-logprobs",
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
    ("what", "args", "code", "needle"),
    [
        ("a catalogue model (smollm2) with no backend installed", ["run", "--model", "smollm2"], 1, "llama-cpp"),
        ("--temperature -2", ["run", "--temperature", "-2"], 2, "temperature must be >= 0"),
        ("--model naming no file and no catalogue entry", ["run", "--model", "nonexistent-model-name"], 2,
         "unknown model"),
        ("--provider cuda with -O provider=cpu", ["run", "--provider", "cuda", "-O", "provider=cpu"], 2, "disagree"),
        ("--logit-bias with a bias above 100", ["run", "--logit-bias", "5=150"], 2, "must be in [-100, 100]"),
        ("--logit-bias without =", ["run", "--logit-bias", "5"], 2, "ID=BIAS"),
        ("--logit-bias with a non-finite bias", ["run", "--logit-bias", "5=nan"], 2, "finite"),
        ("--top-logprobs 21", ["run", "--json", "--top-logprobs", "21"], 2, "top_logprobs must be in [0, 20]"),
        ("--logprobs without --json", ["run", "--logprobs", "hi"], 2, "add --json"),
    ],
)  # fmt: skip
def test_errors_are_one_line(what: str, args: list[str], code: int, needle: str) -> None:
    expect_cli_error(cli(*args), code, needle, what=what)
