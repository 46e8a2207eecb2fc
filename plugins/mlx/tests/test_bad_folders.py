"""Broken model folders: one line on stderr, the right exit code, no traceback, no crash.

Each case is run as a user runs it (`phi-backends run --backend mlx --model <folder>`, a real
process) and through the Python API (the error type).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from phi_backends_mlx import MlxBackend

import phi_backends as pb
from phi_backends import ModelSource
from phi_backends.errors import ModelFormatError
from phi_backends.testing import SCRIPT_TEXT
from tests.bad_inputs import expect_api_error, expect_cli_error
from tests.cli import run_cli


def copy_model(source: Path, target: Path, *, skip: tuple[str, ...] = ()) -> Path:
    """A copy of a model folder; the weights are linked, not copied, unless a case changes them."""
    target.mkdir()
    for item in source.iterdir():
        if item.name in skip:
            continue
        if item.suffix == ".safetensors":
            os.symlink(item, target / item.name)
        else:
            shutil.copyfile(item, target / item.name)
    return target


def edit_config(folder: Path, **changes: object) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def truncate_weights(folder: Path) -> None:
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data[: len(data) // 2])


def garble_header(folder: Path) -> None:
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data[:8] + b"\xff" * 64 + data[72:])


CASES: dict[str, tuple[str, dict[str, object], Callable[[Path], object], list[str]]] = {
    # name: (the bad input in words, copy_model kwargs, change, words the one-line message must contain)
    "no-config": ("MLX folder without config.json", {"skip": ("config.json",)}, lambda f: None, ["config.json"]),
    "no-weights": (
        "MLX folder without model*.safetensors",
        {"skip": ("model.safetensors",)},
        lambda f: None,
        ["no weights", "model*.safetensors"],
    ),
    "config-not-json": (
        "MLX folder whose config.json is not JSON",
        {},
        lambda f: (f / "config.json").write_text("{not json"),
        ["config.json", "not valid JSON"],
    ),
    "unknown-architecture": (
        "config.json with a model_type mlx-lm does not know",
        {},
        lambda f: edit_config(f, model_type="gpt_imaginary"),
        ["'gpt_imaginary'", "not an architecture mlx-lm"],
    ),
    "shapes-do-not-match": (
        "config.json whose hidden_size does not match the weights",
        {},
        lambda f: edit_config(f, hidden_size=128),
        ["could not load", "shape", "config.json matches the weights"],
    ),
    "truncated-weights": (
        "model.safetensors cut in half",
        {},
        truncate_weights,
        ["model.safetensors", "truncated or corrupt"],
    ),
    "garbled-header": (
        "model.safetensors with a garbled header",
        {},
        garble_header,
        ["model.safetensors", "truncated or corrupt"],
    ),
    "custom-code": (
        "config.json asking for custom model code (model_file)",
        {},
        lambda f: edit_config(f, model_file="evil.py"),
        ["'evil.py'", "trust_remote_code"],
    ),
    "no-tokenizer": (
        "MLX folder without tokenizer.json",
        {"skip": ("tokenizer.json",)},
        lambda f: None,
        ["tokenizer.json"],
    ),
}


@pytest.fixture
def bad_folder(request: pytest.FixtureRequest, tmp_path: Path, tiny_phi3_mlx: Path) -> tuple[Path, str, list[str]]:
    what, kwargs, change, needles = CASES[request.param]
    folder = copy_model(tiny_phi3_mlx, tmp_path / request.param, **kwargs)  # type: ignore[arg-type]
    change(folder)
    return folder, what, needles


@pytest.mark.parametrize("bad_folder", list(CASES), indirect=True)
def test_cli_says_what_is_wrong_in_one_line(bad_folder: tuple[Path, str, list[str]]) -> None:
    folder, what, needles = bad_folder
    result = run_cli("run", "--backend", "mlx", "--model", str(folder), "--max-tokens", "4", "hi", timeout=180)
    # the core refuses a folder without config.json before any backend, in its own words
    expect_cli_error(result, 1, *([] if "no-config" in folder.name else needles), what=what)
    assert result.stdout == ""


@pytest.mark.parametrize("bad_folder", list(CASES), indirect=True)
def test_api_raises_model_format_error(bad_folder: tuple[Path, str, list[str]]) -> None:
    folder, what, needles = bad_folder
    with pytest.raises(ModelFormatError) as raised:
        MlxBackend().load(ModelSource(path=folder, format="mlx", name=folder.name), {})
    expect_api_error(raised.value, ModelFormatError, *needles, what=what)


def test_model_folder_still_loads_after_the_failures(tiny_phi3_mlx: Path) -> None:
    """A failed load leaves nothing behind that breaks the next one (same process)."""
    with pb.load(str(tiny_phi3_mlx), backend="mlx") as gen:
        out = gen.generate("Write a haiku about ice hockey", pb.SamplingConfig(temperature=0, repeat_penalty=1))
        assert out.text == SCRIPT_TEXT
