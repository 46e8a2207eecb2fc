"""Execution providers: the names onnxruntime-genai accepts, and which of them can run here.

onnxruntime-genai is published as several distributions of one module, ``onnxruntime_genai``:
``onnxruntime-genai`` (CPU), ``onnxruntime-genai-cuda``, ``onnxruntime-genai-directml``,
``onnxruntime-genai-winml``. Each runs on an onnxruntime distribution (``onnxruntime``,
``onnxruntime-gpu``, ``onnxruntime-directml``...) that decides which execution providers exist.
A provider is usable here when both say so: the GenAI build supports it (``og.is_*_available``)
and onnxruntime has the execution provider. A usable provider can still fail to start (no GPU in
the machine, a driver missing): that is reported when a model is loaded.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from phi_backends.errors import BackendUnavailableError, OptionError

__all__ = [
    "GENAI_DISTRIBUTIONS",
    "PROVIDERS",
    "SUPPORTED_VERSION",
    "Installation",
    "Provider",
    "canonical_provider",
    "check_usable",
    "probe_installation",
]

#: The onnxruntime-genai release line this plugin is written and tested against.
SUPPORTED_VERSION = (0, 18)
GENAI_DISTRIBUTIONS = (
    "onnxruntime-genai",
    "onnxruntime-genai-cuda",
    "onnxruntime-genai-directml",
    "onnxruntime-genai-winml",
)
ORT_DISTRIBUTIONS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-directml",
    "onnxruntime-openvino",
    "onnxruntime-qnn",
    "onnxruntime-winml",
    "onnxruntime-windowsml",
    "onnxruntime-webgpu",
)


@dataclass(frozen=True)
class Provider:
    name: str  # as genai_config.json and og.Config.append_provider spell it
    ort_name: str  # onnxruntime's execution provider
    probe: str | None  # the og function that says whether this GenAI build supports it
    install: str  # what a user installs to get it


PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        Provider("cpu", "CPUExecutionProvider", None, "pip install onnxruntime-genai"),
        Provider("cuda", "CUDAExecutionProvider", "is_cuda_available", "needs onnxruntime-genai-cuda"),
        Provider("dml", "DmlExecutionProvider", "is_dml_available", "needs onnxruntime-genai-directml, Windows"),
        Provider("webgpu", "WebGpuExecutionProvider", "is_webgpu_available", "needs an onnxruntime with WebGPU"),
        Provider("qnn", "QNNExecutionProvider", "is_qnn_available", "needs onnxruntime-qnn"),
        Provider("openvino", "OpenVINOExecutionProvider", "is_openvino_available", "needs onnxruntime-openvino"),
        Provider(
            "NvTensorRtRtx",
            "NvTensorRTRTXExecutionProvider",
            "is_cuda_available",
            "needs onnxruntime-genai-cuda and the TensorRT-RTX provider",
        ),
    )
}

_ALIASES: dict[str, str] = {
    **{p.name.lower(): p.name for p in PROVIDERS.values()},
    **{p.ort_name.lower(): p.name for p in PROVIDERS.values()},
    "directml": "dml",
    "trt-rtx": "NvTensorRtRtx",
    "tensorrt-rtx": "NvTensorRtRtx",
}


def canonical_provider(name: str) -> str:
    """Our spelling of a provider name (``"DirectML"`` → ``"dml"``); OptionError when unknown."""
    found = _ALIASES.get(str(name).strip().lower())
    if found is None:
        raise OptionError(
            f"unknown execution provider {name!r} for the onnx backend; known providers: {', '.join(PROVIDERS)}"
        )
    return found


@dataclass(frozen=True)
class Installation:
    """What is installed, and which providers it can use on this machine."""

    distribution: str  # the onnxruntime-genai distribution whose module is imported
    version: str
    onnxruntime: str  # "onnxruntime-gpu 1.20.1"
    usable: tuple[str, ...]  # cpu first
    unusable: Mapping[str, str]  # provider -> why not
    others: tuple[str, ...]  # other onnxruntime-genai distributions installed over the same module

    @property
    def supported(self) -> bool:
        return _version_tuple(self.version)[:2] == SUPPORTED_VERSION

    def describe(self) -> str:
        """One line for ``phi-backends backends``: what is installed, what can run, why not the rest."""
        text = (
            f"{self.distribution} {self.version} on {self.onnxruntime}; providers usable here: {', '.join(self.usable)}"
        )
        if self.unusable:
            text += "; not usable: " + ", ".join(f"{name} ({why})" for name, why in self.unusable.items())
        if self.others:
            text += (
                f"; warning: {', '.join(self.others)} is also installed over the same onnxruntime_genai module, "
                f"uninstall all but one"
            )
        return text


def check_usable(provider: str, installation: Installation, requested: str = "") -> None:
    """BackendUnavailableError naming the usable providers, unless ``provider`` is one of them."""
    if provider not in installation.usable:
        why = installation.unusable.get(provider, "not known to this installation")
        raise BackendUnavailableError(
            f"execution provider {provider!r}{requested} cannot be used here: {why}; "
            f"providers usable here: {', '.join(installation.usable)} (pass provider=NAME, --provider NAME)"
        )


def probe_installation(og: Any) -> Installation:
    """Inspect the imported ``onnxruntime_genai`` module ``og`` (imports onnxruntime too)."""
    distribution = str(getattr(og, "__id__", "onnxruntime-genai"))
    version = _dist_version(distribution) or str(getattr(og, "__version__", "unknown"))
    others = tuple(d for d in GENAI_DISTRIBUTIONS if d != distribution and _dist_version(d))
    ort_line, ort_providers = _onnxruntime()
    usable: list[str] = []
    unusable: dict[str, str] = {}
    for provider in PROVIDERS.values():
        why = _why_not(og, provider, distribution, ort_line, ort_providers)
        if why is None:
            usable.append(provider.name)
        else:
            unusable[provider.name] = why
    return Installation(distribution, version, ort_line, tuple(usable), unusable, others)


def _why_not(og: Any, provider: Provider, distribution: str, ort_line: str, ort_providers: set[str]) -> str | None:
    if provider.probe is not None:
        probe = getattr(og, provider.probe, None)
        try:
            supported = bool(probe()) if probe is not None else False
        except Exception:  # a probe that fails means "not here"
            supported = False
        if not supported:
            return f"not in this {distribution} build, {provider.install}"
    if provider.ort_name not in ort_providers:
        return f"{ort_line} lacks it, {provider.install}"
    return None


def _onnxruntime() -> tuple[str, set[str]]:
    try:
        import onnxruntime
    except Exception as exc:  # og itself needs it, so this is a broken install
        return f"no importable onnxruntime ({type(exc).__name__})", {"CPUExecutionProvider"}
    name = next((d for d in ORT_DISTRIBUTIONS if _dist_version(d)), "onnxruntime")
    providers = set(onnxruntime.get_available_providers()) | {"CPUExecutionProvider"}
    return f"{name} {onnxruntime.__version__}", providers


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _version_tuple(version: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in version.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
        if digits != piece:
            break
    return tuple(parts)
