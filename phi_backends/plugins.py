"""The plugin manager: finds backend plugins through the ``phi_backends`` entry-point group.

Set ``PHI_BACKENDS_BLOCK_PLUGINS`` to a comma-separated list of entry-point names (for example
``llama-cpp``) to keep those plugins from loading.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import os
import threading

import pluggy

from . import hookspecs
from .backend import Backend
from .errors import BackendUnavailableError, PhiBackendsError, UnknownBackendError

__all__ = ["BLOCK_ENV", "ENTRY_POINT_GROUP", "KNOWN_BACKENDS", "backends", "get_backend", "plugin_manager"]

ENTRY_POINT_GROUP = "phi_backends"
BLOCK_ENV = "PHI_BACKENDS_BLOCK_PLUGINS"

#: Backends this project publishes, with the pip extra that installs each.
KNOWN_BACKENDS: dict[str, str] = {
    "llama-cpp": "phi-backends[llama-cpp]",
    "mlx": "phi-backends[mlx]",
    "onnx": "phi-backends[onnx]",
}

_lock = threading.Lock()
_manager: pluggy.PluginManager | None = None
_backends: dict[str, Backend] | None = None
#: Plugins that are installed but failed to load, with the reason (shown by `phi-backends backends`).
broken: dict[str, str] = {}


def blocked_plugins() -> list[str]:
    return [name.strip() for name in os.environ.get(BLOCK_ENV, "").split(",") if name.strip()]


def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, created on first use.

    Entry points are loaded one by one (rather than with pluggy's all-or-nothing loader) so
    that one broken plugin is reported, not fatal to every other backend.
    """
    global _manager
    with _lock:
        if _manager is None:
            pm = pluggy.PluginManager(hookspecs.PROJECT)
            pm.add_hookspecs(hookspecs)
            for name in blocked_plugins():
                pm.set_blocked(name)
            for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                if pm.is_blocked(ep.name) or pm.get_plugin(ep.name) is not None:
                    continue
                try:
                    pm.register(ep.load(), name=ep.name)
                except Exception as exc:  # an import error, or a hook pluggy rejects
                    broken[ep.name] = f"{type(exc).__name__}: {exc}"
            try:
                pm.check_pending()
            except pluggy.PluginValidationError as exc:
                name = pm.get_name(exc.plugin) or "?"
                pm.unregister(exc.plugin)
                broken[name] = f"it implements a hook phi-backends does not define ({exc})"
            _manager = pm
        return _manager


def backends() -> dict[str, Backend]:
    """Every registered backend by name (no engine is imported)."""
    global _backends
    if _backends is None:
        found: dict[str, Backend] = {}

        def register(backend: Backend) -> None:
            if backend.name in found:
                raise PhiBackendsError(f"two plugins register a backend named {backend.name!r}; uninstall one")
            found[backend.name] = backend

        plugin_manager().hook.register_backends(register=register)
        _backends = dict(sorted(found.items()))
    return _backends


def get_backend(name: str) -> Backend:
    """The backend called ``name``, or an error that says how to get it."""
    installed = backends()
    if name in installed:
        return installed[name]
    if name in broken:
        raise BackendUnavailableError(
            f"the {name!r} backend plugin is installed but failed to load: {broken[name]}; reinstall it"
        )
    if name in blocked_plugins():
        raise BackendUnavailableError(
            f"backend {name!r} is blocked by {BLOCK_ENV}; remove it from that variable to use it"
        )
    if name in KNOWN_BACKENDS:
        raise BackendUnavailableError(
            f"backend {name!r} is not installed; install it with: pip install '{KNOWN_BACKENDS[name]}'"
        )
    known = sorted(set(installed) | set(KNOWN_BACKENDS))
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    listing = ", ".join(installed) or "none"
    raise UnknownBackendError(f"unknown backend {name!r}; {hint}installed backends: {listing}")


def reset() -> None:
    """Forget loaded plugins (tests that change the environment call this)."""
    global _manager, _backends
    with _lock:
        _manager = None
        _backends = None
        broken.clear()
