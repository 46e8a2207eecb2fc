"""An MLX / Hugging Face model folder, checked before mlx-lm reads it.

mlx-lm trusts its input: a truncated ``.safetensors`` file, a missing ``config.json`` or an
unparsable one surface as assorted exceptions (or worse) from deep inside it. Everything here
is read without importing MLX, and each problem becomes one :class:`ModelFormatError` line
that names the file and says what to do.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phi_backends.errors import ModelFormatError
from phi_backends.formats.json_files import read_json_object

__all__ = ["ModelFolder", "check_custom_code", "read_model_folder"]

#: mlx-lm loads exactly these files (``mlx_lm.utils.load_model``); others are ignored by it.
WEIGHTS_GLOB = "model*.safetensors"
MAX_CONFIG_BYTES = 16 * 1024 * 1024
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the limit the safetensors library itself applies
#: Bytes per element of the safetensors dtypes whose size is fixed.
DTYPE_SIZES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "U16": 2,
    "I16": 2,
    "F16": 2,
    "BF16": 2,
    "U32": 4,
    "I32": 4,
    "F32": 4,
    "U64": 8,
    "I64": 8,
    "F64": 8,
}
_MODEL_TYPE = re.compile(r"^[A-Za-z0-9_]+$")
#: Keys transformers 5 moved from the top level of config.json into ``rope_parameters``
#: but that mlx-lm 0.32's model classes still read from the top level only.
_ROPE_KEYS = ("rope_theta", "partial_rotary_factor")
DEFAULT_CONTEXT = 4096


@dataclass(frozen=True)
class ModelFolder:
    path: Path
    config: Mapping[str, Any] = field(repr=False)
    model_type: str
    weights: tuple[Path, ...]
    context_length: int | None  # config.json's max_position_embeddings (or the like), if any
    vocab_size: int | None
    #: Values for mlx-lm's ``model_config`` so that it reads what transformers 5 wrote.
    config_overrides: Mapping[str, Any]

    @property
    def head_dim(self) -> int | None:
        """The attention head size, as mlx-lm's model classes work it out (None if unknown)."""
        text = _text_config(self.config)
        explicit = _positive_int(self.config, text, "head_dim")
        if explicit:
            return explicit
        width, heads = (
            _positive_int(self.config, text, "hidden_size"),
            _positive_int(self.config, text, "num_attention_heads"),
        )
        return width // heads if width and heads else None

    @property
    def quantization(self) -> Mapping[str, Any] | None:
        value = self.config.get("quantization") or self.config.get("quantization_config")
        return value if isinstance(value, Mapping) else None


def read_model_folder(folder: Path) -> ModelFolder:
    """Check ``folder`` holds a loadable model: config.json, complete safetensors weights."""
    if not folder.is_dir():
        raise ModelFormatError(
            f"{folder} is not a folder; the mlx backend reads a model folder (config.json + *.safetensors)"
        )
    config = _config(folder / "config.json")
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not _MODEL_TYPE.match(model_type):
        raise ModelFormatError(
            f"{folder / 'config.json'} has no usable model_type (got {model_type!r}); it is not a Hugging Face model config"
        )
    weights, names = _weights(folder)
    text = _text_config(config)
    _check_layer_count(folder, config, text, names)
    return ModelFolder(
        path=folder,
        config=config,
        model_type=model_type,
        weights=weights,
        context_length=_positive_int(config, text, "max_position_embeddings", "max_sequence_length", "n_positions"),
        vocab_size=_positive_int(config, text, "vocab_size"),
        config_overrides=_rope_overrides(config),
    )


def check_custom_code(folder: ModelFolder, *, trusted: bool) -> None:
    """A config.json naming a Python file to build the model (``model_file``) runs only when trusted."""
    model_file = folder.config.get("model_file")
    if model_file is not None and not trusted:
        raise ModelFormatError(
            f"{folder.path / 'config.json'} asks to run the Python file {model_file!r} from the model folder to "
            "build the model; load with trust_remote_code=true only if you trust where the model came from"
        )


def _config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelFormatError(
            f"{path.parent} has no config.json; an MLX model folder holds config.json, model*.safetensors "
            "and the tokenizer files (convert a model with mlx_lm.convert or download one)"
        )
    return read_json_object(path, max_bytes=MAX_CONFIG_BYTES, fix="re-download or fix the file")


