"""Managing downloaded models: what ``run`` would download, what the cache holds, freeing space.

``phi-backends pull``, ``models`` and ``rm`` are built on this module. Downloads go through
:func:`phi_backends.models.resolve` (the very call ``run`` makes), so a pulled model is what
``run`` then finds in the cache. What is cached is read with ``huggingface_hub``'s own cache scan
(:func:`huggingface_hub.scan_cache_dir`) and removed with its deletion strategy, so this module
never guesses at the cache's layout; like :mod:`.hub`, it imports ``huggingface_hub`` lazily.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import config, plugins
from ..backend import ModelQuery, ModelSource
from ..errors import BackendUnavailableError, PhiBackendsError, RuntimeFailure, UsageError
from . import hub
from .catalogue import Artifact, CatalogueEntry
from .resolve import catalogue, package_file, query, resolve

__all__ = [
    "CacheIndex",
    "Pulled",
    "Removal",
    "Target",
    "backend_formats",
    "plan_removal",
    "pull",
    "scan",
    "targets",
]


# -- what an entry is made of --------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One artifact of a catalogue entry as one backend uses it: a hub file or folder, a file a
    Python package ships, or a local path. An ONNX folder used by several providers is one target."""

    entry: str
    format: str
    backend: str | None
    artifact: Artifact
    providers: tuple[str, ...] = ()
    folder: str | None = None  # the sub-folder of ``artifact.repo``, for a per-provider artifact

    @property
    def where(self) -> str:
        """The artifact in words: ``owner/repo/file.gguf``, ``owner/repo/folder/``, a path..."""
        if self.folder:
            return f"{self.artifact.repo}/{self.folder}/"
        if self.artifact.repo and not self.artifact.filename:
            return f"{self.artifact.repo} (the whole repository)"
        return self.artifact.describe()

    def in_repo(self, path: str) -> bool:
        """Is ``path`` (a file's path inside the repository) part of this target?"""
        if self.folder:
            return path.startswith(f"{self.folder}/")
        if self.artifact.filename:
            return path == self.artifact.filename
        return True


def _reader(fmt: str) -> str | None:
    """The backend that reads ``fmt``: an installed one, else the one this project publishes for it."""
    installed = [name for name, backend in plugins.backends().items() if fmt in backend.formats]
    if installed:
        return installed[0]
    known = plugins.model_formats().get(fmt)
    return known.reader if known else None


def targets(entry: CatalogueEntry, backend: str | None = None) -> list[Target]:
    """The artifacts of ``entry``, one per file or folder, for ``backend`` only if named."""
    wanted = set(backend_formats(backend)) if backend else None
    found: list[Target] = []
    for fmt, artifact in entry.artifacts.items():
        if wanted is not None and fmt not in wanted:
            continue
        reader = _reader(fmt)
        if artifact.subfolders:
            by_folder: dict[str, list[str]] = {}
            for provider, folder in artifact.subfolders.items():
                by_folder.setdefault(folder, []).append(provider)
            for folder, providers in by_folder.items():
                found.append(Target(entry.name, fmt, reader, artifact, tuple(providers), folder))
        else:
            found.append(Target(entry.name, fmt, reader, artifact))
    return found


def backend_formats(name: str) -> tuple[str, ...]:
    """The formats backend ``name`` reads: an installed backend says so itself; for one this
    project publishes and that is not installed, the formats declared for it (a model can be
    downloaded before its engine is installed). An unknown name fails with suggestions."""
    installed = plugins.backends()
    if name in installed:
        return tuple(installed[name].formats)
    declared = tuple(fmt.name for fmt in plugins.model_formats().values() if fmt.reader == name)
    if declared:
        return declared
    plugins.get_backend(name)  # raises: unknown (with a suggestion), broken or blocked
    raise UsageError(f"backend {name!r} reads no model format phi-backends knows")  # pragma: no cover


# -- pull ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pulled:
    """Where a model went, and for which backend."""

    source: ModelSource
    backend: str
    provider: str | None
    size: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.source.name,
            "backend": self.backend,
            "format": self.source.format,
            "provider": self.provider,
            "path": str(self.source.path),
            "size": self.size,
        }


