"""Inputs that used to crash the process or get it killed, on the real llama.cpp engine, each in
its own process: an empty prompt (llama.cpp aborts on zero ids), a context far past the
machine's memory (the kernel killed it), output streams that fail while the model writes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phi_backends.diagnostics.memory import available_memory
from phi_backends.errors import RuntimeFailure, UsageError
from phi_backends.generator import EMPTY_PROMPT
from tests.bad_inputs import expect_api_error, expect_cli_error
from tests.cli import run_cli_io

GREEDY = ["--temperature", "0", "--max-tokens", "4"]


def run(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return run_cli_io(*args, block_plugins=(), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("what", "args", "stdin"),
    [
        ('run --raw "" (an empty raw prompt)', ["--raw", ""], None),
        ("run --raw - with empty stdin", ["--raw", "-"], b""),
        ('run --raw "<s>" (the BOS text alone: only the BOS token)', ["--raw", "<s>"], None),
    ],
)
def test_an_empty_prompt_never_reaches_llama_cpp(
    tiny_phi3: Path, what: str, args: list[str], stdin: bytes | None
) -> None:
    result = run("run", *args, "-m", str(tiny_phi3), *GREEDY, stdin=stdin)
    expect_cli_error(result, 2, EMPTY_PROMPT, what=what)


def api(script: str, model: Path) -> tuple[str, str]:
    """Run ``script`` (with ``pb`` and ``MODEL``) in its own process: a native abort or a kill shows
    as its exit status. Returns the class name and message of the phi-backends error it raised."""
    code = (
        "import json, phi_backends as pb\n"
        "from phi_backends.errors import PhiBackendsError\n"
        f"MODEL = {str(model)!r}\n"
        "try:\n" + "".join(f"    {line}\n" for line in script.splitlines()) + "except PhiBackendsError as e:\n"
        "    print(json.dumps([type(e).__name__, str(e)]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    kind, message = json.loads(result.stdout.strip().splitlines()[-1])
    return kind, message


def test_an_empty_prompt_from_python_on_a_used_context(tiny_phi3: Path) -> None:
    """After a call, llama.cpp would silently sample the last logits for zero ids: refused first."""
    kind, message = api(
        "gen = pb.load(MODEL)\ngen.generate('Hi', gen.sampling.replace(max_tokens=2), template=None)\n"
        "gen.generate('', template=None)",
        tiny_phi3,
    )
    assert kind == "UsageError"
    expect_api_error(UsageError(message), UsageError, EMPTY_PROMPT, what="generate('', template=None) after a call")


def _far_past_memory() -> int:
    """A context whose KV cache alone is past this machine's memory, whatever the machine:
    SmolLM2-135M's cache takes 23,040 bytes a token."""
    available = available_memory()
    assert available is not None
    return min(2**31 - 1, max(10**6, 2 * available // 23_040))


def test_a_context_far_past_the_memory_is_refused_before_allocating(smollm2: Path) -> None:
    n_ctx = _far_past_memory()
    start = time.monotonic()
    result = run("run", "hi", "-m", str(smollm2), *GREEDY, "-O", f"n_ctx={n_ctx}")
    line = expect_cli_error(
        result,
        1,
        f"a context of {n_ctx:,} tokens",
        "needs about",
        "available (and 10% of it is left for the rest); load it with a smaller n_ctx",
        what="-O n_ctx far past the machine's memory",
    )
    assert "KV cache" in line and "weights" in line
    assert time.monotonic() - start < 60, "refused before allocating, not after a minute of growing"


def test_a_context_of_a_million_on_a_small_machine(smollm2: Path) -> None:
    """The issue's case: n_ctx=1,000,000 (21 GiB of cache) on a machine with 4 GiB free."""
    result = run(
        "run", "hi", "-m", str(smollm2), *GREEDY, "-O", "n_ctx=1000000", env={"PHI_BACKENDS_MEMORY_LIMIT": "4G"}
    )
    expect_cli_error(
        result,
        1,
        "a context of 1,000,000 tokens",
        "21.5 GiB",
        "4.0 GiB available",
        what="-O n_ctx=1000000 (4 GiB free)",
    )


def test_a_huge_micro_batch_is_refused_for_its_compute_buffer(smollm2: Path) -> None:
    available = available_memory()
    assert available is not None
    n = min(2**31 - 1, 2 * available // (49_152 * 4))  # a micro-batch's logits rows past the memory
    options = [f"n_ctx={n}", f"n_batch={n}", f"n_ubatch={n}", "n_seq_max=1"]
    result = run("run", "hi", "-m", str(smollm2), *GREEDY, *(x for o in options for x in ("-O", o)))
    expect_cli_error(result, 1, "compute buffer", "or n_ubatch", what="-O n_ctx, n_batch and n_ubatch all huge")


def test_a_context_past_llama_cpp_s_int32_is_an_option_error(smollm2: Path) -> None:
    result = run("run", "hi", "-m", str(smollm2), "-O", "n_ctx=100000000000")
    # every plugin's whole-number options are checked against the engines' 32-bit fields alike
    expect_cli_error(result, 2, "n_ctx must be at most 2147483647", "32-bit", what="-O n_ctx=1e11 (past int32)")


def test_the_memory_check_from_python(smollm2: Path) -> None:
    kind, message = api(f"pb.load(MODEL, n_ctx={_far_past_memory()})", smollm2)
    assert kind == "RuntimeFailure"
    expect_api_error(RuntimeFailure(message), RuntimeFailure, "needs about", what="load(n_ctx far past the memory)")


def test_an_option_value_nested_thousands_deep(smollm2: Path) -> None:
    result = run("run", "hi", "-m", str(smollm2), "-O", "n_ctx=" + "[" * 5000)
    line = expect_cli_error(result, 2, "n_ctx must be a whole number", what="-O n_ctx=[[[… nested 5,000 deep")
    assert len(line) < 200, "the value is shown cut short, not 5,000 brackets"


@pytest.mark.parametrize("as_json", [False, True])
def test_the_output_to_a_full_device(tiny_phi3: Path, as_json: bool) -> None:
    flags = ["--json"] if as_json else []
    result = run("run", "-m", str(tiny_phi3), *GREEDY, *flags, stdout="/dev/full")
    what = f"run{' --json' if as_json else ''} writing to /dev/full"
    expect_cli_error(result, 1, "cannot write the output to stdout: No space left on device", what=what)


def test_the_output_with_stdout_closed(tiny_phi3: Path) -> None:
    result = run("run", "-m", str(tiny_phi3), *GREEDY, close=[1])
    expect_cli_error(result, 2, "stdout is closed", what="run with stdout closed (>&-)")


def test_json_output_on_an_ascii_terminal_is_escaped(tiny_phi3: Path) -> None:
    """--json stays valid where the terminal cannot show the text: its escapes are ASCII."""
    result = run("run", "Say café", "-m", str(tiny_phi3), *GREEDY, "--json", env={"PYTHONIOENCODING": "ascii"})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["backend"] == "llama-cpp"


def test_a_model_file_the_user_may_not_read(tiny_phi3: Path, tmp_path: Path) -> None:
    copy = tmp_path / "tiny.gguf"
    copy.write_bytes(tiny_phi3.read_bytes())
    copy.chmod(0)
    result = run("run", "hi", "-m", str(copy), without_root_privileges=True)
    expect_cli_error(result, 1, "Permission denied", what="--model naming a .gguf file chmod 000")
