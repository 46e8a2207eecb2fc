"""Whether what an engine is about to allocate fits this machine's memory, checked before it allocates.

An engine asked for far more than the machine holds (a context of a million tokens) does not
fail: it grows until the kernel's out-of-memory killer ends the process with no message. So each
backend estimates what its settings will take (weights, KV cache, buffers) and calls
:func:`check_fits` first, which refuses with both numbers.

"Available" is what the platform says can be allocated without swapping: ``MemAvailable`` from
``/proc/meminfo`` (capped by the cgroup's ``memory.max`` in a container, whose limit the kernel
enforces by killing), ``GlobalMemoryStatusEx`` on Windows, and on macOS and other systems the
physical memory (they compress and swap rather than kill, so only what cannot fit at all is
refused there).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import RuntimeFailure

__all__ = ["MEMORY_ENV", "available_memory", "check_fits", "format_bytes"]

#: Overrides the available memory (bytes; suffixes K, M, G): for a machine whose figure is wrong,
#: and ``0`` (or ``off``) turns the check off.
MEMORY_ENV = "PHI_BACKENDS_MEMORY_LIMIT"


#: The share of the available memory one allocation may take. The estimates leave out what the
#: engine allocates besides (the tokenizer, buffers, Python itself); with no swap a machine filled
#: to the last page kills the process anyway (a 1,000,000-token SmolLM2 context, 22.0 GiB of the
#: 22.6 GiB available, took 23 GB and 74 s to start).
SPARE = 0.9


def available_memory() -> int | None:
    """Bytes this process can still allocate without swapping or being killed; None if unknown."""
    override = os.environ.get(MEMORY_ENV, "").strip()
    if override:
        return _parse_size(override)
    if sys.platform.startswith("linux"):
        return _linux_available()
    if sys.platform == "win32":
        return _windows_available()
    return _physical()


def check_fits(needed: int, *, what: str, hint: str) -> None:
    """Refuse (RuntimeFailure) when ``needed`` bytes exceed the available memory.

    ``what`` says what would take the memory (e.g. "a 1,000,000-token context of model.gguf
    (KV cache 21.5 GiB + weights 540 MiB)"); ``hint`` what to change.
    """
    available = available_memory()
    if available is None or available <= 0 or needed <= available * SPARE:
        return
    raise RuntimeFailure(
        f"{what} needs about {format_bytes(needed)} of memory, but this machine has {format_bytes(available)} "
        f"available (and {1 - SPARE:.0%} of it is left for the rest); {hint} (or set {MEMORY_ENV}=0 to skip this check)"
    )


def format_bytes(n: int | float) -> str:
    """``1.5 GiB``, ``640 MiB``: what a memory figure reads as in a message."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit in ("B", "KiB", "MiB") else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _parse_size(text: str) -> int | None:
    if text.lower() in ("0", "off", "none"):
        return 0
    scale = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}.get(text[-1].lower(), 1)
    digits = text[:-1] if scale != 1 else text
    try:
        return int(float(digits) * scale)
    except ValueError:
        return None  # a malformed override: no figure rather than a crash before every load


def _linux_available() -> int | None:
    available: int | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    limit = _cgroup_room()
    if limit is not None:
        available = limit if available is None else min(available, limit)
    return available


def _cgroup_room() -> int | None:
    """What the cgroup (v2) this process runs in still allows, when it sets a limit."""
    try:
        line = Path("/proc/self/cgroup").read_text().splitlines()[0]
        if not line.startswith("0::"):
            return None  # cgroup v1: no single limit to read
        folder = Path("/sys/fs/cgroup") / line[3:].lstrip("/")
        limit = (folder / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((folder / "memory.current").read_text()))
    except (OSError, ValueError, IndexError):
        return None


def _windows_available() -> int | None:
    import ctypes

    class MemoryStatus(ctypes.Structure):
        _fields_ = [
            ("dwLength", ctypes.c_ulong),
            ("dwMemoryLoad", ctypes.c_ulong),
            ("ullTotalPhys", ctypes.c_ulonglong),
            ("ullAvailPhys", ctypes.c_ulonglong),
            ("ullTotalPageFile", ctypes.c_ulonglong),
            ("ullAvailPageFile", ctypes.c_ulonglong),
            ("ullTotalVirtual", ctypes.c_ulonglong),
            ("ullAvailVirtual", ctypes.c_ulonglong),
            ("ullAvailExtendedVirtual", ctypes.c_ulonglong),
        ]

    status = MemoryStatus()
    status.dwLength = ctypes.sizeof(MemoryStatus)
    try:
        if not ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):  # type: ignore[attr-defined]
            return None
    except (AttributeError, OSError):
        return None
    return int(status.ullAvailPhys)


def _physical() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
