"""A small, strict, pure-Python GGUF reader: check a ``.gguf`` file before an engine maps it.

Engines abort or segfault on some malformed files (a truncated download, an HTML page saved under
a ``.gguf`` name, a garbage length field). ``read_gguf`` walks the header, the metadata and the
tensor table without loading any tensor data, checks every length against the file's size (so
garbage never makes it allocate or loop for long), checks that every tensor lies inside the file,
and raises :class:`~phi_backends.errors.ModelFormatError` with a one-line message otherwise.

It checks only what makes a file well-formed GGUF, what any reader needs in order to find and
size every value and tensor. What one engine would load and then crash on (for llama.cpp: layer
counts, norm epsilons, RoPE dimensions, integer weights, duplicate tokens, tokenizer arrays of the
wrong type or length) is that engine's plugin's check, made from :attr:`GGUFInfo.kinds` (how each
metadata value is stored) and :meth:`GGUFInfo.load_array`.

Layout (little-endian, versions 2 and 3)::

    "GGUF"  u32 version  u64 tensor_count  u64 kv_count
    kv_count x  (string key, u32 value_type, value)
    tensor_count x  (string name, u32 n_dims, u64 dims[n_dims], u32 ggml_type, u64 offset)
    padding to general.alignment (default 32)
    tensor data (each tensor at data_offset + offset)

where a string is a u64 byte length followed by UTF-8 bytes, and an array value is a u32 item
type, a u64 count and the items. Arrays longer than :data:`SMALL_ARRAY` items (the tokenizer's
tokens, scores, token types and merges) are skipped, not decoded: the metadata holds a
:class:`GGUFArray` for them, which :meth:`GGUFInfo.load_array` reads on demand.
"""

from __future__ import annotations

import os
import re
import stat
import struct
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import ModelFormatError, ModelNotFoundError

__all__ = [
    "DEFAULT_ALIGNMENT",
    "GGML_TYPE_NAMES",
    "GGML_TYPE_SIZES",
    "SMALL_ARRAY",
    "GGUFArray",
    "GGUFInfo",
    "GGUFKind",
    "GGUFTensor",
    "GGUFValueType",
    "quoted",
    "read_gguf",
    "read_tokens",
]

GGUF_MAGIC = b"GGUF"
HEADER_SIZE = 24  # magic, u32 version, u64 tensor_count, u64 kv_count
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
SMALL_ARRAY = 1024  # arrays with more items are kept as a GGUFArray, not decoded
_MAX_DEPTH = 8  # nesting of arrays of arrays
_MAX_STRING = 1 << 30  # no real GGUF string is anywhere near 1 GiB
_CHUNK = 1 << 20


class GGUFValueType(IntEnum):
    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# struct format character and size of each fixed-size value type (BOOL is one byte, non-zero = true).
_FORMATS: dict[int, tuple[str, int]] = {
    GGUFValueType.UINT8: ("B", 1),
    GGUFValueType.INT8: ("b", 1),
    GGUFValueType.UINT16: ("H", 2),
    GGUFValueType.INT16: ("h", 2),
    GGUFValueType.UINT32: ("I", 4),
    GGUFValueType.INT32: ("i", 4),
    GGUFValueType.FLOAT32: ("f", 4),
    GGUFValueType.BOOL: ("B", 1),
    GGUFValueType.UINT64: ("Q", 8),
    GGUFValueType.INT64: ("q", 8),
    GGUFValueType.FLOAT64: ("d", 8),
}
_SCALARS = {t: struct.Struct("<" + c) for t, (c, _) in _FORMATS.items()}
# The fewest bytes one item of each type can take: what a count is checked against.
_MIN_SIZE = {**{t: n for t, (_, n) in _FORMATS.items()}, GGUFValueType.STRING: 8, GGUFValueType.ARRAY: 12}
_MIN_KV = 8 + 4 + 1  # empty key, value type, one-byte value
_MIN_TENSOR_INFO = 8 + 4 + 4 + 8  # empty name, n_dims = 0, type, offset
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_HEADER = struct.Struct("<4sIQQ")