def pull(name: str, *, backend: str | None = None, provider: str | None = None, progress: bool = True) -> Pulled:
    """Download what ``phi-backends run --model NAME`` (with the same backend and provider)
    would load, and say where it went. Without ``backend``, the configured one, else the one
    ``run`` would choose here."""
    cfg = config.resolve({"model": ("NAME", name), "backend": ("--backend", backend)})
    found = query(name)
    chosen = cfg.backend
    options: Mapping[str, Any] = {}
    if chosen is None:
        chosen, options = _automatic_choice(found, cfg)
    formats = backend_formats(chosen)
    _check_reads(found, chosen, formats)
    chosen_provider = provider or cfg.options(chosen).get("provider") or options.get("provider")
    source = resolve(found, formats=formats, provider=chosen_provider, progress=progress)
    provider_used = chosen_provider or ("cpu" if _has_subfolders(found, source.format) else None)
    return Pulled(source, chosen, provider_used, _size(source.path))


def _automatic_choice(found: ModelQuery, cfg: config.Config) -> tuple[str, Mapping[str, Any]]:
    from ..selection import choice

    try:
        picked = choice.choose(found, preference=cfg.backends, platform=cfg.platform_for_choice())
    except PhiBackendsError as exc:
        raise BackendUnavailableError(
            f"{str(exc).rstrip('.')}; to download for a backend anyway, name it with --backend"
        ) from None
    return picked.backend.name, picked.options


def _check_reads(found: ModelQuery, backend: str, formats: Sequence[str]) -> None:
    """A backend that cannot use the model fails before anything is downloaded."""
    if not found.formats or found.offers(formats):
        return
    have = ", ".join(sorted(found.formats))
    readers = sorted({r for f in found.formats if (r := _reader(f))})
    raise UsageError(
        f"the {backend} backend reads {', '.join(formats)}, and {found.name} comes in {have} only; "
        f"use --backend {' or --backend '.join(readers) or 'with one of those formats'}"
    )


def _has_subfolders(found: ModelQuery, fmt: str) -> bool:
    return found.entry is not None and bool(found.entry.artifacts[fmt].subfolders)


def _size(path: Path) -> int:
    """Bytes of a file, or of every file below a folder (the cache links them: followed)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -- the cache -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CachedCopy:
    """What the cache holds of one target: its files' bytes, where they are, and how many of
    the target's files are still missing (known for folders ``snapshot_download`` fetched)."""

    size: int
    path: Path
    files: int
    missing: int = 0


@dataclass
class CacheIndex:
    """The Hugging Face cache as ``scan_cache_dir`` sees it (empty when the folder does not exist)."""

    folder: Path
    info: Any = None  # huggingface_hub.HFCacheInfo
    repos: dict[str, Any] = field(default_factory=dict)  # repo id -> CachedRepoInfo

    def copy_of(self, target: Target) -> CachedCopy | None:
        """The cached copy of ``target`` (hub targets; the revision ``main`` points to first)."""
        repo = self.repos.get(target.artifact.repo or "")
        if repo is None:
            return None
        for revision in sorted(repo.revisions, key=lambda r: ("main" not in r.refs, -r.last_modified)):
            have = {f.file_path.relative_to(revision.snapshot_path).as_posix(): f for f in revision.files}
            files = [f for path, f in have.items() if target.in_repo(path)]
            if not files:
                continue
            if target.folder:
                where = revision.snapshot_path / target.folder
            elif target.artifact.filename:
                where = revision.snapshot_path / target.artifact.filename
            else:
                where = revision.snapshot_path
            wanted = self._listed(repo.repo_id, revision.commit_hash, target)
            missing = len([path for path in wanted if path not in have])
            return CachedCopy(sum(f.size_on_disk for f in files), where, len(files), missing)
        return None

    def _listed(self, repo_id: str, commit: str, target: Target) -> list[str]:
        """The target's files in the repository's listing that ``snapshot_download`` cached
        (none known for a single file, or when no listing was cached)."""
        if target.artifact.filename:
            return []
        from huggingface_hub import get_cached_repo_tree

        try:
            tree = get_cached_repo_tree(repo_id, revision=commit, cache_dir=self.folder)
        except Exception:  # no listing cached: what is there is all that can be told
            return []
        return [entry.path for entry in tree if target.in_repo(entry.path) and not hasattr(entry, "tree_id")]

    def partial(self, repo_id: str) -> list[Any]:
        """Interrupted downloads (``*.incomplete`` blobs) of ``repo_id``."""
        if self.info is None:
            return []
        root = self.folder / _repo_folder(repo_id)
        return [f for f in self.info.incomplete_files if root in f.file_path.parents]


