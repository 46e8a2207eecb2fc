"""A small, real HTTP server that the real ``huggingface_hub`` client can download from.

Point ``HF_ENDPOINT`` at :attr:`FakeHub.url` (before ``huggingface_hub`` is first imported in the
process that downloads: the client reads its environment variables once, at import) and the
client's own code paths run for real: ``hf_hub_download``, ``snapshot_download``,
``HfApi.model_info`` / ``list_repo_files``, its cache, its offline mode and its error
classification. The server answers what ``huggingface_hub`` 2.4.0 asks for:

* ``HEAD``/``GET /{repo_id}/resolve/{revision}/{filename}``: the file, with ``X-Repo-Commit``,
  a quoted ``ETag`` (the sha256 of the content, as the Hub gives for LFS files),
  ``Content-Length`` and ``Range`` support (``206`` + ``Content-Range``). No ``X-Xet-*`` header
  is ever sent, so the client never tries the Xet protocol.
* ``GET /api/models/{repo_id}`` and ``/api/models/{repo_id}/revision/{revision}``: the model info
  (``sha``, ``siblings``), used by ``model_info`` and ``snapshot_download``.
* ``GET /api/models/{repo_id}/tree/{revision}[/{path}]?recursive=...``: the tree listing, used by
  ``list_repo_files`` / ``list_repo_tree`` and ``snapshot_download``.
* ``GET /api/agent-harnesses``: an empty registry. The client fetches it (at most once a day,
  cached in ``$HF_HOME``) to build its user agent, unless ``HF_HUB_DISABLE_TELEMETRY`` is set.

Errors carry the ``X-Error-Code`` header the client classifies them by (see
``huggingface_hub.utils._http.hf_raise_for_status``): ``RepoNotFound``, ``RevisionNotFound``,
``EntryNotFound`` (with ``X-Repo-Commit``, as the Hub sends, so the client caches the absence) and
``GatedRepo``.

Usage::

    with FakeHub({"org/repo": {"model.gguf": b"GGUF..."}}) as hub:
        env["HF_ENDPOINT"] = hub.url
        ...
        assert hub.hits("GET", "/resolve/") == 1
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["FakeHub"]

FileSource = Path | bytes

_CHUNK = 1 << 20


class _Repo:
    """One repository: its files, a commit sha and per-file hashes (computed once)."""

    def __init__(self, repo_id: str, files: Mapping[str, FileSource]) -> None:
        self.repo_id = repo_id
        self.files: dict[str, FileSource] = dict(files)
        self._sha256: dict[str, str] = {}
        self._git_oid: dict[str, str] = {}
        digest = hashlib.sha1(repo_id.encode())
        for name in sorted(self.files):
            digest.update(name.encode() + b"\0" + self.sha256(name).encode())
        self.commit = digest.hexdigest()

    def size(self, name: str) -> int:
        source = self.files[name]
        return len(source) if isinstance(source, bytes) else source.stat().st_size

    def chunks(self, name: str, start: int, end: int) -> Iterable[bytes]:
        """The bytes ``start`` to ``end`` (inclusive), in chunks."""
        source = self.files[name]
        if isinstance(source, bytes):
            yield source[start : end + 1]
            return
        with source.open("rb") as handle:
            handle.seek(start)
            left = end + 1 - start
            while left > 0:
                chunk = handle.read(min(_CHUNK, left))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk

    def sha256(self, name: str) -> str:
        if name not in self._sha256:
            digest = hashlib.sha256()
            for chunk in self.chunks(name, 0, self.size(name) - 1):
                digest.update(chunk)
            self._sha256[name] = digest.hexdigest()
        return self._sha256[name]

    def git_oid(self, name: str) -> str:
        if name not in self._git_oid:
            digest = hashlib.sha1(f"blob {self.size(name)}\0".encode())
            for chunk in self.chunks(name, 0, self.size(name) - 1):
                digest.update(chunk)
            self._git_oid[name] = digest.hexdigest()
        return self._git_oid[name]

    def folders(self) -> set[str]:
        found: set[str] = set()
        for name in self.files:
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                found.add("/".join(parts[:i]))
        return found


class FakeHub:
    """A Hugging Face Hub stand-in serving ``{repo_id: {filename: Path | bytes}}`` on 127.0.0.1.

    Args:
        files: the repositories and their files (``filename`` may contain ``/`` for sub-folders).
        gated: repositories whose files need ``Authorization: Bearer <token>``; maps repo id to
            the token that unlocks them. Without it the server answers ``401`` + ``GatedRepo``,
            with another token ``403`` + ``GatedRepo``, as the Hub does.

    Attributes:
        url: the endpoint to put in ``HF_ENDPOINT`` (set by :meth:`start`).
        requests: every request received, as ``(method, path)`` with the path unquoted and
            without its query string.
        error_status: when set, every request is answered with this HTTP status (e.g. 503).
    """

    def __init__(
        self,
        files: Mapping[str, Mapping[str, FileSource]],
        *,
        gated: Mapping[str, str] | None = None,
    ) -> None:
        self.repos: dict[str, _Repo] = {repo_id: _Repo(repo_id, repo) for repo_id, repo in files.items()}
        self.gated: dict[str, str] = dict(gated or {})
        self.requests: list[tuple[str, str]] = []
        self.error_status: int | None = None
        self.url = ""
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake_hub = hub

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(target=server.serve_forever, name="fakehub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- inspection ------------------------------------------------------------------------

    def record(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))

    def hits(self, method: str | None = None, contains: str = "") -> int:
        """How many requests had this method (any if ``None``) and a path containing ``contains``."""
        with self._lock:
            return sum(1 for m, p in self.requests if (method is None or m == method) and contains in p)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()


class _Handler(BaseHTTPRequestHandler):
    fake_hub: FakeHub
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean

    # -- dispatch --------------------------------------------------------------------------

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def _dispatch(self, *, head: bool) -> None:
        split = urlsplit(self.path)
        raw_path = split.path
        hub = self.fake_hub
        hub.record(self.command, unquote(raw_path))
        if hub.error_status is not None:
            self._error(hub.error_status, None, f"Fake hub answers {hub.error_status}", head=head)
            return
        if raw_path == "/api/agent-harnesses" and not head:
            # Asked once a day by the client's user-agent code (unless HF_HUB_DISABLE_TELEMETRY).
            self._json({"standardEnvVars": [], "harnesses": {}})
            return
        if raw_path.startswith("/api/models/"):
            if head:
                self._error(405, None, "Method not allowed", head=True)
            else:
                self._api(raw_path[len("/api/models/") :], parse_qs(split.query))
            return
        if "/resolve/" in raw_path:
            self._resolve(raw_path, head=head)
            return
        self._error(404, None, "Not found", head=head)

    # -- /api/models/... -------------------------------------------------------------------

    def _api(self, rest: str, query: dict[str, list[str]]) -> None:
        if "/tree/" in rest:
            repo_id, after = rest.split("/tree/", 1)
            revision, _, folder = after.partition("/")
            self._tree(unquote(repo_id), unquote(revision), unquote(folder), query)
            return
        if "/revision/" in rest:
            repo_id, revision = rest.split("/revision/", 1)
        else:
            repo_id, revision = rest, "main"
        repo = self._repo(unquote(repo_id), unquote(revision), head=False)
        if repo is None:
            return
        body = {
            "_id": repo.commit[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else None,
            "sha": repo.commit,
            "lastModified": "2024-01-01T00:00:00.000Z",
            "createdAt": "2024-01-01T00:00:00.000Z",
            "private": False,
            "gated": "manual" if repo.repo_id in self.fake_hub.gated else False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": [{"rfilename": name} for name in sorted(repo.files)],
        }
        self._json(body)

    def _tree(self, repo_id: str, revision: str, folder: str, query: dict[str, list[str]]) -> None:
        repo = self._repo(repo_id, revision, head=False)
        if repo is None:
            return
        recursive = query.get("recursive", ["False"])[0].lower() in ("1", "true")
        prefix = f"{folder.strip('/')}/" if folder.strip("/") else ""
        if prefix and prefix[:-1] not in repo.folders():
            self._error(404, "EntryNotFound", f"{folder} does not exist on {revision}", head=False, repo=repo)
            return

        def wanted(path: str) -> bool:
            if not path.startswith(prefix) or path == prefix[:-1]:
                return False
            return recursive or "/" not in path[len(prefix) :]

        entries: list[dict[str, object]] = [
            {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}
            for path in sorted(repo.folders())
            if wanted(path)
        ]
        for name in sorted(repo.files):
            if wanted(name):
                entries.append(
                    {
                        "type": "file",
                        "oid": repo.git_oid(name),
                        "size": repo.size(name),
                        "path": name,
                        "lfs": {"oid": repo.sha256(name), "size": repo.size(name), "pointerSize": 134},
                    }
                )
        self._json(entries)

    # -- /{repo_id}/resolve/{revision}/{filename} -------------------------------------------

    def _resolve(self, raw_path: str, *, head: bool) -> None:
        left, right = raw_path.split("/resolve/", 1)
        repo_id = unquote(left.lstrip("/"))
        revision, _, raw_name = right.partition("/")
        name = unquote(raw_name)
        repo = self._repo(repo_id, unquote(revision), head=head)
        if repo is None:
            return
        token = self.fake_hub.gated.get(repo.repo_id)
        if token is not None:
            auth = self.headers.get("Authorization")
            if auth != f"Bearer {token}":
                status = 401 if auth is None else 403
                message = (
                    f"Access to model {repo.repo_id} is restricted. You must have access to it "
                    "and be authenticated to access it. Please log in."
                )
                self._error(status, "GatedRepo", message, head=head, repo=repo)
                return
        if name not in repo.files:
            self._error(404, "EntryNotFound", "Entry not found", head=head, repo=repo)
            return

        size = repo.size(name)
        start, end = 0, size - 1
        status = 200
        range_header = self.headers.get("Range")
        if range_header and size > 0:
            parsed = _parse_range(range_header, size)
            if parsed is None:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start, end = parsed
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end + 1 - start if size else 0))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{repo.sha256(name)}"')
        self.send_header("X-Repo-Commit", repo.commit)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if head or size == 0:
            return
        for chunk in repo.chunks(name, start, end):
            self.wfile.write(chunk)

    # -- helpers ---------------------------------------------------------------------------

    def _repo(self, repo_id: str, revision: str, *, head: bool) -> _Repo | None:
        """The repository at ``revision``, or ``None`` after answering the error."""
        repo = self.fake_hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found", head=head)
            return None
        if revision not in ("main", repo.commit):
            self._error(404, "RevisionNotFound", "Invalid rev id: " + revision, head=head, repo=repo)
            return None
        return repo

    def _json(self, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(
        self,
        status: int,
        code: str | None,
        message: str,
        *,
        head: bool,
        repo: _Repo | None = None,
    ) -> None:
        data = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if code is not None:
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
        if repo is not None:
            self.send_header("X-Repo-Commit", repo.commit)
        self.end_headers()
        if not head:
            self.wfile.write(data)


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` as inclusive ``(start, end)``; ``None`` if unsatisfiable."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            length = int(last)
            if length <= 0:
                return None
            return max(size - length, 0), size - 1
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)