# ggml tensor types: (block size in elements, bytes per block), from gguf-py's GGML_QUANT_SIZES
# (gguf 0.19.0); tests/test_gguf.py checks this table against the installed gguf package.
GGML_TYPE_NAMES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
    10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K",
    16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS",
    24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16",
    34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4", 40: "NVFP4", 41: "Q1_0",
}  # fmt: skip
GGML_TYPE_SIZES: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 40),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82),
    23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
    34: (256, 54), 35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18),
}  # fmt: skip
# Types that ggml once had and removed: their block sizes are gone, so no tensor of them can be sized.
_REMOVED_TYPES = {
    4: "Q4_2", 5: "Q4_3", 31: "Q4_0_4_4", 32: "Q4_0_4_8", 33: "Q4_0_8_8",
    36: "IQ4_NL_4_4", 37: "IQ4_NL_4_8", 38: "IQ4_NL_8_8",
}  # fmt: skip


@dataclass(frozen=True)
class GGUFArray:
    """A metadata array too long to decode eagerly: its item type, length and file offset."""

    item_type: int
    count: int
    offset: int  # file offset of the first item

    def __len__(self) -> int:
        return self.count

    @property
    def item_type_name(self) -> str:
        return GGUFValueType(self.item_type).name


@dataclass(frozen=True)
class GGUFKind:
    """How one metadata value is stored, which its Python value does not say.

    A UINT8 and an INT64 both read as an ``int``, and an empty array has no items to show their
    type; an engine that reads a value's raw bytes (llama.cpp does) must know the stored type.
    """

    value_type: GGUFValueType
    item_type: GGUFValueType | None = None  # arrays only: the type of every item
    count: int = 0  # arrays only: the number of items
    offset: int = 0  # arrays only: the file offset of the first item

    @property
    def is_array(self) -> bool:
        return self.value_type == GGUFValueType.ARRAY

    def is_array_of(self, item_type: GGUFValueType) -> bool:
        """An array of ``item_type`` items, or an empty array (whose item type nothing reads)."""
        return self.is_array and (self.item_type == item_type or self.count == 0)


