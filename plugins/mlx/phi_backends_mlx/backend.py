"""The ``mlx`` backend object: cheap to create, imports MLX only when asked to."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any

from phi_backends import Availability, Engine, ModelFormat, ModelQuery, ModelSource, Platform, Verdict
from phi_backends.errors import BackendUnavailableError
from phi_backends.formats.hf_tokenizer import read_hf_tokenizer

from .assess import assess
from .devices import INSTALL_HINT, probe
from .model_folder import check_custom_code, read_model_folder
from .options import EngineOptions


class MlxBackend:
    name: str = "mlx"
    formats: tuple[str, ...] = ("mlx",)
    install_hint: str = INSTALL_HINT
    model_formats: tuple[ModelFormat, ...] = ()  # it reads a format phi_backends.formats declares

    @cached_property
    def _availability(self) -> Availability:
        return probe()

    def availability(self) -> Availability:
        return self._availability

    def validate_options(self, options: Mapping[str, Any]) -> None:
        """Unknown or bad options (a device this machine lacks) fail before the model is downloaded."""
        EngineOptions.parse(options, devices=self.availability().devices)

    def assess_model(self, model: ModelQuery, platform: Platform) -> Verdict | None:
        """How well this engine runs ``model`` on ``platform`` (rules in assess.py, docs/choice.md)."""
        return assess(model, platform)

    def load(self, source: ModelSource, options: Mapping[str, Any]) -> Engine:
        available = self.availability()
        if not available.ok:
            raise BackendUnavailableError(f"backend 'mlx' cannot run here: {available.reason}")
        parsed = EngineOptions.parse(options, devices=available.devices)
        # A bad folder is refused before mlx-lm (and transformers) is even imported: that takes seconds.
        folder = read_model_folder(source.path)
        check_custom_code(folder, trusted=parsed.trust_remote_code)
        parsed.check_model(folder)
        facts = read_hf_tokenizer(source.path)
        try:
            from .engine import MlxEngine
        except Exception as exc:  # mlx-lm imports transformers and more; any of them may be broken
            raise BackendUnavailableError(
                f"backend 'mlx' cannot run here: mlx-lm cannot be imported ({type(exc).__name__}: {exc}); {INSTALL_HINT}"
            ) from None
        return MlxEngine(source, parsed, folder, facts)
