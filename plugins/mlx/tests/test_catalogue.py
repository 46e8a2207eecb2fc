"""Catalogue names resolve to the published mlx-community repositories, downloaded whole.

A fake Hugging Face Hub (tests/fakehub.py) serves the tiny Phi-3's 4-bit MLX folder under the
name the built-in catalogue gives Phi-3-mini-4k-instruct's MLX artifact, so the real
huggingface-hub client downloads it and the real engine runs it. The hub client reads its
environment once per process, so each run is a CLI subprocess.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from phi_backends.models.catalogue import BUILTIN_CATALOGUE
from phi_backends.testing import SCRIPT_TEXT
from tests.bad_inputs import expect_cli_error
from tests.cli import run_cli
from tests.fakehub import FakeHub

MODEL = "phi-3-mini-4k-instruct"
REPO = BUILTIN_CATALOGUE[MODEL].artifacts["mlx"].repo
GREEDY = ["--temperature", "0", "--repeat-penalty", "1", "--json"]


@pytest.fixture
def hub(tiny_phi3_mlx_4bit: Path) -> Iterator[FakeHub]:
    assert REPO == "mlx-community/Phi-3-mini-4k-instruct-4bit"
    files = {item.name: item for item in tiny_phi3_mlx_4bit.iterdir() if item.is_file()}
    with FakeHub({REPO: files}) as server:
        yield server


def run(
    hub: FakeHub, home: Path, *extra_env: tuple[str, str], args: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(home), "HF_HUB_DISABLE_PROGRESS_BARS": "1", **dict(extra_env)}
    return run_cli("run", "--model", MODEL, "--backend", "mlx", *GREEDY, *args, env=env, timeout=300)


def test_catalogue_name_downloads_the_mlx_community_repo_and_runs_it(hub: FakeHub, tmp_path: Path) -> None:
    result = run(hub, tmp_path / "hf")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["text"] == SCRIPT_TEXT and out["backend"] == "mlx" and out["finish_reason"] == "stop"
    downloads = hub.hits("GET", "/resolve/")
    assert downloads == len(hub.repos[REPO].files), "every file of the repository, once"
    # the second run needs no network at all
    again = run(hub, tmp_path / "hf", ("HF_HUB_OFFLINE", "1"))
    assert again.returncode == 0 and json.loads(again.stdout)["text"] == SCRIPT_TEXT, again.stderr
    assert hub.hits("GET", "/resolve/") == downloads


def test_bad_option_fails_before_the_download(hub: FakeHub, tmp_path: Path) -> None:
    result = run(hub, tmp_path / "hf", args=("-O", "kv_bits=7"))
    what = "-O kv_bits=7 for a catalogue MLX model that is not downloaded yet"
    expect_cli_error(result, 2, "kv_bits must be one of", what=what)
    assert hub.hits("GET", "/resolve/") == 0, "nothing is downloaded for an option that cannot work"
