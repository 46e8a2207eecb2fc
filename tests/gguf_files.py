"""Synthetic GGUF files and the message check, shared by the kit's reader tests (tests/test_gguf.py)
and the llama.cpp plugin's checks (plugins/llama-cpp/tests/test_gguf_checks.py).

A minimal writer independent of the reader under test: metadata ``(key, value type, value)`` and
tensor infos ``(name, shape, ggml type, offset)`` in, the file's bytes out.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from phi_backends.errors import ModelFormatError, PhiBackendsError
from tests.bad_inputs import expect_api_error

__all__ = [
    "ARR",
    "F32",
    "FAST",
    "I32",
    "STR",
    "U32",
    "U64",
    "build_gguf",
    "check_message",
    "gguf_string",
    "one_raw_kv",
    "small_model",
]

FAST = 0.5  # seconds: any check, on any file here, must take less

_PACK = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "B", 10: "Q", 11: "q", 12: "d"}
STR, ARR, U32, I32, F32, U64 = 8, 9, 4, 5, 6, 10


def gguf_string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(data)) + data


def _value(vtype: int, value: Any) -> bytes:
    if vtype == STR:
        return gguf_string(value)
    if vtype == ARR:
        item_type, items = value
        return struct.pack("<IQ", item_type, len(items)) + b"".join(_value(item_type, v) for v in items)
    return struct.pack("<" + _PACK[vtype], value)


def build_gguf(
    kvs: list[tuple[str, int, Any]],
    tensors: Sequence[tuple[str, tuple[int, ...], int, int]] = (),
    *,
    data: bytes = b"",
    version: int = 3,
    alignment: int = 32,
) -> bytes:
    """A GGUF file: metadata ``(key, value type, value)``, tensor infos ``(name, shape, ggml type, offset)``."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs)))
    for key, vtype, value in kvs:
        out += gguf_string(key) + struct.pack("<I", vtype) + _value(vtype, value)
    for name, shape, ggml_type, offset in tensors:
        out += gguf_string(name) + struct.pack(f"<I{len(shape)}QIQ", len(shape), *shape, ggml_type, offset)
    out += b"\0" * (-len(out) % alignment)
    return bytes(out + data)


def one_raw_kv(key: str, raw: bytes) -> bytes:
    """A GGUF file with no tensors and one metadata entry: ``key``, then ``raw`` (value type and value)."""
    return b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gguf_string(key) + raw


def small_model(**changes: Any) -> list[tuple[str, int, Any]]:
    kvs = {
        "general.architecture": (STR, "llama"),
        "llama.context_length": (U32, 2048),
        "tokenizer.ggml.model": (STR, "llama"),
        "tokenizer.ggml.tokens": (ARR, (STR, ["<unk>", "<s>", "</s>"])),
        "tokenizer.ggml.scores": (ARR, (F32, [0.0, 0.0, 0.0])),
        "tokenizer.ggml.token_type": (ARR, (I32, [2, 3, 3])),
    }
    kvs.update(changes)
    return [(k, t, v) for k, (t, v) in kvs.items()]


def check_message(
    error: BaseException,
    path: Path,
    words: tuple[str, ...],
    what: str,
    kind: type[PhiBackendsError] = ModelFormatError,
) -> None:
    message = expect_api_error(error, kind, path.name, *words, what=what)
    assert message == message.strip()
