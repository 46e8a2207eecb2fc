"""Catalogue names for ONNX models published as one sub-folder per execution provider.

A fake Hugging Face Hub (tests/fakehub.py) serves a repository laid out like Microsoft's ONNX
repos: the same model in a ``cpu-int4`` and a ``cuda-fp16`` sub-folder. A user catalogue entry
points at it. The hub client reads its environment once per process, so each scenario runs the
CLI in a subprocess with ``HF_ENDPOINT`` / ``HF_HOME`` / ``PHI_BACKENDS_CONFIG`` set.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from phi_backends.testing import SCRIPT_TEXT
from tests.bad_inputs import expect_cli_error
from tests.cli import run_cli
from tests.fakehub import FakeHub

REPO = "someone/Tiny-Phi3-onnx"
GREEDY = ["--temperature", "0", "--repeat-penalty", "1"]
CATALOGUE = f"""
[models.tiny-phi3-onnx]
description = "the tiny Phi-3, one ONNX folder per provider"
template = "phi3"
onnx = {{repo = "{REPO}", subfolders = {{cpu = "cpu-int4", cuda = "cuda-fp16"}}}}

[models.tiny-phi3-cuda-only]
description = "the same repository, but only its cuda sub-folder is catalogued"
template = "phi3"
onnx = {{repo = "{REPO}", subfolders = {{cuda = "cuda-fp16"}}}}
"""


@pytest.fixture
def hub(tiny_phi3_onnx: Path) -> Iterator[FakeHub]:
    files = {f"{sub}/{item.name}": item for sub in ("cpu-int4", "cuda-fp16") for item in tiny_phi3_onnx.iterdir()}
    with FakeHub({REPO: files}) as server:
        yield server


@pytest.fixture
def env(hub: FakeHub, tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "config.toml"
    config.write_text(CATALOGUE)
    return {
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "PHI_BACKENDS_CONFIG": str(config),
    }


def run(env: dict[str, str], *args: str, model: str = "tiny-phi3-onnx") -> subprocess.CompletedProcess[str]:
    return run_cli("run", "--model", model, "--backend", "onnx", *args, env=env, timeout=180)


@pytest.mark.parametrize(
    "provider", [["--provider", "cpu"], ["-O", "provider=cpu"], []], ids=["flag", "option", "default"]
)
def test_cpu_downloads_only_the_cpu_subfolder(hub: FakeHub, env: dict[str, str], provider: list[str]) -> None:
    result = run(env, *provider, *GREEDY)
    assert result.returncode == 0, result.stderr
    assert result.stdout == SCRIPT_TEXT + "\n"
    assert hub.hits("GET", "/cpu-int4/model.onnx.data") == 1
    assert hub.hits(None, "cuda-fp16") == 0, "nothing of the cuda sub-folder is fetched"
    downloads = hub.hits("GET", "/resolve/")
    again = run(env, *provider, *GREEDY, "--json")
    assert again.returncode == 0, again.stderr
    assert hub.hits("GET", "/resolve/") == downloads, "the second run uses the cache"


def test_provider_the_catalogue_does_not_publish(hub: FakeHub, env: dict[str, str]) -> None:
    result = run(env, "--provider", "cpu", model="tiny-phi3-cuda-only")
    what = "--provider cpu for a catalogue ONNX model published only for cuda"
    expect_cli_error(result, 2, "published for providers cuda, not 'cpu'", what=what)
    assert hub.hits("GET", "/resolve/") == 0


def test_published_provider_that_cannot_run_here(hub: FakeHub, env: dict[str, str]) -> None:
    from phi_backends import plugins

    if "cuda" in plugins.get_backend("onnx").availability().devices:
        result = run(env, "--provider", "cuda", *GREEDY)
        assert result.returncode == 0 and result.stdout == SCRIPT_TEXT + "\n", result.stderr
        return
    result = run(env, "--provider", "cuda")
    what = "--provider cuda for a catalogue ONNX model, where cuda cannot be used"
    expect_cli_error(result, 1, "'cuda' cannot be used here", "usable here: cpu", what=what)
    assert hub.hits(None, "cuda-fp16") == 0, "the provider is checked before anything is downloaded"
