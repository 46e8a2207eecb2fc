"""Byte-level resume for Hub downloads: a pull cut short continues where it stopped.

Why not ``hf_hub_download`` alone: ``huggingface_hub`` 2.4 downloads each file into a temporary
file unique to the process and deletes it on any failure (its PR 4228, against caches whose
file locks do not hold), so a 2 GB GGUF interrupted at 90% started again from zero. Here a file
is fetched into the cache's own blob store first, through ``huggingface_hub``'s metadata call,
HTTP session, headers (the token) and per-blob file lock, into ``blobs/<etag>.incomplete`` (the
name ``huggingface_hub`` itself used for resuming before 2.4, so its cache scan lists the file
as a partial download and ``rm`` frees it). A later pull asks for the rest with a ``Range``
request; when the file is whole (its size, and its SHA-256 where the etag is one) it becomes
``blobs/<etag>``, and ``hf_hub_download`` / ``snapshot_download`` then find the blob and only
link it into the snapshot.

The price: the file comes over plain HTTP, as ``huggingface_hub`` fetches it when ``hf_xet`` is
not installed, not through Xet's parallel chunk transfer.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from phi_backends.errors import DownloadError

__all__ = ["fetch_blob"]

_CHUNK = 1024 * 1024  # bytes hashed at a time
_RECEIVE = 64 * 1024  # bytes written at a time: an interruption keeps all but the last few
_SHA256_HEX = 64


def fetch_blob(repo_id: str, filename: str, *, revision: str | None, tqdm_class: type[Any] | None) -> None:
    """Put ``filename``'s blob into the cache, continuing a partial one; nothing if it is there.

    Raises whatever ``huggingface_hub``'s requests or the file system raise (the caller
    translates), or :class:`DownloadError` when the bytes received are not the file's.
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.file_download import repo_folder_name
    from huggingface_hub.utils import WeakFileLock  # type: ignore[attr-defined]  # public, lazily exported

    metadata = get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=revision))
    if metadata.etag is None or metadata.size is None:  # nothing to resume against
        return
    folder = repo_folder_name(repo_id=repo_id, repo_type="model")
    blob = Path(constants.HF_HUB_CACHE) / folder / "blobs" / metadata.etag
    if blob.exists():
        return
    partial = blob.with_name(f"{blob.name}.incomplete")
    lock = Path(constants.HF_HUB_CACHE) / ".locks" / folder / f"{metadata.etag}.lock"  # hf_hub_download's
    lock.parent.mkdir(parents=True, exist_ok=True)
    blob.parent.mkdir(parents=True, exist_ok=True)
    with WeakFileLock(lock):
        if blob.exists():  # another process finished it while this one waited
            return
        start = partial.stat().st_size if partial.exists() else 0
        if start > metadata.size:
            start = 0  # not this file's bytes: begin again
        if start < metadata.size:
            _download(metadata.location, partial, start, metadata.size, filename, tqdm_class)
        _verify(partial, metadata.etag, metadata.size, filename)
        os.replace(partial, blob)


def _download(url: str, partial: Path, start: int, size: int, filename: str, tqdm_class: type[Any] | None) -> None:
    """Append to ``partial`` from byte ``start`` (or write it anew where the server ignores the
    Range), with huggingface_hub's session, headers (the token), timeout and progress bar."""
    from huggingface_hub import constants, file_download
    from huggingface_hub.utils import (  # type: ignore[attr-defined]  # public, lazily exported
        build_hf_headers,
        get_session,
        hf_raise_for_status,
    )

    # huggingface_hub's own bar, made as its http_get makes it (shown on a terminal, off with
    # HF_HUB_DISABLE_PROGRESS_BARS): a private helper of the 2.x line pyproject pins
    from huggingface_hub.utils.tqdm import _get_progress_bar_context

    headers = build_hf_headers()
    if start:
        headers["Range"] = f"bytes={start}-"
    timeout = constants.HF_HUB_DOWNLOAD_TIMEOUT
    with get_session().stream("GET", url, headers=headers, follow_redirects=True, timeout=timeout) as response:
        hf_raise_for_status(response)
        if start and response.status_code != 206:
            start = 0  # the server sent the whole file
        progress = _get_progress_bar_context(
            desc=filename,
            log_level=file_download.logger.getEffectiveLevel(),
            total=size,
            initial=start,
            name="huggingface_hub.http_get",
            tqdm_class=tqdm_class,
        )
        with partial.open("ab" if start else "wb") as out, progress as bar:
            for chunk in response.iter_bytes(_RECEIVE):
                out.write(chunk)
                bar.update(len(chunk))


def _verify(partial: Path, etag: str, size: int, filename: str) -> None:
    got = partial.stat().st_size
    if got != size:
        raise DownloadError(
            f"the download of {filename} ended early ({got} of {size} bytes); try again: it continues from there"
        )
    if len(etag) == _SHA256_HEX and all(c in "0123456789abcdef" for c in etag):  # an LFS file: its SHA-256
        digest = hashlib.sha256()
        with partial.open("rb") as data:
            while block := data.read(_CHUNK):
                digest.update(block)
        if digest.hexdigest() != etag:
            partial.unlink(missing_ok=True)
            raise DownloadError(
                f"the downloaded {filename} is not the file the Hub lists (its SHA-256 differs); "
                "it was removed: try again"
            )
