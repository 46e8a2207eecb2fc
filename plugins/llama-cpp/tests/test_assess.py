"""The llama-cpp backend's verdicts (its ``assess_model``) on this machine and on simulated ones."""

from __future__ import annotations

from pathlib import Path

import llama_cpp
import pytest
from phi_backends_llama_cpp.assess import CUDA_BUILD, METAL_BUILD, build_features, system_info_features

import phi_backends as pb
from phi_backends import Fit, Platform, plugins
from phi_backends.selection import choice
from phi_backends.selection import platform as platforms

CATALOGUE = "phi-3-mini-4k-instruct"


def verdict(model: str, spec: str | None) -> pb.Verdict | None:
    where = platforms.detect() if spec is None else Platform.from_spec(spec)
    return plugins.get_backend("llama-cpp").assess_model(model=choice.model_query(model), platform=where)


def test_the_hook_is_registered_with_the_plugin_manager() -> None:
    """Its verdicts reach the core through the one table of registered backends (no separate hook)."""
    impls = list(plugins.registry().values())
    assert "llama-cpp" in [impl.plugin_name for impl in impls]


def test_build_features_are_read_from_the_installed_engine() -> None:
    found = build_features()
    assert "cpu" in found
    assert ("gpu" in found) == bool(llama_cpp.llama_supports_gpu_offload())
    info = llama_cpp.llama_print_system_info().decode()
    assert found - {"cpu", "gpu"} == system_info_features(info)


def test_system_info_names_the_gpu_backends() -> None:
    cuda = "CUDA : ARCHS = 500,610,700,750,800,860,890 | USE_GRAPHS = 1 | PEER_MAX_BATCH_SIZE = 128 | CPU : SSE3 = 1 | AVX = 1 | "
    assert system_info_features(cuda) == {"cuda"}
    assert system_info_features("Metal : EMBED_LIBRARY = 1 | CPU : NEON = 1 | ARM_FMA = 1 | ") == {"metal"}
    assert system_info_features("Vulkan : | CPU : AVX2 = 1 | ") == {"vulkan"}
    assert system_info_features("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | ") == set()


def test_this_machine(tiny_phi3: Path) -> None:
    here = platforms.detect()
    found = verdict(str(tiny_phi3), None)
    assert found is not None and found.backend == "llama-cpp"
    if not here.accelerators:  # this project's CI machines: a CPU, and a CPU build
        assert found.fit == Fit.GOOD and "runs on the CPU" in found.reason and not found.options


@pytest.mark.parametrize(
    ("spec", "fit", "needle", "options"),
    [
        ("linux-cuda", Fit.BEST, "CUDA build: every layer runs on the NVIDIA GPU", {"n_gpu_layers": -1}),
        ("linux-cuda,llama-cpp=cpu+vulkan", Fit.GOOD, "Vulkan build", {"n_gpu_layers": -1}),
        ("linux-cuda,llama-cpp=cpu", Fit.FALLBACK, CUDA_BUILD, {}),
        ("apple-silicon", Fit.GOOD, "Metal build: every layer runs on the Apple GPU", {"n_gpu_layers": -1}),
        ("apple-silicon,llama-cpp=cpu+gpu", Fit.GOOD, "Metal build", {"n_gpu_layers": -1}),
        ("apple-silicon,llama-cpp=cpu", Fit.FALLBACK, METAL_BUILD, {}),
        ("windows-directml", Fit.FALLBACK, "cannot use DirectML", {}),
        ("windows-directml,llama-cpp=cpu+vulkan", Fit.GOOD, "Vulkan build", {"n_gpu_layers": -1}),
        ("windows-cpu", Fit.GOOD, "runs on the CPU", {}),
        ("linux-cpu", Fit.GOOD, "runs on the CPU", {}),
        ("linux-cpu,llama-cpp=cpu+cuda", Fit.GOOD, "its cuda support finds no GPU here", {}),
        ("mac-intel", Fit.GOOD, "runs on the CPU", {}),
    ],
)
def test_simulated_machines(tiny_phi3: Path, spec: str, fit: Fit, needle: str, options: dict[str, int]) -> None:
    for model in (CATALOGUE, str(tiny_phi3)):
        found = verdict(model, spec)
        assert found is not None
        assert (found.fit, dict(found.options)) == (fit, options), found.reason
        assert needle in found.reason


def test_a_cuda_machine_without_engine_build_facts_asks_the_installed_engine(tiny_phi3: Path) -> None:
    found = verdict(str(tiny_phi3), "os=linux,arch=x86_64,cuda")
    assert found is not None
    assert found.fit == (Fit.BEST if "cuda" in build_features() else Fit.FALLBACK)


def test_no_opinion_on_other_formats(tmp_path: Path) -> None:
    """An ONNX or MLX folder is another backend's business (the folders are recognised by their key
    files; building real ones would need those engines, which this session does not install)."""
    onnx, mlx = tmp_path / "onnx", tmp_path / "mlx"
    onnx.mkdir()
    (onnx / "genai_config.json").write_text('{"model": {"type": "phi3"}}')
    mlx.mkdir()
    (mlx / "config.json").write_text('{"model_type": "phi3"}')
    (mlx / "model.safetensors").write_bytes(b"")
    assert choice.model_query(str(onnx)).formats == {"onnx"}
    assert choice.model_query(str(mlx)).formats == {"mlx"}
    assert verdict(str(onnx), "linux-cuda") is None
    assert verdict(str(mlx), "apple-silicon") is None


def test_the_choice_for_a_gguf_is_llama_cpp_everywhere(tiny_phi3: Path) -> None:
    for spec in ("apple-silicon", "windows-directml", "linux-cuda", "linux-cpu"):
        found = pb.explain(str(tiny_phi3), platform=spec, preference=[])
        assert found.chosen == "llama-cpp", (spec, found.why)


def test_load_applies_the_verdicts_options_under_the_callers(tiny_phi3: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a simulated CUDA machine the choice asks for every layer on the GPU; a caller's value wins."""
    seen: list[dict[str, object]] = []
    backend = plugins.get_backend("llama-cpp")
    real_load = backend.load

    def spy(source: pb.ModelSource, options: dict[str, object]) -> pb.Engine:
        seen.append(dict(options))
        return real_load(source, options)

    monkeypatch.setattr(backend, "load", spy)
    with pb.load(str(tiny_phi3), platform="linux-cuda", n_ctx=256) as gen:
        assert gen.generate("hi", pb.SamplingConfig(max_tokens=2)).usage.completion_tokens > 0
    with pb.load(str(tiny_phi3), platform="linux-cuda", n_ctx=256, n_gpu_layers=0):
        pass
    assert seen[0]["n_gpu_layers"] == -1 and seen[1]["n_gpu_layers"] == 0