def _weights(folder: Path) -> tuple[tuple[Path, ...], set[str]]:
    """The weight files, checked, and the names of the tensors they hold."""
    files = tuple(sorted(folder.glob(WEIGHTS_GLOB)))
    if not files:
        others = sorted(p.name for p in folder.glob("*.safetensors"))
        found = f" (found {', '.join(others[:3])}, which mlx-lm does not read)" if others else ""
        raise ModelFormatError(
            f"{folder} has no weights: mlx-lm reads {WEIGHTS_GLOB}{found}; copy or re-download the weights"
        )
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_bytes()).get("weight_map", {})
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, RecursionError):
            weight_map = {}  # mlx-lm never reads the index; the weights themselves are checked below
        if isinstance(weight_map, dict):
            missing = sorted({str(v) for v in weight_map.values()} - {p.name for p in files})
            if missing:
                raise ModelFormatError(
                    f"{folder} is incomplete: {index.name} lists {', '.join(missing[:3])}, which is missing; "
                    "re-download the model"
                )
    names: set[str] = set()
    for path in files:
        names |= check_safetensors(path)
    return files, names


_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers|h|blocks)\.(\d+)\.")
#: Layers a config.json may claim when the weights' names do not show how many they hold.
MAX_LAYERS = 1024


def _check_layer_count(folder: Path, config: Mapping[str, Any], text: Mapping[str, Any], names: set[str]) -> None:
    """mlx-lm builds every layer config.json claims before it loads a single weight: a count of
    10**9 would build layers until memory runs out. More layers than the weights hold cannot load."""
    claimed = _positive_int(config, text, "num_hidden_layers", "n_layer", "num_layers")
    if claimed is None:
        return
    held = {int(m.group(1)) for m in map(_LAYER_INDEX.search, names) if m}
    limit = max(held) + 1 if held else MAX_LAYERS
    if claimed > limit:
        what = f"the weights hold {limit}" if held else f"more than {MAX_LAYERS} is not a real model"
        raise ModelFormatError(
            f"{folder / 'config.json'} says the model has {claimed:,} layers, but {what}; "
            "fix config.json, or re-download or re-convert the model"
        )


def check_safetensors(path: Path) -> set[str]:
    """The header parses and every tensor's bytes lie inside the file, at its declared size.

    Returns the names of the tensors in the file.
    """

    def bad(detail: str) -> ModelFormatError:
        return ModelFormatError(f"{path} is truncated or corrupt ({detail}); re-download or re-convert the model")

    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise bad(f"{size} bytes, too short for a safetensors header")
            (n,) = struct.unpack("<Q", head)
            if n > min(MAX_SAFETENSORS_HEADER, size - 8):
                raise bad(f"the header claims {n} bytes but the file has {size}")
            header = json.loads(f.read(n))
    except OSError as exc:
        raise ModelFormatError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise bad("the header is not JSON") from None
    if not isinstance(header, dict):
        raise bad("the header is not a JSON object")
    data_size = size - 8 - n
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict):
            raise bad(f"tensor {name!r} has no description")
        shape, offsets, dtype = entry.get("shape"), entry.get("data_offsets"), entry.get("dtype")
        if (
            not isinstance(shape, list)
            or not all(isinstance(d, int) and d >= 0 for d in shape)
            or not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)
        ):
            raise bad(f"tensor {name!r} has a malformed shape or data_offsets")
        begin, end = offsets
        if not 0 <= begin <= end <= data_size:
            raise bad(f"tensor {name!r} ends at byte {end} of {data_size}")
        itemsize = DTYPE_SIZES.get(str(dtype))
        if itemsize is not None and end - begin != math.prod(shape) * itemsize:
            raise bad(
                f"tensor {name!r} holds {end - begin} bytes, not the {math.prod(shape) * itemsize} its shape needs"
            )
    return {name for name in header if name != "__metadata__"}


def _text_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """Multimodal configs keep the language model's settings in ``text_config``."""
    text = config.get("text_config")
    return text if isinstance(text, Mapping) else {}


def _positive_int(config: Mapping[str, Any], text: Mapping[str, Any], *keys: str) -> int | None:
    for source in (config, text):
        for key in keys:
            value = source.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def _rope_overrides(config: Mapping[str, Any]) -> dict[str, Any]:
    """transformers 5 writes ``rope_parameters: {rope_theta, rope_type, ...}``; mlx-lm 0.32
    reads ``rope_theta`` and ``rope_scaling`` from the top level and silently falls back to its
    defaults (rope_theta 10000) when they are missing, which makes a model such as SmolLM2
    (rope_theta 100000) compute wrong logits. Fill the top-level keys from ``rope_parameters``."""
    rope = config.get("rope_parameters")
    if not isinstance(rope, Mapping) or not all(isinstance(k, str) for k in rope):
        return {}  # absent, or per-layer-type tables (models that read rope_parameters themselves)
    overrides = {key: rope[key] for key in _ROPE_KEYS if key in rope and key not in config}
    kind = rope.get("rope_type", rope.get("type"))
    if kind not in (None, "default") and config.get("rope_scaling") is None:
        overrides["rope_scaling"] = {**rope, "type": kind}  # Phi-3's mlx-lm class requires "type"
    return overrides
