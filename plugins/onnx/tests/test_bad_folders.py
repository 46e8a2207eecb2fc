"""Broken model folders: one line naming the file, the right exit code, no traceback, no crash.

Each case is a copy of the tiny Phi-3 fp32 folder (unchanged files are symlinks) with one thing
wrong. The CLI runs in a subprocess, so a crash inside onnxruntime would show as a signal exit.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from phi_backends_onnx import OnnxBackend

import phi_backends as pb
from phi_backends import ModelSource
from phi_backends.testing import SCRIPT_TEXT
from tests.bad_inputs import expect_api_error, expect_cli_error
from tests.cli import run_cli


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


def as_hugging_face_folder(folder: Path) -> None:
    (folder / "genai_config.json").unlink()
    write(folder / "config.json", b"{}")


def _decoder(config: dict[str, Any]) -> dict[str, Any]:
    decoder: dict[str, Any] = config["model"]["decoder"]
    return decoder


# (case, the bad input in words, how to break the folder, exit code, error type, what the one line must say)
CASES: list[tuple[str, str, Callable[[Path], object], int, type[pb.PhiBackendsError], str]] = [
    ("no-genai-config", "ONNX folder without genai_config.json", remove("genai_config.json"), 1,
     pb.ModelFormatError, "ONNX Runtime GenAI folder"),
    (
        "hugging-face-folder",
        "a Hugging Face (MLX) folder given to the onnx backend",
        as_hugging_face_folder,
        2,
        pb.UsageError,
        "MLX/safetensors folder",
    ),
    ("config-not-json", "genai_config.json that is not JSON", lambda f: write(f / "genai_config.json", b"{not json"),
     1, pb.ModelFormatError, "genai_config.json is not valid JSON"),
    ("config-not-object", "genai_config.json holding a JSON list", lambda f: write(f / "genai_config.json", b"[1, 2]"),
     1, pb.ModelFormatError, "genai_config.json should hold a JSON object"),
    ("no-model-section", "genai_config.json without a model section",
     lambda f: write(f / "genai_config.json", b'{"search": {}}'), 1, pb.ModelFormatError,
     "genai_config.json has no model section"),
    ("no-decoder-filename", "genai_config.json without model.decoder.filename",
     edit_config(lambda c: _decoder(c).pop("filename")), 1, pb.ModelFormatError, "model.decoder.filename is missing"),
    ("filename-outside", "genai_config.json naming a decoder outside the folder (../model.onnx)",
     edit_config(lambda c: _decoder(c).update(filename="../model.onnx")), 1, pb.ModelFormatError,
     "points outside the model folder"),
    ("bad-context-length", 'genai_config.json with context_length "4k"',
     edit_config(lambda c: c["model"].update(context_length="4k")), 1, pb.ModelFormatError,
     "model.context_length must be a positive whole number"),
    ("bad-eos", "genai_config.json with an eos_token_id past the vocabulary",
     edit_config(lambda c: c["model"].update(eos_token_id=[99999999])), 1, pb.ModelFormatError,
     "model.eos_token_id must be a token id"),
    ("multimodal", "a multimodal ONNX folder (a vision model in genai_config.json)",
     edit_config(lambda c: c["model"].update(vision={"filename": "vision.onnx"})), 1, pb.ModelFormatError,
     "multimodal"),
    ("unknown-model-type", "genai_config.json with a model type onnxruntime-genai does not know",
     edit_config(lambda c: c["model"].update(type="nosuchtype")), 1, pb.ModelFormatError, "nosuchtype"),
    ("vocab-size-mismatch", "genai_config.json whose vocab_size does not match the model",
     edit_config(lambda c: c["model"].update(vocab_size=50000)), 1, pb.ModelFormatError,
     "genai_config.json says vocab_size 50000, which does not match the model's logits"),
    ("onnx-missing", "ONNX folder without model.onnx", remove("model.onnx"), 1, pb.ModelFormatError,
     "model.onnx is missing"),
    ("onnx-empty", "an empty model.onnx", lambda f: write(f / "model.onnx", b""), 1, pb.ModelFormatError,
     "the file is empty"),
    ("onnx-garbage", "model.onnx of random bytes",
     lambda f: write(f / "model.onnx", random.Random(0).randbytes(4096)), 1, pb.ModelFormatError,
     "model.onnx is not a complete ONNX model"),
    ("onnx-truncated", "model.onnx cut in half", cut("model.onnx", lambda n: n // 2), 1, pb.ModelFormatError,
     "cut short"),
    ("onnx-lfs-pointer", "model.onnx that is a Git LFS pointer",
     lambda f: write(f / "model.onnx", b"version https://git-lfs.github.com/spec/v1\n"), 1, pb.ModelFormatError,
     "Git LFS pointer"),
    ("data-missing", "ONNX folder without model.onnx.data", remove("model.onnx.data"), 1, pb.ModelFormatError,
     "model.onnx.data is missing"),
    ("data-truncated", "model.onnx.data 4 KiB short", cut("model.onnx.data", lambda n: n - 4096), 1,
     pb.ModelFormatError, "model.onnx.data is truncated"),
    ("data-empty", "an empty model.onnx.data", cut("model.onnx.data", lambda n: 0), 1, pb.ModelFormatError,
     "model.onnx.data is truncated"),
    ("tokenizer-missing", "ONNX folder without tokenizer.json", remove("tokenizer.json"), 1, pb.ModelFormatError,
     "tokenizer.json"),
    ("tokenizer-not-json", "ONNX folder whose tokenizer.json is not JSON",
     lambda f: write(f / "tokenizer.json", b"{bad"), 1, pb.ModelFormatError, "tokenizer.json is not valid JSON"),
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
    return [pytest.param(fn, what, code, kind, needle, id=case) for case, what, fn, code, kind, needle in CASES]


@pytest.mark.parametrize(("broken", "what", "code", "kind", "needle"), params(), indirect=["broken"])
def test_cli_one_line_and_exit_code(broken: Path, what: str, code: int, kind: type, needle: str) -> None:
    result = run_cli("run", "--backend", "onnx", "--model", str(broken), "--max-tokens", "4")
    expect_cli_error(result, code, needle, what=what)
    assert result.stdout == ""


@pytest.mark.parametrize(("broken", "what", "code", "kind", "needle"), params(), indirect=["broken"])
def test_api_error_type(broken: Path, what: str, code: int, kind: type[pb.PhiBackendsError], needle: str) -> None:
    with pytest.raises(kind) as caught:
        pb.load(str(broken), backend="onnx")
    expect_api_error(caught.value, kind, needle, what=what)
    assert caught.value.exit_code == code


def test_backend_checks_the_folder_itself(tmp_path: Path) -> None:
    """Handed a folder directly (not through the core's format detection), the backend says what is missing."""
    with pytest.raises(pb.ModelFormatError) as caught:
        OnnxBackend().load(ModelSource(path=tmp_path, format="onnx", name="empty"), {})
    expect_api_error(
        caught.value, pb.ModelFormatError, "has no genai_config.json", what="an empty folder given to OnnxBackend.load"
    )


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
    auto = run_cli("run", "--backend", "onnx", "--model", str(folder), *greedy)
    if auto_code:
        expect_cli_error(auto, auto_code, "template", what="ONNX folder whose chat_template.jinja does not compile")
    else:
        assert auto.returncode == 0 and auto.stderr == "" and auto.stdout == SCRIPT_TEXT + "\n", auto.stderr
    chosen = run_cli("run", "--backend", "onnx", "--model", str(folder), "--template", "phi3", *greedy)
    assert chosen.returncode == 0 and chosen.stdout == SCRIPT_TEXT + "\n" and chosen.stderr == "", chosen.stderr
