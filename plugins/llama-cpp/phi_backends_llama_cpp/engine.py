"""A GGUF model loaded in llama.cpp, driven through its C API (llama-cpp-python's bindings).

We use the C API rather than ``llama_cpp.Llama`` because ``Llama()`` compiles the model
file's chat template at load (untrusted input we render ourselves, sandboxed), keeps prompt
caches between calls, and samples in its own fixed order; here every call starts from a clear
KV cache and a fresh sampler chain built in the order :class:`~phi_backends.SamplingConfig`
documents.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import llama_cpp
import numpy as np

from phi_backends import EngineInfo, ModelSource, SamplingConfig
from phi_backends.errors import GenerationError, ModelFormatError, RuntimeFailure
from phi_backends.formats.gguf import read_gguf

from .gguf_checks import check_for_llama_cpp
from .options import DEFAULT_MAX_CTX, EngineOptions
from .sampling import sampler_chain

_init_lock = threading.Lock()
_initialized = False


def _init_backend(verbose: bool) -> None:
    global _initialized
    # llama-cpp-python routes llama.cpp's log through this logger; quiet unless asked. Its level
    # table predates ggml's renumbering (WARN is 3 now, which it maps to ERROR), so ERROR would
    # still print llama.cpp's warnings about a bad file before our one-line message: CRITICAL.
    logging.getLogger("llama-cpp-python").setLevel(logging.DEBUG if verbose else logging.CRITICAL)
    with _init_lock:
        if not _initialized:
            llama_cpp.llama_backend_init()
            _initialized = True


class LlamaCppEngine:
    def __init__(self, source: ModelSource, options: EngineOptions) -> None:
        gguf = read_gguf(source.path)  # validates header, metadata and tensor extents first
        check_for_llama_cpp(gguf)  # then what llama.cpp itself would crash on
        _init_backend(options.verbose)
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = options.n_gpu_layers
        mparams.main_gpu = options.main_gpu
        self._model = llama_cpp.llama_model_load_from_file(str(source.path).encode(), mparams)
        if not self._model:
            raise ModelFormatError(
                f"llama.cpp could not load {source.path.name} (architecture {gguf.architecture or 'unknown'!r}); "
                "check that the file is a complete GGUF of an architecture this llama-cpp-python supports"
            )
        self._ctx: Any = None
        try:
            self._vocab = llama_cpp.llama_model_get_vocab(self._model)
            n_ctx_train = llama_cpp.llama_model_n_ctx_train(self._model)
            n_ctx = options.n_ctx or min(n_ctx_train, DEFAULT_MAX_CTX)
            cparams = llama_cpp.llama_context_default_params()
            cparams.n_ctx = n_ctx
            cparams.n_batch = options.n_batch
            cparams.n_ubatch = min(options.n_ubatch, options.n_batch)
            cparams.n_threads = options.threads
            cparams.n_threads_batch = options.n_threads_batch or options.threads
            cparams.offload_kqv = options.offload_kqv
            cparams.no_perf = True
            if options.flash_attn is not None:
                cparams.flash_attn_type = int(options.flash_attn)
            if options.type_k is not None:
                cparams.type_k = options.type_k
            if options.type_v is not None:
                cparams.type_v = options.type_v
            cparams.rope_freq_base = options.rope_freq_base
            cparams.rope_freq_scale = options.rope_freq_scale
            self._ctx = llama_cpp.llama_init_from_model(self._model, cparams)
            if not self._ctx:
                raise RuntimeFailure(
                    f"llama.cpp could not create a context of {n_ctx} tokens for {source.path.name} "
                    "(out of memory?); try a smaller n_ctx or fewer n_gpu_layers"
                )
            self._n_batch = llama_cpp.llama_n_batch(self._ctx)  # llama.cpp clamps it to n_ctx
            n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
            self._pieces: list[bytes | None] = [None] * n_vocab
            self._piece_buf = ctypes.create_string_buffer(256)
            self._one = (llama_cpp.llama_token * 1)()
            spm = gguf.tokenizer_model == "llama"
            self._info = EngineInfo(
                context_length=llama_cpp.llama_n_ctx(self._ctx),
                vocab_size=n_vocab,
                add_bos=bool(llama_cpp.llama_vocab_get_add_bos(self._vocab)),
                bos_token=self._token_text(llama_cpp.llama_vocab_bos(self._vocab)),
                eos_token=self._token_text(llama_cpp.llama_vocab_eos(self._vocab)),
                eog_token_ids=frozenset(i for i in range(n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, i)),
                chat_template=gguf.chat_template,
                strip_leading_space=spm and gguf.metadata.get("tokenizer.ggml.add_space_prefix", True) is not False,
                architecture=gguf.architecture or "",
                metadata={"n_ctx_train": n_ctx_train, "threads": options.threads, "file": str(source.path)},
            )
        except BaseException:
            self.close()
            raise

    @property
    def info(self) -> EngineInfo:
        return self._info

    def tokenize(self, text: str, *, add_bos: bool) -> list[int]:
        self._check_open()
        data = text.encode("utf-8")
        capacity = len(data) + 8
        while True:
            buf = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, capacity, add_bos, True)
            if n >= 0:
                return list(buf[:n])
            capacity = -n

    def token_bytes(self, token_id: int) -> bytes:
        piece = self._pieces[token_id]
        if piece is None:
            self._check_open()
            n = llama_cpp.llama_token_to_piece(self._vocab, token_id, self._piece_buf, 256, 0, False)
            if n < 0:
                big = ctypes.create_string_buffer(-n)
                n = llama_cpp.llama_token_to_piece(self._vocab, token_id, big, -n, 0, False)
                piece = big.raw[:n]
            else:
                piece = self._piece_buf.raw[:n]
            self._pieces[token_id] = piece
        return piece

    def generate(self, prompt_ids: Sequence[int], config: SamplingConfig, seed: int) -> Iterator[int]:
        self._check_open()
        ctx = self._ctx
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        sampler = self._sampler_chain(config, seed)
        try:
            for start in range(0, len(prompt_ids), self._n_batch):
                chunk = prompt_ids[start : start + self._n_batch]
                self._decode((llama_cpp.llama_token * len(chunk))(*chunk), len(chunk))
            one = self._one
            while True:
                token = llama_cpp.llama_sampler_sample(sampler, ctx, -1)
                yield token
                one[0] = token
                self._decode(one, 1)
        finally:
            llama_cpp.llama_sampler_free(sampler)

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Teacher forcing (:class:`phi_backends.backend.ScoringEngine`): the logits after every position."""
        self._check_open()
        n = len(ids)  # the core checked 0 < n <= context_length
        vocab = self._info.vocab_size
        out = np.empty((n, vocab), dtype=np.float32)
        memory = llama_cpp.llama_get_memory(self._ctx)
        llama_cpp.llama_memory_clear(memory, True)
        batch = llama_cpp.llama_batch_init(self._n_batch, 0, 1)
        try:
            for start in range(0, n, self._n_batch):
                chunk = ids[start : start + self._n_batch]
                batch.n_tokens = len(chunk)
                for i, token in enumerate(chunk):
                    batch.token[i] = token
                    batch.pos[i] = start + i
                    batch.n_seq_id[i] = 1
                    batch.seq_id[i][0] = 0
                    batch.logits[i] = True  # an output row for every position, not only the last
                rc = llama_cpp.llama_decode(self._ctx, batch)
                if rc != 0:
                    raise GenerationError(f"llama_decode failed with code {rc} while scoring token ids")
                rows = np.ctypeslib.as_array(llama_cpp.llama_get_logits(self._ctx), shape=(len(chunk), vocab))
                out[start : start + len(chunk)] = rows
        finally:
            llama_cpp.llama_batch_free(batch)
            llama_cpp.llama_memory_clear(memory, True)
        return out

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            llama_cpp.llama_model_free(self._model)
            self._model = None

    def __del__(self) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if not self._ctx:
            raise GenerationError("this llama.cpp model was closed; load it again")

    def _decode(self, tokens: Any, n: int) -> None:
        rc = llama_cpp.llama_decode(self._ctx, llama_cpp.llama_batch_get_one(tokens, n))
        if rc != 0:
            raise GenerationError(f"llama_decode failed with code {rc} (1: no room in the KV cache, <0: error)")

    def _sampler_chain(self, config: SamplingConfig, seed: int) -> Any:
        return sampler_chain(config, seed, vocab_size=self._info.vocab_size, context_length=self._info.context_length)

    def _token_text(self, token_id: int) -> str | None:
        if token_id < 0:
            return None
        text = llama_cpp.llama_vocab_get_text(self._vocab, token_id)
        return text.decode("utf-8", errors="replace") if text else None
