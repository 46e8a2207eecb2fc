"""Entry point of the ``mlx`` plugin (group ``phi_backends``)."""

from __future__ import annotations

from collections.abc import Callable

from phi_backends import Backend, ModelQuery, Platform, Verdict, hookimpl

from .assess import assess
from .backend import MlxBackend


@hookimpl
def register_backends(register: Callable[[Backend], None]) -> None:
    register(MlxBackend())


@hookimpl
def assess_model(model: ModelQuery, platform: Platform) -> Verdict | None:
    return assess(model, platform)