@dataclass(frozen=True)
class GGUFTensor:
    """One entry of the tensor table. ``shape`` is in GGUF (ggml ``ne``) order: fastest-varying first."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int  # relative to GGUFInfo.data_offset, as stored in the file
    nbytes: int

    @property
    def type_name(self) -> str:
        return GGML_TYPE_NAMES.get(self.ggml_type, str(self.ggml_type))

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class GGUFInfo:
    """What ``read_gguf`` found: the header, the metadata and the tensor table, all checked.

    ``metadata`` maps each key to its value (a :class:`GGUFArray` for a long array); ``kinds``
    maps the same keys to how each value is stored.
    """

    path: Path
    version: int
    metadata: dict[str, Any] = field(hash=False)
    kinds: Mapping[str, GGUFKind] = field(hash=False)
    tensor_count: int
    tensors: tuple[GGUFTensor, ...]
    data_offset: int  # file offset of the tensor data section
    file_size: int
    alignment: int = DEFAULT_ALIGNMENT

    @property
    def label(self) -> str:
        """How error messages name the file: its path up to 60 characters, else its name."""
        return _label(self.path)

    def _str(self, key: str) -> str | None:
        value = self.metadata.get(key)
        return value if isinstance(value, str) else None

    def _int(self, key: str) -> int | None:
        value = self.metadata.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def architecture(self) -> str | None:
        """``general.architecture``: ``llama``, ``phi3``, …"""
        return self._str("general.architecture")

    @property
    def name(self) -> str | None:
        return self._str("general.name")

    @property
    def context_length(self) -> int | None:
        """``{architecture}.context_length``: the context the model was trained for."""
        return self._int(f"{self.architecture}.context_length") if self.architecture else None

    @property
    def chat_template(self) -> str | None:
        return self._str("tokenizer.chat_template")

    @property
    def bos_token_id(self) -> int | None:
        return self._int("tokenizer.ggml.bos_token_id")

    @property
    def eos_token_id(self) -> int | None:
        return self._int("tokenizer.ggml.eos_token_id")

    @property
    def add_bos_token(self) -> bool | None:
        value = self.metadata.get("tokenizer.ggml.add_bos_token")
        return value if isinstance(value, bool) else None

    @property
    def tokenizer_model(self) -> str | None:
        """``tokenizer.ggml.model``: ``llama`` (SentencePiece), ``gpt2`` (byte-level BPE), …"""
        return self._str("tokenizer.ggml.model")

    @property
    def vocab_size(self) -> int | None:
        """The number of tokens in ``tokenizer.ggml.tokens`` (else ``{architecture}.vocab_size``)."""
        tokens = self.metadata.get("tokenizer.ggml.tokens")
        if isinstance(tokens, (list, GGUFArray)):
            return len(tokens)
        return self._int(f"{self.architecture}.vocab_size") if self.architecture else None

    @property
    def data_size(self) -> int:
        """Bytes from ``data_offset`` to the end of the last tensor."""
        return max((t.offset + t.nbytes for t in self.tensors), default=0)

    def load_array(self, key: str, *, raw: bool = False) -> list[Any]:
        """The items of the metadata array ``key``, reading a long one from the file now.

        ``raw``: strings as the bytes stored rather than decoded, for a check that must compare
        what an engine compares (two different invalid UTF-8 strings decode to the same text).
        """
        value = self.metadata.get(key)
        if isinstance(value, list) and not raw:
            return list(value)
        kind = self.kinds.get(key)
        if kind is None or not kind.is_array or kind.item_type is None:
            raise KeyError(f"{self.path.name} has no metadata array {key!r}")
        with _open(self.path) as (f, size):
            reader = _Reader(f, size, _label(self.path))
            reader.pos = kind.offset
            return reader.array_items(kind.item_type, kind.count, f"metadata key {key!r}", 1, decode=True, raw=raw)

    def tokens(self) -> list[str]:
        """The token strings of ``tokenizer.ggml.tokens``, in id order (invalid UTF-8 shows as U+FFFD)."""
        if "tokenizer.ggml.tokens" not in self.metadata:
            raise ModelFormatError(
                f"{_label(self.path)} has no tokenizer (no tokenizer.ggml.tokens); pass a model GGUF that includes one"
            )
        return self.load_array("tokenizer.ggml.tokens")  # read_gguf checked that it holds strings


def read_gguf(path: Path | str) -> GGUFInfo:
    """Read and check a GGUF file's header, metadata and tensor table (no tensor data is read).

    Raises ModelNotFoundError if ``path`` does not exist, and ModelFormatError if it is not a
    complete, well-formed GGUF file.
    """
    path = Path(path).expanduser()
    label = _label(path)
    _check_path(path, label)
    with _open(path) as (f, size):
        if size == 0:
            raise ModelFormatError(f"{label} is empty (0 bytes), probably a failed download; re-download it")
        head = f.read(512)
        if len(head) < 4:
            raise ModelFormatError(
                f"{label} is only {len(head)} bytes long, too short to be a GGUF file; re-download it"
            )
        if head[:4] != GGUF_MAGIC:
            raise ModelFormatError(_foreign(path, label, head, size))
        if size < HEADER_SIZE:
            raise ModelFormatError(
                f"{label} is truncated: it is {size} bytes, shorter than the {HEADER_SIZE}-byte GGUF header; "
                "re-download it"
            )
        _, version, tensor_count, kv_count = _HEADER.unpack_from(head)
        _check_version(version, label)
        reader = _Reader(f, size, label)
        reader.pos = HEADER_SIZE
        if tensor_count * _MIN_TENSOR_INFO > max(size, 1 << 32):  # garbage: say so before reading on
            reader.room(tensor_count, _MIN_TENSOR_INFO, "the header", f"its header claims {tensor_count:,} tensors")
        reader.room(kv_count, _MIN_KV, "the metadata", f"its header claims {kv_count:,} metadata entries")
        metadata, kinds = _read_metadata(reader, kv_count)
        alignment = _alignment(metadata, kinds, label)
        _check_tokens(kinds, label)
        reader.room(tensor_count, _MIN_TENSOR_INFO, "the tensor table", f"its header claims {tensor_count:,} tensors")
        tensors = _read_tensor_infos(reader, tensor_count)
        data_offset = -(-reader.pos // alignment) * alignment
    _check_tensor_data(tensors, data_offset, alignment, size, label)
    return GGUFInfo(
        path=path,
        version=version,
        metadata=metadata,
        kinds=kinds,
        tensor_count=tensor_count,
        tensors=tuple(tensors),
        data_offset=data_offset,
        file_size=size,
        alignment=alignment,
    )


def read_tokens(path: Path | str) -> list[str]:
    """The token strings of a GGUF file's tokenizer, in id order."""
    return read_gguf(path).tokens()


