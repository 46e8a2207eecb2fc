"""Corrupt, truncated, empty and wrong-format model files, through the real CLI and engine.

Each case runs ``phi-backends run`` in its own process, so that a crash inside an engine shows
as a signal (a negative return code) instead of taking the test run down. Each must end with one
line and exit 1 (2 for a usage error), or, for files that are odd but harmless (NaN weights, a
chat template of the wrong type), run to completion. The cases complete what the other suites
already check: tests/test_gguf.py reads broken GGUFs in-process, and the onnx and mlx plugins'
test_bad_folders.py run a broken genai_config.json, missing and truncated files, and broken
configs through the CLI. Here: GGUFs through llama.cpp itself (including the values llama.cpp
would abort, segfault or hang on, which the plugin's gguf_checks refuses), and the empty files,
folders in the place of files, symlink loops, unreadable files and NaN weights of all three.
"""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.bad_inputs import expect_cli_error
from tests.reliability.conftest import BACKENDS, Figures, need_backend
from tests.reliability.gguf_edit import GGUFLayout, gguf_layout, patch, replace_value, string_value
from tests.reliability.model_copies import (
    Change,
    break_folder,
    edit_json,
    fill_onnx_data,
    fill_safetensors,
    make_dir,
    self_link,
    write,
)
from tests.reliability.processes import Measured, run_measured, without_file_permission_override

#: Longest a case may take, start to exit (a hang in an engine is a failure, not a wait).
CASE_SECONDS = 90.0
NAN = float("nan")


@dataclass(frozen=True)
class Case:
    name: str
    backend: str
    what: str
    """The bad input, in words, for docs/bad-inputs.md."""
    make: Callable[[Path, Path], Path]
    """(the backend's tiny Phi-3 model, an empty folder) -> the path to pass to --model."""
    code: int
    """1 or 2: one line with ``needles``; 0: the file is odd but runs."""
    needles: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    unreadable: bool = False
    """Run without root's permission to read any file."""


# -- GGUF ------------------------------------------------------------------------------------------


def gguf(edit: Callable[[bytes, GGUFLayout], bytes]) -> Callable[[Path, Path], Path]:
    def make(model: Path, folder: Path) -> Path:
        data = model.read_bytes()
        path = folder / "model.gguf"
        path.write_bytes(edit(data, gguf_layout(data)))
        return path

    return make


def value(key: str, vtype: int, fmt: str, new: object) -> Callable[[bytes, GGUFLayout], bytes]:
    return lambda data, layout: replace_value(data, key, struct.pack("<I" + fmt, vtype, new))


def field(tensor: str, at: str, fmt: str, *new: object) -> Callable[[bytes, GGUFLayout], bytes]:
    return lambda data, layout: patch(data, getattr(layout.tensor(tensor), at), fmt, *new)


def tokens_all_the_same(data: bytes, layout: GGUFLayout) -> bytes:
    start, _ = layout.values["tokenizer.ggml.tokens"]
    (count,) = struct.unpack_from("<Q", data, start + 8)
    items = (struct.pack("<Q", 1) + b"a") * count
    return replace_value(data, "tokenizer.ggml.tokens", struct.pack("<IIQ", 9, 8, count) + items)


def tokens_at(at: int, *texts: bytes) -> Callable[[bytes, GGUFLayout], bytes]:
    """The vocabulary with the tokens from id ``at`` on replaced by ``texts`` (as many as there were)."""

    def edit(data: bytes, layout: GGUFLayout) -> bytes:
        start, _ = layout.values["tokenizer.ggml.tokens"]
        (count,) = struct.unpack_from("<Q", data, start + 8)
        tokens, pos = [], start + 16
        for _ in range(count):
            (n,) = struct.unpack_from("<Q", data, pos)
            tokens.append(data[pos + 8 : pos + 8 + n])
            pos += 8 + n
        tokens[at : at + len(texts)] = texts
        items = b"".join(struct.pack("<Q", len(t)) + t for t in tokens)
        return replace_value(data, "tokenizer.ggml.tokens", struct.pack("<IIQ", 9, 8, count) + items)

    return edit


