"""The effective configuration, and where each value came from.

One precedence, highest first: **CLI flags > environment variables > the project file > the
user file > defaults**. It is implemented here only: explicit arguments to
:func:`phi_backends.load` are its flag layer, as ``phi-backends run``'s flags are (so
``phi-backends config`` with run's flags shows the merge that run performs).
Tables (``[sampling]``, one per backend's options, ``[models.NAME]``) merge key by key across
layers; every other value is taken whole from the highest layer that sets it. See docs/config.md.

A config file (``phi-backends.toml``, ``[tool.phi-backends]`` in ``pyproject.toml``, or the user
file: see :mod:`phi_backends.config_files`)::

    model = "phi-3-mini-4k-instruct"      # default model: catalogue name, path or hub repo id
    backend = "llama-cpp"                  # or "auto"; `backends` orders the automatic choice
    backends = ["onnx", "llama-cpp"]
    platform = "linux-cuda"                # a platform spec (docs/choice.md); default: detected
    template = "phi3"                      # the chat template where "auto" is asked for

    [sampling]                             # SamplingConfig fields: the defaults of every call
    temperature = 0.7

    [llama-cpp]                            # options for one backend, used when it runs
    n_threads = 4

    [models.my-phi]                        # your own catalogue entries (see phi_backends.models)
    gguf = { path = "/models/my-phi.gguf" }
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from . import config_files, models, plugins
from .backend import Backend
from .config_files import ConfigFile
from .errors import ConfigError, PhiBackendsError, UsageError
from .models.catalogue import DEFAULT_MODEL
from .sampling import SamplingConfig
from .selection.platform import Platform

__all__ = ["ENV_VARS", "LAYERS", "TOP_KEYS", "Config", "Flags", "Origin", "Setting", "current", "resolve"]

Layer = Literal["flag", "env", "project", "user", "default"]
#: The flag layer: a key (``model``, ``sampling.top_p``, ``llama-cpp.n_ctx``) to (the flag that set
#: it, its value); a None value is a flag not given.
Flags = Mapping[str, tuple[str, Any]]
#: Highest first.
LAYERS: tuple[Layer, ...] = ("flag", "env", "project", "user", "default")
#: Keys that take one value (not a table).
TOP_KEYS = ("model", "backend", "backends", "platform", "template")
#: The environment variable for each top-level key.
ENV_VARS: Mapping[str, str] = MappingProxyType(
    {
        "model": "PHI_BACKENDS_MODEL",
        "backend": "PHI_BACKENDS_BACKEND",
        "backends": "PHI_BACKENDS_BACKENDS",
        "platform": "PHI_BACKENDS_PLATFORM",
        "template": "PHI_BACKENDS_TEMPLATE",
    }
)
AUTO = "auto"
_SAMPLING_FIELDS = tuple(f.name for f in dataclasses.fields(SamplingConfig))
_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "model": DEFAULT_MODEL,
        "backend": None,
        "backends": (),
        "platform": None,
        "template": AUTO,
        **{f"sampling.{name}": getattr(SamplingConfig(), name) for name in _SAMPLING_FIELDS},
    }
)


@dataclass(frozen=True)
class Origin:
    """Where one value came from."""

    layer: Layer
    where: str = ""  # the flag, the variable, or the file
    key: str = ""  # the key as written in the file

    def __str__(self) -> str:
        if self.layer == "default":
            return "default"
        if self.layer == "flag":  # a command-line flag, or an argument of load() or explain()
            return f"flag {self.where}" if self.where.startswith("-") else f"argument {self.where}"
        if self.layer == "env":
            return f"environment variable {self.where}"
        return f"{self.where}, key {self.key}"

    def as_dict(self) -> dict[str, str]:
        found = {"layer": self.layer, "where": self.where, "key": self.key}
        return {k: v for k, v in found.items() if v}


@dataclass(frozen=True)
class Setting:
    """One effective value: ``key`` is its dotted path (``sampling.top_p``, ``onnx.provider``)."""

    key: str
    value: Any
    origin: Origin


@dataclass(frozen=True)
class Config:
    """The effective configuration: every setting with its origin, and the files looked at."""

    settings: Mapping[str, Setting]
    files: tuple[ConfigFile, ...] = ()

    def __getitem__(self, key: str) -> Setting:
        return self.settings[key]

    @property
    def model(self) -> str:
        return str(self["model"].value)

    @property
    def backend(self) -> str | None:
        value: str | None = self["backend"].value
        return value

    @property
    def backends(self) -> tuple[str, ...]:
        return tuple(self["backends"].value)

    @property
    def platform(self) -> str | None:
        """The platform spec string, or None for this machine as detected."""
        value: Platform | str | None = self["platform"].value
        return value.spec if isinstance(value, Platform) else value

    @property
    def template(self) -> str:
        return str(self["template"].value)

    def platform_for_choice(self) -> Platform | None:
        """The configured platform, saying where it came from; None: the one detected."""
        value = self["platform"].value
        if value is None or isinstance(value, Platform):  # a Platform is given only by load()'s caller
            return value
        spec = str(value)
        return Platform.from_spec(spec, origin=f"simulated: {spec}, from {self['platform'].origin}")

    def sampling(self) -> SamplingConfig:
        """The sampling defaults: ``[sampling]`` over :class:`SamplingConfig`'s own."""
        return SamplingConfig(**{name: self[f"sampling.{name}"].value for name in _SAMPLING_FIELDS})

    def options(self, backend: str) -> dict[str, Any]:
        """The ``[BACKEND]`` table's options, merged across files."""
        return {s.key.split(".", 1)[1]: s.value for s in self.table(backend)}

    def table(self, name: str) -> list[Setting]:
        """The settings of one table (``sampling``, ``models``, a backend name), in key order."""
        return [s for k, s in self.settings.items() if k.startswith(f"{name}.")]

    def backend_tables(self) -> list[str]:
        """The backends this config has options for."""
        return sorted({k.split(".", 1)[0] for k in self.settings} - {"sampling", "models", *TOP_KEYS})

    def with_flags(self, flags: Flags) -> Config:
        """This configuration under ``flags``, the top layer. :func:`resolve` applies its flags
        so; ``load()`` applies the backend options this way once it knows the backend."""
        merged = dict(self.settings)
        for key, (flag, value) in flags.items():
            if value is None:
                continue
            origin = Origin("flag", flag)
            merged[key] = Setting(key, _flag_value(key, value, origin), origin)
        return Config(MappingProxyType(dict(sorted(merged.items(), key=lambda kv: _order(kv[0])))), self.files)

    def with_options(self, backend: str, options: Flags) -> Config:
        """``options`` (name to (flag, value)) as flags of ``backend``'s table."""
        return self.with_flags({f"{backend}.{name}": given for name, given in options.items()})

    def check_options(self, backend: Backend) -> None:
        """Validate the config's options for ``backend`` with its ``validate_options``, naming
        the file and key of a bad one (or the table, for options that exclude each other).
        Flags are not checked here: their caller reports a bad one as its own mistake."""
        validate = backend.validate_options
        settings = [s for s in self.table(backend.name) if s.origin.layer != "flag"]
        if not settings:
            return
        for setting in settings:
            try:
                validate({setting.key.split(".", 1)[1]: setting.value})
            except UsageError as exc:
                raise ConfigError(f"{setting.origin}: {exc}; fix or remove it there") from None
        try:
            validate({s.key.split(".", 1)[1]: s.value for s in settings})
        except UsageError as exc:
            files = " and ".join(dict.fromkeys(s.origin.where for s in settings))
            raise ConfigError(f"{files}, table [{backend.name}]: {exc}; fix it there") from None

    def blame(self, key: str, error: PhiBackendsError) -> PhiBackendsError:
        """``error`` saying which config value led to it (unchanged for a default)."""
        origin = self[key].origin
        if origin.layer in ("default", "flag") or self[key].value is None:  # None: "auto", nothing to blame
            return error
        return type(error)(f"{error} ({key} {self[key].value!r} is set by {origin}; change it there)")