def _check_version(version: int, label: str) -> None:
    if version in SUPPORTED_VERSIONS:
        return
    if version == 1:
        raise ModelFormatError(
            f"{label} is GGUF version 1, which llama.cpp no longer reads; download a newer conversion of the model"
        )
    if version and not version & 0xFFFF:
        raise ModelFormatError(
            f"{label} is a big-endian GGUF file (its version reads as {version:#010x}), which llama.cpp cannot load "
            "on this machine; download the little-endian file"
        )
    if version == 0 or version > 0xFFFF:
        raise ModelFormatError(f"{label} is corrupt: its GGUF version field is {version}; re-download it")
    raise ModelFormatError(
        f"{label} is GGUF version {version}, but only versions 2 and 3 are supported; "
        "upgrade phi-backends, or download a file converted for version 3"
    )


# --- reading ------------------------------------------------------------------------------------


class _Reader:
    """Little-endian reads through a window of the file, every length checked against its size."""

    def __init__(self, f: BinaryIO, size: int, label: str) -> None:
        self.f = f
        self.size = size
        self.label = label
        self.buf = b""
        self.base = 0  # file offset of buf[0]
        self.pos = 0  # file offset of the next read

    def ensure(self, n: int, what: str) -> int:
        """Make the ``n`` bytes at ``pos`` readable; return their index in ``buf``."""
        start = self.pos - self.base
        if start >= 0 and start + n <= len(self.buf):
            return start
        if self.pos + n > self.size:
            raise self.short(n, what)
        self.f.seek(self.pos)
        data = self.f.read(max(n, _CHUNK))
        if len(data) < n:  # the file shrank while we read it
            raise self.short(n, what, size=self.pos + len(data))
        self.buf, self.base = data, self.pos
        return 0

    def short(self, n: int, what: str, size: int | None = None) -> ModelFormatError:
        """The error for ``n`` bytes claimed at ``pos`` that the file does not have."""
        size = self.size if size is None else size
        if n > max(self.size, 1 << 32):
            return ModelFormatError(
                f"{self.label} is corrupt: {what} at byte {self.pos:,} claims {n:,} bytes, more than the whole file "
                f"({self.size:,} bytes); re-download it"
            )
        return ModelFormatError(
            f"{self.label} is truncated: it ends at byte {size:,}, inside {what} (which needs at least "
            f"{self.pos + n - size:,} more bytes); re-download it"
        )

    def room(self, count: int, item_size: int, what: str, claim: str) -> None:
        """Fail unless ``count`` items of at least ``item_size`` bytes fit between ``pos`` and the end.

        ``what`` names the part of the file being read, ``claim`` says what claims the items.
        """
        need = count * item_size
        if self.pos + need <= self.size:
            return
        if need > max(self.size, 1 << 32):
            raise ModelFormatError(
                f"{self.label} is corrupt: {claim}, more than a {self.size:,}-byte file can hold; re-download it"
            )
        raise self.short(need, what)

    def u32(self, what: str) -> int:
        i = self.ensure(4, what)
        self.pos += 4
        value: int = _U32.unpack_from(self.buf, i)[0]
        return value

    def u64(self, what: str) -> int:
        i = self.ensure(8, what)
        self.pos += 8
        value: int = _U64.unpack_from(self.buf, i)[0]
        return value

    def string(self, what: str) -> str:
        n = self.u64(what)
        if n > _MAX_STRING:
            self.pos -= 8
            raise ModelFormatError(
                f"{self.label} is corrupt: {what} at byte {self.pos:,} claims a string of {n:,} bytes; re-download it"
            )
        i = self.ensure(n, what)
        self.pos += n
        return self.buf[i : i + n].decode("utf-8", errors="replace")

    def scalar(self, vtype: int, what: str) -> Any:
        if vtype == GGUFValueType.STRING:
            return self.string(what)
        scalar = _SCALARS[vtype]
        i = self.ensure(scalar.size, what)
        self.pos += scalar.size
        value = scalar.unpack_from(self.buf, i)[0]
        return bool(value) if vtype == GGUFValueType.BOOL else value

    def array_header(self, what: str, depth: int) -> tuple[int, int]:
        if depth > _MAX_DEPTH:
            raise ModelFormatError(
                f"{self.label} is corrupt: {what} nests arrays more than {_MAX_DEPTH} deep; re-download it"
            )
        item_type = self.u32(what)
        count = self.u64(what)
        if item_type not in _MIN_SIZE:
            raise ModelFormatError(
                f"{self.label} is corrupt: {what} is an array of unknown value type {item_type}; re-download it"
            )
        self.room(count, _MIN_SIZE[item_type], what, f"{what} at byte {self.pos - 12:,} claims {count:,} items")
        return item_type, count

    def array_items(
        self, item_type: int, count: int, what: str, depth: int, *, decode: bool, raw: bool = False
    ) -> list[Any]:
        """Read (``decode``) or skip ``count`` items at ``pos``; the count already fits the file.

        ``raw``: strings as bytes, not decoded.
        """
        if item_type in _FORMATS:
            char, size = _FORMATS[item_type]
            n = count * size
            if not decode:
                if self.pos + n > self.size:
                    raise self.short(n, what)
                self.pos += n
                return []
            i = self.ensure(n, what)
            self.pos += n
            values = list(struct.unpack_from(f"<{count}{char}", self.buf, i))
            return [bool(v) for v in values] if item_type == GGUFValueType.BOOL else values
        if item_type == GGUFValueType.STRING:
            return self.strings(count, what, decode=decode, raw=raw)
        items = []
        for _ in range(count):  # arrays of arrays: rare, and each header is at least 12 bytes
            sub_type, sub_count = self.array_header(what, depth + 1)
            items.append(self.array_items(sub_type, sub_count, what, depth + 1, decode=decode, raw=raw))
        return items if decode else []

    def strings(self, count: int, what: str, *, decode: bool, raw: bool = False) -> list[Any]:
        """The hot loop: 200k token strings skip in a few tens of milliseconds.

        ``decode``: return the strings (as ``bytes`` if ``raw``), else only check and skip them.
        """
        out: list[Any] = []
        buf, base, pos, size = self.buf, self.base, self.pos, self.size
        end = base + len(buf)
        unpack = _U64.unpack_from
        for _ in range(count):
            if pos + 8 > end:
                self.pos = pos
                self.ensure(8, what)
                buf, base = self.buf, self.base
                end = base + len(buf)
            n = unpack(buf, pos - base)[0]
            if n > _MAX_STRING or pos + 8 + n > size:
                self.pos = pos
                if n > _MAX_STRING:
                    raise ModelFormatError(
                        f"{self.label} is corrupt: {what} at byte {pos:,} claims a string of {n:,} bytes; "
                        "re-download it"
                    )
                raise self.short(8 + n, what)
            pos += 8
            if decode:
                if pos + n > end:
                    self.pos = pos
                    self.ensure(n, what)
                    buf, base = self.buf, self.base
                    end = base + len(buf)
                data = buf[pos - base : pos - base + n]
                out.append(data if raw else data.decode("utf-8", errors="replace"))
            pos += n
        self.pos = pos
        return out


