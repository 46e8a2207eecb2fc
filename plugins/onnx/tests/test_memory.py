"""onnxruntime-genai allocates a call's whole KV cache at once: one past the machine's memory is
refused first, with both numbers, on the real engine in its own process."""

from __future__ import annotations

from pathlib import Path

from tests.bad_inputs import expect_cli_error
from tests.cli import run_cli_io


def test_a_cache_past_the_memory_is_refused_before_allocating(tiny_phi3_onnx: Path) -> None:
    """A machine with 64 KiB free (the figure overridden, the engine real): even the smallest
    cache (1,024 tokens) does not fit."""
    result = run_cli_io(
        "run", "hi", "-m", str(tiny_phi3_onnx), "-b", "onnx", "--max-tokens", "4",
        env={"PHI_BACKENDS_MEMORY_LIMIT": "64K"}, block_plugins=(),
    )  # fmt: skip
    expect_cli_error(
        result,
        1,
        "a KV cache of",
        "tokens for",
        "needs about",
        "64 KiB available",
        what="onnx: a KV cache past the memory",
    )


def test_the_same_call_runs_when_it_fits(tiny_phi3_onnx: Path) -> None:
    result = run_cli_io("run", "hi", "-m", str(tiny_phi3_onnx), "-b", "onnx", "--max-tokens", "4", block_plugins=())
    assert result.returncode == 0, result.stderr