def nan_weights(data: bytes, layout: GGUFLayout) -> bytes:
    out = bytearray(data)
    t = layout.tensor("output.weight")
    size = 4 * t.dims[0] * t.dims[1]
    start = layout.data_offset + t.offset
    out[start : start + size] = struct.pack("<f", NAN) * (size // 4)
    return bytes(out)


def other_file(name: str, source: Callable[[Path], Path]) -> Callable[[Path, Path], Path]:
    """Another model's file, under the name ``name``."""

    def make(model: Path, folder: Path) -> Path:
        shutil.copyfile(source(model), folder / name)
        return folder / name

    return make


def _tokens_start(data: bytes, layout: GGUFLayout) -> int:
    return layout.values["tokenizer.ggml.tokens"][0]


def in_place(build: Callable[[Path], None], name: str = "model.gguf") -> Callable[[Path, Path], Path]:
    def make(model: Path, folder: Path) -> Path:
        build(folder / name)
        return folder / name

    return make


def unreadable_copy(model: Path, folder: Path) -> Path:
    path = folder / "model.gguf"
    shutil.copyfile(model, path)
    path.chmod(0)
    return path


_REDOWNLOAD = "re-download it"
GGUF_CASES = [
    Case("empty", "llama-cpp", "GGUF file that is empty", gguf(lambda d, lay: b""), 1, ("empty (0 bytes)",)),
    Case("wrong-magic", "llama-cpp", "GGUF file that does not start with GGUF",
         gguf(lambda d, lay: b"GGUX" + d[4:]), 1, ("not a GGUF file",)),
    Case("cut-in-header", "llama-cpp", "GGUF file cut inside its header",
         gguf(lambda d, lay: d[:16]), 1, ("truncated", "24-byte GGUF header")),
    Case("cut-in-metadata", "llama-cpp", "GGUF file cut inside the tokenizer's tokens",
         gguf(lambda d, lay: d[: _tokens_start(d, lay) + 100_000]), 1, ("truncated", "tokenizer.ggml.tokens")),
    Case("cut-in-tensor-table", "llama-cpp", "GGUF file cut inside its tensor table",
         gguf(lambda d, lay: d[: lay.tensor("blk.0.attn_qkv.weight").start + 10]), 1, ("truncated", "tensor")),
    Case("cut-at-data", "llama-cpp", "GGUF file cut where its tensor data starts",
         gguf(lambda d, lay: d[: lay.data_offset + 10]), 1, ("truncated", "tensor data")),
    Case("cut-in-data", "llama-cpp", "GGUF file cut in the middle of its tensor data",
         gguf(lambda d, lay: d[: len(d) // 2]), 1, ("truncated", "50%", _REDOWNLOAD)),
    Case("one-byte-short", "llama-cpp", "GGUF file one byte short", gguf(lambda d, lay: d[:-1]), 1, ("truncated", "99%")),
    Case("version-7", "llama-cpp", "GGUF file of version 7", gguf(lambda d, lay: patch(d, 4, "<I", 7)), 1,
         ("GGUF version 7", "2 and 3")),
    Case("kv-count-huge", "llama-cpp", "GGUF file claiming 2**60 metadata entries",
         gguf(lambda d, lay: patch(d, 16, "<Q", 2**60)), 1, ("corrupt", "metadata entries")),
    Case("tensor-count-huge", "llama-cpp", "GGUF file claiming 2**62 tensors",
         gguf(lambda d, lay: patch(d, 8, "<Q", 2**62)), 1, ("corrupt", "tensors")),
    Case("key-length-huge", "llama-cpp", "GGUF metadata key claiming 2**62 bytes",
         gguf(lambda d, lay: patch(d, 24, "<Q", 2**62)), 1, ("corrupt", "bytes")),
    Case("token-count-huge", "llama-cpp", "GGUF token list claiming 2**40 tokens",
         gguf(lambda d, lay: patch(d, _tokens_start(d, lay) + 8, "<Q", 2**40)), 1,
         ("corrupt", "tokenizer.ggml.tokens")),
    Case("tensor-offset-huge", "llama-cpp", "GGUF tensor whose data starts at 2**60",
         gguf(field("output.weight", "offset_at", "<Q", 2**60)), 1, ("corrupt", "output.weight")),
    Case("tensor-shape-huge", "llama-cpp", "GGUF tensor whose shape reaches past the file",
         gguf(field("output.weight", "dims_at", "<2Q", 64, 2**40)), 1, ("corrupt", "output.weight")),
    Case("tensor-misaligned", "llama-cpp", "GGUF tensor not at a multiple of the alignment",
         gguf(lambda d, lay: patch(d, lay.tensor("output.weight").offset_at, "<Q", lay.tensor("output.weight").offset + 4)),
         1, ("alignment",)),
    Case("tensor-type-unknown", "llama-cpp", "GGUF tensor of unknown ggml type 99",
         gguf(field("token_embd.weight", "type_at", "<I", 99)), 1, ("unknown ggml type 99",)),
    # llama.cpp aborts (GGML_ASSERT in get_rows) on the first, segfaults on the second
    Case("embedding-type-i32", "llama-cpp", "GGUF token embedding of integer type I32",
         gguf(field("token_embd.weight", "type_at", "<I", 26)), 1, ("token_embd.weight", "I32")),
    Case("output-type-i32", "llama-cpp", "GGUF output weights of integer type I32",
         gguf(field("output.weight", "type_at", "<I", 26)), 1, ("output.weight", "I32")),
    # llama.cpp aborts on these (GGML_ASSERT) or, for a RoPE dimension of 0 and a context beyond int32, hangs
    Case("block-count-0", "llama-cpp", "GGUF model of 0 layers", gguf(value("phi3.block_count", 4, "I", 0)), 1,
         ("phi3.block_count is 0",)),
    Case("block-count-600", "llama-cpp", "GGUF model of 600 layers (llama.cpp's limit is 512)",
         gguf(value("phi3.block_count", 4, "I", 600)), 1, ("phi3.block_count is 600",)),
    Case("rope-dims-0", "llama-cpp", "GGUF RoPE dimension count of 0",
         gguf(value("phi3.rope.dimension_count", 4, "I", 0)), 1, ("rope.dimension_count is 0",)),
    Case("rope-dims-odd", "llama-cpp", "GGUF RoPE dimension count that is odd",
         gguf(value("phi3.rope.dimension_count", 4, "I", 15)), 1, ("rope.dimension_count is 15",)),
    Case("rope-dims-too-many", "llama-cpp", "GGUF RoPE dimension count larger than a head",
         gguf(value("phi3.rope.dimension_count", 4, "I", 1000)), 1, ("rope.dimension_count is 1000", "head size 16")),
    Case("norm-eps-nan", "llama-cpp", "GGUF norm epsilon that is NaN",
         gguf(value("phi3.attention.layer_norm_rms_epsilon", 6, "f", NAN)), 1, ("layer_norm_rms_epsilon is nan",)),
    Case("norm-eps-negative", "llama-cpp", "GGUF norm epsilon that is negative",
         gguf(value("phi3.attention.layer_norm_rms_epsilon", 6, "f", -1.0)), 1, ("layer_norm_rms_epsilon is -1.0",)),
    Case("context-beyond-int32", "llama-cpp", "GGUF context length of 4,000,000,000",
         gguf(value("phi3.context_length", 4, "I", 4_000_000_000)), 1, ("context_length is 4000000000",)),
    Case("duplicate-tokens", "llama-cpp", "GGUF vocabulary with the same token text twice",
         gguf(tokens_all_the_same), 1, ("holds the token 'a' twice",)),
    # llama.cpp renames an empty token "[EMPTY_<id>]" before it looks for duplicates
    Case("empty-token-named-twice", "llama-cpp", "GGUF vocabulary with an empty token and one named as llama.cpp renames it",
         gguf(tokens_at(100, b"", b"[EMPTY_100]")), 1, ("holds the token '[EMPTY_100]' twice",)),
    Case("safetensors-named-gguf", "llama-cpp", "safetensors file named .gguf",
         other_file("model.gguf", lambda m: next(m.parent.parent.glob("tiny_phi3-hf-*/model.safetensors"))), 1,
         ("safetensors file",)),
    Case("onnx-named-gguf", "llama-cpp", "ONNX model file named .gguf",
         other_file("model.gguf", lambda m: next(m.parent.parent.glob("tiny_phi3-onnx-fp32-*/model.onnx"))), 1,
         ("ONNX model",)),
    Case("folder-named-gguf", "llama-cpp", "folder named .gguf", in_place(lambda p: p.mkdir()), 1,
         ("model.gguf is not a model folder",)),
    Case("symlink-loop-gguf", "llama-cpp", ".gguf symlink that points at itself",
         in_place(lambda p: os.symlink(p.name, p)), 2, ()),
    Case("unreadable-gguf", "llama-cpp", "GGUF file without read permission", unreadable_copy, 1,
         ("model.gguf",), unreadable=True),
    # odd but harmless: runs
    Case("nan-weights", "llama-cpp", "GGUF whose output weights are all NaN", gguf(nan_weights), 0),
    Case("empty-tokens", "llama-cpp", "GGUF vocabulary with two empty tokens", gguf(tokens_at(100, b"", b"")), 0),
    Case("template-not-text", "llama-cpp", "GGUF chat template that is a number, not text",
         gguf(value("tokenizer.chat_template", 4, "I", 7)), 0),
    Case("template-not-utf8", "llama-cpp", "GGUF chat template that is not UTF-8",
         gguf(lambda d, lay: replace_value(d, "tokenizer.chat_template", string_value(b"{{ '\xff\xfe' }}"))), 0),
]  # fmt: skip


# -- ONNX Runtime GenAI and MLX folders --------------------------------------------------------------


def folder(*changes: Change) -> Callable[[Path, Path], Path]:
    def make(model: Path, into: Path) -> Path:
        return break_folder(model, into / "model", *changes)

    return make


def _decoder(change: Callable[[dict[str, Any]], None]) -> Change:
    return edit_json("genai_config.json", lambda c: change(c["model"]["decoder"]))


def unreadable(name: str) -> Change:
    def apply(model: Path) -> None:
        data = (model / name).read_bytes()
        write(name, data)(model)
        (model / name).chmod(0)

    return apply


_GREEDY = ("--temperature", "0")
_SAMPLED = ("--temperature", "1")
ONNX_CASES = [
    Case("onnx-nan-weights-greedy", "onnx", "ONNX weights all NaN (greedy)", folder(fill_onnx_data(NAN)), 0,
         args=_GREEDY),
    Case("onnx-nan-weights-sampled", "onnx", "ONNX weights all NaN (sampled)", folder(fill_onnx_data(NAN)), 1,
         ("NaN",), args=_SAMPLED),
    Case("onnx-inf-weights", "onnx", "ONNX weights all infinite (greedy)", folder(fill_onnx_data(float("inf"))), 0,
         args=_GREEDY),
    Case("onnx-tokenizer-empty", "onnx", "ONNX folder with an empty tokenizer.json",
         folder(write("tokenizer.json", b"")), 1, ("tokenizer.json is not valid JSON",)),
    Case("onnx-tokenizer-no-model", "onnx", "ONNX folder whose tokenizer.json is {}",
         folder(write("tokenizer.json", b"{}")), 1, ("tokenizer.json has no 'model' table",)),
    Case("onnx-tokenizer-config-empty", "onnx", "ONNX folder with an empty tokenizer_config.json",
         folder(write("tokenizer_config.json", b"")), 1, ("tokenizer",)),
    Case("onnx-genai-config-empty", "onnx", "ONNX folder with an empty genai_config.json",
         folder(write("genai_config.json", b"")), 1, ("genai_config.json is not valid JSON",)),
    Case("onnx-model-is-folder", "onnx", "ONNX folder where model.onnx is a folder", folder(make_dir("model.onnx")),
         1, ("model.onnx",)),
    Case("onnx-data-is-folder", "onnx", "ONNX folder where model.onnx.data is a folder",
         folder(make_dir("model.onnx.data")), 1, ("model.onnx.data",)),
    Case("onnx-tokenizer-is-folder", "onnx", "ONNX folder where tokenizer.json is a folder",
         folder(make_dir("tokenizer.json")), 1, ("tokenizer.json",)),
    Case("onnx-model-loop", "onnx", "ONNX folder whose model.onnx links to itself", folder(self_link("model.onnx")), 1,
         ("model.onnx",)),
    Case("onnx-data-loop", "onnx", "ONNX folder whose model.onnx.data links to itself",
         folder(self_link("model.onnx.data")), 1, ("model.onnx.data",)),
    Case("onnx-tokenizer-config-loop", "onnx", "ONNX folder whose tokenizer_config.json links to itself",
         folder(self_link("tokenizer_config.json")), 1, ("tokenizer_config.json",)),
    Case("onnx-head-size-0", "onnx", "ONNX genai_config.json with head_size 0",
         folder(_decoder(lambda d: d.update(head_size=0))), 1, ("could not load",)),
    Case("onnx-kv-heads-negative", "onnx", "ONNX genai_config.json with -4 key/value heads",
         folder(_decoder(lambda d: d.update(num_key_value_heads=-4))), 1, ("could not load",)),
    Case("onnx-unreadable-model", "onnx", "ONNX folder whose model.onnx cannot be read",
         folder(unreadable("model.onnx")), 1, ("model.onnx",), unreadable=True),
]  # fmt: skip

MLX_CASES = [
    Case("mlx-nan-weights", "mlx", "MLX weights all NaN", folder(fill_safetensors(NAN)), 0, args=_GREEDY),
    Case("mlx-tokenizer-empty", "mlx", "MLX folder with an empty tokenizer.json", folder(write("tokenizer.json", b"")),
         1, ("tokenizer.json is not valid JSON",)),
    Case("mlx-tokenizer-config-empty", "mlx", "MLX folder with an empty tokenizer_config.json",
         folder(write("tokenizer_config.json", b"")), 1, ("could not load",)),
    Case("mlx-config-empty", "mlx", "MLX folder with an empty config.json", folder(write("config.json", b"")), 1,
         ("config.json is not valid JSON",)),
    Case("mlx-weights-empty", "mlx", "MLX folder with an empty model.safetensors",
         folder(write("model.safetensors", b"")), 1, ("model.safetensors is truncated or corrupt", "0 bytes")),
    Case("mlx-weights-is-folder", "mlx", "MLX folder where model.safetensors is a folder",
         folder(make_dir("model.safetensors")), 1, ("model.safetensors", "Is a directory")),
    Case("mlx-weights-loop", "mlx", "MLX folder whose model.safetensors links to itself",
         folder(self_link("model.safetensors")), 1, ("model.safetensors", "symbolic links")),
    Case("mlx-tokenizer-is-folder", "mlx", "MLX folder where tokenizer.json is a folder",
         folder(make_dir("tokenizer.json")), 1, ("tokenizer.json",)),
    # mlx-lm builds every layer config.json claims before loading a weight: 10**9 never ends
    Case("mlx-layers-huge", "mlx", "MLX config.json claiming 10**9 layers",
         folder(edit_json("config.json", lambda c: c.update(num_hidden_layers=10**9))), 1,
         ("1,000,000,000 layers", "the weights hold 2")),
    Case("mlx-heads-0", "mlx", "MLX config.json with 0 attention heads",
         folder(edit_json("config.json", lambda c: c.update(num_attention_heads=0))), 1, ("ZeroDivisionError",)),
    Case("mlx-unreadable-weights", "mlx", "MLX folder whose model.safetensors cannot be read",
         folder(unreadable("model.safetensors")), 1, ("model.safetensors", "Permission denied"), unreadable=True),
]  # fmt: skip

CASES = {case.name: case for case in (*GGUF_CASES, *ONNX_CASES, *MLX_CASES)}


# phi_backends.formats.gguf names a file by its path up to 60 characters, else by its name alone: a folder
# this long makes that the name on every machine, so that docs/bad-inputs.md does not vary.
_LONG = "a-folder-whose-name-makes-the-path-longer-than-sixty-characters"


def _run(case: Case, model: Path, into: Path, prefix: list[str]) -> Measured:
    place = into / _LONG if case.backend == "llama-cpp" else into
    place.mkdir(exist_ok=True)
    path = case.make(model, place)
    try:
        return run_measured(
            "run", "-m", str(path), "-b", case.backend, "--max-tokens", "4", *case.args, "hi",
            timeout=CASE_SECONDS, prefix=prefix if case.unreadable else (),
        )  # fmt: skip
    finally:
        shutil.rmtree(into)  # unlinking needs no permission on the file itself


@pytest.fixture(scope="module")
def case_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Measured]:
    """Every case, run up front, two processes at a time (most of each is starting the engine)."""
    prefix = without_file_permission_override()
    jobs = {}
    for name, case in CASES.items():
        try:
            need_backend(case.backend)
        except pytest.skip.Exception:
            continue
        if case.unreadable and prefix is None:
            continue
        model: Path = request.getfixturevalue(BACKENDS[case.backend])
        jobs[name] = (case, model, tmp_path_factory.mktemp(name), prefix or [])
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(_run, *job) for name, job in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_broken_model_file(name: str, case_runs: dict[str, Measured], figures: Figures) -> None:
    case = CASES[name]
    need_backend(case.backend)
    if case.unreadable and without_file_permission_override() is None:
        pytest.skip("running as root without setpriv: every file is readable")
    run = case_runs[name]
    figures.count(f"broken-file runs ({case.backend})")
    figures.time(f"broken-file run ({case.backend})", run.seconds, name)
    figures.count(f"broken-file CPU seconds, in all ({case.backend})", run.cpu_seconds)
    if run.crashed:
        figures.crashes.append(f"{name}: signal {-run.result.returncode}")
    assert not run.crashed, f"killed by signal {-run.result.returncode}: {run.result.stderr[-2000:]}"
    if case.code == 0:
        assert run.result.returncode == 0, run.result.stderr
        return
    expect_cli_error(run.result, case.code, *case.needles, what=case.what)
