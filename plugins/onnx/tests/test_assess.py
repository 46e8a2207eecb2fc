"""The onnx backend's verdicts (its ``assess_model``) on this machine and on simulated ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnxruntime_genai as og
import pytest
from phi_backends_onnx.assess import build_features
from phi_backends_onnx.providers import probe_installation

import phi_backends as pb
from phi_backends import Fit, Platform, plugins
from phi_backends.selection import choice
from phi_backends.selection import platform as platforms

PHI3 = "phi-3-mini-4k-instruct"  # published for cpu, cuda and dml
PHI35 = "phi-3.5-mini-instruct"  # published for cpu and cuda only


def verdict(model: str, spec: str | None) -> pb.Verdict | None:
    where = platforms.detect() if spec is None else Platform.from_spec(spec)
    return plugins.get_backend("onnx").assess_model(model=choice.model_query(model), platform=where)


def with_provider(source: Path, target: Path, provider: str) -> Path:
    """A copy of ``source``'s genai_config.json (only: the verdict reads nothing else) naming ``provider``."""
    target.mkdir()
    config = json.loads((source / "genai_config.json").read_text())
    config["model"]["decoder"].setdefault("session_options", {})["provider_options"] = [{provider: {}}]
    (target / "genai_config.json").write_text(json.dumps(config))
    return target


def test_the_hook_is_registered_with_the_plugin_manager() -> None:
    """Its verdicts reach the core through the one table of registered backends (no separate hook)."""
    impls = list(plugins.registry().values())
    assert "onnx" in [impl.plugin_name for impl in impls]


def test_build_features_are_the_providers_usable_here() -> None:
    assert build_features() == {p.lower() for p in probe_installation(og).usable}
    assert "cpu" in build_features()


@pytest.mark.parametrize(
    ("model", "spec", "fit", "needle", "options"),
    [
        (PHI3, "windows-directml", Fit.BEST, "DirectML provider runs the model on the GPU", {"provider": "dml"}),
        (PHI3, "windows-cuda", Fit.BEST, "CUDA provider", {"provider": "cuda"}),
        (PHI3, "linux-cuda", Fit.BEST, "CUDA provider", {"provider": "cuda"}),
        (PHI3, "linux-cuda,onnx=cpu", Fit.FALLBACK, "has no CUDA provider (needs onnxruntime-genai-cuda)", {}),
        (PHI3, "windows-directml,onnx=cpu", Fit.FALLBACK, "has no DirectML provider", {}),
        (PHI35, "windows-directml", Fit.FALLBACK, "the catalogue has no DirectML build of phi-3.5-mini-instruct", {}),
        (PHI3, "linux-cpu", Fit.GOOD, "runs on the CPU (provider=cpu)", {}),
        (PHI3, "windows-cpu", Fit.GOOD, "runs on the CPU", {}),
        (PHI3, "apple-silicon", Fit.FALLBACK, "no provider for Metal", {}),
    ],
)
def test_catalogue_models_on_simulated_machines(
    model: str, spec: str, fit: Fit, needle: str, options: dict[str, str]
) -> None:
    found = verdict(model, spec)
    assert found is not None and found.backend == "onnx"
    assert (found.fit, dict(found.options)) == (fit, options), found.reason
    assert needle in found.reason


def test_a_cpu_folder_runs_on_the_cpu_everywhere(tiny_phi3_onnx: Path) -> None:
    for spec, fit in [("linux-cpu", Fit.GOOD), ("windows-directml", Fit.FALLBACK), ("linux-cuda", Fit.FALLBACK)]:
        found = verdict(str(tiny_phi3_onnx), spec)
        assert found is not None and found.fit == fit and not found.options, (spec, found)
        assert "built for the CPU provider" in found.reason
    found = verdict(str(tiny_phi3_onnx), None)
    assert found is not None and found.fit in (Fit.GOOD, Fit.FALLBACK)


def test_a_folder_built_for_a_gpu_provider(tiny_phi3_onnx: Path, tmp_path: Path) -> None:
    cuda = with_provider(tiny_phi3_onnx, tmp_path / "cuda", "cuda")
    best = verdict(str(cuda), "linux-cuda")
    assert best is not None and best.fit == Fit.BEST and "built for the CUDA provider" in best.reason
    lacking = verdict(str(cuda), "linux-cuda,onnx=cpu")
    assert lacking is not None and lacking.fit == Fit.UNUSABLE
    assert "which this onnxruntime-genai lacks (needs onnxruntime-genai-cuda)" in lacking.reason
    dml = with_provider(tiny_phi3_onnx, tmp_path / "dml", "DML")
    found = verdict(str(dml), "windows-directml")
    assert found is not None and found.fit == Fit.BEST


def test_the_verdict_matches_what_loading_does_here(tiny_phi3_onnx: Path, tmp_path: Path) -> None:
    """A CUDA folder on a build without CUDA is unusable in the ranking, and load() refuses it too."""
    folder = with_provider(tiny_phi3_onnx, tmp_path / "cuda-copy", "cuda")
    for item in tiny_phi3_onnx.iterdir():
        if item.name != "genai_config.json":
            shutil.copy(item, folder / item.name)
    without_cuda = platforms.detect() if "cuda" not in build_features() else Platform.from_spec("auto,onnx=cpu")
    found = pb.explain(str(folder), platform=without_cuda, preference=[])
    assert found.chosen is None and found.assessment("onnx").fit == Fit.UNUSABLE
    if "cuda" not in build_features():  # the engine agrees (on a CUDA build it would simply run)
        with pytest.raises(pb.BackendUnavailableError, match="no installed backend can run"):
            pb.load(str(folder))
        with pytest.raises(pb.BackendUnavailableError, match="execution provider 'cuda'"):
            pb.load(str(folder), backend="onnx")


def test_an_unreadable_genai_config_is_a_verdict_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "genai_config.json").write_text("{not json")
    found = verdict(str(tmp_path), "linux-cpu")
    assert found is not None and "loading it will fail" in found.reason and "not valid JSON" in found.reason


def test_no_opinion_on_other_formats(tiny_phi3: Path) -> None:
    assert verdict(str(tiny_phi3), "windows-directml") is None


def test_the_choice_for_an_onnx_folder_is_onnx_everywhere(tiny_phi3_onnx: Path) -> None:
    for spec in ("apple-silicon", "windows-directml", "linux-cuda", "linux-cpu"):
        found = pb.explain(str(tiny_phi3_onnx), platform=spec, preference=[])
        assert found.chosen == "onnx", (spec, found.why)