def _read_metadata(r: _Reader, kv_count: int) -> tuple[dict[str, Any], dict[str, GGUFKind]]:
    """The key-value pairs, and how each value is stored."""
    metadata: dict[str, Any] = {}
    kinds: dict[str, GGUFKind] = {}
    for i in range(kv_count):
        key = r.string(f"metadata entry #{i + 1} of {kv_count}")
        shown = quoted(key)
        what = f"metadata key {shown}"
        if key in metadata:
            raise ModelFormatError(f"{r.label} is corrupt: metadata key {shown} appears twice; re-download it")
        vtype = r.u32(what)
        if vtype not in _MIN_SIZE:
            raise ModelFormatError(
                f"{r.label} is corrupt: metadata key {shown} has unknown value type {vtype} (valid: 0-12); "
                "re-download it"
            )
        if vtype == GGUFValueType.ARRAY:
            item_type, count = r.array_header(what, 1)
            kinds[key] = GGUFKind(GGUFValueType(vtype), GGUFValueType(item_type), count, r.pos)
            if count <= SMALL_ARRAY:
                metadata[key] = r.array_items(item_type, count, what, 1, decode=True)
            else:
                metadata[key] = GGUFArray(item_type, count, r.pos)
                r.array_items(item_type, count, what, 1, decode=False)
        else:
            kinds[key] = GGUFKind(GGUFValueType(vtype))
            metadata[key] = r.scalar(vtype, what)
    return metadata, kinds


