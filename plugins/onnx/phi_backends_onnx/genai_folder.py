"""An ONNX Runtime GenAI model folder, read and checked before onnxruntime-genai sees it.

onnxruntime-genai reports a bad folder as a RuntimeError whose text comes from deep inside
(a JSON parser position, one tensor's name, a protobuf error). Here the folder is checked
first, so that the common failures (no or broken ``genai_config.json``, a missing ``.onnx``
file, a missing or truncated ``model.onnx.data``) get one line that names the file and says
what to do. Everything read is untrusted input: sizes are bounded and types checked.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from phi_backends.errors import ModelFormatError
from phi_backends.formats.json_files import read_json_object

from .onnx_external_data import NotOnnxError, external_data_refs

__all__ = ["CONFIG_NAME", "GenaiFolder", "read_genai_folder"]

CONFIG_NAME = "genai_config.json"
MAX_CONFIG_BYTES = 4 * 1024 * 1024
#: Parts of multimodal models (vision, audio) that this text-only backend cannot feed.
_MULTIMODAL_PARTS = ("vision", "speech", "embedding", "encoder")
_REDOWNLOAD = "re-download the model folder (every file in it)"


@dataclass(frozen=True)
class GenaiFolder:
    """The facts of ``genai_config.json`` the engine needs, after checking the folder."""

    path: Path
    model_type: str
    context_length: int
    vocab_size: int
    eos_token_ids: tuple[int, ...]
    bos_token_id: int | None
    providers: tuple[str, ...]  # the execution providers the config names, in order (empty: cpu)
    onnx_files: tuple[str, ...]


def read_genai_folder(folder: Path) -> GenaiFolder:
    """Read and check ``folder``; raises ModelFormatError with a one-line message."""
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise ModelFormatError(
            f"{folder} has no {CONFIG_NAME}, so it is not an ONNX Runtime GenAI model folder; "
            "point at the folder that holds genai_config.json (for published models, the sub-folder for your provider)"
        )
    config = read_json_object(path, max_bytes=MAX_CONFIG_BYTES, fix=_REDOWNLOAD)
    model = _table(config, "model", path)
    decoder = _table(model, "decoder", path, where="model.")
    for part in _MULTIMODAL_PARTS:
        if part in model:
            raise ModelFormatError(
                f"{path} describes a multimodal model (it has model.{part}); the onnx backend runs text-only "
                "decoder models: use the text-only ONNX export of this model"
            )
    context_length = _positive_int(model, "context_length", path)
    vocab_size = _positive_int(model, "vocab_size", path)
    eos = model.get("eos_token_id")
    eos_ids = tuple(eos) if isinstance(eos, list) else (eos,)
    if not eos_ids or not all(_is_id(i, vocab_size) for i in eos_ids):
        raise ModelFormatError(
            f"{path}: model.eos_token_id must be a token id (or a list of them) below vocab_size {vocab_size}, "
            f"got {eos!r:.60}; {_REDOWNLOAD}"
        )
    bos = model.get("bos_token_id")
    if bos is not None and not _is_id(bos, vocab_size):
        raise ModelFormatError(f"{path}: model.bos_token_id {bos!r:.40} is not a token id; {_REDOWNLOAD}")
    model_type = model.get("type")
    if not isinstance(model_type, str) or not model_type:
        raise ModelFormatError(f"{path}: model.type is missing; {_REDOWNLOAD}")
    onnx_files = tuple(_onnx_files(decoder, path))
    for name in onnx_files:
        _check_onnx_file(folder, name)
    return GenaiFolder(
        path=folder,
        model_type=model_type,
        context_length=context_length,
        vocab_size=vocab_size,
        eos_token_ids=tuple(int(i) for i in eos_ids),
        bos_token_id=int(bos) if bos is not None else None,
        providers=tuple(_providers(decoder)),
        onnx_files=onnx_files,
    )


# -- genai_config.json ----------------------------------------------------------------------------


def _table(data: Mapping[str, Any], key: str, path: Path, where: str = "") -> Mapping[str, Any]:
    value = data.get(key)
    if not isinstance(value, Mapping):
        raise ModelFormatError(f"{path} has no {where}{key} section; {_REDOWNLOAD}")
    return value


def _positive_int(model: Mapping[str, Any], key: str, path: Path) -> int:
    value = model.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**31:
        raise ModelFormatError(f"{path}: model.{key} must be a positive whole number, got {value!r:.40}; {_REDOWNLOAD}")
    return value


def _is_id(value: Any, vocab_size: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < vocab_size


def _onnx_files(decoder: Mapping[str, Any], path: Path) -> Iterator[str]:
    """``model.decoder.filename``, or each stage's filename of a pipeline decoder."""
    if "filename" in decoder:
        yield _file_name(decoder["filename"], path, "model.decoder.filename")
        return
    pipeline = decoder.get("pipeline")
    if isinstance(pipeline, list) and pipeline:
        for stage in pipeline:
            for name, part in stage.items() if isinstance(stage, Mapping) else ():
                if isinstance(part, Mapping) and "filename" in part:
                    yield _file_name(part["filename"], path, f"model.decoder.pipeline.{name}.filename")
        return
    raise ModelFormatError(f"{path}: model.decoder.filename is missing (which .onnx file to run?); {_REDOWNLOAD}")


def _file_name(value: Any, path: Path, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ModelFormatError(f"{path}: {key} must be a file name, got {value!r:.60}; {_REDOWNLOAD}")
    pure = PurePosixPath(value.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts:
        raise ModelFormatError(f"{path}: {key} {value!r} points outside the model folder; refusing to load it")
    return value


def _providers(decoder: Mapping[str, Any]) -> Iterator[str]:
    session = decoder.get("session_options")
    entries = session.get("provider_options") if isinstance(session, Mapping) else None
    for entry in entries if isinstance(entries, list) else ():
        if isinstance(entry, Mapping):
            yield from (str(name) for name in entry)


# -- the .onnx files and their external data ----------------------------------------------------------


def _check_onnx_file(folder: Path, name: str) -> None:
    onnx_path = folder / name
    if not onnx_path.is_file():
        raise ModelFormatError(f"{onnx_path} is missing (genai_config.json names it); {_REDOWNLOAD}")
    try:
        refs = external_data_refs(onnx_path)
    except NotOnnxError as exc:
        raise ModelFormatError(f"{onnx_path} is not a complete ONNX model: {exc}; {_REDOWNLOAD}") from None
    except OSError as exc:
        raise ModelFormatError(f"cannot read {onnx_path}: {exc.strerror or exc}") from None
    needed: dict[str, int] = {}
    for ref in refs:
        end = ref.offset + (ref.length if ref.length is not None else 1)
        needed[ref.location] = max(needed.get(ref.location, 0), end)
    for location, end in needed.items():
        pure = PurePosixPath(location.replace("\\", "/"))
        if not location or pure.is_absolute() or ".." in pure.parts:
            continue  # onnxruntime refuses these itself, with a message naming them
        data = onnx_path.parent / location
        try:
            size = os.stat(data).st_size
        except OSError:
            raise ModelFormatError(f"{data} is missing: {name} keeps its weights there; {_REDOWNLOAD}") from None
        if size < end:
            raise ModelFormatError(
                f"{data} is truncated: it has {size} bytes but {name} needs at least {end} "
                f"(an interrupted download?); {_REDOWNLOAD}"
            )