def _repo_folder(repo_id: str) -> str:
    from huggingface_hub.file_download import repo_folder_name

    return str(repo_folder_name(repo_id=repo_id, repo_type="model"))


def scan() -> CacheIndex:
    """Read the Hugging Face cache (``HF_HUB_CACHE``, else ``$HF_HOME/hub``); no network."""
    folder = hub.hub_cache_dir()
    if not folder.is_dir():
        return CacheIndex(folder)
    from huggingface_hub import scan_cache_dir

    try:
        info = scan_cache_dir(folder)
    except OSError as exc:
        raise RuntimeFailure(
            f"cannot read the Hugging Face cache ({folder}): {exc.strerror or exc}; check its permissions, "
            "or point HF_HOME / HF_HUB_CACHE at another folder"
        ) from None
    repos = {repo.repo_id: repo for repo in info.repos if repo.repo_type == "model"}
    return CacheIndex(folder, info, repos)


def listing(index: CacheIndex) -> list[dict[str, Any]]:
    """Every catalogue entry with its artifacts per backend, whether each is cached, and sizes."""
    rows: list[dict[str, Any]] = []
    for entry in catalogue().values():
        artifacts = [_artifact_row(target, index) for target in targets(entry)]
        cached: dict[str, str | None] = {fmt: None for fmt in entry.artifacts}
        for row in artifacts:
            cached[row["format"]] = cached[row["format"]] or row["path"]
        rows.append(
            {
                "name": entry.name,
                "aliases": list(entry.aliases),
                "description": entry.description,
                "template": entry.template,
                "context_length": entry.context_length,
                "formats": {fmt: artifact.describe() for fmt, artifact in entry.artifacts.items()},
                "cached": cached,  # format -> a cached path or None (the shape `models --json` always had)
                "artifacts": artifacts,
                "cached_size": sum(a["size"] or 0 for a in artifacts if a["cached"]),
                "cache": str(index.folder),
            }
        )
    return rows


def _artifact_row(target: Target, index: CacheIndex) -> dict[str, Any]:
    artifact = target.artifact
    cached: Path | None = None
    size: int | None = None
    missing = 0
    kind = "hub"
    if artifact.package:
        kind = "package"
        cached = package_file(artifact)
    elif artifact.path:
        kind = "path"
        path = Path(artifact.path).expanduser()
        cached = path if path.exists() else None
    else:
        copy = index.copy_of(target)
        if copy is not None:
            cached, size, missing = copy.path, copy.size, copy.missing
    if cached is not None and size is None:
        size = _size(cached)
    partial = sum(f.size_on_disk for f in index.partial(artifact.repo)) if artifact.repo else 0
    return {
        "backend": target.backend,
        "format": target.format,
        "providers": list(target.providers),
        "where": target.where,
        "kind": kind,
        "repo": artifact.repo,
        "cached": cached is not None and not missing,
        "path": str(cached) if cached is not None else None,
        "size": size,
        "missing_files": missing,  # of a folder: files `pull` has still to fetch
        "partial_bytes": partial,
    }


# -- rm --------------------------------------------------------------------------------------------