def current() -> Config:
    """The configuration :func:`phi_backends.load` uses: environment, files, defaults."""
    return resolve()


def resolve(
    flags: Flags | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Config:
    """Merge every layer. ``flags`` maps a key (``model``, ``sampling.temperature``, ...) to
    ``(flag name, value)``; None values are ignored."""
    env = os.environ if environ is None else environ
    project = config_files.project_files(cwd)
    user = config_files.user_file()
    merged: dict[str, Setting] = {k: Setting(k, v, Origin("default")) for k, v in _DEFAULTS.items()}
    for file in (user, project[0]):
        if file.found:
            merged.update((s.key, s) for s in _file_settings(file))
    merged.update((s.key, s) for s in _env_settings(env))
    return Config(MappingProxyType(merged), files=(*project, user)).with_flags(flags or {})


# -- the layers -----------------------------------------------------------------------------------


def _file_settings(file: ConfigFile) -> list[Setting]:
    found: list[Setting] = []
    backends = _backend_names()
    for key, value in file.data.items():
        origin = Origin(file.layer, str(file.path), file.key(key))
        if key in TOP_KEYS:
            found.append(Setting(key, _top_value(key, value, origin), origin))
        elif key == "sampling":
            found += _sampling_settings(file, _table(file, key, value))
        elif key == "models":
            entries = models.config_entries(file)
            found += [
                Setting(f"models.{n}", e, Origin(file.layer, str(file.path), file.key("models", n)))
                for n, e in entries.items()
            ]
        elif key in backends:
            table = _table(file, key, value)
            found += [
                Setting(f"{key}.{name}", item, Origin(file.layer, str(file.path), file.key(key, name)))
                for name, item in table.items()
            ]
        else:
            raise ConfigError(f"{origin}: unknown key; {_unknown_key_hint(key, value, backends)}")
    return found


def _env_settings(env: Mapping[str, str]) -> list[Setting]:
    found = []
    for key, name in ENV_VARS.items():
        raw = env.get(name, "").strip()
        if raw:
            origin = Origin("env", name)
            value: Any = [item.strip() for item in raw.split(",") if item.strip()] if key == "backends" else raw
            found.append(Setting(key, _top_value(key, value, origin), origin))
    return found


def _flag_value(key: str, value: Any, origin: Origin) -> Any:
    if key in TOP_KEYS:
        return _top_value(key, value, origin)
    if key.startswith("sampling."):  # a bad value is the flag's error, as `run` reports it
        name = key.split(".", 1)[1]
        return getattr(SamplingConfig(**{name: value}), name)
    return value  # a backend option: the backend checks it when it runs


def _sampling_settings(file: ConfigFile, table: Mapping[str, Any]) -> list[Setting]:
    found = []
    for name, value in table.items():
        origin = Origin(file.layer, str(file.path), file.key("sampling", name))
        try:
            checked = SamplingConfig(**{name: value})  # one field at a time, to name the key that is wrong
        except UsageError as exc:
            raise ConfigError(f"{origin}: {exc}; fix it there (see docs/sampling.md)") from None
        found.append(Setting(f"sampling.{name}", getattr(checked, name), origin))
    return found


def _top_value(key: str, value: Any, origin: Origin) -> Any:
    """A top-level value checked and normalized; ConfigError naming ``origin`` when it is wrong."""
    if key == "platform" and isinstance(value, Platform) and origin.layer == "flag":
        return value  # load(platform=Platform(...)): used as given, with its own origin
    if key == "backends" and origin.layer == "flag":
        return tuple(value)  # explain(preference=...): the choice checks the names against those installed
    if key == "backends":
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise ConfigError(f'{origin}: must be a list of backend names, e.g. ["onnx", "llama-cpp"]; got {value!r}')
        try:
            names = [_backend_value(item, origin) for item in value]
        except ConfigError as exc:
            if origin.layer != "env":
                raise
            raise ConfigError(f"{exc}; {origin.where} takes names separated by commas") from None
        return tuple(dict.fromkeys(n for n in names if n is not None))
    if not isinstance(value, str) or not value.strip():
        what = {"model": "a model name, path or hub repo id", "backend": 'a backend name or "auto"'}.get(
            key, "a string"
        )
        raise ConfigError(f"{origin}: must be {what}; got {value!r}")
    value = value.strip()
    if key == "backend":
        return _backend_value(value, origin)
    if key == "platform":
        if value.lower() in ("auto", "detected"):
            return None
        try:
            Platform.from_spec(value)
        except UsageError as exc:
            raise ConfigError(f"{origin}: {exc}") from None
        return value
    if key == "template" and value != AUTO:
        from .templates import get_template

        try:
            get_template(value)
        except UsageError as exc:
            raise ConfigError(f'{origin}: {exc}, or "auto" for the model\'s own') from None
    return value


def _backend_value(value: Any, origin: Origin) -> str | None:
    if not isinstance(value, str):
        raise ConfigError(f"{origin}: backend names are strings, got {value!r}")
    name = value.strip()
    if name == AUTO:
        return None
    known = _backend_names()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f'{origin}: unknown backend {name!r}; {hint}use one of {", ".join(known)} (or "auto")')
    return name


