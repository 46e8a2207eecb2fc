"""Run ``phi-backends`` in its own process and measure it: exit status, wall time, peak memory.

The peak resident memory is the child's own (``wait4``'s resource usage), not the maximum over
every child this test process ever had (``RUSAGE_CHILDREN``). A crash shows as a negative return
code (the signal), which no assertion of an exit code 1 or 2 lets through.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from tests.cli import CLI

__all__ = ["Measured", "max_rss_mib", "run_measured", "without_file_permission_override"]

_RSS_UNIT = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux


def max_rss_mib(usage: resource.struct_rusage) -> float:
    return usage.ru_maxrss * _RSS_UNIT / (1 << 20)


@dataclass(frozen=True)
class Measured:
    result: subprocess.CompletedProcess[str]
    seconds: float
    cpu_seconds: float
    """User plus system time: what the run costs on an idle machine (wall time depends on the load)."""
    peak_rss_mib: float

    @property
    def crashed(self) -> bool:
        return self.result.returncode < 0


def without_file_permission_override() -> list[str] | None:
    """A command prefix under which file permissions apply to this user, or None if none is known.

    Root reads any file (CAP_DAC_OVERRIDE); ``setpriv`` (util-linux) can start a command without
    that capability, so that "permission denied" can be tested as root too.
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search"] if setpriv else None


def run_measured(*args: str, timeout: float = 120.0, prefix: Sequence[str] = ()) -> Measured:
    """``phi-backends *args`` with stdin closed; killed (and reported as a timeout) past ``timeout``."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_XET": "1"}
    start = time.monotonic()
    proc = subprocess.Popen(
        [*prefix, CLI, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    out: list[bytes] = []
    err: list[bytes] = []
    readers = [_drain(proc.stdout, out), _drain(proc.stderr, err)]
    status, usage = _wait(proc, start + timeout)
    for reader in readers:
        reader.join()
    seconds = time.monotonic() - start
    code = os.waitstatus_to_exitcode(status) if status is not None else -9
    proc.returncode = code  # reaped here: tell Popen, so that it does not wait again
    if status is None:
        raise subprocess.TimeoutExpired([CLI, *args], timeout, b"".join(out), b"".join(err))
    stdout, stderr = (b"".join(x).decode("utf-8", "replace") for x in (out, err))
    result = subprocess.CompletedProcess([CLI, *args], code, stdout, stderr)
    return Measured(result, seconds, usage.ru_utime + usage.ru_stime, max_rss_mib(usage))


def _drain(stream: IO[bytes] | None, into: list[bytes]) -> threading.Thread:
    assert stream is not None

    def read() -> None:
        with stream:
            into.extend(iter(lambda: stream.read(65536), b""))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def _wait(proc: subprocess.Popen[bytes], deadline: float) -> tuple[int | None, resource.struct_rusage]:
    """Reap ``proc`` with its resource usage; kill it at ``deadline`` (status None)."""
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            return status, usage
        if time.monotonic() > deadline:
            proc.kill()
            _, _, usage = os.wait4(proc.pid, 0)
            return None, usage
        time.sleep(0.01)
