"""The spellings users of llm, ollama, llama.cpp and mlx_lm bring, without an engine (the core's
own session): what the parser makes of them, through `config` (which takes run's flags and shows
their effect) and through run's errors, which come before any backend is needed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from phi_backends import plugins
from tests.bad_inputs import expect_cli_error
from tests.cli import run_cli


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, stdin=stdin, block_plugins=plugins.KNOWN_BACKENDS)


def sampling(*args: str) -> dict[str, Any]:
    result = cli("config", "--json", *args)
    assert result.returncode == 0, result.stderr
    settings: dict[str, Any] = json.loads(result.stdout)["settings"]
    return {key.split(".", 1)[1]: s["value"] for key, s in settings.items() if key.startswith("sampling.")}


def test_short_and_familiar_sampling_spellings() -> None:
    short = sampling("-n", "7", "-s", "42", "--temp", "0.3")
    assert (short["max_tokens"], short["seed"], short["temperature"]) == (7, 42, 0.3)
    long = sampling("--max-tokens", "7", "--seed", "42", "--temperature", "0.3")  # the old spellings still work
    assert long == short


def test_help_shows_the_new_spellings() -> None:
    out = cli("run", "--help").stdout
    # the usage line; Python 3.13 lists "-p, --prompt TEXT" below where older ones say "-p TEXT, --prompt TEXT"
    for flag in (
        "[-n MAX_TOKENS]",
        "[-s SEED]",
        "--temp",
        "[-p TEXT]",
        "--prompt TEXT",
        "[-f FILE]",
        "--file FILE",
        "--verbose",
    ):
        assert flag in out, flag
    assert "PROMPT ..." in out


@pytest.mark.parametrize(
    ("what", "args", "needles"),
    [
        ("a misspelt sub-command (rnu)", ["rnu"], ["invalid choice: 'rnu'", "did you mean run?"]),
        ("a misspelt sub-command (confg)", ["confg"], ["did you mean config?"]),
        ("a misspelt flag (--temprature)", ["run", "--temprature", "0.5"],
         ["unrecognized arguments: --temprature", "did you mean --temperature?"]),
        ("a misspelt flag with = (--max-tokns=5)", ["run", "--max-tokns=5", "hi"], ["did you mean --max-tokens?"]),
        ("a misspelt flag of config (--chek)", ["config", "--chek"], ["did you mean --check?"]),
        ("an unknown flag nothing is close to", ["run", "--zzzzzz"], ["unrecognized arguments: --zzzzzz"]),
    ],
)  # fmt: skip
def test_did_you_mean(what: str, args: list[str], needles: list[str]) -> None:
    line = expect_cli_error(cli(*args), 2, *needles, what=what)
    if "zzzzzz" in what:
        assert "did you mean" not in line


def test_a_misspelt_flag_names_the_sub_command() -> None:
    line = expect_cli_error(cli("run", "--sead", "1"), 2, "did you mean --seed?", what="run --sead 1")
    assert line.startswith("phi-backends run: error:")


def test_prompt_given_two_ways_is_refused(tmp_path: Path) -> None:
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("hello")
    cases = [
        ("words and -p", ["run", "hello", "-p", "there"], "words and -p/--prompt"),
        ("-p and -f", ["run", "-p", "hello", "-f", str(prompt)], "-p/--prompt and -f/--file"),
        ("words and -f", ["run", "hello", "-f", str(prompt)], "words and -f/--file"),
    ]
    for what, args, needle in cases:
        expect_cli_error(cli(*args), 2, "the prompt is given twice", needle, what=f"run with the prompt as {what}")


def test_bad_prompt_files_are_one_line(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\u00e9".encode("latin-1"))
    cases = [
        ("-f naming no file", str(tmp_path / "missing.txt"), "no such file"),
        ("-f naming a folder", str(tmp_path), "is a folder"),
        ("-f naming a Latin-1 file", str(latin1), "is not UTF-8 text"),
    ]
    for what, path, needle in cases:
        expect_cli_error(cli("run", "-f", path), 2, "prompt file", needle, what=what)


def test_empty_model_name_is_a_usage_error() -> None:
    """`-m ''` must not fall back to the default model (and download it)."""
    result = cli("run", "-m", "", "hi")
    expect_cli_error(result, 2, "--model", "must be a model name", what="run -m ''")


def test_config_check_prints_a_pass_line() -> None:
    result = cli("config", "--check", "-m", "smollm2")
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("# check: passed") and "model smollm2" in last
    data = json.loads(cli("config", "--check", "--json", "-m", "smollm2").stdout)
    assert data["check"]["passed"] is True and data["check"]["model"] == "smollm2"
    files = cli("config", "--check", "--files")
    assert files.returncode == 0 and files.stdout.strip().splitlines()[-1].startswith("check: passed")


def test_config_without_check_prints_no_check_line() -> None:
    assert "check:" not in cli("config").stdout


def test_config_check_fails_with_one_line_and_exit_2() -> None:
    result = cli("config", "--check", "-m", "./no/such/model.gguf")
    expect_cli_error(result, 2, "no such file", what="config --check -m ./no/such/model.gguf", surface="config")
    assert result.stdout == ""
