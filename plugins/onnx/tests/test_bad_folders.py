"""Broken model folders: one line naming the file, the right exit code, no traceback, no crash.

Each case is a copy of the tiny Phi-3 fp32 folder (unchanged files are symlinks) with one thing
wrong. The CLI runs in a subprocess, so a crash inside onnxruntime would show as a signal exit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from phi_backends_onnx import OnnxBackend

import phi_backends as pb
from phi_backends import ModelSource
from phi_backends.testing import SCRIPT_TEXT

CLI = str(Path(sys.executable).parent / "phi-backends")


def edit_config(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        path = folder / "genai_config.json"
        config = json.loads(path.read_text())
        change(config)
        write(path, json.dumps(config).encode())

    return apply


def write(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    path.write_bytes(data)


def cut(name: str, keep: Callable[[int], int]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        data = (folder / name).read_bytes()
        write(folder / name, data[: keep(len(data))])

    return apply


def remove(name: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).unlink()


def _decoder(config: dict[str, Any]) -> dict[str, Any]:
    decoder: dict[str, Any] = config["model"]["decoder"]
    return decoder


# (case, how to break the folder, exit code, error type, what the one line must say)
CASES: list[tuple[str, Callable[[Path], None], int, type[pb.PhiBackendsError], str]] = [
    ("no-genai-config", remove("genai_config.json"), 1, pb.ModelFormatError, "ONNX Runtime GenAI folder"),
    (
        "hugging-face-folder",
        lambda f: (remove("genai_config.json")(f), write(f / "config.json", b"{}")),
        2,
        pb.UsageError,
        "MLX/safetensors folder",
    ),
    ("config-not-json", lambda f: write(f / "genai_config.json", b"{not json"), 1, pb.ModelFormatError,
     "genai_config.json is not valid JSON"),
    ("config-not-object", lambda f: write(f / "genai_config.json", b"[1, 2]"), 1, pb.ModelFormatError,
     "genai_config.json should hold a JSON object"),
    ("no-model-section", lambda f: write(f / "genai_config.json", b'{"search": {}}'), 1, pb.ModelFormatError,
     "genai_config.json has no model section"),
    ("no-decoder-filename", edit_config(lambda c: _decoder(c).pop("filename")), 1, pb.ModelFormatError,
     "model.decoder.filename is missing"),
    ("filename-outside", edit_config(lambda c: _decoder(c).update(filename="../model.onnx")), 1,
     pb.ModelFormatError, "points outside the model folder"),
    ("bad-context-length", edit_config(lambda c: c["model"].update(context_length="4k")), 1, pb.ModelFormatError,
     "model.context_length must be a positive whole number"),
    ("bad-eos", edit_config(lambda c: c["model"].update(eos_token_id=[99999999])), 1, pb.ModelFormatError,
     "model.eos_token_id must be a token id"),
    ("multimodal", edit_config(lambda c: c["model"].update(vision={"filename": "vision.onnx"})), 1,
     pb.ModelFormatError, "multimodal"),
    ("unknown-model-type", edit_config(lambda c: c["model"].update(type="nosuchtype")), 1, pb.ModelFormatError,
     "nosuchtype"),
    ("vocab-size-mismatch", edit_config(lambda c: c["model"].update(vocab_size=50000)), 1, pb.ModelFormatError,
     "genai_config.json says vocab_size 50000, which does not match the model's logits"),
    ("onnx-missing", remove("model.onnx"), 1, pb.ModelFormatError, "model.onnx is missing"),
    ("onnx-empty", lambda f: write(f / "model.onnx", b""), 1, pb.ModelFormatError, "the file is empty"),
    ("onnx-garbage", lambda f: write(f / "model.onnx", os.urandom(4096)), 1, pb.ModelFormatError,
     "model.onnx is not a complete ONNX model"),
    ("onnx-truncated", cut("model.onnx", lambda n: n // 2), 1, pb.ModelFormatError, "cut short"),
    ("onnx-lfs-pointer", lambda f: write(f / "model.onnx", b"version https://git-lfs.github.com/spec/v1\n"),
     1, pb.ModelFormatError, "Git LFS pointer"),
    ("data-missing", remove("model.onnx.data"), 1, pb.ModelFormatError, "model.onnx.data is missing"),
    ("data-truncated", cut("model.onnx.data", lambda n: n - 4096), 1, pb.ModelFormatError,
     "model.onnx.data is truncated"),
    ("data-empty", cut("model.onnx.data", lambda n: 0), 1, pb.ModelFormatError, "model.onnx.data is truncated"),
    ("tokenizer-missing", remove("tokenizer.json"), 1, pb.ModelFormatError, "tokenizer.json"),
    ("tokenizer-not-json", lambda f: write(f / "tokenizer.json", b"{bad"), 1, pb.ModelFormatError,
     "tokenizer.json is not valid JSON"),
]  # fmt: skip


@pytest.fixture
def broken(request: pytest.FixtureRequest, tiny_phi3_onnx: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    for item in tiny_phi3_onnx.iterdir():
        os.symlink(item, folder / item.name)
    request.param(folder)
    return folder


def params() -> list[Any]:
    return [pytest.param(fn, code, kind, needle, id=case) for case, fn, code, kind, needle in CASES]


@pytest.mark.parametrize(("broken", "code", "kind", "needle"), params(), indirect=["broken"])
def test_cli_one_line_and_exit_code(broken: Path, code: int, kind: type, needle: str) -> None:
    result = subprocess.run(
        [CLI, "run", "--backend", "onnx", "--model", str(broken), "--max-tokens", "4"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("phi-backends: error: ") and needle in lines[0], lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize(("broken", "code", "kind", "needle"), params(), indirect=["broken"])
def test_api_error_type(broken: Path, code: int, kind: type, needle: str) -> None:
    with pytest.raises(kind) as caught:
        pb.load(str(broken), backend="onnx")
    assert needle in str(caught.value) and caught.value.exit_code == code


def test_backend_checks_the_folder_itself(tmp_path: Path) -> None:
    """Handed a folder directly (not through the core's format detection), the backend says what is missing."""
    with pytest.raises(pb.ModelFormatError, match=r"has no genai_config\.json"):
        OnnxBackend().load(ModelSource(path=tmp_path, format="onnx", name="empty"), {})


@pytest.mark.parametrize(
    ("file", "content", "auto_code"),
    [
        ("chat_template.jinja", "{% for m in messages %}{{ m.content ", 1),  # read, then fails to compile
        ("chat_template.json", "{not json", 0),  # unreadable: the Phi-3 vocabulary still picks phi3
    ],
    ids=["unrenderable-jinja", "unreadable-json"],
)
def test_broken_model_template_leaves_built_in_templates_usable(
    tiny_phi3_onnx: Path, tmp_path: Path, file: str, content: str, auto_code: int
) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    for item in tiny_phi3_onnx.iterdir():
        if item.name != "chat_template.jinja":
            os.symlink(item, folder / item.name)
    write(folder / file, content.encode())
    greedy = ["--temperature", "0", "--repeat-penalty", "1"]
    auto = subprocess.run(
        [CLI, "run", "--backend", "onnx", "--model", str(folder), *greedy], capture_output=True, text=True
    )
    assert auto.returncode == auto_code and len(auto.stderr.strip().splitlines()) == auto_code, auto.stderr
    if auto_code:
        assert "template" in auto.stderr and "Traceback" not in auto.stderr
    else:
        assert auto.stdout == SCRIPT_TEXT + "\n"
    chosen = subprocess.run(
        [CLI, "run", "--backend", "onnx", "--model", str(folder), "--template", "phi3", *greedy],
        capture_output=True, text=True,
    )  # fmt: skip
    assert chosen.returncode == 0 and chosen.stdout == SCRIPT_TEXT + "\n" and chosen.stderr == "", chosen.stderr
