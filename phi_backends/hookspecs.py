"""The one hook a phi-backends plugin implements.

A plugin is a module listed under the ``phi_backends`` entry-point group, for example in its
``pyproject.toml``::

    [project.entry-points.phi_backends]
    my-engine = "phi_backends_my_engine.plugin"

and that module registers its backends with :data:`phi_backends.hookimpl`::

    from phi_backends import hookimpl

    @hookimpl
    def register_backends(register):
        register(MyEngineBackend())

Everything else the core asks of a backend (the formats it reads, how well it runs a model on a
platform, whether its options are valid) is a method or attribute of that object: see
:class:`phi_backends.backend.Backend` and docs/plugins.md.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

from .backend import Backend

PROJECT = "phi_backends"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_backends(register: Callable[[Backend], None]) -> None:
    """Register backends by calling ``register(backend)`` once per backend.

    A backend object must be cheap to create: import the engine only in its ``availability()``
    and ``load()`` methods, so that listing backends and ``--help`` stay fast.
    """
