"""``phi-backends config``: the effective configuration and where each value came from.

Also home of the flags that ``run`` and ``config`` share, and of :func:`flags`, which turns them
into the configuration's flag layer for both: ``config`` shows the merge that ``run`` performs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..models.catalogue import DEFAULT_MODEL, OFFLINE_MODEL, CatalogueEntry
from ..sampling import SamplingConfig

if TYPE_CHECKING:
    from ..config import Config, Flags
    from ..config_files import ConfigFile

__all__ = ["SAMPLING_FIELDS", "add_flags", "add_parser", "add_sampling_flags", "command", "flags"]

SAMPLING_FIELDS = tuple(f.name for f in dataclasses.fields(SamplingConfig))
COMMENT_COLUMN = 40
#: The spellings users of llama.cpp, ollama, llm and mlx_lm type, next to ours.
SAMPLING_ALIASES = {"max_tokens": ("-n",), "seed": ("-s",), "temperature": ("--temp",)}


def add_sampling_flags(group: argparse._ArgumentGroup) -> None:
    """One flag per :class:`SamplingConfig` field (``--top-p`` ...), None when not given."""
    for field in dataclasses.fields(SamplingConfig):
        flag = "--" + field.name.replace("_", "-")
        spellings = (*SAMPLING_ALIASES.get(field.name, ()), flag)
        default = field.default if field.default is not dataclasses.MISSING else None
        shown = "unset" if default is None or default == () else default
        help_text = f"{field.metadata.get('help', '')} (default: the config's [sampling], else {shown})"
        if field.name in ("stop", "logit_bias"):
            group.add_argument(
                flag,
                action="append",
                default=None,
                help=help_text,
                metavar="ID=BIAS" if field.name == "logit_bias" else None,
            )
        elif field.type in (bool, "bool"):
            group.add_argument(flag, action="store_const", const=True, default=None, help=help_text)
        else:
            kind = float if "float" in str(field.type) else int
            group.add_argument(*spellings, type=kind, default=None, dest=field.name, help=help_text)


def add_flags(parser: argparse.ArgumentParser, *, several_models: bool = False) -> None:
    """The flags of ``run`` that set configuration values; ``config`` takes the same ones.
    ``several_models``: ``--model`` may be repeated, each ``NAME=MODEL`` or ``MODEL`` (``serve``)."""
    what = f"catalogue name, local path or hub repo id (default: the config's, else {DEFAULT_MODEL}; offline: {OFFLINE_MODEL})"
    if several_models:
        parser.add_argument(
            "-m",
            "--model",
            action="append",
            default=None,
            metavar="[NAME=]MODEL",
            help=f"a model to serve, under NAME in requests (default: MODEL as given); repeatable. MODEL: {what}",
        )
    else:
        parser.add_argument("-m", "--model", default=None, help=what)
    parser.add_argument(
        "-b",
        "--backend",
        default=None,
        help="llama-cpp, onnx or mlx (default: the config's, else chosen for the model)",
    )
    parser.add_argument(
        "--provider",
        default=None,
        help="ONNX Runtime GenAI execution provider: cpu, cuda, dml, ... (also picks a catalogue model's sub-folder)",
    )
    parser.add_argument(
        "--template",
        default=None,
        help="chat template: phi3, phi3.5, phi4, phi4-mini, chatml, or auto for the model's own "
        "(default: the config's, else the model's)",
    )
    parser.add_argument(
        "-O",
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="engine option of the backend that runs, e.g. n_ctx=8192 or n_gpu_layers=-1; repeatable "
        "(over the config's table for that backend, key by key)",
    )
    parser.add_argument(
        "--platform",
        default=None,
        metavar="SPEC",
        help="the platform the automatic backend choice assumes, e.g. linux-cuda (default: detected; docs/choice.md)",
    )
    add_sampling_flags(parser.add_argument_group("sampling (see docs/sampling.md for the exact semantics)"))


def flags(args: argparse.Namespace) -> tuple[Flags, Flags]:
    """The flags of ``args`` as the configuration's flag layer: the config's keys (for
    :func:`phi_backends.config.resolve`), and the engine options for the backend that runs."""
    keys: dict[str, tuple[str, Any]] = {
        key: (f"--{key}", getattr(args, key)) for key in ("model", "backend", "platform", "template")
    }
    for name in SAMPLING_FIELDS:
        keys[f"sampling.{name}"] = ("--" + name.replace("_", "-"), getattr(args, name))
    options = {key: (f"-O {key}", value) for key, value in map(_parse_option, args.option)}
    if args.provider is not None:
        given = options.setdefault("provider", ("--provider", args.provider))[1]
        if given != args.provider:
            raise UsageError(f"--provider {args.provider} and -O provider={given} disagree; give one")
    return keys, options


def _parse_option(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--option takes KEY=VALUE, got {item!r}")
    try:
        value: Any = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):  # not JSON (or nested past the stack): the text as is
        value = raw
    return key.strip().replace("-", "_"), value


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
    # run's flags, to see their effect: the merge shown is the one run performs with them
    add_flags(parser)


def command(args: argparse.Namespace) -> int:
    from .. import config

    keys, options = flags(args)
    cfg = config.resolve(keys)
    if options:  # engine options belong to the backend that runs: find it as run does (named, or chosen)
        from ..api import configure

        cfg = configure(keys, options)[0]
    checked = _check(cfg) if args.check else None
    if args.files:
        rows = [_file_row(f) for f in cfg.files]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for r in rows:
                where = r["path"] + (f" [{r['table']}]" if r["table"] else "")
                print(f"{r['layer']:<8} {where:<60} {r['status']}")
            if checked:
                print(f"check: passed ({checked['summary']})")
        return 0
    if args.json:
        print(json.dumps({**_as_json(cfg), **({"check": checked} if checked else {})}, indent=2, ensure_ascii=False))
    else:
        print("\n".join(_lines(cfg)))
        if checked:  # last, as a TOML comment: the output stays a valid config file
            print(f"\n# check: passed ({checked['summary']})")
    return 0


def _check(cfg: Config) -> dict[str, Any]:
    """What resolving the config does not check, because it needs the engines or the catalogue.
    A failure raises (one error line; exit 2 for a wrong value, 1 for a backend that cannot run
    here); a pass is returned as a summary of what was checked."""
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
    tables: list[str] = []
    for name in cfg.backend_tables():
        backend = installed.get(name)
        if backend is None:
            continue  # options for a backend that is not installed are used only once it is
        availability = backend.availability()
        if not availability.ok:
            raise BackendUnavailableError(
                f"cannot check the [{name}] options: backend {name!r} cannot run here: {availability.reason}"
            )
        cfg.check_options(backend)  # the files' values, each named by file and key
        backend.validate_options(cfg.options(name))  # with the -O flags, as run merges them
        tables.append(name)
    backend_text = cfg.backend or "auto"
    options_text = f"options of {', '.join(f'[{t}]' for t in tables)}" if tables else "no backend options"
    summary = f"model {cfg.model}, backend {backend_text}, {options_text}"
    return {"passed": True, "model": cfg.model, "backend": cfg.backend, "tables": tables, "summary": summary}


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
