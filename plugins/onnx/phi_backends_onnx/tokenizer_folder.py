"""onnxruntime-genai's tokenizer, built without the model folder's chat template.

``og.Tokenizer`` parses the folder's chat template (``tokenizer_config.json``'s
``chat_template``, ``chat_template.jinja``, ``chat_template.json``) as soon as it is created, with
a parser that crashes the whole process on some templates: a Jinja comment of 50,000 characters,
or an expression of 16,000 terms, is a segmentation fault in onnxruntime-genai 0.18.0. The chat
template is untrusted input that phi-backends renders itself, in its sandbox, and never asks
onnxruntime-genai to render; so the tokenizer is built from a temporary folder holding copies of
the model folder's small files, with every chat template left out.

onnxruntime-genai's tokenizer always matches the added tokens; it has no switch to tokenize a
control token's text as text (what ``tokenize(..., special=False)`` needs). The same copy with the
special added tokens left out of ``tokenizer.json`` and ``tokenizer_config.json`` gives a second
tokenizer that does, the way Hugging Face's ``split_special_tokens`` and llama.cpp's
``parse_special=False`` do: the tokens the vocabulary adds as ordinary text are still matched.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from phi_backends.errors import ModelFormatError
from phi_backends.formats.json_files import read_json_object

__all__ = ["MAX_COPIED_BYTES", "template_free_folder"]

#: Files bigger than this are weights, not tokenizer files, and are not copied.
MAX_COPIED_BYTES = 256 * 1024 * 1024
_TEMPLATE_FILES = frozenset({"chat_template.jinja", "chat_template.json"})
_WEIGHT_SUFFIXES = (".onnx", ".onnx.data", ".onnx_data", ".data", ".bin", ".safetensors", ".pb", ".ort")
_CONFIG = "tokenizer_config.json"
_TOKENIZER = "tokenizer.json"
_FIX = "fix or re-download the model folder"


@contextmanager
def template_free_folder(folder: Path, *, special_tokens: bool = True) -> Iterator[Path]:
    """A temporary folder with copies of ``folder``'s tokenizer files and ``genai_config.json``,
    and no chat template; removed on exit (the tokenizer has read what it needs by then).
    ``special_tokens=False`` leaves the special added tokens out too."""
    with tempfile.TemporaryDirectory(prefix="phi-backends-tokenizer-") as tmp:
        view = Path(tmp)
        for item in sorted(folder.iterdir()):
            name = item.name
            if name in _TEMPLATE_FILES or name.endswith(_WEIGHT_SUFFIXES):
                continue
            if name == _CONFIG:
                _copy_config(item, view / name, special_tokens=special_tokens)
                continue
            if name == _TOKENIZER and not special_tokens:
                _copy_without_special(item, view / name)
                continue
            try:
                if item.is_file() and item.stat().st_size <= MAX_COPIED_BYTES:
                    shutil.copyfile(item, view / name)
            except OSError:
                continue  # unreadable: onnxruntime-genai says what it misses, as it would have
        yield view


def _copy_without_special(source: Path, target: Path) -> None:
    """``tokenizer.json`` without the ``added_tokens`` marked ``special``."""
    data = read_json_object(source, max_bytes=MAX_COPIED_BYTES, fix=_FIX)
    added = data.get("added_tokens")
    if isinstance(added, list):
        data["added_tokens"] = [token for token in added if not (isinstance(token, dict) and token.get("special"))]
    target.write_text(json.dumps(data), encoding="utf-8")


def _copy_config(source: Path, target: Path, *, special_tokens: bool = True) -> None:
    """``tokenizer_config.json`` without its ``chat_template`` (and with ``special_tokens=False``,
    without the special entries of ``added_tokens_decoder``, which onnxruntime-genai matches too);
    copied as is when it is not a JSON object."""
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
        decoder = config.get("added_tokens_decoder")
        if not special_tokens and isinstance(decoder, dict):
            config["added_tokens_decoder"] = {
                key: value for key, value in decoder.items() if not (isinstance(value, dict) and value.get("special"))
            }
        target.write_text(json.dumps(config), encoding="utf-8")
    else:
        target.write_bytes(raw)
