"""Fixtures of the reliability suite: the three backends, their test models, and the figures.

The suite needs all three engines (the ``reliability`` nox session installs them); a missing one
is a skip, which ``--require-engines`` turns into a failure. At the end of the run, the terminal
summary prints what was tried and what was measured (the figures issue 6 asks for).
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

#: backend -> the fixture giving its tiny Phi-3 model, and that model's format
BACKENDS = {"llama-cpp": "tiny_phi3", "onnx": "tiny_phi3_onnx", "mlx": "tiny_phi3_mlx"}


def need_backend(name: str) -> None:
    """Skip (a failure under --require-engines) unless backend ``name`` is installed and runs here."""
    from phi_backends import plugins

    installed = plugins.backends()
    if name not in installed:
        pytest.skip(f"the {name} backend is not installed ({plugins.KNOWN_BACKENDS.get(name, '')})")
    availability = installed[name].availability()
    if not availability.ok:
        pytest.skip(f"the {name} backend cannot run here: {availability.reason}")


_WARM: set[str] = set()


@pytest.fixture
def backend_model(backend: str, request: pytest.FixtureRequest) -> tuple[str, Path]:
    """(backend, its tiny Phi-3 model), for tests parametrized with ``backend``.

    The first time, the model is loaded and closed once: importing the engine and its first load
    then do not count in what a test measures.
    """
    need_backend(backend)
    model: Path = request.getfixturevalue(BACKENDS[backend])
    if backend not in _WARM:
        import phi_backends as pb

        with pb.load(str(model), backend=backend) as generator:
            generator.generate("hi", pb.SamplingConfig(max_tokens=2))
        _WARM.add(backend)
    return backend, model


# -- figures --------------------------------------------------------------------------------------


@dataclass
class Figures:
    """What the suite tried and measured, printed at the end of the run."""

    runs: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    escapes: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)
    slowest: dict[str, tuple[float, str]] = field(default_factory=dict)
    highest: dict[str, tuple[float, str]] = field(default_factory=dict)

    def count(self, what: str, n: float = 1) -> None:
        self.runs[what] += n

    def time(self, what: str, seconds: float, case: str) -> None:
        if seconds > self.slowest.get(what, (-1.0, ""))[0]:
            self.slowest[what] = (seconds, case)

    def memory(self, what: str, mib: float, case: str) -> None:
        if mib > self.highest.get(what, (-1.0, ""))[0]:
            self.highest[what] = (mib, case)

    def lines(self) -> list[str]:
        out = [f"{what}: {n:g}" if n == int(n) else f"{what}: {n:.1f}" for what, n in sorted(self.runs.items())]
        out.append(f"escapes (marker file created, or a process started): {len(self.escapes)} {self.escapes or ''}")
        out.append(f"crashes (killed by a signal): {len(self.crashes)} {self.crashes or ''}")
        out += [f"slowest {what}: {s:.2f} s ({case})" for what, (s, case) in sorted(self.slowest.items())]
        out += [f"highest {what}: {m:.0f} MiB ({case})" for what, (m, case) in sorted(self.highest.items())]
        return out


FIGURES = Figures()


@pytest.fixture(scope="session")
def figures() -> Figures:
    return FIGURES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES.runs:
        terminalreporter.section("reliability figures")
        for line in FIGURES.lines():
            terminalreporter.write_line(line)


# -- seeing a process start in this process ----------------------------------------------------------

_SPAWNS = ("os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "subprocess.Popen")


class _Watch:
    """While ``active`` names a marker path: records every process start and every open that
    names it (an audit hook). Engines start processes of their own when first imported
    (``ctypes.util.find_library`` runs ldconfig and gcc), so only the payload's are counted."""

    def __init__(self) -> None:
        self.active: Path | None = None
        self.seen: list[str] = []

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if self.active is None or (event not in _SPAWNS and event != "open"):
            return
        text = repr(args)
        if str(self.active) in text or (event in _SPAWNS and "touch" in text):
            self.seen.append(f"{event}{text[:200]}")


_WATCH = _Watch()
sys.addaudithook(_WATCH)  # hooks cannot be removed; inactive outside ``watch_process_starts``


@pytest.fixture
def watch() -> Iterator[_Watch]:
    yield _WATCH
    _WATCH.active = None
    _WATCH.seen = []
