"""Where phi-backends looks for config files, and reading them (TOML, parsed once per version).

Two files at most take part, the project's and the user's:

- the project file: ``phi-backends.toml`` in the working directory, else the
  ``[tool.phi-backends]`` table of ``./pyproject.toml`` (only one of them is read: a
  ``phi-backends.toml`` hides the ``pyproject.toml`` table);
- the user file: ``$PHI_BACKENDS_CONFIG`` if set, else ``config.toml`` in the platform's config
  folder: ``$XDG_CONFIG_HOME/phi-backends`` (default ``~/.config/phi-backends``) on Linux and
  other Unix systems, ``~/Library/Application Support/phi-backends`` on macOS,
  ``%APPDATA%\\phi-backends`` on Windows.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["PROJECT_FILE", "USER_ENV", "ConfigFile", "project_files", "read", "user_file", "user_path"]

USER_ENV = "PHI_BACKENDS_CONFIG"
PROJECT_FILE = "phi-backends.toml"
PYPROJECT_TABLE = ("tool", "phi-backends")

Layer = Literal["project", "user"]


@dataclass(frozen=True)
class ConfigFile:
    """One config file looked at: where, whether it exists, and its phi-backends table."""

    layer: Layer
    path: Path
    prefix: str = ""  # the table's own key path in the file: "tool.phi-backends" in pyproject.toml
    found: bool = False
    data: Mapping[str, Any] = field(default_factory=dict, repr=False)
    note: str = ""  # why a file that exists is not used, for `phi-backends config --files`

    def key(self, *parts: str) -> str:
        """The key as written in this file, e.g. ``tool.phi-backends.sampling.temperature``."""
        return ".".join(p for p in (self.prefix, *parts) if p)

    def where(self, *parts: str) -> str:
        """``/path/phi-backends.toml, key sampling.temperature`` (the file alone without parts)."""
        return f"{self.path}, key {self.key(*parts)}" if parts else str(self.path)


def user_path(sys_platform: str | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The user config file's path (which need not exist)."""
    env = os.environ if environ is None else environ
    plat = sys.platform if sys_platform is None else sys_platform
    if env.get(USER_ENV, "").strip():
        return Path(env[USER_ENV]).expanduser()
    if plat == "win32":
        appdata = env.get("APPDATA", "").strip()
        base = Path(appdata) if appdata else Path.home() / "AppData" / "Roaming"
    elif plat == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        xdg = env.get("XDG_CONFIG_HOME", "").strip()
        base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".config"  # XDG: relative is ignored
    return base / "phi-backends" / "config.toml"


def user_file() -> ConfigFile:
    path = user_path()
    data = read(path)
    return ConfigFile("user", path, found=data is not None, data=data or {})


def project_files(cwd: Path | None = None) -> tuple[ConfigFile, ...]:
    """The project files looked at, the one in use (if any) first."""
    folder = Path.cwd() if cwd is None else cwd
    own, pyproject = folder / PROJECT_FILE, folder / "pyproject.toml"
    data = read(own)
    if data is not None:
        shadowed = (ConfigFile("project", pyproject, ".".join(PYPROJECT_TABLE), note=f"not read: {PROJECT_FILE} wins"),)
        return (ConfigFile("project", own, found=True, data=data), *(shadowed if pyproject.is_file() else ()))
    prefix = ".".join(PYPROJECT_TABLE)
    whole = read(pyproject, hint=f"phi-backends reads its [{prefix}] table; fix the file or add a {PROJECT_FILE}")
    table: Any = whole or {}
    for part in PYPROJECT_TABLE:
        table = table.get(part) if isinstance(table, Mapping) else None
    missing = ConfigFile("project", own)
    if table is None:
        note = f"no [{prefix}] table" if whole is not None else ""
        return (missing, ConfigFile("project", pyproject, prefix, note=note))
    if not isinstance(table, Mapping):
        raise ConfigError(f"{pyproject}, key {prefix}: must be a table; write it as [{prefix}]")
    return (ConfigFile("project", pyproject, prefix, found=True, data=table), missing)


def read(path: Path, *, hint: str = "fix the file or remove it") -> Mapping[str, Any] | None:
    """The parsed TOML document at ``path``, or None when there is no such file."""
    try:
        info = path.stat()
    except OSError:
        return None
    if not path.is_file() and str(path) != os.devnull:
        raise ConfigError(f"config file {path} is a folder or device, not a file; remove it or use a TOML file there")
    return _parse(path, info.st_mtime_ns, info.st_size, hint)


@functools.lru_cache(maxsize=16)
def _parse(path: Path, mtime: int, size: int, hint: str) -> Mapping[str, Any]:
    """Parsed once per version of the file (``load`` reads the config, and the catalogue, often)."""
    del mtime, size  # the cache key only
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"cannot read config file {path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}; check its permissions") from None
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cannot read config file {path}: invalid TOML: {exc}; {hint}") from None
    except RecursionError:  # tomllib parses nested arrays and tables recursively
        raise ConfigError(
            f"cannot read config file {path}: its arrays or tables are nested too deeply "
            f"(past Python's recursion limit of {sys.getrecursionlimit()}); {hint}"
        ) from None
    return data
