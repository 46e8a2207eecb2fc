"""How well llama.cpp runs a model on a platform: this plugin's answer to the ``assess_model`` hook.

The rules (docs/choice.md): a build with CUDA on a CUDA machine is the best fit there; a build
that offloads to the GPU otherwise (Metal on a Mac, Vulkan) is good; the CPU is good on a machine
without an accelerator, and a fallback on one with an accelerator this build cannot use (the
reason says which build would use it).
"""

from __future__ import annotations

import functools
import re

from phi_backends import Fit, ModelQuery, Platform, Verdict

__all__ = ["NAME", "assess", "build_features", "system_info_features"]

NAME = "llama-cpp"
FORMATS = ("gguf",)
#: Every layer on the GPU: our default is the CPU (n_gpu_layers=0), so a GPU fit must say so.
OFFLOAD = {"n_gpu_layers": -1}
_REBUILD = 'CMAKE_ARGS="{flags}" pip install --force-reinstall --no-cache-dir llama-cpp-python'
CUDA_BUILD = _REBUILD.format(flags="-DGGML_CUDA=on -DGGML_NATIVE=OFF")
METAL_BUILD = _REBUILD.format(flags="-DGGML_METAL=on")
VULKAN_BUILD = _REBUILD.format(flags="-DGGML_VULKAN=on -DGGML_NATIVE=OFF")
#: The names llama.cpp's system info gives its GPU backends, as platform feature words.
_GPU_BACKENDS = {"cuda": "cuda", "metal": "metal", "vulkan": "vulkan", "rocm": "rocm", "hip": "rocm"}


def assess(model: ModelQuery, platform: Platform) -> Verdict | None:
    if not model.offers(FORMATS):
        return None
    features = platform.features(NAME)
    return rate(platform, build_features() if features is None else features)


def rate(platform: Platform, features: frozenset[str]) -> Verdict:
    """The verdict for a llama-cpp-python build with ``features`` on ``platform``."""
    if platform.cuda:
        if "cuda" in features:
            return Verdict(NAME, Fit.BEST, "CUDA build: every layer runs on the NVIDIA GPU (n_gpu_layers=-1)", OFFLOAD)
        if "vulkan" in features:
            reason = (
                f"Vulkan build: every layer runs on the GPU (n_gpu_layers=-1); a CUDA build is faster: {CUDA_BUILD}"
            )
            return Verdict(NAME, Fit.GOOD, reason, OFFLOAD)
        reason = f"this llama-cpp-python has no CUDA support, so it runs on the CPU, not the NVIDIA GPU; for the GPU: {CUDA_BUILD}"
        return Verdict(NAME, Fit.FALLBACK, reason)
    if platform.metal:
        if "metal" in features or ("gpu" in features and not features & {"cuda", "vulkan", "rocm"}):
            return Verdict(NAME, Fit.GOOD, "Metal build: every layer runs on the Apple GPU (n_gpu_layers=-1)", OFFLOAD)
        reason = f"this llama-cpp-python has no Metal support, so it runs on the CPU; for the GPU: {METAL_BUILD}"
        return Verdict(NAME, Fit.FALLBACK, reason)
    if platform.directml:
        if "vulkan" in features:
            return Verdict(NAME, Fit.GOOD, "Vulkan build: every layer runs on the GPU (n_gpu_layers=-1)", OFFLOAD)
        reason = f"llama.cpp cannot use DirectML, so it runs on the CPU; a Vulkan build uses the GPU: {VULKAN_BUILD}"
        return Verdict(NAME, Fit.FALLBACK, reason)
    unused = sorted(features & set(_GPU_BACKENDS.values()))
    note = f" (its {'/'.join(unused)} support finds no GPU here)" if unused else ""
    return Verdict(NAME, Fit.GOOD, f"runs on the CPU, this machine's only device{note}")


@functools.cache
def build_features() -> frozenset[str]:
    """What the installed llama-cpp-python was built with: ``cpu``, ``gpu`` if it can offload,
    and the GPU backends its system info names (``cuda``, ``metal``, ``vulkan``, ``rocm``)."""
    try:
        import llama_cpp
    except Exception:  # not importable: its availability() says why, and the core marks it unusable
        return frozenset()
    found = {"cpu"}
    try:
        if llama_cpp.llama_supports_gpu_offload():
            found.add("gpu")
        info = llama_cpp.llama_print_system_info()
    except Exception:  # an older or odd build: what was found so far stands
        return frozenset(found)
    text = info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)
    return frozenset(found | system_info_features(text))


def system_info_features(text: str) -> set[str]:
    """The GPU backends in ``llama_print_system_info()``: ``"CUDA : ARCHS = 890 | ... | CPU : SSE3 = 1 | ..."``."""
    names = {match.group(1).lower() for match in re.finditer(r"(?:^|\|)\s*([A-Za-z][\w-]*)\s+:", text)}
    return {_GPU_BACKENDS[name] for name in names if name in _GPU_BACKENDS}
