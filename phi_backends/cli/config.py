"""``phi-backends config``: the effective configuration and where each value came from.

Also home of the flags that ``run`` and ``config`` share (the sampling flags), so that both
read a flag the same way.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..models.catalogue import CatalogueEntry
from ..sampling import SamplingConfig

if TYPE_CHECKING:
    from ..config import Config
    from ..config_files import ConfigFile

__all__ = ["SAMPLING_FIELDS", "add_parser", "add_sampling_flags", "command", "config_flags", "sampling_flags"]

SAMPLING_FIELDS = tuple(f.name for f in dataclasses.fields(SamplingConfig))
COMMENT_COLUMN = 40


def add_sampling_flags(group: argparse._ArgumentGroup) -> None:
    """One flag per :class:`SamplingConfig` field (``--top-p`` ...), None when not given."""
    for field in dataclasses.fields(SamplingConfig):
        flag = "--" + field.name.replace("_", "-")
        default = field.default if field.default is not dataclasses.MISSING else None
        shown = "unset" if default is None or default == () else default
        help_text = f"{field.metadata.get('help', '')} (default: the config's [sampling], else {shown})"
        if field.name == "stop":
            group.add_argument(flag, action="append", default=None, help=help_text)
        else:
            kind = float if "float" in str(field.type) else int
            group.add_argument(flag, type=kind, default=None, dest=field.name, help=help_text)


def sampling_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The sampling fields given as flags (checked: a bad value fails here, before any loading)."""
    given = {name: getattr(args, name) for name in SAMPLING_FIELDS if getattr(args, name) is not None}
    SamplingConfig(**given)
    return given


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "config",
        help="show the effective configuration and where each value came from",
        description="Show the effective configuration: each value with where it came from "
        "(flag, environment variable, project file, user file or default). Precedence: "
        "flags > environment > project (./phi-backends.toml, else [tool.phi-backends] in ./pyproject.toml) "
        "> user file > defaults. See docs/config.md.",
    )
    parser.add_argument("--json", action="store_true", help="print the settings, their origins and the files as JSON")
    parser.add_argument(
        "--files", action="store_true", help="list only the config files looked at, in precedence order"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="also check what needs the engines: each backend table's options (imports the engine) and the model name",
    )
    flags = parser.add_argument_group("flags to see their effect (the same as run's)")
    flags.add_argument("-m", "--model", default=None)
    flags.add_argument("-b", "--backend", default=None)
    flags.add_argument("--platform", default=None, metavar="SPEC")
    flags.add_argument("--template", default=None)
    add_sampling_flags(parser.add_argument_group("sampling flags"))


def config_flags(args: argparse.Namespace) -> dict[str, tuple[str, Any]]:
    """The config-affecting flags of ``args`` as :func:`phi_backends.config.resolve` takes them."""
    flags: dict[str, tuple[str, Any]] = {
        key: (f"--{key}", getattr(args, key, None)) for key in ("model", "backend", "platform", "template")
    }
    for name in SAMPLING_FIELDS:
        flags[f"sampling.{name}"] = ("--" + name.replace("_", "-"), getattr(args, name, None))
    return flags


def command(args: argparse.Namespace) -> int:
    from .. import config

    cfg = config.resolve(config_flags(args))
    if args.check:
        _check(cfg)
    if args.files:
        rows = [_file_row(f) for f in cfg.files]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for r in rows:
                where = r["path"] + (f" [{r['table']}]" if r["table"] else "")
                print(f"{r['layer']:<8} {where:<60} {r['status']}")
        return 0
    if args.json:
        print(json.dumps(_as_json(cfg), indent=2, ensure_ascii=False))
    else:
        print("\n".join(_lines(cfg)))
    return 0


