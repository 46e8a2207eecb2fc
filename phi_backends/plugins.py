"""The plugin manager, and the one table the core keeps of what plugins registered.

Plugins arrive through the ``phi_backends`` entry-point group and register :class:`Backend`
objects (:mod:`phi_backends.hookspecs`). Everything the core knows of a backend comes from that
object: its formats, how it rates a model, how it checks its options. :func:`registry` is the
table built from them (which plugin registered which backend), :func:`model_formats` the formats
they read. Nothing here names a backend or a format.

Set ``PHI_BACKENDS_BLOCK_PLUGINS`` to a comma-separated list of entry-point names (for example
``llama-cpp``) to keep those plugins from loading.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import os
import re
import shlex
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import pluggy

from . import hookspecs
from .backend import Backend, ModelFormat
from .errors import BackendUnavailableError, PhiBackendsError, UnknownBackendError

__all__ = [
    "BLOCK_ENV",
    "ENTRY_POINT_GROUP",
    "KNOWN_BACKENDS",
    "Registered",
    "backends",
    "get_backend",
    "install_command",
    "model_formats",
    "plugin_manager",
    "registry",
]

ENTRY_POINT_GROUP = "phi_backends"
BLOCK_ENV = "PHI_BACKENDS_BLOCK_PLUGINS"

DISTRIBUTION = "phi-backends"


#: A requirement on one of this project's plugin distributions, under an extra: its extra names a backend.
_PLUGIN_REQUIREMENT = re.compile(r"""^\s*phi[-_.]backends[-_.][\w.-]+[^;]*;.*\bextra\s*==\s*["']([^"']+)["']""")


def _published() -> dict[str, str]:
    """Backends this project publishes, each with the pip extra that installs it, in the order
    ties in fit go to them: the extras of this package's own metadata (pyproject.toml), so a
    backend published later is named by its extra, with no edit here. Only the extras that
    install a plugin distribution (``phi-backends-<name>``) are backends: ``plot`` (matplotlib,
    for ``bench --plot``) is not."""
    try:
        metadata = importlib.metadata.metadata(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return {}
    requirements = metadata.get_all("Requires-Dist") or []
    plugins = {m.group(1) for m in map(_PLUGIN_REQUIREMENT.match, requirements) if m}
    extras = metadata.get_all("Provides-Extra") or []
    return {name: f"{DISTRIBUTION}[{name}]" for name in extras if name in plugins}


#: Backends this project publishes, with the pip extra that installs each (said when one is missing).
KNOWN_BACKENDS: dict[str, str] = _published()

#: Where phi_backends was imported from: in a checkout (an editable install, or run in place)
#: the plugins sit beside it, in plugins/<name>.
_SOURCE = Path(__file__).resolve().parent.parent


def install_command(name: str) -> str:
    """The command that installs backend ``name``'s plugin, for how phi-backends was installed.

    The plugin packages are not on the package index, so ``pip install 'phi-backends[onnx]'``
    fails for our own backends; from a checkout the plugin's folder in it works, installed into
    the very interpreter running now. A backend published elsewhere keeps its extra.
    """
    folder = _SOURCE / "plugins" / name
    if (folder / "pyproject.toml").is_file():
        return f"{shlex.quote(sys.executable)} -m pip install -e {shlex.quote(str(folder))}"
    extra = KNOWN_BACKENDS.get(name, f"{DISTRIBUTION}-{name}")
    return f"pip install '{extra}'"


@dataclass(frozen=True)
class Registered:
    """One row of the table: a backend and the plugin (entry-point name) that registered it."""

    backend: Backend
    plugin_name: str


_lock = threading.Lock()
_manager: pluggy.PluginManager | None = None
_registry: dict[str, Registered] | None = None
_formats: Mapping[str, ModelFormat] | None = None  # built once from _registry (detection asks often)
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


def registry() -> Mapping[str, Registered]:
    """Every registered backend by name, with its plugin (no engine is imported).

    Each plugin's ``register_backends`` is called on its own, so that the table knows which
    plugin registered which backend, and one plugin that raises is reported, not fatal.
    """
    global _registry
    with _lock:
        if _registry is not None:
            return _registry
    pm = plugin_manager()
    found: dict[str, Registered] = {}
    for impl in pm.hook.register_backends.get_hookimpls():
        plugin = impl.plugin_name

        def register(backend: Backend, plugin: str = plugin) -> None:
            if backend.name in found:
                raise PhiBackendsError(f"two plugins register a backend named {backend.name!r}; uninstall one")
            missing = _missing_members(backend)
            if missing:
                raise _Incomplete(
                    f"its backend {backend.name!r} lacks {', '.join(missing)} (see docs/plugins.md); update the plugin"
                )
            found[backend.name] = Registered(backend, plugin)

        try:
            impl.function(*({"register": register}[name] for name in impl.argnames))
        except PhiBackendsError:
            raise
        except _Incomplete as exc:
            broken[plugin] = str(exc)
        except Exception as exc:  # a plugin bug: report it, keep the other backends
            broken[plugin] = f"register_backends failed: {type(exc).__name__}: {exc}"
    with _lock:
        _registry = dict(sorted(found.items()))
        return _registry


class _Incomplete(Exception):
    """A registered object that is not a whole :class:`Backend`."""


def _missing_members(backend: object) -> list[str]:
    """The :class:`Backend` members ``backend`` lacks (a plugin written for an older protocol)."""
    wanted = [name for name in Backend.__annotations__] + [
        name for name, value in vars(Backend).items() if callable(value) and not name.startswith("_")
    ]
    return [name for name in dict.fromkeys(wanted) if not hasattr(backend, name)]


def backends() -> dict[str, Backend]:
    """Every registered backend by name (no engine is imported)."""
    return {name: row.backend for name, row in registry().items()}


def model_formats() -> Mapping[str, ModelFormat]:
    """Every model format the core can recognise: those :mod:`phi_backends.formats` declares,
    then those registered backends introduce (a name already taken keeps its first meaning)."""
    global _formats
    rows = registry()
    if _formats is not None:
        return _formats
    from .formats.known import KNOWN_FORMATS  # the kit imports backend.py, which is light

    table = {fmt.name: fmt for fmt in KNOWN_FORMATS}
    for row in rows.values():
        for fmt in row.backend.model_formats:
            table.setdefault(fmt.name, fmt)
    with _lock:
        _formats = MappingProxyType(table)
        return _formats


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
        raise BackendUnavailableError(f"backend {name!r} is not installed; install it with: {install_command(name)}")
    known = sorted(set(installed) | set(KNOWN_BACKENDS))
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    listing = ", ".join(installed) or "none"
    raise UnknownBackendError(f"unknown backend {name!r}; {hint}installed backends: {listing}")


def reset() -> None:
    """Forget loaded plugins (tests that change the environment call this)."""
    global _manager, _registry, _formats
    with _lock:
        _manager = None
        _registry = None
        _formats = None
        broken.clear()
