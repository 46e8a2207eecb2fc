"""Run ``phi-backends`` as a user does: the installed console script, in its own process.

A crash inside an engine then shows as a signal exit rather than taking the test run down, and
the command sees exactly the environment a user's shell would give it (plus what a test adds).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["CLI", "run_cli", "run_cli_io", "run_cli_with_terminal_stderr"]

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


def run_cli_with_terminal_stderr(*args: str, timeout: float = 300) -> tuple[subprocess.CompletedProcess[str], str]:
    """``phi-backends *args`` with stderr on a pseudo-terminal (what a user at a shell has), stdout
    a pipe: the result, and everything the command wrote to the terminal."""
    import pty
    import threading

    leader, follower = pty.openpty()
    env = {**os.environ, "HF_HUB_DISABLE_XET": "1"}
    proc = subprocess.Popen(
        [CLI, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=follower, env=env, text=True
    )
    os.close(follower)
    written: list[bytes] = []

    def drain() -> None:  # the terminal's buffer is small: read it while the command runs
        while True:
            try:
                data = os.read(leader, 4096)
            except OSError:  # EIO: the command closed its end
                return
            if not data:
                return
            written.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
        reader.join(10)
        os.close(leader)
    result = subprocess.CompletedProcess([CLI, *args], proc.returncode, stdout, None)
    return result, b"".join(written).decode("utf-8", "replace")


def run_cli_io(
    *args: str | bytes,
    stdin: bytes | None = None,
    close: Iterable[int] = (),
    stdout: str | None = None,
    env: Mapping[str, str] | None = None,
    block_plugins: Iterable[str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 120,
    without_root_privileges: bool = False,
) -> subprocess.CompletedProcess[str]:
    """``phi-backends *args`` with the shell's ways of handing a command odd streams: arguments
    as raw bytes, ``stdin`` as raw bytes, descriptors in ``close`` closed (``<&-``, ``>&-``),
    ``stdout`` a path to write to (``>/dev/full``). ``without_root_privileges``: as root, drop the
    capabilities that let root read any file (a test of permissions means nothing otherwise).
    stdout and stderr come back decoded (undecodable bytes replaced)."""
    full_env = {**os.environ, "HF_HUB_DISABLE_XET": "1", **(env or {})}
    if block_plugins is not None:
        full_env["PHI_BACKENDS_BLOCK_PLUGINS"] = ",".join(block_plugins)
    closing = tuple(close)
    command: list[str | bytes] = [CLI, *args]
    if without_root_privileges and os.geteuid() == 0:
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *command]

    def close_fds() -> None:
        for fd in closing:
            os.close(fd)

    out = open(stdout, "wb") if stdout else None  # noqa: SIM115 - closed below, after the process
    try:
        result = subprocess.run(
            command,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            stdout=out if out else subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            cwd=cwd,
            timeout=timeout,
            preexec_fn=close_fds if closing else None,  # only os.close, before exec
        )
    finally:
        if out:
            out.close()
    decode = lambda data: (data or b"").decode("utf-8", "replace")  # noqa: E731
    return subprocess.CompletedProcess(result.args, result.returncode, decode(result.stdout), decode(result.stderr))


def interruptible() -> None:
    """A ``preexec_fn`` for a process a test will send SIGINT: SIGINT back to its default action.
    A shell starts background jobs with SIGINT ignored (no job control), the children inherit
    that, and Python then installs no KeyboardInterrupt handler: a test launched that way would
    see the process run on."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
