"""``phi-backends parity`` as a user runs it, on the tiny Phi-3 (fast on every backend), and its bad inputs.

The tiny Phi-3's weights carry a scripted greedy path ("Ice hockey on frozen ponds." then
``<|end|>``), so what every backend must say is known in advance.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from phi_backends.diagnostics.parity import Thresholds, read_prompts
from phi_backends.errors import UsageError
from tests.bad_inputs import expect_api_error, expect_cli_error
from tests.cli import run_cli, run_cli_with_terminal_stderr

SCRIPT = "Ice hockey on frozen ponds."


@pytest.fixture(scope="module")
def tiny_models(tiny_phi3: Path, tiny_phi3_onnx: Path, tiny_phi3_mlx: Path) -> list[str]:
    return [f"llama-cpp={tiny_phi3}", f"onnx={tiny_phi3_onnx}", f"mlx={tiny_phi3_mlx}"]


def models(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--model", item)]


def test_json_report_on_three_backends(tiny_models: list[str], tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.json"
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a winter sport."},
        {"role": "assistant", "content": "Ice hockey."},
        {"role": "user", "content": "Where was it first played?"},
    ]
    prompts.write_text(json.dumps(["Write a haiku about ice hockey", conversation]), encoding="utf-8")
    args = [*models(tiny_models), "--prompts", str(prompts), "--max-tokens", "16", "--json"]
    result = run_cli("parity", *args, "--score-all")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] is True and report["misses"] == []
    assert report["backends"] == ["llama-cpp", "onnx", "mlx"]
    assert [f["template"] for f in report["prompt_ids"]] == ["auto", "phi3", "phi3.5", "phi4", "phi4-mini", "chatml"]
    assert all(f["identical"] == f["total"] == 2 for f in report["prompt_ids"])
    for backend, continuations in report["greedy"]["continuations"].items():
        assert [c["text"] for c in continuations] == [SCRIPT, SCRIPT], backend
        assert [c["finish_reason"] for c in continuations] == ["stop", "stop"], backend
    for pair in report["pairs"]:
        assert pair["divergence"] == [None, None]
        assert pair["top1"] == 1.0
        # every continuation token, for both prompts
        assert pair["top1_total"] == 2 * len(report["greedy"]["continuations"]["onnx"][0]["token_ids"])
    # --score-all: every engine's logits() scored both prompts
    assert report["forward_passes"] == {"llama-cpp": 2, "onnx": 2, "mlx": 2}
    # by default the greedy runs, which had the same history, decide every position
    default = json.loads(run_cli("parity", *args).stdout)
    assert default["forward_passes"] == {"llama-cpp": 0, "onnx": 0, "mlx": 0}
    assert default["pairs"] == report["pairs"]


def test_the_constrained_prompt_set_gives_the_same_parsed_answers_on_three_backends(
    tiny_models: list[str], tmp_path: Path
) -> None:
    from phi_backends.diagnostics.parity import CONSTRAINED_PROMPTS

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Write a haiku about ice hockey\n", encoding="utf-8")
    args = [*models(tiny_models), "--prompts", str(prompts), "--max-tokens", "8", "--constrained"]
    result = run_cli("parity", *args, "--json")
    assert result.returncode == 0, result.stderr
    constrained = json.loads(result.stdout)["constrained"]
    assert constrained["identical"] == constrained["total"] == len(CONSTRAINED_PROMPTS)
    assert constrained["unparsed"] == []
    kinds = [p["kind"] for p in constrained["prompts"]]
    assert {"json_schema", "regex", "grammar", "choice", "tool_call"} <= set(kinds)
    llama = constrained["results"]["llama-cpp"]
    assert llama[kinds.index("tool_call")]["finish_reason"] == "tool_calls"
    assert llama[kinds.index("tool_call")]["text"].startswith("get_weather({")
    text = run_cli("parity", *args).stdout
    assert f"identical on every backend for {len(CONSTRAINED_PROMPTS)}/{len(CONSTRAINED_PROMPTS)}" in text


def test_a_missed_figure_exits_1_and_names_it(tiny_phi3: Path, tiny_phi3_onnx: Path, tmp_path: Path) -> None:
    """Two spaces between CJK words: llama.cpp's SentencePiece tokenizer takes '▁▁' (one id), the
    Hugging Face tokenizer of the same vocabulary two '▁' ids. A real difference, reported."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Write a haiku about ice hockey\n日本語  テキスト\n", encoding="utf-8")
    args = ["--model", f"llama-cpp={tiny_phi3}", "--model", f"onnx={tiny_phi3_onnx}", "--prompts", str(prompts)]
    result = run_cli("parity", *args, "--template", "phi3", "--max-tokens", "8")
    assert result.returncode == 1, result.stderr
    assert "phi3         1/2   first difference: prompt 2" in result.stdout
    assert result.stdout.rstrip().endswith("failed: 1 figure(s) missed their threshold")
    assert result.stderr.splitlines() == [
        "phi-backends: parity: missed: prompt ids with template phi3: identical on 1/2 prompts (50.0%), needs 100.0%"
    ]
    lenient = run_cli("parity", *args, "--template", "phi3", "--max-tokens", "8", "--min-prompt-ids", "0.5")
    assert lenient.returncode == 0, lenient.stderr
    assert lenient.stdout.rstrip().endswith("passed")


