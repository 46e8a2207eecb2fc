"""Where a model's own chat template comes from, for backends that read model folders.

GGUF files carry it in their metadata (``tokenizer.chat_template``, read by
:mod:`phi_backends.formats.gguf`). Hugging Face folders (ONNX Runtime GenAI, MLX) carry it, in the
order transformers looks: ``chat_template.jinja``, then ``chat_template.json``, then
``tokenizer_config.json``'s ``chat_template`` (a string, or a list of named templates of which
``default`` is used). The BOS and EOS token texts come from ``tokenizer_config.json``.

What is read here is untrusted: render it only through :func:`phi_backends.templates.jinja_template`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TemplateError
from .hf_tokenizer import token_text

__all__ = ["FolderTemplate", "folder_chat_template", "read_folder_template"]


@dataclass(frozen=True)
class FolderTemplate:
    source: str | None
    bos_token: str | None
    eos_token: str | None
    origin: str  # the file it came from, for messages


def read_folder_template(folder: Path) -> FolderTemplate:
    """The chat template and special-token texts of a Hugging Face model folder."""
    config = _json(folder / "tokenizer_config.json")
    bos, eos = token_text(config.get("bos_token")), token_text(config.get("eos_token"))
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return FolderTemplate(_text(jinja), bos, eos, jinja.name)
    separate = _json(folder / "chat_template.json")
    if "chat_template" in separate:
        return FolderTemplate(
            _pick(separate["chat_template"], folder / "chat_template.json"), bos, eos, "chat_template.json"
        )
    if "chat_template" in config:
        return FolderTemplate(
            _pick(config["chat_template"], folder / "tokenizer_config.json"), bos, eos, "tokenizer_config.json"
        )
    return FolderTemplate(None, bos, eos, "")


def folder_chat_template(folder: Path) -> tuple[str | None, str | None]:
    """The folder's template source, or None and why: for :attr:`EngineInfo.chat_template` and
    ``chat_template_error``. A broken template file does not stop a model from loading: a
    built-in template or raw mode still works, and the reason is shown if the template is needed."""
    try:
        return read_folder_template(folder).source, None
    except TemplateError as exc:
        return None, str(exc)


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(
            f"cannot read the chat template {path}: {exc}; fix the file or pass --template NAME"
        ) from None


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(_text(path))
    except json.JSONDecodeError as exc:
        raise TemplateError(
            f"{path} is not valid JSON ({exc}); fix or re-download it, or pass --template NAME"
        ) from None
    if not isinstance(data, dict):
        raise TemplateError(f"{path} should hold a JSON object; fix or re-download it, or pass --template NAME")
    return data


def _pick(value: Any, path: Path) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {item.get("name"): item.get("template") for item in value if isinstance(item, dict)}
        chosen = named.get("default")
        if isinstance(chosen, str):
            return chosen
    raise TemplateError(
        f"{path} has a chat_template that is neither a string nor a list with a 'default' entry; pass --template NAME"
    )