def _table(file: ConfigFile, key: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{file.where(key)}: must be a table; write it as [{file.key(key)}] with one key per line")
    return value


def _unknown_key_hint(key: str, value: Any, backends: Sequence[str]) -> str:
    if key in _SAMPLING_FIELDS:
        return f"{key} is a sampling setting: put it under [sampling]"
    if isinstance(value, Mapping):
        close = difflib.get_close_matches(key, [*backends, "sampling", "models"], n=1)
        hint = f"did you mean [{close[0]}]? " if close else ""
        return (
            f"{hint}tables are [sampling], [models.NAME] and one per backend: {', '.join(f'[{b}]' for b in backends)}"
        )
    close = difflib.get_close_matches(key, TOP_KEYS, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}known keys: {', '.join(TOP_KEYS)}, and the tables [sampling], [models.NAME], {', '.join(f'[{b}]' for b in backends)}"


def _backend_names() -> list[str]:
    """Backends a config may name: those this project publishes and any installed plugin's."""
    return sorted(set(plugins.KNOWN_BACKENDS) | set(plugins.backends()) | set(plugins.broken))


def _order(key: str) -> tuple[int, int, str]:
    """Top-level keys first (in TOP_KEYS order), then sampling fields (in their order), then tables."""
    if key in TOP_KEYS:
        return (0, TOP_KEYS.index(key), "")
    table, _, name = key.partition(".")
    if table == "sampling":
        return (1, _SAMPLING_FIELDS.index(name) if name in _SAMPLING_FIELDS else len(_SAMPLING_FIELDS), name)
    return (3 if table == "models" else 2, 0, key)
