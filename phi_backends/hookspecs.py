"""The hooks a phi-backends plugin implements.

A plugin is a module listed under the ``phi_backends`` entry-point group, for example in its
``pyproject.toml``::

    [project.entry-points.phi_backends]
    my-engine = "phi_backends_my_engine.plugin"

and that module implements hooks with :data:`phi_backends.hookimpl`::

    from phi_backends import hookimpl

    @hookimpl
    def register_backends(register):
        register(MyEngineBackend())

    @hookimpl
    def assess_model(model, platform):
        return Verdict("my-engine", Fit.GOOD, "runs on the CPU") if model.offers(("gguf",)) else None
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

from .backend import Backend, ModelQuery, Verdict
from .selection.platform import Platform

PROJECT = "phi_backends"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_backends(register: Callable[[Backend], None]) -> None:
    """Register backends by calling ``register(backend)`` once per backend.

    A backend object must be cheap to create: import the engine only in its ``availability()``
    and ``load()`` methods, so that listing backends and ``--help`` stay fast.
    """


@hookspec
def assess_model(model: ModelQuery, platform: Platform) -> Verdict | None:
    """How well can this plugin's backend run ``model`` on ``platform``? (optional)

    Return a :class:`~phi_backends.backend.Verdict` for the plugin's own backend, or None
    for no opinion (then the core rates it ``fallback``). A plugin is asked only where one of
    its backends reads a format the model comes in and its ``availability()`` is ok; it rates
    how well its engine fits ``platform``, taking its engine build's features from
    ``platform.features(name)`` where they are given (a simulated machine) and from the
    installed engine otherwise. It knows nothing of the other backends: the core ranks every
    plugin's answer (docs/choice.md). Must be fast and must not load a model; an exception, or
    an answer for a backend the plugin does not register, is reported, not raised.
    """
