"""The engine options the llama.cpp backend accepts, validated, with llama.cpp's meaning."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from phi_backends.errors import OptionError
from phi_backends.formats.engine_options import (
    check_threads,
    coerce_option,
    cpu_count,
    option_values,
    warn_beyond_training,
)

#: Our default context window when the caller gives none: the model's own, capped (a 128k
#: context would reserve tens of GB for the KV cache).
DEFAULT_MAX_CTX = 4096

#: llama.cpp's ceiling on sequences in one context (LLAMA_MAX_SEQ).
MAX_SEQ = 256


if TYPE_CHECKING:
    from phi_backends.formats.gguf import GGUFInfo

#: What the default n_seq_max tries, in order (the first whose caches fit a quarter of the memory).
DEFAULT_SEQUENCES = (4, 2)

#: The KV cache types llama.cpp offers (its --cache-type-k/-v list), by name, with their ggml
#: type ids (ggml.h's enum ggml_type, a stable ABI): the docs and llama.cpp name them, so do we.
KV_CACHE_TYPES = {
    "f32": 0,
    "f16": 1,
    "bf16": 30,
    "q8_0": 8,
    "q4_0": 2,
    "q4_1": 3,
    "iq4_nl": 20,
    "q5_0": 6,
    "q5_1": 7,
}
#: Values per block of the quantized KV cache types; a block must not straddle two heads.
_KV_BLOCK = {2: 32, 3: 32, 6: 32, 7: 32, 8: 32, 20: 32}


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # Windows: assume a modest machine
        return 8 * 2**30


def default_threads() -> int:
    """Every core this process may use but one (at least one).

    llama.cpp's threads meet at a barrier after every operation of every layer, so a decode runs
    at the pace of its slowest thread. With a thread on every core, one other busy process on the
    machine takes a core from one of them for a scheduler slice at a time, and all the others wait:
    on 2 cores with one busy neighbour, 2 threads decoded SmolLM2 at 46 to 56 tokens/s and 1 thread
    at 91 (llama.cpp and Ollama take every physical core; llama-cpp-python takes half the logical
    ones). Leaving one core also leaves room for this process's own threads (readers of a stream,
    a server's event loop). benchmarks/threads.py measures it.
    """
    return max(1, cpu_count() - 1)


@dataclass(frozen=True)
class EngineOptions:
    """llama.cpp settings. ``None`` means "our default", documented per field."""

    n_ctx: int | None = None  # context window; default min(model's training context, 4096)
    n_batch: int = 512  # prompt tokens per llama_decode call
    n_ubatch: int = 512
    # Sequences decoded together (calls running at once, and conversations whose KV cache is
    # kept for the next turn). Each has a KV cache of its own of n_ctx cells (so a call's cells
    # sit where they would alone, and its logits do not depend on its batch-mates), so memory
    # grows with it, as Ollama's OLLAMA_NUM_PARALLEL does. Default: 4 (llama-server's; on a CPU a
    # batch of 4 takes most of the batching gain) when 4 caches fit a quarter of the machine's
    # memory, else 2, else 1 (default_n_seq_max).
    n_seq_max: int | None = None
    n_threads: int | None = None  # default: every core this process may use but one (default_threads)
    # Threads for prompts (and teacher forcing): default every core this process may use
    # (prompt_threads). Steps that decode the next token of one or more calls use n_threads.
    n_threads_batch: int | None = None
    n_gpu_layers: int = 0  # layers offloaded to the GPU; -1 = all (CPU-only builds ignore it)
    main_gpu: int = 0
    flash_attn: bool | None = None  # None = llama.cpp's automatic choice (see engine.py)
    offload_kqv: bool = True
    type_k: int | None = None  # KV cache data types: a name of KV_CACHE_TYPES (q8_0, f16, ...) or its ggml id
    type_v: int | None = None
    rope_freq_base: float = 0.0  # 0 = from the model
    rope_freq_scale: float = 0.0
    verbose: bool = False  # llama.cpp's own log on stderr

    @classmethod
    def parse(cls, options: Mapping[str, Any], *, gpu: bool) -> EngineOptions:
        converters = {"type_k": _kv_cache_type, "type_v": _kv_cache_type}
        parsed = cls(**option_values(cls, options, backend="llama-cpp", converters=converters))
        if parsed.n_ctx is not None and parsed.n_ctx < 16:
            raise OptionError(f"n_ctx must be at least 16, got {parsed.n_ctx}")
        for name in ("n_batch", "n_ubatch"):
            if getattr(parsed, name) < 1:
                raise OptionError(f"{name} must be at least 1")
        if parsed.n_seq_max is not None and not 1 <= parsed.n_seq_max <= MAX_SEQ:
            raise OptionError(f"n_seq_max must be between 1 and {MAX_SEQ}, got {parsed.n_seq_max}")
        check_threads("n_threads", parsed.n_threads)
        check_threads("n_threads_batch", parsed.n_threads_batch)
        del gpu  # n_gpu_layers on a CPU-only build is accepted and ignored, as llama.cpp does
        return parsed

    def sequences(self, kv_bytes_per_sequence: int) -> int:
        """``n_seq_max``, or the default for a model whose one sequence's KV cache takes that much."""
        if self.n_seq_max is not None:
            return self.n_seq_max
        budget = _physical_memory() // 4
        return next((n for n in DEFAULT_SEQUENCES if n * kv_bytes_per_sequence <= budget), 1)

    @property
    def threads(self) -> int:
        return self.n_threads or default_threads()

    @property
    def prompt_threads(self) -> int:
        """``n_threads_batch``, or every core: a prompt's batch is one large matrix product per
        operation, so a thread that loses its core to a neighbour for a slice holds the others
        back for a small share of the work. Measured on 2 cores (SmolLM2 Q4_1, 256-token prompt,
        `phi-backends bench -p 256`): quiet, 1 thread 152 tokens/s and 2 threads 280; with one busy
        neighbour, 152 and 147 to 163. Decoding (a few rows per operation) collapses instead, so
        it keeps ``threads`` (:func:`default_threads`)."""
        return self.n_threads_batch or cpu_count()

    def check_model(self, gguf: GGUFInfo) -> None:
        """What only the model file tells: a quantized KV cache type whose block does not divide
        the head size (llama.cpp would fail to create the context with no reason we can show)."""
        arch = gguf.architecture or ""
        meta = gguf.metadata
        embd, heads = meta.get(f"{arch}.embedding_length"), meta.get(f"{arch}.attention.head_count")
        default_head = embd // heads if isinstance(embd, int) and isinstance(heads, int) and heads > 0 else None
        for name, kind, key in (("type_k", self.type_k, "key_length"), ("type_v", self.type_v, "value_length")):
            head = meta.get(f"{arch}.attention.{key}", default_head)
            block = _KV_BLOCK.get(kind) if kind is not None else None
            if block and isinstance(head, int) and head % block:
                raise OptionError(
                    f"{name}={_kv_type_name(kind)} stores blocks of {block} values, which do not divide this "
                    f"model's head size {head}; use f16 (or leave {name} unset) for this model"
                )

    def warn_beyond_training(self, gguf: GGUFInfo) -> None:
        """An n_ctx beyond the training context: llama.cpp accepts it and the output degrades past
        it, so a warning (a longer context can be what a user wants, with RoPE scaling). Given
        once the context is known to fit the memory: a refusal then stays the one line."""
        warn_beyond_training("n_ctx", self.n_ctx, gguf.context_length)


def _kv_type_name(number: int | None) -> str:
    return next((text for text, value in KV_CACHE_TYPES.items() if value == number), str(number))


def _kv_cache_type(name: str, value: Any) -> int:
    """A KV cache type by name (``q8_0``) or by its ggml id (``8``); only those llama.cpp offers:
    another id would abort inside llama.cpp."""
    if isinstance(value, str) and value.strip().lower() in KV_CACHE_TYPES:
        return KV_CACHE_TYPES[value.strip().lower()]
    ids = {number: text for text, number in KV_CACHE_TYPES.items()}
    try:
        number: int | None = int(coerce_option(name, value, int))
    except OptionError:
        number = None
    if number is None or number not in ids:
        raise OptionError(
            f"option {name} must be a KV cache type: one of {', '.join(KV_CACHE_TYPES)} (or its ggml id), got {value!r}"
        )
    return number
