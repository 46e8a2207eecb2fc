"""The ``onnx`` backend object: cheap to create, imports onnxruntime-genai only when asked to."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any

from phi_backends import Availability, Engine, ModelFormat, ModelQuery, ModelSource, Platform, Verdict
from phi_backends.errors import BackendUnavailableError

from .assess import assess
from .options import EngineOptions
from .providers import SUPPORTED_VERSION, Installation, check_usable, probe_installation

SUPPORTED = ".".join(map(str, SUPPORTED_VERSION))
INSTALL_HINT = (
    "pip install 'onnxruntime-genai>=0.18,<0.19' (CPU); for CUDA or DirectML install "
    "onnxruntime-genai-cuda or onnxruntime-genai-directml instead"
)


class OnnxBackend:
    name: str = "onnx"
    formats: tuple[str, ...] = ("onnx",)
    install_hint: str = INSTALL_HINT
    model_formats: tuple[ModelFormat, ...] = ()  # it reads a format phi_backends.formats declares

    @cached_property
    def _probe(self) -> tuple[Availability, Installation | None]:
        try:
            import onnxruntime_genai as og
        except Exception as exc:  # ImportError, or OSError from a missing shared library
            return Availability(
                False, f"onnxruntime-genai cannot be imported ({type(exc).__name__}: {exc}); {INSTALL_HINT}"
            ), None
        installation = probe_installation(og)
        if not installation.supported:
            return Availability(
                False,
                f"{installation.distribution} {installation.version} is installed but the onnx backend needs "
                f"{SUPPORTED}.x; pip install '{installation.distribution}=={SUPPORTED}.*'",
            ), None
        return Availability(True, installation.describe(), installation.usable), installation

    def availability(self) -> Availability:
        """ok, the execution providers usable here (as ``devices``), and in ``reason`` the
        installed distribution and why each other provider is not usable."""
        return self._probe[0]

    def validate_options(self, options: Mapping[str, Any]) -> None:
        """Check ``options`` before any model is resolved or downloaded: unknown options, bad
        values, and an explicit provider that cannot run here (which would otherwise be found
        only after downloading that provider's sub-folder)."""
        parsed = EngineOptions.parse(options)
        if parsed.provider is not None:
            check_usable(parsed.provider, self._installation())

    def assess_model(self, model: ModelQuery, platform: Platform) -> Verdict | None:
        """How well this engine runs ``model`` on ``platform`` (rules in assess.py, docs/choice.md)."""
        return assess(model, platform)

    def load(self, source: ModelSource, options: Mapping[str, Any]) -> Engine:
        parsed = EngineOptions.parse(options)  # option errors first: they need no engine
        installation = self._installation()
        from .engine import OnnxEngine

        return OnnxEngine(source, parsed, installation)

    def _installation(self) -> Installation:
        available, installation = self._probe
        if installation is None:
            raise BackendUnavailableError(f"backend 'onnx' cannot run here: {available.reason}")
        return installation


__all__ = ["OnnxBackend"]
