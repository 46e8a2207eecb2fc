"""`phi-backends` end to end, as a user runs it: a real process, a real engine, real files."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from phi_backends.testing import SCRIPT_TEXT
from tests.bad_inputs import expect_cli_error
from tests.cli import CLI, interruptible
from tests.cli import run_cli as run
from tests.fakehub import FakeHub

SEED_REPO, SEED_FILE = "microsoft/Phi-3-mini-4k-instruct-gguf", "Phi-3-mini-4k-instruct-q4.gguf"


GREEDY = ["--temperature", "0", "--repeat-penalty", "1"]


def test_run_tiny_phi3_greedy_prints_script_and_stops(tiny_phi3: Path) -> None:
    result = run("run", "--model", str(tiny_phi3), *GREEDY)
    assert result.returncode == 0, result.stderr
    assert result.stdout == SCRIPT_TEXT + "\n"


def test_run_json_reports_everything(tiny_phi3: Path) -> None:
    result = run("run", "--model", str(tiny_phi3), *GREEDY, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["text"] == SCRIPT_TEXT and data["finish_reason"] == "stop" and data["backend"] == "llama-cpp"
    assert data["usage"]["completion_tokens"] > 0 and data["usage"]["total_tokens"] > data["usage"]["prompt_tokens"]
    assert data["timings"]["time_to_first_token"] > 0


def test_run_reads_stdin_and_prints_stats(smollm2: Path) -> None:
    result = run(
        "run", "-", "--model", str(smollm2), "--temperature", "0", "--max-tokens", "8", "--stats", stdin="Say hi"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "decode" in result.stderr and "tok/s" in result.stderr


def test_run_raw_and_stop(smollm2: Path) -> None:
    result = run(
        "run",
        "--raw",
        "The capital of France is",
        "--model",
        str(smollm2),
        "--temperature",
        "0",
        "--max-tokens",
        "30",
        "--stop",
        ".",
        "--json",
    )
    data = json.loads(result.stdout)
    assert data["finish_reason"] in ("stop", "length") and "." not in data["text"]


def test_same_seed_same_text_from_the_cli(smollm2: Path) -> None:
    args = ["run", "--model", str(smollm2), "--seed", "42", "--max-tokens", "12"]
    assert run(*args).stdout == run(*args).stdout


def test_seed_program_downloads_once_then_uses_the_cache(tiny_phi3: Path, tmp_path: Path) -> None:
    """`phi-backends run` with no options: the tutorial's model, through huggingface-hub."""
    env = {"HF_HOME": str(tmp_path / "hf")}
    with FakeHub({SEED_REPO: {SEED_FILE: tiny_phi3}}) as hub:
        env["HF_ENDPOINT"] = hub.url
        first = run("run", "--json", env=env)
        assert first.returncode == 0, first.stderr
        data = json.loads(first.stdout)
        assert data["model"] == "phi-3-mini-4k-instruct" and data["finish_reason"] in ("stop", "length")
        assert "<|end|>" not in data["text"] and data["usage"]["completion_tokens"] <= 100
        downloads = hub.hits("GET", SEED_FILE)
        assert downloads >= 1
        second = run("run", "--json", "--seed", "1", env=env)
        assert second.returncode == 0, second.stderr
        assert hub.hits("GET", SEED_FILE) == downloads, "the second run must not download again"
    offline = run(
        "run", "--seed", "1", "--json", env={**env, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    )
    assert offline.returncode == 0, offline.stderr
    assert json.loads(offline.stdout)["text"] == json.loads(second.stdout)["text"]


def test_seed_program_without_network_says_what_to_do(tmp_path: Path) -> None:
    result = run("run", env={"HF_HOME": str(tmp_path), "HF_ENDPOINT": "http://127.0.0.1:9"}, timeout=60)
    what = "no --model: the default model is not cached and the Hugging Face Hub cannot be reached"
    line = expect_cli_error(result, 1, "cannot reach", what=what)
    assert "--model" in line and "smollm2" in line


def test_bad_option_fails_before_any_download(tmp_path: Path) -> None:
    """The seed model is not cached and the hub is unreachable: the option error must come first."""
    result = run("run", "-O", "n_ctxx=512", env={"HF_HOME": str(tmp_path), "HF_ENDPOINT": "http://127.0.0.1:9"})
    expect_cli_error(result, 2, "n_ctxx", "n_ctx", what="-O n_ctxx=512 (misspelt engine option), before any download")


def test_ctrl_c_stops_cleanly(tiny_phi3: Path) -> None:
    """Off its script the tiny model samples on and on; Ctrl-C after the first text ends it cleanly."""
    proc = subprocess.Popen(
        [
            CLI,
            "run",
            "--model",
            str(tiny_phi3),
            "--raw",
            "Once upon a time",
            "--max-tokens",
            "4000",
            "--seed",
            "5",
            "--stats",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=interruptible,
    )
    assert proc.stdout is not None
    first = os.read(proc.stdout.fileno(), 64)  # blocks until the first streamed text
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert first and b"Traceback" not in err
    assert b"finish: cancelled" in err
    assert (first + out).endswith(b"\n")


def test_run_json_schema_prints_json_that_validates_and_its_value(tiny_phi3: Path, tmp_path: Path) -> None:
    import jsonschema

    schema = {
        "type": "object",
        "properties": {
            "team": {"type": "string", "maxLength": 10},
            "goals": {"type": "integer", "minimum": 0, "maximum": 9},
        },
        "required": ["team", "goals"],
        "additionalProperties": False,
    }
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema), encoding="utf-8")
    result = run("run", "--model", str(tiny_phi3), "--json-schema", str(path), "--seed", "7", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["finish_reason"] == "stop", data["text"]
    jsonschema.validate(json.loads(data["text"]), schema)
    assert data["value"] == json.loads(data["text"])


def test_run_choice_prints_one_of_them(tiny_phi3: Path) -> None:
    result = run("run", "--model", str(tiny_phi3), "--choice", "Boston", "--choice", "Montreal", "--seed", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout in ("Boston\n", "Montreal\n")


def test_run_tools_prints_the_calls_and_json_gives_them_in_openai_shape(tiny_phi3: Path, tmp_path: Path) -> None:
    from phi_backends.testing.schemas import TOOL_SCHEMAS, TOOLS

    path = tmp_path / "tools.json"
    path.write_text(json.dumps(TOOLS), encoding="utf-8")
    args = ["run", "--model", str(tiny_phi3), "--tools", str(path), "--tool-choice", "add", "--seed", "2"]
    result = run(*args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("tool call: add({") and result.stdout.endswith("})\n"), result.stdout
    data = json.loads(run(*args, "--json").stdout)
    assert data["finish_reason"] == "tool_calls" and data["text"] == ""
    (call,) = data["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_") and call["function"]["name"] == "add"
    import jsonschema

    jsonschema.validate(json.loads(call["function"]["arguments"]), TOOL_SCHEMAS["add"])
    wrong = run("run", "--model", "./missing.gguf", "--tools", str(path), "--tool-choice", "search")
    expect_cli_error(
        wrong, 2, "tool_choice names the function 'search'", what="--tool-choice naming no tool in --tools"
    )
    path.write_text("[{", encoding="utf-8")
    broken = run("run", "--model", "./missing.gguf", "--tools", str(path))
    expect_cli_error(broken, 2, "is not JSON", what="--tools naming a file that is not JSON")


def test_run_bad_schema_file_is_one_line_before_loading(tmp_path: Path) -> None:
    path = tmp_path / "schema.json"
    path.write_text('{"type": "objekt"}', encoding="utf-8")
    result = run("run", "--model", "./missing.gguf", "--json-schema", str(path))
    expect_cli_error(result, 2, "JSON schema is not valid", "objekt", what="--json-schema with an unknown type")


# -- bad input: one line, the right exit code, no traceback ------------------------------------------


@pytest.mark.parametrize(
    ("what", "args", "needles"),
    [
        ("--temperature -1", ["--temperature", "-1"], ["temperature must be >= 0"]),
        ("--top-p 0", ["--top-p", "0"], ["top_p must be in (0, 1]"]),
        ("--top-p 1.5", ["--top-p", "1.5"], ["top_p"]),
        ("--top-k -3", ["--top-k", "-3"], ["top_k must be >= 0"]),
        ("--repeat-penalty 0", ["--repeat-penalty", "0"], ["repeat_penalty must be > 0"]),
        ("--max-tokens 0", ["--max-tokens", "0"], ["max_tokens must be > 0"]),
        ("--temperature hot (not a number)", ["--temperature", "hot"], ["invalid float value"]),
        ("an unknown flag (--no-such-flag)", ["--no-such-flag"], ["unrecognized arguments"]),
        ("--model with a misspelt catalogue name", ["--model", "phi-3-mini-4k-instruc"],
         ["unknown model", "phi-3-mini-4k-instruct"]),
        ("--model naming a .gguf file that does not exist", ["--model", "./missing.gguf"], ["no such file"]),
        ("--backend with a misspelt backend name", ["--backend", "lama-cpp"], ["unknown backend", "llama-cpp"]),
        ("--option naming an option llama-cpp does not have", ["--option", "n_bogus=1"], ["no option 'n_bogus'"]),
        ("--option without =VALUE", ["--option", "n_ctx"], ["KEY=VALUE"]),
        ("--system with --raw", ["--raw", "--system", "be nice"], ["--system"]),
        ("--regex with an unclosed class", ["--regex", "[0-9"], ["regex is not valid", "unclosed character class"]),
        ("--grammar naming a file that does not exist", ["--grammar", "./missing.lark"], ["grammar file", "no such file"]),
        ("--json-schema naming a file that does not exist", ["--json-schema", "./missing.json"], ["JSON schema file", "no such file"]),
        ("--regex and --choice together", ["--regex", "a", "--choice", "b"], ["not allowed with"]),
        ("--tools naming a file that does not exist", ["--tools", "./missing.json"], ["tools file", "no such file"]),
        ("--tool-choice required without --tools", ["--tool-choice", "required"], ["no tools are given"]),
        ("--tools with --raw", ["--raw", "--tools", "./missing.json"], ["--tools needs a chat template"]),
    ],
)  # fmt: skip
def test_usage_errors_exit_2(smollm2: Path, what: str, args: list[str], needles: list[str]) -> None:
    model = [] if "--model" in args else ["--model", str(smollm2)]
    expect_cli_error(run("run", *model, *args), 2, *needles, what=what)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture
def bad_files(tmp_path: Path, smollm2: Path) -> Iterator[dict[str, Path]]:
    good = smollm2.read_bytes()
    (tmp_path / "folder").mkdir()
    yield {
        "empty": write(tmp_path / "empty.gguf", b""),
        "garbage": write(tmp_path / "garbage.gguf", random.Random(0).randbytes(4096)),  # the same bytes every run
        "truncated": write(tmp_path / "truncated.gguf", good[: len(good) // 2]),
        "header-only": write(tmp_path / "header.gguf", good[:100]),
        "folder": tmp_path / "folder",
    }


@pytest.mark.parametrize(
    ("case", "what"),
    [
        ("empty", "--model naming an empty .gguf file"),
        ("garbage", "--model naming a .gguf file of random bytes"),
        ("truncated", "--model naming a GGUF file cut in half"),
        ("header-only", "--model naming a GGUF file cut after 100 bytes"),
        ("folder", "--model naming an empty folder"),
    ],
)
def test_bad_model_files_exit_1(bad_files: dict[str, Path], case: str, what: str) -> None:
    expect_cli_error(run("run", "--model", str(bad_files[case])), 1, what=what)


def test_prompt_longer_than_context_says_both_numbers(smollm2: Path) -> None:
    line = expect_cli_error(
        run("run", "--model", str(smollm2), "--option", "n_ctx=256", "word " * 400),
        1,
        "context window is 256",
        what="a prompt longer than the context window (-O n_ctx=256)",
    )
    assert "tokens" in line


def test_unrenderable_model_template(tmp_path: Path, tiny_phi3: Path) -> None:
    """A model whose own template is broken: a clear error, and --raw or --template still work."""
    from tests.fixtures.tiny_phi3 import with_chat_template

    broken = with_chat_template(tiny_phi3, tmp_path / "broken.gguf", "{% for m in messages %}{{ m.content ")
    what = "a GGUF whose chat template does not compile"
    expect_cli_error(run("run", "--model", str(broken)), 1, "template", what=what)
    assert run("run", "--model", str(broken), "--template", "phi3", *GREEDY).stdout == SCRIPT_TEXT + "\n"


# -- other commands -------------------------------------------------------------------------------


def test_backends_lists_llama_cpp_and_respects_the_block_list() -> None:
    # hide the other backends where they are installed too: this is about llama.cpp alone
    data = json.loads(run("backends", "--json", block_plugins=["onnx", "mlx"]).stdout)
    llama = next(row for row in data if row["name"] == "llama-cpp")
    assert llama["available"] and "cpu" in llama["devices"] and llama["formats"] == ["gguf"]
    assert any(row["name"] == "onnx" and not row["installed"] for row in data)
    all_blocked = ["llama-cpp", "onnx", "mlx"]
    blocked = json.loads(run("backends", "--json", block_plugins=all_blocked).stdout)
    assert next(row for row in blocked if row["name"] == "llama-cpp")["installed"] is False
    result = run("run", "--model", "smollm2", block_plugins=all_blocked)
    expect_cli_error(
        result, 1, "PHI_BACKENDS_BLOCK_PLUGINS", what="every backend blocked by PHI_BACKENDS_BLOCK_PLUGINS"
    )


def test_models_lists_the_catalogue_and_the_offline_model_as_present() -> None:
    data = json.loads(run("models", "--json").stdout)
    names = {row["name"] for row in data}
    assert {
        "phi-3-mini-4k-instruct",
        "phi-3.5-mini-instruct",
        "phi-4-mini-instruct",
        "phi-4",
        "smollm2-135m-instruct",
    } <= names
    smol = next(row for row in data if row["name"] == "smollm2-135m-instruct")
    assert smol["cached"]["gguf"]


def test_help_is_fast_and_imports_no_engine() -> None:
    code = "import sys; from phi_backends.cli.main import main\ntry:\n  main(['run', '--help'])\nexcept SystemExit: pass\nprint(sorted(m for m in sys.modules if m.startswith(('llama_cpp', 'huggingface_hub', 'numpy'))))"
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    elapsed = time.perf_counter() - start
    assert "--temperature" in result.stdout and "--repeat-last-n" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert elapsed < 3, elapsed
