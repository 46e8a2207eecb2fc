"""What the core needs from a Hugging Face tokenizer folder, read without any engine.

ONNX Runtime GenAI and MLX folders carry the model's tokenizer as ``tokenizer.json`` (the
`tokenizers` library's format) plus ``tokenizer_config.json`` / ``special_tokens_map.json``.
The engines tokenize text themselves, but neither gives the raw bytes of one token, which the
core's streaming detokenizer needs (a character may be split across tokens). This module reads
them once per model:

- byte-level BPE vocabularies (GPT-2, SmolLM2, Phi-4): each piece's characters map back to
  bytes through GPT-2's ``bytes_to_unicode`` table;
- SentencePiece-style vocabularies (Llama, Phi-3): ``▁`` is a space and ``<0xNN>`` pieces are
  single bytes (byte fallback);
- added tokens: a special (control) token stands for no text (``b""``), as in llama.cpp;
  a non-special added token stands for its content.

The files are untrusted input: size-bounded, type-checked, and every failure is one
:class:`~phi_backends.errors.ModelFormatError` line that names the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import ModelFormatError
from .json_files import read_json_object

__all__ = ["HFTokenizerFacts", "read_hf_tokenizer", "token_text"]

MAX_TOKENIZER_BYTES = 256 * 1024 * 1024  # Phi-4's tokenizer.json is ~15 MB; refuse absurd files
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@dataclass(frozen=True)
class HFTokenizerFacts:
    """A tokenizer folder's vocabulary as bytes, and its special tokens."""

    token_bytes: tuple[bytes, ...]  # index = token id; b"" for control tokens and unused ids
    token_to_id: Mapping[str, int] = field(repr=False)
    special_ids: frozenset[int]
    bos_token: str | None
    bos_token_id: int | None
    eos_token: str | None
    eos_token_id: int | None
    add_bos: bool
    strip_leading_space: bool  # SentencePiece: the decoder drops the first piece's space
    model_type: str  # "BPE", "Unigram", ...

    @property
    def vocab_size(self) -> int:
        return len(self.token_bytes)


def read_hf_tokenizer(folder: Path) -> HFTokenizerFacts:
    """The tokenizer facts of a Hugging Face folder (cached per file version)."""
    path = folder / "tokenizer.json"
    try:
        stat = path.stat()
    except OSError:
        raise ModelFormatError(
            f"{folder} has no tokenizer.json; copy the model's tokenizer files into the folder or re-download it"
        ) from None
    return _read(path.resolve(), stat.st_mtime_ns, stat.st_size)


