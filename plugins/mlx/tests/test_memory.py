"""mlx-lm grows a call's KV cache as it goes, until the process is killed: a call whose cache
the machine cannot hold is refused before it starts, with both numbers (real engine, own process)."""

from __future__ import annotations

from pathlib import Path

from tests.bad_inputs import expect_cli_error
from tests.cli import run_cli_io


def test_a_call_past_the_memory_is_refused_before_it_starts(tiny_phi3_mlx: Path) -> None:
    """A machine with 64 KiB free (the figure overridden, the engine real)."""
    result = run_cli_io(
        "run", "hi", "-m", str(tiny_phi3_mlx), "-b", "mlx", "--max-tokens", "4000",
        env={"PHI_BACKENDS_MEMORY_LIMIT": "64K"}, block_plugins=(),
    )  # fmt: skip
    expect_cli_error(
        result, 1, "prompt tokens and up to", "KV cache", "64 KiB available", what="mlx: a call's cache past the memory"
    )


def test_the_same_call_runs_when_it_fits(tiny_phi3_mlx: Path) -> None:
    result = run_cli_io("run", "hi", "-m", str(tiny_phi3_mlx), "-b", "mlx", "--max-tokens", "4", block_plugins=())
    assert result.returncode == 0, result.stderr
