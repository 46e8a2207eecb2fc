"""The automatic backend choice with all three real plugins, on simulated machines and on this one.

Each model is given as a catalogue name, a GGUF file, an ONNX Runtime GenAI folder and an MLX
folder; each machine is simulated with a platform spec (docs/choice.md). The same answers must
come from ``pb.explain`` and from ``phi-backends backends --explain`` with
``PHI_BACKENDS_PLATFORM`` set, in a process of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import phi_backends as pb
from phi_backends import Fit
from phi_backends.selection import platform as platforms
from tests.bad_inputs import RECORD_ENV, expect_cli_error
from tests.cli import CLI

CATALOGUE = "phi-3-mini-4k-instruct"
#: The backend chosen for each kind of model on each machine; None: nothing can run it there.
EXPECTED: dict[str, dict[str, str | None]] = {
    "apple-silicon": {"catalogue": "mlx", "gguf": "llama-cpp", "onnx": "onnx", "mlx": "mlx"},
    "windows-directml": {"catalogue": "onnx", "gguf": "llama-cpp", "onnx": "onnx", "mlx": None},
    "linux-cuda": {"catalogue": "llama-cpp", "gguf": "llama-cpp", "onnx": "onnx", "mlx": "mlx"},
    "linux-cuda,llama-cpp=cpu": {"catalogue": "onnx", "gguf": "llama-cpp", "onnx": "onnx", "mlx": "mlx"},
    "linux-cpu": {"catalogue": "llama-cpp", "gguf": "llama-cpp", "onnx": "onnx", "mlx": "mlx"},
}
CASES = [(spec, kind) for spec in EXPECTED for kind in ("catalogue", "gguf", "onnx", "mlx")]


@pytest.fixture(autouse=True)
def no_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No config file or PHI_BACKENDS_* variable but the test's own."""
    for name in [n for n in os.environ if n.startswith("PHI_BACKENDS_") and n != RECORD_ENV]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PHI_BACKENDS_CONFIG", str(tmp_path / "no-config.toml"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def models(tiny_phi3: Path, tiny_phi3_onnx: Path, tiny_phi3_mlx: Path) -> dict[str, str]:
    return {"catalogue": CATALOGUE, "gguf": str(tiny_phi3), "onnx": str(tiny_phi3_onnx), "mlx": str(tiny_phi3_mlx)}


def cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``phi-backends`` with every real plugin, and no config file or PHI_BACKENDS_* variable but the test's."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PHI_BACKENDS_")}
    full = {**clean, "PHI_BACKENDS_CONFIG": str(cwd / "no-config.toml"), **env}
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=full, timeout=120, cwd=cwd)


def test_every_backend_is_installed_and_rates_itself() -> None:
    found = pb.explain(CATALOGUE, platform="linux-cpu", preference=[])
    rows = {a.backend: a for a in found.backends}
    assert {"llama-cpp", "onnx", "mlx"} <= {name for name, a in rows.items() if a.installed}
    assert all(rows[name].judged_by == "plugin" for name in ("llama-cpp", "onnx", "mlx")), found.lines()
    assert not found.broken


@pytest.mark.parametrize(("spec", "kind"), CASES)
def test_explain(models: dict[str, str], spec: str, kind: str) -> None:
    found = pb.explain(models[kind], platform=spec, preference=[])
    assert found.chosen == EXPECTED[spec][kind], "\n".join(found.lines())
    assert found.platform == pb.Platform.from_spec(spec)
    if found.chosen is not None:
        assert found.ranking[0] == found.chosen and found.assessment(found.chosen).rank == 1


@pytest.mark.parametrize(("spec", "kind"), CASES)
def test_cli_explain_with_the_platform_in_the_environment(
    models: dict[str, str], tmp_path: Path, spec: str, kind: str
) -> None:
    result = cli(tmp_path, "backends", "--explain", models[kind], "--json", PHI_BACKENDS_PLATFORM=spec)
    assert result.returncode == (0 if EXPECTED[spec][kind] else 1), result.stderr
    data = json.loads(result.stdout)
    assert data["chosen"] == EXPECTED[spec][kind]
    in_process = pb.explain(models[kind], platform=spec, preference=[])
    assert [(b["backend"], b["fit"], b["rank"]) for b in data["backends"]] == [
        (a.backend, str(a.fit), a.rank) for a in in_process.backends
    ]


