"""The ``llama-cpp`` backend object: cheap to create, imports llama.cpp only when asked to."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping
from functools import cached_property
from typing import Any

from phi_backends import Availability, Engine, ModelFormat, ModelQuery, ModelSource, Platform, Verdict
from phi_backends.errors import BackendUnavailableError

from .assess import assess
from .options import EngineOptions

# The engine this plugin needs (its pyproject's pin); the plugin itself is installed already.
INSTALL_HINT = (
    "CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" pip install 'llama-cpp-python>=0.3.16,<0.4' "
    "(the flag builds for any CPU of this kind; without it the build may crash on other CPUs)"
)


class LlamaCppBackend:
    name: str = "llama-cpp"
    formats: tuple[str, ...] = ("gguf",)
    install_hint: str = INSTALL_HINT
    model_formats: tuple[ModelFormat, ...] = ()  # it reads a format phi_backends.formats declares

    @cached_property
    def _availability(self) -> Availability:
        try:
            import llama_cpp
        except Exception as exc:  # ImportError, or OSError from a broken shared library
            return Availability(
                False, f"llama-cpp-python cannot be imported ({type(exc).__name__}: {exc}); {INSTALL_HINT}"
            )
        devices = ["cpu"]
        if llama_cpp.llama_supports_gpu_offload():
            devices.append("gpu")
        version = importlib.metadata.version("llama-cpp-python")
        return Availability(True, f"llama-cpp-python {version}", tuple(devices))

    def availability(self) -> Availability:
        return self._availability

    def validate_options(self, options: Mapping[str, Any]) -> None:
        """Unknown or bad options fail before the model is resolved or downloaded."""
        EngineOptions.parse(options, gpu="gpu" in self.availability().devices)

    def assess_model(self, model: ModelQuery, platform: Platform) -> Verdict | None:
        """How well this engine runs ``model`` on ``platform`` (rules in assess.py, docs/choice.md)."""
        return assess(model, platform)

    def load(self, source: ModelSource, options: Mapping[str, Any]) -> Engine:
        available = self.availability()
        if not available.ok:
            raise BackendUnavailableError(f"backend 'llama-cpp' cannot run here: {available.reason}")
        from .engine import LlamaCppEngine

        return LlamaCppEngine(source, EngineOptions.parse(options, gpu="gpu" in available.devices))
