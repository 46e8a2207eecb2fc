"""Copies of the test models with one thing changed: a hostile chat template, or a broken file.

A Hugging Face style folder (ONNX Runtime GenAI, MLX) is copied as a farm of symlinks to the
cached fixture, so only the files a case changes take space; a changed file is always a fresh
regular file (never written through a link into the cache). A GGUF is copied whole (17 MB).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.reliability.gguf_edit import replace_value, string_value

__all__ = [
    "Change",
    "break_folder",
    "edit_json",
    "fill_onnx_data",
    "fill_safetensors",
    "folder_with_template",
    "gguf_with_template",
    "link_folder",
    "make_dir",
    "remove",
    "self_link",
    "write",
]

Change = Callable[[Path], None]
"""Changes one model folder in place."""


def link_folder(source: Path, target: Path) -> Path:
    """``target``: a new folder of symlinks to every file of ``source``."""
    target.mkdir(parents=True)
    for item in sorted(source.resolve().iterdir()):
        os.symlink(item, target / item.name)
    return target


def break_folder(source: Path, target: Path, *changes: Change) -> Path:
    folder = link_folder(source, target)
    for change in changes:
        change(folder)
    return folder


def write(name: str, data: bytes | str) -> Change:
    def apply(folder: Path) -> None:
        path = folder / name
        path.unlink(missing_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)

    return apply


def remove(name: str) -> Change:
    return lambda folder: (folder / name).unlink()


def make_dir(name: str) -> Change:
    """A folder where a file is expected."""

    def apply(folder: Path) -> None:
        (folder / name).unlink(missing_ok=True)
        (folder / name).mkdir()

    return apply


def self_link(name: str) -> Change:
    """A symlink that points at itself (a loop: opening it fails with ELOOP)."""

    def apply(folder: Path) -> None:
        (folder / name).unlink(missing_ok=True)
        os.symlink(name, folder / name)

    return apply


def edit_json(name: str, change: Callable[[dict[str, Any]], None]) -> Change:
    def apply(folder: Path) -> None:
        data = json.loads((folder / name).read_text(encoding="utf-8"))
        change(data)
        write(name, json.dumps(data, indent=2))(folder)

    return apply


def fill_onnx_data(value: float, name: str = "model.onnx.data") -> Change:
    """Every float32 of the ONNX external data file set to ``value`` (same size: only the numbers are bad)."""

    def apply(folder: Path) -> None:
        size = (folder / name).stat().st_size
        write(name, struct.pack("<f", value) * (size // 4) + b"\0" * (size % 4))(folder)

    return apply


def fill_safetensors(value: float, name: str = "model.safetensors") -> Change:
    """Every float32 tensor of a safetensors file filled with ``value``; the header is kept."""

    def apply(folder: Path) -> None:
        data = bytearray((folder / name).read_bytes())
        (n,) = struct.unpack_from("<Q", data)
        header = json.loads(data[8 : 8 + n])
        start = 8 + n
        for key, entry in header.items():
            if key != "__metadata__" and entry["dtype"] == "F32":
                begin, end = entry["data_offsets"]
                data[start + begin : start + end] = struct.pack("<f", value) * ((end - begin) // 4)
        write(name, bytes(data))(folder)

    return apply


# -- hostile chat templates ------------------------------------------------------------------------


def gguf_with_template(source: Path, target: Path, template: str) -> Path:
    """A copy of the GGUF ``source`` whose ``tokenizer.chat_template`` is ``template``."""
    target.write_bytes(replace_value(source.read_bytes(), "tokenizer.chat_template", string_value(template)))
    return target


def folder_with_template(source: Path, target: Path, template: str, *, place: str = "tokenizer_config.json") -> Path:
    """A copy of the Hugging Face folder ``source`` whose chat template is ``template``, stored in ``place``.

    The template files that transformers would read first (``chat_template.jinja``, then
    ``chat_template.json``) are left out, so ``place`` is the one that is used.
    """
    folder = link_folder(source, target)
    for name in ("chat_template.jinja", "chat_template.json"):
        (folder / name).unlink(missing_ok=True)
    if place == "tokenizer_config.json":
        edit_json(place, lambda config: config.update(chat_template=template))(folder)
    elif place == "chat_template.json":
        write(place, json.dumps({"chat_template": template}))(folder)
    elif place == "chat_template.jinja":
        write(place, template)(folder)
    else:
        raise ValueError(f"unknown template place {place!r}")
    return folder