def test_every_pair_is_compared(tiny_phi3: Path, tiny_phi3_mlx: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('"Tell me about frozen ponds."\n', encoding="utf-8")
    args = ["--model", f"mlx={tiny_phi3_mlx}", "--model", f"llama-cpp={tiny_phi3}", "--prompts", str(prompts)]
    result = run_cli("parity", *args, "--template", "phi3", "--max-tokens", "4", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["backends"] == ["mlx", "llama-cpp"]
    assert [p["backends"] for p in report["pairs"]] == [["mlx", "llama-cpp"]]
    assert report["template"] == "phi3"


def test_a_terminal_sees_progress_and_a_pipe_does_not(tiny_phi3: Path, tiny_phi3_onnx: Path, tmp_path: Path) -> None:
    """Parity runs for minutes on real models: on a terminal, stderr says what it is doing
    (each load, each prompt's greedy run); a pipe gets nothing but the report."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Write a haiku about ice hockey\nName a winter sport\n", encoding="utf-8")
    args = ["--model", f"llama-cpp={tiny_phi3}", "--model", f"onnx={tiny_phi3_onnx}", "--prompts", str(prompts)]
    args += ["--template", "phi3", "--max-tokens", "4", "--json"]
    result, terminal = run_cli_with_terminal_stderr("parity", *args)
    assert result.returncode == 0, terminal
    assert json.loads(result.stdout)["passed"] is True
    shown = [line.strip() for line in terminal.replace("\x1b[K", "").replace("\r", "\n").splitlines() if line.strip()]
    assert f"loading {tiny_phi3} on llama-cpp" in shown and f"loading {tiny_phi3_onnx} on onnx" in shown, shown
    for backend in ("llama-cpp", "onnx"):
        assert [f"{backend}: greedy continuation {i}/2" for i in (1, 2)] == [
            line for line in shown if line.startswith(f"{backend}: greedy")
        ], shown
    assert terminal.endswith("\r\x1b[K"), "the last progress line is wiped before the report"
    piped = run_cli("parity", *args)
    assert (piped.returncode, piped.stderr) == (0, "")


# -- bad input ------------------------------------------------------------------------------------


def bad_cases(gguf: Path, onnx: Path, mlx: Path, tmp: Path) -> list[tuple[str, list[str], list[str]]]:
    broken = tmp / "broken.json"
    broken.write_text("[1, 2", encoding="utf-8")
    wrong = tmp / "wrong.json"
    wrong.write_text(json.dumps([{"role": "user"}]), encoding="utf-8")
    pair = ["--model", f"llama-cpp={gguf}", "--model", f"onnx={onnx}"]
    return [
        ("parity --model without BACKEND=", ["--model", str(gguf), "--model", f"onnx={onnx}"], ["BACKEND=MODEL"]),
        (
            "parity with one backend named twice",
            ["--model", f"llama-cpp={gguf}", "--model", f"llama-cpp={gguf}"],
            ["named twice"],
        ),
        ("parity with one model only", ["--model", f"llama-cpp={gguf}"], ["two or more backends, got 1"]),
        ("parity with no model", [], ["two or more backends, got 0"]),
        (
            "parity given a GGUF for the mlx backend",
            ["--model", f"mlx={gguf}", "--model", f"onnx={onnx}"],
            ["is a GGUF file", "the mlx backend reads"],
        ),
        (
            "parity given an ONNX folder for the llama-cpp backend",
            ["--model", f"llama-cpp={onnx}", "--model", f"mlx={mlx}"],
            ["is an ONNX Runtime GenAI folder", "the llama-cpp backend reads a GGUF file"],
        ),
        (
            "parity with an unknown backend",
            ["--model", f"llama-cpp={gguf}", "--model", f"torch={mlx}"],
            ["unknown backend 'torch'"],
        ),
        (
            "parity with a model path that does not exist",
            ["--model", f"llama-cpp={tmp / 'missing.gguf'}", "--model", f"onnx={onnx}"],
            ["missing.gguf"],
        ),
        ("parity --template phi5", [*pair, "--template", "phi5"], ["unknown chat template", "phi5"]),
        ("parity --option without BACKEND.", [*pair, "--option", "n_threads=2"], ["BACKEND.KEY=VALUE"]),
        (
            "parity --option for a backend not compared",
            [*pair, "--option", "mlx.device=cpu"],
            ["'mlx' is not one of the backends given with --model"],
        ),
        ("parity --option the backend does not know", [*pair, "--option", "onnx.n_ctxx=8"], ["n_ctxx"]),
        ("parity --min-top1 1.5", [*pair, "--min-top1", "1.5"], ["top1 threshold", "between 0 and 1"]),
        ("parity --max-tokens 0", [*pair, "--max-tokens", "0"], ["--max-tokens must be at least 1"]),
        ("parity --prompts naming a missing file", [*pair, "--prompts", str(tmp / "nope.txt")], ["does not exist"]),
        ("parity --prompts with broken JSON", [*pair, "--prompts", str(broken)], ["is not valid JSON"]),
        (
            "parity --prompts with a message without content",
            [*pair, "--prompts", str(wrong)],
            ["wrong.json, prompt 1"],
        ),
    ]


def test_bad_input_is_one_line_exit_2(
    tiny_phi3: Path, tiny_phi3_onnx: Path, tiny_phi3_mlx: Path, tmp_path: Path
) -> None:
    for what, args, needles in bad_cases(tiny_phi3, tiny_phi3_onnx, tiny_phi3_mlx, tmp_path):
        result = run_cli("parity", *args)
        expect_cli_error(result, 2, *needles, what=what)


def test_library_bad_input(tmp_path: Path) -> None:
    from phi_backends.diagnostics.parity import run_parity

    with pytest.raises(UsageError) as info:
        run_parity({})
    expect_api_error(info.value, UsageError, "at least two backends", what="run_parity with no generators")
    with pytest.raises(UsageError) as info:
        Thresholds(top1=-0.1)
    expect_api_error(info.value, UsageError, "top1 threshold", what="parity Thresholds(top1=-0.1)")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n", encoding="utf-8")
    with pytest.raises(UsageError) as info:
        read_prompts(empty)
    expect_api_error(info.value, UsageError, "holds no prompts", what="parity prompt file with only blank lines")


def test_prompt_file_formats(tmp_path: Path) -> None:
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    (tmp_path / "a.json").write_text(json.dumps(["one", messages]), encoding="utf-8")
    (tmp_path / "a.jsonl").write_text('"one"\n\n' + json.dumps(messages) + "\n", encoding="utf-8")
    (tmp_path / "a.txt").write_text("one\n\nsecond line\n", encoding="utf-8")
    expected_messages = ({"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"})
    assert read_prompts(tmp_path / "a.json") == ("one", expected_messages)
    assert read_prompts(tmp_path / "a.jsonl") == ("one", expected_messages)
    assert read_prompts(tmp_path / "a.txt") == ("one", "second line")
