"""The external-data references of an ONNX file, read without the ``onnx`` package.

Large ONNX models keep their weights in a side file (``model.onnx.data``) that the graph points
into: each initializer names a ``location``, an ``offset`` and a ``length``. A missing or
truncated side file (an interrupted download) makes onnxruntime fail deep inside session
creation with a message about one tensor; checking the extents first gives a message that
names the file and what to do.

Only the protobuf fields on the path ``ModelProto.graph (7) → GraphProto.initializer (5) →
TensorProto.{name (8), external_data (13), data_location (14)}`` are decoded; everything else
(nodes, inline weights) is skipped by its length, so even a 2 GB file is scanned in
milliseconds through ``mmap``.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ExternalRef", "NotOnnxError", "external_data_refs"]

_LFS_POINTER = b"version https://git-lfs"
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


class NotOnnxError(ValueError):
    """The file is not a complete ONNX protobuf (its message says why)."""


@dataclass(frozen=True)
class ExternalRef:
    tensor: str
    location: str
    offset: int
    length: int | None  # None: the reader uses the tensor's size (not known here)


def external_data_refs(path: Path) -> list[ExternalRef]:
    """Every initializer of the ONNX file ``path`` whose data lives in another file.

    Raises:
        NotOnnxError: the file is empty, a Git LFS pointer, or its protobuf is cut short.
        OSError: the file cannot be read.
    """
    with path.open("rb") as handle:
        head = handle.read(len(_LFS_POINTER))
        if not head:
            raise NotOnnxError("the file is empty")
        if head == _LFS_POINTER:
            raise NotOnnxError("it is a Git LFS pointer, not the model (fetch the LFS object)")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            graph = None
            for field, value in _fields(buf, 0, len(buf)):
                if field == 7 and isinstance(value, tuple):
                    graph = value
            if graph is None:
                raise NotOnnxError("it holds no graph")
            return list(_initializers(buf, *graph))


def _initializers(buf: mmap.mmap, start: int, end: int) -> Iterator[ExternalRef]:
    for field, value in _fields(buf, start, end):
        if field == 5 and isinstance(value, tuple):
            ref = _tensor(buf, *value)
            if ref is not None:
                yield ref


def _tensor(buf: mmap.mmap, start: int, end: int) -> ExternalRef | None:
    name = ""
    location = None
    entries: dict[str, str] = {}
    for field, value in _fields(buf, start, end):
        if field == 8 and isinstance(value, tuple):
            name = _text(buf, value)
        elif field == 13 and isinstance(value, tuple):
            key = text = ""
            for inner, item in _fields(buf, *value):
                if inner == 1 and isinstance(item, tuple):
                    key = _text(buf, item)
                elif inner == 2 and isinstance(item, tuple):
                    text = _text(buf, item)
            entries[key] = text
        elif field == 14 and isinstance(value, int):
            location = value
    if location != _EXTERNAL and not entries:
        return None
    try:
        offset = int(entries.get("offset", "0") or 0)
        length = int(entries["length"]) if entries.get("length") else None
    except ValueError:
        raise NotOnnxError(f"tensor {name!r} has a malformed external-data offset or length") from None
    return ExternalRef(name, entries.get("location", ""), offset, length)


def _fields(buf: mmap.mmap, start: int, end: int) -> Iterator[tuple[int, int | tuple[int, int]]]:
    """``(field number, varint value or (start, end) of a length-delimited value)``."""
    i = start
    while i < end:
        key, i = _varint(buf, i, end)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i, end)
            yield field, value
        elif wire == 2:
            size, i = _varint(buf, i, end)
            if i + size > end:
                raise NotOnnxError("it is cut short (truncated download?)")
            yield field, (i, i + size)
            i += size
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
            if i > end:
                raise NotOnnxError("it is cut short (truncated download?)")
        else:  # groups (3, 4) do not occur in ONNX files; anything else is not protobuf
            raise NotOnnxError("it is not an ONNX protobuf")


def _varint(buf: mmap.mmap, i: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if i >= end or shift > 63:
            raise NotOnnxError("it is cut short or not an ONNX protobuf")
        byte = buf[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, i
        shift += 7


def _text(buf: mmap.mmap, span: tuple[int, int]) -> str:
    return buf[span[0] : span[1]].decode("utf-8", errors="replace")