def test_the_reasons_say_what_would_do_better() -> None:
    no_cuda_build = pb.explain(CATALOGUE, platform="linux-cuda,llama-cpp=cpu", preference=[])
    llama = no_cuda_build.assessment("llama-cpp")
    assert llama.fit == Fit.FALLBACK and "-DGGML_CUDA=on" in llama.reason
    assert no_cuda_build.assessment("onnx").options == {"provider": "cuda"}
    directml = pb.explain(CATALOGUE, platform="windows-directml", preference=[])
    assert directml.assessment("onnx").options == {"provider": "dml"}
    assert directml.assessment("mlx").reason == "MLX does not run on Windows"
    # Phi-3.5's ONNX repository has no DirectML build: the CPU fallbacks tie, the built-in order decides.
    no_dml_build = pb.explain("phi-3.5-mini-instruct", platform="windows-directml", preference=[])
    assert no_dml_build.chosen == "llama-cpp" and "built-in order" in no_dml_build.why
    assert "no DirectML build" in no_dml_build.assessment("onnx").reason
    assert pb.explain("phi-3.5-mini-instruct", platform="windows-directml", preference=["onnx"]).chosen == "onnx"


def test_a_preference_breaks_ties_only() -> None:
    assert pb.explain(CATALOGUE, platform="linux-cpu", preference=["onnx"]).chosen == "onnx"
    assert pb.explain(CATALOGUE, platform="linux-cpu", preference=["mlx"]).chosen == "llama-cpp"  # mlx: fallback
    assert pb.explain(CATALOGUE, platform="apple-silicon", preference=["llama-cpp"]).chosen == "mlx"


def test_this_machine(models: dict[str, str]) -> None:
    here = platforms.detect()
    expected = EXPECTED["linux-cpu"] if here.os == "linux" and not here.accelerators else None
    for kind, model in models.items():
        found = pb.explain(model, platform=here, preference=[])
        assert found.platform.origin == "detected"
        if expected is not None:  # this project's CI machines
            assert found.chosen == expected[kind], "\n".join(found.lines())


@pytest.mark.parametrize("kind", ["gguf", "onnx", "mlx"])
def test_load_without_a_backend_runs_the_chosen_one(models: dict[str, str], kind: str) -> None:
    expected = {"gguf": "llama-cpp", "onnx": "onnx", "mlx": "mlx"}[kind]
    with pb.load(models[kind], template="phi3") as gen:
        completion = gen.generate("Tell me about ice hockey", pb.SamplingConfig(temperature=0.0, max_tokens=8))
    assert completion.backend == expected
    assert completion.text.startswith("Ice hockey"), "the tiny Phi-3's scripted greedy answer"


@pytest.mark.parametrize(
    ("kind", "named", "reader"),
    [("gguf", "mlx", "llama-cpp"), ("onnx", "llama-cpp", "onnx"), ("mlx", "onnx", "mlx")],
)
def test_a_named_backend_that_does_not_read_the_model(
    models: dict[str, str], tmp_path: Path, kind: str, named: str, reader: str
) -> None:
    result = cli(tmp_path, "run", "--model", models[kind], "--backend", named, "hi")
    expect_cli_error(
        result,
        2,
        f"which the {named} backend does not read",
        f"use the {reader} backend for it",
        what=f"run --backend {named} with {'a GGUF file' if kind == 'gguf' else f'an {kind.upper()} folder'}",
    )


def test_a_bad_platform_in_the_environment_stops_run(models: dict[str, str], tmp_path: Path) -> None:
    result = cli(tmp_path, "run", "--model", models["gguf"], "hi", PHI_BACKENDS_PLATFORM="linux-cuda,llama-cpp=cdua")
    expect_cli_error(
        result,
        2,
        "PHI_BACKENDS_PLATFORM",
        "unknown engine feature 'cdua' for llama-cpp",
        what="run with an unknown engine feature in PHI_BACKENDS_PLATFORM",
    )