@dataclass
class Removal:
    """What ``rm`` would delete: whole cached repositories (every revision) and their partial downloads."""

    name: str
    repos: list[Any]  # CachedRepoInfo
    partial: list[Any]  # CachedIncompleteFileInfo
    index: CacheIndex

    @property
    def size(self) -> int:
        return int(sum(r.size_on_disk for r in self.repos) + sum(f.size_on_disk for f in self.partial))

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cache": str(self.index.folder),
            "repos": [
                {"repo": r.repo_id, "path": str(r.repo_path), "files": r.nb_files, "size": r.size_on_disk}
                for r in self.repos
            ],
            "partial_files": [str(f.file_path) for f in self.partial],
            "size": self.size,
        }

    def execute(self) -> None:
        """Delete with ``huggingface_hub``'s own strategy (it removes a repository whose every
        revision goes, refs and all), then the partial downloads it does not track."""
        assert self.index.info is not None or not self.repos
        hashes = [rev.commit_hash for repo in self.repos for rev in repo.revisions]
        # The strategy logs (with a traceback) what it could not delete rather than raising:
        # quiet it, then check what is left and say so in one line.
        cache_logger = logging.getLogger("huggingface_hub.utils._cache_manager")
        level = cache_logger.level
        cache_logger.setLevel(logging.CRITICAL)
        try:
            if hashes:
                self.index.info.delete_revisions(*hashes).execute()
            for partial in self.partial:
                partial.file_path.unlink(missing_ok=True)
        except OSError as exc:
            raise RuntimeFailure(_cannot_delete(exc.filename or "files", self.index.folder, exc.strerror)) from None
        finally:
            cache_logger.setLevel(level)
        left = [r.repo_path for r in self.repos if any(Path(r.repo_path).glob("snapshots/*/*"))]
        if left:
            raise RuntimeFailure(_cannot_delete(left[0], self.index.folder, None))


def _cannot_delete(what: object, folder: Path, reason: str | None) -> str:
    because = f": {reason}" if reason else ""
    return f"cannot delete {what} from the Hugging Face cache ({folder}){because}; check the folder's permissions"


def plan_removal(name: str, *, backend: str | None = None) -> Removal:
    """What ``rm NAME [--backend B]`` frees; raises when there is nothing of it to delete."""
    found = query(name)
    if found.entry is None:
        raise UsageError(
            f"rm takes a catalogue name (see `phi-backends models`), not {found.name!r}; "
            "remove other downloads with `hf cache rm model/OWNER/NAME`, and local files yourself"
        )
    entry = found.entry
    if backend is not None:
        formats = backend_formats(backend)
        if not found.offers(formats):
            raise UsageError(
                f"{entry.name} has no artifact for the {backend} backend (it comes in {', '.join(sorted(found.formats))})"
            )
    chosen = targets(entry, backend)
    hub_targets = [t for t in chosen if t.artifact.repo and not t.artifact.package and not t.artifact.path]
    index = scan()
    repo_ids = list(dict.fromkeys(str(t.artifact.repo) for t in hub_targets))
    repos = [index.repos[r] for r in repo_ids if r in index.repos]
    partial = [f for r in repo_ids for f in index.partial(r)]
    if not repos and not partial:
        raise UsageError(_nothing_cached(entry, backend, chosen, index))
    return Removal(entry.name, repos, partial, index)


def _nothing_cached(entry: CatalogueEntry, backend: str | None, chosen: Iterable[Target], index: CacheIndex) -> str:
    scope = f"{entry.name} for the {backend} backend" if backend else entry.name
    package = next((t.artifact.package for t in chosen if t.artifact.package), None)
    if package is not None:
        return (
            f"{scope} is not in the Hugging Face cache ({index.folder}): it comes in the Python package "
            f"{package}; remove that with pip uninstall {package.replace('_', '-')}"
        )
    local = next((t.artifact for t in chosen if t.artifact.path), None)
    if local is not None:
        return f"{scope} is the local path {local.path}, not a download; delete it yourself if you mean to"
    return (
        f"nothing to remove: {scope} is not in the Hugging Face cache ({index.folder}); "
        "`phi-backends models` shows what is cached"
    )