def _check(cfg: Config) -> None:
    """What resolving the config does not check, because it needs the engines or the catalogue."""
    from .. import models, plugins
    from ..errors import BackendUnavailableError, PhiBackendsError

    try:
        models.classify(cfg.model)
    except PhiBackendsError as exc:
        raise cfg.blame("model", exc) from None
    if cfg.backend is not None:
        try:
            plugins.get_backend(cfg.backend)
        except PhiBackendsError as exc:
            raise cfg.blame("backend", exc) from None
    installed = plugins.backends()
    for name in cfg.backend_tables():
        backend = installed.get(name)
        if backend is None:
            continue  # options for a backend that is not installed are used only once it is
        availability = backend.availability()
        if not availability.ok:
            raise BackendUnavailableError(
                f"cannot check the [{name}] options: backend {name!r} cannot run here: {availability.reason}"
            )
        cfg.check_options(backend)


# -- text -----------------------------------------------------------------------------------------


def _lines(cfg: Config) -> list[str]:
    from ..selection import platform

    lines = ["# effective configuration; precedence: flags > environment > project file > user file > defaults"]
    for f in cfg.files:
        row = _file_row(f)
        where = row["path"] + (f" [{row['table']}]" if row["table"] else "")
        lines.append(f"# {row['layer']} file: {where} ({row['status']})")
    lines.append("")
    notes = {
        "backend": "auto: chosen for the model and platform",
        "backends": "the built-in order",
        "platform": f"auto: {platform.detect().describe()}",
        "template": "the model's own (or the catalogue's)",
    }
    for key in ("model", "backend", "backends", "platform", "template"):
        setting = cfg[key]
        value = "auto" if setting.value is None else setting.value
        origin = str(setting.origin)
        if setting.origin.layer == "default" and key in notes:
            origin = f"default ({notes[key]})"
        lines.append(_line(f"{key} = {_toml(value)}", origin))
    lines += ["", "[sampling]"]
    for setting in cfg.table("sampling"):
        name = setting.key.split(".", 1)[1]
        text = f"# {name} unset" if setting.value is None else f"{name} = {_toml(setting.value)}"
        lines.append(_line(text, str(setting.origin)))
    for name in cfg.backend_tables():
        lines += ["", f"[{name}]"]
        for setting in cfg.table(name):
            lines.append(_line(f"{setting.key.split('.', 1)[1]} = {_toml(setting.value)}", str(setting.origin)))
    for setting in cfg.table("models"):
        entry: CatalogueEntry = setting.value
        lines += ["", _line(f"[{setting.key}]", str(setting.origin))]
        lines += [f"{fmt} = {_toml(a.describe())}" for fmt, a in entry.artifacts.items()]
        if entry.template:
            lines.append(f"template = {_toml(entry.template)}")
    return lines


def _line(text: str, origin: str) -> str:
    return f"{text:<{COMMENT_COLUMN}} # {origin}"


def _toml(value: Any) -> str:
    """``value`` written as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_toml(v)}" for k, v in value.items()) + " }" if value else "{}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))


def _key(key: str) -> str:
    return key if key and all(c.isalnum() or c in "-_" for c in key) else json.dumps(key)


# -- JSON -----------------------------------------------------------------------------------------


def _as_json(cfg: Config) -> dict[str, Any]:
    from ..config import LAYERS

    settings = {}
    for key, setting in cfg.settings.items():
        value = setting.value
        if isinstance(value, CatalogueEntry):
            value = {
                "formats": {fmt: a.describe() for fmt, a in value.artifacts.items()},
                "template": value.template,
                "aliases": list(value.aliases),
            }
        elif isinstance(value, tuple):
            value = list(value)
        settings[key] = {"value": value, "origin": setting.origin.as_dict()}
    return {"precedence": list(LAYERS), "files": [_file_row(f) for f in cfg.files], "settings": settings}


def _file_row(file: ConfigFile) -> dict[str, Any]:
    status = "in use" if file.found else (file.note or "not found")
    return {
        "layer": file.layer,
        "path": str(file.path),
        "table": file.prefix or None,
        "found": file.found,
        "status": status,
    }
