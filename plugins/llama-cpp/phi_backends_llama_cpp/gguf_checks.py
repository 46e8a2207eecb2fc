"""llama.cpp's crash preconditions: valid GGUF that llama.cpp would load and then abort, crash or hang on.

The kit's :func:`~phi_backends.formats.gguf.read_gguf` checks that a file is well-formed GGUF.
These checks are llama.cpp's own (measured with llama-cpp-python 0.3.36): it reads some values
without checking them, and a bad one ends the whole process (a ``GGML_ASSERT``, a segfault) or
never returns. :func:`check_for_llama_cpp` refuses them first, with one line that says so.
"""

from __future__ import annotations

import math
from typing import Any

from phi_backends.errors import ModelFormatError
from phi_backends.formats.gguf import GGUFInfo, GGUFValueType, quoted

__all__ = ["LLAMA_MAX_LAYERS", "check_for_llama_cpp"]

LLAMA_MAX_LAYERS = 512  # llama.cpp's limit; it aborts outside 1..512
_INT32_MAX = 2**31 - 1  # llama.cpp returns the training context as an int32

# ggml types that llama.cpp cannot compute with as weights: it aborts (I32 token_embd) or
# segfaults (I32 output) on them. No converter writes them for a model's weights.
_NOT_WEIGHT_TYPES = {24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64"}

# llama.cpp reads these arrays' raw data with no type or length check (a mismatch reads out of bounds).
_TOKENIZER_ARRAYS = {
    "tokenizer.ggml.scores": GGUFValueType.FLOAT32,
    "tokenizer.ggml.token_type": GGUFValueType.INT32,
}
_TOKENS = "tokenizer.ggml.tokens"

_INT_TYPES = frozenset(
    {
        GGUFValueType.UINT8,
        GGUFValueType.INT8,
        GGUFValueType.UINT16,
        GGUFValueType.INT16,
        GGUFValueType.UINT32,
        GGUFValueType.INT32,
        GGUFValueType.UINT64,
        GGUFValueType.INT64,
    }
)
_FLOAT_TYPES = frozenset({GGUFValueType.FLOAT32, GGUFValueType.FLOAT64})


def check_for_llama_cpp(info: GGUFInfo) -> None:
    """Raise :class:`ModelFormatError` if llama.cpp would abort, crash or hang on this file."""
    _check_tokenizer(info)
    _check_weight_types(info)
    _check_hyperparameters(info)
    _check_unique_tokens(info)  # last: the only check that reads the file again


def _check_tokenizer(info: GGUFInfo) -> None:
    """llama.cpp indexes scores and token types by token id, unchecked: mismatches crash it."""
    tokens = info.kinds.get(_TOKENS)
    if tokens is None:
        return
    n_tokens = tokens.count  # read_gguf checked that the tokens are an array of strings
    for key, expected in _TOKENIZER_ARRAYS.items():
        kind = info.kinds.get(key)
        if kind is None:
            continue
        if not kind.is_array_of(expected):
            raise ModelFormatError(
                f"{info.label} is corrupt: {key} must be an array of {expected.name}; re-download it"
            )
        if kind.count != n_tokens:
            raise ModelFormatError(
                f"{info.label} is corrupt: {key} has {kind.count:,} entries but there are {n_tokens:,} tokens; "
                "re-download it"
            )
    merges = info.kinds.get("tokenizer.ggml.merges")
    if merges is not None and not merges.is_array_of(GGUFValueType.STRING):  # llama.cpp asserts and aborts
        raise ModelFormatError(
            f"{info.label} is corrupt: tokenizer.ggml.merges is not an array of strings; re-download it"
        )


def _check_weight_types(info: GGUFInfo) -> None:
    for t in info.tensors:
        if t.ggml_type in _NOT_WEIGHT_TYPES:
            raise ModelFormatError(
                f"{info.label} is corrupt: tensor {quoted(t.name)} has the integer/F64 type "
                f"{_NOT_WEIGHT_TYPES[t.ggml_type]}, which llama.cpp cannot use for model weights; re-download it"
            )


def _check_hyperparameters(info: GGUFInfo) -> None:
    """Values llama.cpp loads without checking and then aborts, crashes or hangs on.

    Only scalar values of the usual types are checked; anything else llama.cpp itself refuses.
    """
    arch = info.architecture
    if arch is None:
        return

    def scalar(name: str, types: frozenset[GGUFValueType]) -> Any:
        key = f"{arch}.{name}"
        kind = info.kinds.get(key)
        return info.metadata[key] if kind is not None and kind.value_type in types else None

    def corrupt(name: str, value: object, need: str) -> ModelFormatError:
        return ModelFormatError(
            f"{info.label} is corrupt: {arch}.{name} is {value!r}, but {need} (llama.cpp would abort or hang); "
            "re-download it"
        )

    layers = scalar("block_count", _INT_TYPES)
    if layers is not None and not 1 <= layers <= LLAMA_MAX_LAYERS:
        raise corrupt("block_count", layers, f"a model has 1 to {LLAMA_MAX_LAYERS} layers")
    context = scalar("context_length", _INT_TYPES)
    if context is not None and not 1 <= context <= _INT32_MAX:
        raise corrupt("context_length", context, f"it must be 1 to {_INT32_MAX:,}")
    for name in ("attention.layer_norm_rms_epsilon", "attention.layer_norm_epsilon"):
        eps = scalar(name, _FLOAT_TYPES)
        if eps is not None and not (math.isfinite(eps) and eps >= 0):
            raise corrupt(name, eps, "a norm epsilon is a small positive number")
    rot = scalar("rope.dimension_count", _INT_TYPES)
    if rot is not None:
        head = scalar("attention.key_length", _INT_TYPES)
        width, heads = scalar("embedding_length", _INT_TYPES), scalar("attention.head_count", _INT_TYPES)
        if head is None and width and heads:
            head = width // heads
        if rot <= 0 or rot % 2 or (head and rot > head):
            most = f" up to the head size {head}" if head else ""
            raise corrupt("rope.dimension_count", rot, f"RoPE rotates an even number of dimensions from 2{most}")


def _check_unique_tokens(info: GGUFInfo) -> None:
    """llama.cpp maps each token's text to its id and asserts that no two share one.

    It compares the bytes stored, not decoded text, so the raw strings are compared here too: two
    different invalid UTF-8 tokens read as the same text but are two tokens to llama.cpp. And it
    first renames an empty token ``[EMPTY_<id>]``, so empty tokens never collide with each other.
    """
    if _TOKENS not in info.kinds:
        return
    tokens: list[bytes] = info.load_array(_TOKENS, raw=True)
    if b"" in tokens:
        tokens = [raw or f"[EMPTY_{i}]".encode() for i, raw in enumerate(tokens)]
    if len(set(tokens)) == len(tokens):
        return
    seen: set[bytes] = set()
    for raw in tokens:
        if raw in seen:
            raise ModelFormatError(
                f"{info.label} is corrupt: metadata key {quoted(_TOKENS)} holds the token "
                f"{quoted(raw.decode('utf-8', 'replace'))} twice (llama.cpp would abort on it); re-download it"
            )
        seen.add(raw)