def token_text(value: Any) -> str | None:
    """A special-token entry of ``tokenizer_config.json``: a string or ``{"content": ...}``."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


@lru_cache(maxsize=8)
def _read(path: Path, mtime_ns: int, size: int) -> HFTokenizerFacts:
    data = _json_object(path, required=True)
    model = _table(data, "model", path)
    model_type = str(model.get("type", "BPE"))
    pieces = dict(_model_pieces(model, model_type, path))
    added = _added_tokens(data, path)
    for token_id, (content, _special) in added.items():
        pieces[token_id] = content
    size_ = max(pieces, default=-1) + 1
    byte_level, replacements, byte_fallback, strip = _decoder(data.get("decoder"), model)

    table = [b""] * size_
    for token_id, piece in pieces.items():
        if token_id in added:
            continue
        table[token_id] = _piece_bytes(piece, byte_level, replacements, byte_fallback)
    special: set[int] = set()
    for token_id, (content, is_special) in added.items():
        if is_special:
            special.add(token_id)
        else:
            table[token_id] = content.encode("utf-8")

    token_to_id = {piece: token_id for token_id, piece in pieces.items()}
    config = {
        **_json_object(path.parent / "special_tokens_map.json"),
        **_json_object(path.parent / "tokenizer_config.json"),
    }
    bos, eos = token_text(config.get("bos_token")), token_text(config.get("eos_token"))
    bos_id = token_to_id.get(bos) if bos else None
    eos_id = token_to_id.get(eos) if eos else None
    add_bos = config.get("add_bos_token")
    if not isinstance(add_bos, bool):
        add_bos = bos_id is not None and bos_id in _post_processor_prefix(data.get("post_processor"))
    return HFTokenizerFacts(
        token_bytes=tuple(table),
        token_to_id=token_to_id,
        special_ids=frozenset(special),
        bos_token=bos,
        bos_token_id=bos_id,
        eos_token=eos,
        eos_token_id=eos_id,
        add_bos=bool(add_bos) and bos_id is not None,
        strip_leading_space=strip,
        model_type=model_type,
    )


# -- reading the files ---------------------------------------------------------------------------


def _json_object(path: Path, *, required: bool = False) -> dict[str, Any]:
    if not path.is_file():
        if required:
            raise ModelFormatError(f"{path} is missing; re-download the model")
        return {}
    return read_json_object(path, max_bytes=MAX_TOKENIZER_BYTES, fix="re-download the model")


def _table(data: Mapping[str, Any], key: str, path: Path) -> Mapping[str, Any]:
    value = data.get(key)
    if not isinstance(value, Mapping):
        raise ModelFormatError(f"{path} has no {key!r} table; re-download the model")
    return value


def _model_pieces(model: Mapping[str, Any], model_type: str, path: Path) -> Iterator[tuple[int, str]]:
    vocab = model.get("vocab")
    if isinstance(vocab, (Mapping, list)) and len(vocab) > 4_000_000:
        raise ModelFormatError(f"{path}: a vocabulary of {len(vocab)} entries is not plausible; re-download the model")
    if model_type in ("BPE", "WordPiece", "WordLevel") and isinstance(vocab, Mapping):
        for piece, token_id in vocab.items():
            if not isinstance(token_id, int) or token_id < 0:
                raise ModelFormatError(f"{path}: vocabulary entry {piece!r} has id {token_id!r}; re-download the model")
            yield token_id, str(piece)
    elif model_type == "Unigram" and isinstance(vocab, list):
        for token_id, entry in enumerate(vocab):
            if not isinstance(entry, list) or not entry or not isinstance(entry[0], str):
                raise ModelFormatError(f"{path}: vocabulary entry {token_id} is malformed; re-download the model")
            yield token_id, entry[0]
    else:
        raise ModelFormatError(f"{path}: unsupported tokenizer model {model_type!r} (expected BPE or Unigram)")


def _added_tokens(data: Mapping[str, Any], path: Path) -> dict[int, tuple[str, bool]]:
    added: dict[int, tuple[str, bool]] = {}
    entries = data.get("added_tokens") or []
    if not isinstance(entries, list):
        raise ModelFormatError(f"{path}: 'added_tokens' should be a list; re-download the model")
    for entry in entries:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("id"), int) or entry["id"] < 0:
            raise ModelFormatError(f"{path}: malformed added token {entry!r:.80}; re-download the model")
        added[entry["id"]] = (str(entry.get("content", "")), bool(entry.get("special", False)))
    return added


# -- the decoder: how a piece becomes bytes -----------------------------------------------------


def _decoder(decoder: Any, model: Mapping[str, Any]) -> tuple[bool, list[tuple[str, str]], bool, bool]:
    """(byte-level?, string replacements, byte fallback?, strip the first space?)."""
    steps = _flatten(decoder)
    byte_level = any(step.get("type") == "ByteLevel" for step in steps)
    replacements: list[tuple[str, str]] = []
    byte_fallback = bool(model.get("byte_fallback", False))
    strip = False
    for step in steps:
        kind = step.get("type")
        if kind == "Replace":
            pattern = step.get("pattern")
            if isinstance(pattern, Mapping) and isinstance(pattern.get("String"), str):
                replacements.append((pattern["String"], str(step.get("content", ""))))
        elif kind == "ByteFallback":
            byte_fallback = True
        elif kind == "Metaspace":
            replacements.append((str(step.get("replacement", "\u2581")), " "))
            scheme = step.get("prepend_scheme", "always" if step.get("add_prefix_space", True) else "never")
            strip = strip or scheme in ("always", "first")
        elif kind == "Strip" and step.get("content", " ") == " " and int(step.get("start", 0) or 0) > 0:
            strip = True
    return byte_level, replacements, byte_fallback, strip


def _flatten(decoder: Any) -> list[Mapping[str, Any]]:
    if not isinstance(decoder, Mapping):
        return []
    if decoder.get("type") == "Sequence":
        return [step for inner in decoder.get("decoders") or [] for step in _flatten(inner)]
    return [decoder]


def _piece_bytes(piece: str, byte_level: bool, replacements: list[tuple[str, str]], byte_fallback: bool) -> bytes:
    if byte_level:
        table = _unicode_to_byte()
        if all(ch in table for ch in piece):
            return bytes(table[ch] for ch in piece)
        return piece.encode("utf-8")
    if byte_fallback:
        match = _BYTE_PIECE.fullmatch(piece)
        if match:
            return bytes([int(match.group(1), 16)])
    for old, new in replacements:
        piece = piece.replace(old, new)
    return piece.encode("utf-8")


@lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    """The inverse of GPT-2's ``bytes_to_unicode``: printable stand-ins back to bytes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def _post_processor_prefix(post: Any) -> set[int]:
    """Ids a ``TemplateProcessing`` post-processor puts before a single sequence."""
    ids: set[int] = set()
    for step in _flatten_post(post):
        if step.get("type") != "TemplateProcessing":
            continue
        single = step.get("single") or []
        specials = step.get("special_tokens") or {}
        for item in single:
            if not isinstance(item, Mapping) or "Sequence" in item:
                break
            name = (item.get("SpecialToken") or {}).get("id")
            entry = specials.get(name) if isinstance(specials, Mapping) else None
            if isinstance(entry, Mapping):
                ids.update(i for i in entry.get("ids") or [] if isinstance(i, int))
    return ids


def _flatten_post(post: Any) -> list[Mapping[str, Any]]:
    if not isinstance(post, Mapping):
        return []
    if post.get("type") == "Sequence":
        return [step for inner in post.get("processors") or [] for step in _flatten_post(inner)]
    return [post]
