"""Edit a GGUF file's bytes for tests: replace one metadata value, patch a header or tensor field.

A tiny independent walker (not :mod:`phi_backends.formats.gguf`, the reader under test) that finds where
each metadata entry and each tensor-table field lies, so that a test can rewrite exactly one of
them and keep everything else byte for byte. Replacing a value of another length moves the tensor
table; the data section is then re-aligned, so the result is still a well-formed GGUF file.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = ["STRING", "U32", "GGUFLayout", "TensorFields", "gguf_layout", "patch", "replace_value", "string_value"]

U32 = 4
STRING = 8
_ARRAY = 9
_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # value type -> bytes


@dataclass(frozen=True)
class TensorFields:
    """Where one tensor-table entry's fields lie (file offsets)."""

    name: str
    start: int
    n_dims_at: int
    dims_at: int  # the first u64 dimension
    dims: tuple[int, ...]
    type_at: int
    ggml_type: int
    offset_at: int
    offset: int


@dataclass(frozen=True)
class GGUFLayout:
    values: dict[str, tuple[int, int]]  # key -> (start of the value type field, end of the value)
    entries: dict[str, int]  # key -> start of the entry (its key string)
    tensors: tuple[TensorFields, ...]
    table_end: int  # end of the tensor table, before the padding
    data_offset: int
    alignment: int

    def tensor(self, name: str) -> TensorFields:
        return next(t for t in self.tensors if t.name == name)


def _skip_value(data: bytes, pos: int, vtype: int) -> int:
    if vtype in _FIXED:
        return pos + _FIXED[vtype]
    if vtype == STRING:
        n: int = struct.unpack_from("<Q", data, pos)[0]
        return pos + 8 + n
    if vtype == _ARRAY:
        item_type: int
        count: int
        item_type, count = struct.unpack_from("<IQ", data, pos)
        pos += 12
        if item_type in _FIXED:
            return pos + count * _FIXED[item_type]
        for _ in range(count):
            pos = _skip_value(data, pos, item_type)
        return pos
    raise ValueError(f"unknown GGUF value type {vtype}")


def gguf_layout(data: bytes) -> GGUFLayout:
    """Walk a well-formed GGUF file (version 2 or 3)."""
    magic, _version, n_tensors, n_kv = struct.unpack_from("<4sIQQ", data, 0)
    assert magic == b"GGUF", magic
    pos = 24
    values: dict[str, tuple[int, int]] = {}
    entries: dict[str, int] = {}
    alignment = 32
    for _ in range(n_kv):
        start = pos
        (n,) = struct.unpack_from("<Q", data, pos)
        key = data[pos + 8 : pos + 8 + n].decode()
        pos += 8 + n
        (vtype,) = struct.unpack_from("<I", data, pos)
        end = _skip_value(data, pos + 4, vtype)
        values[key], entries[key] = (pos, end), start
        if key == "general.alignment":
            (alignment,) = struct.unpack_from("<I", data, pos + 4)
        pos = end
    tensors = []
    for _ in range(n_tensors):
        start = pos
        (n,) = struct.unpack_from("<Q", data, pos)
        name = data[pos + 8 : pos + 8 + n].decode()
        pos += 8 + n
        (n_dims,) = struct.unpack_from("<I", data, pos)
        dims = struct.unpack_from(f"<{n_dims}Q", data, pos + 4)
        type_at = pos + 4 + 8 * n_dims
        ggml_type, offset = struct.unpack_from("<IQ", data, type_at)
        tensors.append(TensorFields(name, start, pos, pos + 4, dims, type_at, ggml_type, type_at + 4, offset))
        pos = type_at + 12
    data_offset = -(-pos // alignment) * alignment
    return GGUFLayout(values, entries, tuple(tensors), pos, data_offset, alignment)


def string_value(text: str | bytes) -> bytes:
    """A metadata value of type STRING: the type, the length, the bytes."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return struct.pack("<IQ", STRING, len(raw)) + raw


def replace_value(data: bytes, key: str, value: bytes) -> bytes:
    """``data`` with metadata ``key``'s value (type field included) replaced by ``value``."""
    layout = gguf_layout(data)
    start, end = layout.values[key]
    head = data[:start] + value + data[end : layout.table_end]
    padding = -len(head) % layout.alignment
    return head + b"\0" * padding + data[layout.data_offset :]


def patch(data: bytes, offset: int, fmt: str, *values: object) -> bytes:
    """``data`` with ``struct.pack(fmt, *values)`` written at ``offset``."""
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