def _alignment(metadata: dict[str, Any], kinds: dict[str, GGUFKind], label: str) -> int:
    """Where the tensor data starts depends on it, so every reader needs it right: a format error.

    The GGUF spec makes it a UINT32 (llama.cpp asserts that and aborts the whole process).
    """
    if "general.alignment" not in metadata:
        return DEFAULT_ALIGNMENT
    value = metadata["general.alignment"]
    stored = kinds["general.alignment"].value_type
    if stored != GGUFValueType.UINT32:
        raise ModelFormatError(
            f"{label} is corrupt: general.alignment must be a UINT32, not {stored.name}; re-download it"
        )
    if value == 0 or value & (value - 1):
        raise ModelFormatError(f"{label} is corrupt: general.alignment is {value}, not a power of 2; re-download it")
    alignment: int = value
    return alignment


def _check_tokens(kinds: dict[str, GGUFKind], label: str) -> None:
    """A format error, not one engine's: the spec defines the vocabulary as strings, and
    :meth:`GGUFInfo.tokens` and ``vocab_size`` read it as such. The arrays that go with it
    (scores, token types, merges) only an engine reads: their checks are the engine's."""
    kind = kinds.get("tokenizer.ggml.tokens")
    if kind is not None and not kind.is_array_of(GGUFValueType.STRING):
        raise ModelFormatError(f"{label} is corrupt: tokenizer.ggml.tokens is not an array of strings; re-download it")


def _read_tensor_infos(r: _Reader, tensor_count: int) -> list[GGUFTensor]:
    tensors: list[GGUFTensor] = []
    seen: set[str] = set()
    for i in range(tensor_count):
        name = r.string(f"tensor info #{i + 1} of {tensor_count}")
        shown = quoted(name)
        what = f"the info of tensor {shown}"
        if name in seen:
            raise ModelFormatError(f"{r.label} is corrupt: tensor name {shown} appears twice; re-download it")
        seen.add(name)
        n_dims = r.u32(what)
        if n_dims > MAX_DIMS:
            raise ModelFormatError(
                f"{r.label} is corrupt: tensor {shown} has {n_dims} dimensions (at most {MAX_DIMS}); re-download it"
            )
        i0 = r.ensure(8 * n_dims, what)
        shape = struct.unpack_from(f"<{n_dims}Q", r.buf, i0)
        r.pos += 8 * n_dims
        ggml_type = r.u32(what)
        offset = r.u64(what)
        tensors.append(_tensor(r.label, name, shown, shape, ggml_type, offset))
    return tensors


