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

#: llama.cpp's ceiling on sequences in one context (LLAMA_MAX_SEQ).
MAX_SEQ = 256


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
    # kept for the next turn). They share one unified cache of n_ctx cells, so more sequences
    # cost no memory up front; 4 is llama-server's default too: on a CPU a batch of 4 already
    # takes most of the batching gain, and 4 idle caches keep a few chats warm without crowding
    # n_ctx with evictable prefixes.
    n_seq_max: int = 4
    n_threads: int | None = None  # default: every core this process may use
    n_threads_batch: int | None = None  # default: n_threads
    n_gpu_layers: int = 0  # layers offloaded to the GPU; -1 = all (CPU-only builds ignore it)
    main_gpu: int = 0
    flash_attn: bool | None = None  # None = off on the CPU (n_gpu_layers 0: see engine.py), else llama.cpp's choice
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
        if not 1 <= parsed.n_seq_max <= MAX_SEQ:
            raise OptionError(f"n_seq_max must be between 1 and {MAX_SEQ}, got {parsed.n_seq_max}")
        if parsed.n_threads is not None and parsed.n_threads < 1:
            raise OptionError("n_threads must be at least 1")
        del gpu  # n_gpu_layers on a CPU-only build is accepted and ignored, as llama.cpp does
        return parsed

    @property
    def threads(self) -> int:
        return self.n_threads or _cpu_count()
