"""The engine options the llama.cpp backend accepts, validated, with llama.cpp's meaning."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from phi_backends.errors import OptionError
from phi_backends.formats.engine_options import option_values

#: Our default context window when the caller gives none: the model's own, capped (a 128k
#: context would reserve tens of GB for the KV cache).
DEFAULT_MAX_CTX = 4096

#: The most tokens llama.cpp's int32 counts hold (n_ctx, n_batch, n_ubatch).
MAX_TOKENS = 2**31 - 1

#: llama.cpp's ceiling on sequences in one context (LLAMA_MAX_SEQ).
MAX_SEQ = 256


#: What the default n_seq_max tries, in order (the first whose caches fit a quarter of the memory).
DEFAULT_SEQUENCES = (4, 2)


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # Windows: assume a modest machine
        return 8 * 2**30


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


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
    n_threads: int | None = None  # default: every core this process may use
    n_threads_batch: int | None = None  # default: n_threads
    n_gpu_layers: int = 0  # layers offloaded to the GPU; -1 = all (CPU-only builds ignore it)
    main_gpu: int = 0
    flash_attn: bool | None = None  # None = llama.cpp's automatic choice (see engine.py)
    offload_kqv: bool = True
    type_k: int | None = None  # KV cache data types (ggml type ids)
    type_v: int | None = None
    rope_freq_base: float = 0.0  # 0 = from the model
    rope_freq_scale: float = 0.0
    verbose: bool = False  # llama.cpp's own log on stderr

    @classmethod
    def parse(cls, options: Mapping[str, Any], *, gpu: bool) -> EngineOptions:
        parsed = cls(**option_values(cls, options, backend="llama-cpp"))
        if parsed.n_ctx is not None and parsed.n_ctx < 16:
            raise OptionError(f"n_ctx must be at least 16, got {parsed.n_ctx}")
        for name in ("n_batch", "n_ubatch"):
            if getattr(parsed, name) < 1:
                raise OptionError(f"{name} must be at least 1")
        for name in ("n_ctx", "n_batch", "n_ubatch"):
            value = getattr(parsed, name)
            if value is not None and value > MAX_TOKENS:  # past it the C field would wrap around silently
                raise OptionError(f"{name} must be at most {MAX_TOKENS:,} (llama.cpp's limit), got {value:,}")
        if parsed.n_seq_max is not None and not 1 <= parsed.n_seq_max <= MAX_SEQ:
            raise OptionError(f"n_seq_max must be between 1 and {MAX_SEQ}, got {parsed.n_seq_max}")
        if parsed.n_threads is not None and parsed.n_threads < 1:
            raise OptionError("n_threads must be at least 1")
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
        return self.n_threads or _cpu_count()