def _tensor(label: str, name: str, shown: str, shape: tuple[int, ...], ggml_type: int, offset: int) -> GGUFTensor:
    if ggml_type not in GGML_TYPE_SIZES:
        if ggml_type in _REMOVED_TYPES:
            raise ModelFormatError(
                f"{label} uses the ggml type {_REMOVED_TYPES[ggml_type]} (tensor {shown}), which llama.cpp no longer "
                "supports; download a file converted with a recent llama.cpp"
            )
        raise ModelFormatError(
            f"{label} has tensor {shown} of unknown ggml type {ggml_type}; the file is corrupt, or newer than "
            "phi-backends: re-download it, or upgrade phi-backends"
        )
    block, type_size = GGML_TYPE_SIZES[ggml_type]
    n = 1
    for d in shape:
        n *= d
    if any(d >= 1 << 63 for d in shape) or n >= 1 << 63:
        raise ModelFormatError(f"{label} is corrupt: tensor {shown} has an impossible shape {shape}; re-download it")
    if shape and shape[0] % block:
        raise ModelFormatError(
            f"{label} is corrupt: tensor {shown} of type {GGML_TYPE_NAMES[ggml_type]} has rows of {shape[0]} "
            f"elements, not a multiple of its block size {block}; re-download it"
        )
    return GGUFTensor(name, tuple(shape), ggml_type, offset, n // block * type_size)


def _check_tensor_data(tensors: list[GGUFTensor], data_offset: int, alignment: int, size: int, label: str) -> None:
    placed = sorted((t for t in tensors if t.nbytes), key=lambda t: t.offset)
    previous: GGUFTensor | None = None
    for t in placed:
        if t.offset % alignment:
            raise ModelFormatError(
                f"{label} is corrupt: tensor {quoted(t.name)} starts at data offset {t.offset:,}, which is not a "
                f"multiple of the alignment {alignment}; re-download it"
            )
        if previous is not None and t.offset < previous.offset + previous.nbytes:
            raise ModelFormatError(
                f"{label} is corrupt: the data of tensors {quoted(previous.name)} and {quoted(t.name)} overlap; "
                "re-download it"
            )
        previous = t
    if previous is None:
        return
    expected = data_offset + previous.offset + previous.nbytes
    if expected <= size:
        return
    if expected > max(2 * size, 1 << 40):
        raise ModelFormatError(
            f"{label} is corrupt: tensor {quoted(previous.name)} claims data up to byte {expected:,}, far beyond the "
            f"end of the {size:,}-byte file; re-download it"
        )
    raise ModelFormatError(
        f"{label} is truncated: its tensor data needs the file to be {expected:,} bytes, but it has only {size:,} "
        f"({100 * size // expected}%); re-download it"
    )


# --- paths and foreign files --------------------------------------------------------------------


def _label(path: Path) -> str:
    text = str(path)
    return text if len(text) <= 60 else path.name


def quoted(text: str) -> str:
    """A name or text as the kit's messages show it: quoted, and cut at 60 characters."""
    return repr(text if len(text) <= 60 else text[:60] + "…")


def _check_path(path: Path, label: str) -> None:
    if not path.exists():
        if path.is_symlink():
            raise ModelNotFoundError(
                f"{label} is a broken link (its target {os.readlink(path)} is missing); re-download the model"
            )
        raise ModelNotFoundError(f"{label} does not exist; check the path, or pass an existing .gguf file")
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        hint = f", e.g. {ggufs[0].name}" if ggufs else ""
        raise ModelFormatError(f"{label} is a folder, not a GGUF file; pass the .gguf file itself{hint}")
    if not stat.S_ISREG(path.stat().st_mode):
        raise ModelFormatError(f"{label} is not a regular file; pass a .gguf file")


@contextmanager
def _open(path: Path) -> Iterator[tuple[BinaryIO, int]]:
    """``with _open(path) as (f, size)``: the file opened for reading, and its size."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise ModelNotFoundError(f"{_label(path)} does not exist; check the path") from None
    except OSError as exc:
        raise ModelFormatError(
            f"{_label(path)} cannot be read ({exc.strerror or exc}); check its permissions"
        ) from None
    with f:
        yield f, os.fstat(f.fileno()).st_size


_COMPRESSED = {
    b"\x1f\x8b": "a gzip archive",
    b"BZh": "a bzip2 archive",
    b"\xfd7zXZ\x00": "an xz archive",
    b"\x28\xb5\x2f\xfd": "a zstd archive",
    b"7z\xbc\xaf\x27\x1c": "a 7-Zip archive",
    b"Rar!": "a RAR archive",
}
_OLD_GGML = {b"lmgg", b"fmgg", b"tjgg", b"ggml", b"ggmf", b"ggjt"}


def _foreign(path: Path, label: str, head: bytes, size: int) -> str:
    """The message for a file that does not start with ``GGUF``: say what it is, if recognisable."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    lower = text[:64].lower()
    if text.startswith(b"version https://git-lfs"):
        match = re.search(rb"^size (\d+)", head, re.MULTILINE)
        real = f" (the real file is {int(match.group(1)):,} bytes)" if match else ""
        return (
            f"{label} is a Git LFS pointer, a small text file standing in for the model{real}, not the model itself; "
            "fetch the real file with `git lfs pull`, or download it from the hub"
        )
    if lower.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<!--")):
        return (
            f"{label} is an HTML page, not a GGUF model (probably an error or login page saved by the download); "
            "re-download it from a direct file link"
        )
    if lower.startswith(b"<?xml"):
        return (
            f"{label} is an XML document (probably an error response saved by the download), not a GGUF model; "
            "re-download it"
        )
    if head[:4] in _OLD_GGML:
        return (
            f"{label} is in the old GGML/GGJT format, which llama.cpp no longer reads; "
            "download a GGUF version of the model"
        )
    if len(head) >= 9 and head[8:9] == b"{" and _U64.unpack_from(head)[0] < size:
        return (
            f"{label} is a safetensors file, not GGUF; use the mlx backend with the model's folder, "
            "or download a GGUF version of the model"
        )
    if head.startswith(b"PK\x03\x04"):
        return f"{label} is a ZIP archive (a PyTorch checkpoint, perhaps), not a GGUF file; pass a .gguf file"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return f"{label} is a Python pickle (a PyTorch checkpoint, perhaps), not a GGUF file; pass a .gguf file"
    for magic, kind in _COMPRESSED.items():
        if head.startswith(magic):
            return f"{label} is {kind}, not a GGUF file; unpack it and pass the .gguf file inside"
    if (
        path.suffix.lower() in (".onnx", ".ort")
        or path.name.lower().endswith((".onnx.data", ".onnx_data"))
        or (head[:1] == b"\x08" and any(p in head[:128] for p in (b"pytorch", b"onnx", b"tf2onnx")))
    ):
        return (
            f"{label} is an ONNX model, not GGUF; use the onnx backend with the model's folder, "
            "or download a GGUF version of the model"
        )
    if text[:1] in (b"{", b"["):
        return f"{label} is a JSON text file, not a GGUF model (a config file or an error response?); pass a .gguf file"
    if not head.strip(b"\x00"):
        return (
            f"{label} starts with zero bytes instead of 'GGUF': an incomplete or preallocated download; re-download it"
        )
    snippet = _text_snippet(head)
    if snippet is not None:
        return f"{label} is a text file starting {snippet!r}, not a GGUF model; pass a .gguf file"
    return (
        f"{label} is not a GGUF file (it starts with bytes {head[:8].hex(' ')}, not 'GGUF'); pass a .gguf file, "
        "or re-download it if it should be one"
    )


def _text_snippet(head: bytes) -> str | None:
    try:
        text = head[:256].decode("utf-8")
    except UnicodeDecodeError:
        try:
            text = head[:255].decode("utf-8")  # a character cut at the end
        except UnicodeDecodeError:
            return None
    if not all(c.isprintable() or c in "\t\r\n" for c in text):
        return None
    return " ".join(text.split())[:40]
