"""onnxruntime-genai's tokenizer, built without the model folder's chat template.

``og.Tokenizer`` parses the folder's chat template (``tokenizer_config.json``'s
``chat_template``, ``chat_template.jinja``, ``chat_template.json``) as soon as it is created, with
a parser that crashes the whole process on some templates: a Jinja comment of 50,000 characters,
or an expression of 16,000 terms, is a segmentation fault in onnxruntime-genai 0.18.0. The chat
template is untrusted input that phi-backends renders itself, in its sandbox, and never asks
onnxruntime-genai to render; so the tokenizer is built from a temporary folder holding copies of
the model folder's small files, with every chat template left out.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from phi_backends.errors import ModelFormatError

__all__ = ["MAX_COPIED_BYTES", "template_free_folder"]

#: Files bigger than this are weights, not tokenizer files, and are not copied.
MAX_COPIED_BYTES = 256 * 1024 * 1024
_TEMPLATE_FILES = frozenset({"chat_template.jinja", "chat_template.json"})
_WEIGHT_SUFFIXES = (".onnx", ".onnx.data", ".onnx_data", ".data", ".bin", ".safetensors", ".pb", ".ort")
_CONFIG = "tokenizer_config.json"


@contextmanager
def template_free_folder(folder: Path) -> Iterator[Path]:
    """A temporary folder with copies of ``folder``'s tokenizer files and ``genai_config.json``,
    and no chat template; removed on exit (the tokenizer has read what it needs by then)."""
    with tempfile.TemporaryDirectory(prefix="phi-backends-tokenizer-") as tmp:
        view = Path(tmp)
        for item in sorted(folder.iterdir()):
            name = item.name
            if name in _TEMPLATE_FILES or name.endswith(_WEIGHT_SUFFIXES):
                continue
            if name == _CONFIG:
                _copy_config(item, view / name)
                continue
            try:
                if item.is_file() and item.stat().st_size <= MAX_COPIED_BYTES:
                    shutil.copyfile(item, view / name)
            except OSError:
                continue  # unreadable: onnxruntime-genai says what it misses, as it would have
        yield view


def _copy_config(source: Path, target: Path) -> None:
    """``tokenizer_config.json`` without its ``chat_template``; copied as is when it is not a JSON object."""
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise ModelFormatError(
            f"cannot read {source} ({exc.strerror or exc}); fix or re-download the model folder"
        ) from None
    try:
        config = json.loads(raw)
    except (ValueError, RecursionError):
        config = None  # onnxruntime-genai reports it, as it would have
    if isinstance(config, dict):
        config.pop("chat_template", None)
        target.write_text(json.dumps(config), encoding="utf-8")
    else:
        target.write_bytes(raw)
