"""Run ``phi-backends`` as a user does: the installed console script, in its own process.

A crash inside an engine then shows as a signal exit rather than taking the test run down, and
the command sees exactly the environment a user's shell would give it (plus what a test adds).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["CLI", "run_cli"]

#: The console script installed next to the interpreter running the tests.
CLI = str(Path(sys.executable).parent / "phi-backends")


def run_cli(
    *args: str,
    stdin: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    block_plugins: Iterable[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``phi-backends *args``; ``env`` is added to this process's environment.

    ``block_plugins`` names backends to hide (``PHI_BACKENDS_BLOCK_PLUGINS``); ``None`` leaves
    the variable as the environment has it. Xet downloads are off: the tests' fake hub serves
    plain HTTP only.
    """
    full_env = {**os.environ, "HF_HUB_DISABLE_XET": "1", **(env or {})}
    if block_plugins is not None:
        full_env["PHI_BACKENDS_BLOCK_PLUGINS"] = ",".join(block_plugins)
    # No stdin given: an empty one, not the test runner's (`run` reads a piped stdin as the prompt).
    given = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=full_env, timeout=timeout, **given)
