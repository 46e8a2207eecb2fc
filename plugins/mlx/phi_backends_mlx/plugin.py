"""Entry point of the ``mlx`` plugin (group ``phi_backends``): it registers the backend object,
which carries everything the core asks of it."""

from __future__ import annotations

from collections.abc import Callable

from phi_backends import Backend, hookimpl

from .backend import MlxBackend


@hookimpl
def register_backends(register: Callable[[Backend], None]) -> None:
    register(MlxBackend())
