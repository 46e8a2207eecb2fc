"""A GGUF model loaded in llama.cpp, driven through its C API (llama-cpp-python's bindings).

We use the C API rather than ``llama_cpp.Llama`` because ``Llama()`` compiles the model
file's chat template at load (untrusted input we render ourselves, sandboxed), runs one
sequence at a time, and samples in its own fixed order. Here one context holds ``n_seq_max``
sequences in a unified KV cache of ``n_ctx`` cells; :meth:`LlamaCppEngine.step` advances all
open sequences in one ``llama_batch`` (llama-server's design), each with its own native sampler
chain built in the order :class:`~phi_backends.SamplingConfig` documents, and a released
sequence's cache stays for the next prompt that starts the same way (:mod:`.slots`).
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Sequence
from typing import Any

import llama_cpp
import numpy as np

from phi_backends import EngineInfo, ModelSource, SamplingConfig
from phi_backends.backend import Capacity, EngineSequence, SequenceRequest
from phi_backends.diagnostics.memory import check_fits, format_bytes
from phi_backends.errors import GenerationError, ModelFormatError, RuntimeFailure
from phi_backends.formats.gguf import GGUFInfo, read_gguf
from phi_backends.logits import LogitsStep

from .gguf_checks import check_for_llama_cpp
from .options import DEFAULT_MAX_CTX, EngineOptions
from .sampling import sampler_chain
from .slots import Slot, SlotTable

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


#: ggml's float types: F32, F16, BF16.
FLOAT_TYPES = frozenset({0, 1, 30})


def _float_weights(gguf: GGUFInfo) -> bool:
    """Whether the model's layers hold float weights. llama.cpp's CPU matrix product computes a
    batch of rows with other kernels than one row for those (llamafile's sgemm): a sequence's
    log-probabilities moved by up to 0.005 with its batch-mates on SmolLM2 F32 and F16, and by
    nothing on its Q4_0, Q4_1, Q8_0 and Q4_K_M (measured here)."""
    return any(t.ggml_type in FLOAT_TYPES for t in gguf.tensors if t.name.startswith("blk.") and len(t.shape) == 2)


def _kv_bytes_per_token(model: Any, options: EngineOptions) -> int:
    """What one token's keys and values take in the KV cache (f16 unless set otherwise)."""
    n_head = max(1, llama_cpp.llama_model_n_head(model))
    head_dim = llama_cpp.llama_model_n_embd(model) // n_head
    width = 2 * llama_cpp.llama_model_n_layer(model) * llama_cpp.llama_model_n_head_kv(model) * head_dim
    element = 4 if options.type_k == 0 else 2  # ggml type 0 is f32; quantized types are smaller than f16
    return int(width * element)


class LlamaCppEngine:
    def __init__(self, source: ModelSource, options: EngineOptions) -> None:
        gguf = read_gguf(source.path)  # validates header, metadata and tensor extents first
        check_for_llama_cpp(gguf)  # then what llama.cpp itself would crash on
        options.check_model(gguf)  # KV cache types that fit its heads
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
        self._batch: Any = None
        try:
            self._vocab = llama_cpp.llama_model_get_vocab(self._model)
            n_ctx_train = llama_cpp.llama_model_n_ctx_train(self._model)
            n_ctx = options.n_ctx or min(n_ctx_train, DEFAULT_MAX_CTX)
            n_seq = options.sequences(n_ctx * _kv_bytes_per_token(self._model, options))
            self._check_memory(source, options, n_ctx, n_seq)
            options.warn_beyond_training(gguf)
            cparams = llama_cpp.llama_context_default_params()
            # A KV cache per sequence (kv_unified off), each of n_ctx cells: a call's cells then sit
            # at its positions, as when it runs alone. In one unified cache they interleave with the
            # other calls', the attention groups its sums another way, and the logits moved by
            # rounding (1e-6 on float32, up to 0.14 on Q4_1's 8-bit activations): enough to change
            # a sampled token at a top-p boundary. llama.cpp splits n_ctx between the sequences.
            cparams.n_ctx = n_ctx * n_seq
            cparams.n_batch = options.n_batch
            cparams.n_ubatch = min(options.n_ubatch, options.n_batch)
            cparams.n_seq_max = n_seq
            cparams.kv_unified = False
            cparams.n_threads = options.threads
            cparams.n_threads_batch = options.prompt_threads
            cparams.offload_kqv = options.offload_kqv
            cparams.no_perf = True
            if options.flash_attn is not None:
                cparams.flash_attn_type = int(options.flash_attn)
            # Left to llama.cpp (on, where the device has the kernel): its CPU flash attention
            # computes each query row on its own, so a row's attention is the same in a prompt
            # batch of 1 or 500 rows; the plain path's matrix products (llamafile's sgemm on the
            # f16 cache) group their sums by the batch's shape, and a reused prompt's remainder
            # then came out another way than the whole prompt (a sampled token changed on Q4_1).
            if options.type_k is not None:
                cparams.type_k = options.type_k
            if options.type_v is not None:
                cparams.type_v = options.type_v
            cparams.rope_freq_base = options.rope_freq_base
            cparams.rope_freq_scale = options.rope_freq_scale
            self._ctx = llama_cpp.llama_init_from_model(self._model, cparams)
            if not self._ctx:
                raise RuntimeFailure(
                    f"llama.cpp could not create a context of {n_ctx} tokens x {n_seq} sequences for "
                    f"{source.path.name} (out of memory?); try a smaller n_ctx or n_seq_max, or fewer n_gpu_layers"
                )
            self._n_batch = llama_cpp.llama_n_batch(self._ctx)  # llama.cpp clamps it to n_ctx
            self._threads, self._prompt_threads = options.threads, options.prompt_threads
            self._batch_threads = options.prompt_threads  # what the context was made with (_use_threads)
            n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
            self._pieces: list[bytes | None] = [None] * n_vocab
            self._piece_buf = ctypes.create_string_buffer(256)
            self._batch = llama_cpp.llama_batch_init(self._n_batch, 0, 1)
            # NumPy views of the batch's columns: a prompt chunk is written in a few slice stores
            self._tokens = np.ctypeslib.as_array(self._batch.token, shape=(self._n_batch,))
            self._pos = np.ctypeslib.as_array(self._batch.pos, shape=(self._n_batch,))
            self._wants = np.ctypeslib.as_array(self._batch.logits, shape=(self._n_batch,))
            np.ctypeslib.as_array(self._batch.n_seq_id, shape=(self._n_batch,))[:] = 1
            self._row_type = ctypes.c_float * n_vocab
            n_ctx = llama_cpp.llama_n_ctx_seq(self._ctx)  # each sequence's own (llama.cpp may pad it)
            self._memory = llama_cpp.llama_get_memory(self._ctx)
            self._slots = SlotTable(n_seq, n_ctx * n_seq, self._trim)  # caches of their own: none to evict
            self._open: set[LlamaCppSequence] = set()
            # Not exact: a kept cache was computed in other batch shapes than a fresh prompt, and
            # llama.cpp's CPU kernels round by shape (0.009 in a log-probability on SmolLM2 Q4_1);
            # llama-server documents the same of its cache_prompt.
            self._capacity = Capacity(
                max_sequences=n_seq,
                kv_tokens=None,
                reuses_prefix=True,
                exact_reuse=False,
                exact_batching=not _float_weights(gguf),
            )
            spm = gguf.tokenizer_model == "llama"
            self._info = EngineInfo(
                context_length=n_ctx,
                vocab_size=n_vocab,
                add_bos=bool(llama_cpp.llama_vocab_get_add_bos(self._vocab)),
                bos_token=self._token_text(llama_cpp.llama_vocab_bos(self._vocab)),
                eos_token=self._token_text(llama_cpp.llama_vocab_eos(self._vocab)),
                eog_token_ids=frozenset(i for i in range(n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, i)),
                chat_template=gguf.chat_template,
                strip_leading_space=spm and gguf.metadata.get("tokenizer.ggml.add_space_prefix", True) is not False,
                architecture=gguf.architecture or "",
                metadata={
                    "n_ctx_train": n_ctx_train,
                    "threads": options.threads,
                    "prompt_threads": options.prompt_threads,
                    "n_seq_max": n_seq,
                    "file": str(source.path),
                },
            )
        except BaseException:
            self.close()
            raise

    def _check_memory(self, source: ModelSource, options: EngineOptions, n_ctx: int, n_seq: int) -> None:
        """Refuse a context this machine cannot hold before llama.cpp allocates it: past the
        memory it does not fail, it grows until the kernel kills the process."""
        if options.n_gpu_layers != 0 and llama_cpp.llama_supports_gpu_offload():
            return  # the cache and layers go to the GPU's memory, which the platform does not report here
        cells = n_ctx * n_seq
        kv = cells * _kv_bytes_per_token(self._model, options)
        # the compute buffer's largest part: a micro-batch's rows of logits (llama.cpp clamps
        # n_batch to the context and n_ubatch to n_batch)
        ubatch = min(options.n_ubatch, options.n_batch, cells)
        compute = ubatch * llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self._model)) * 4
        weights = source.path.stat().st_size
        sequences = f" x {n_seq} sequences" if n_seq > 1 else ""
        check_fits(
            kv + compute + weights,
            what=f"a context of {n_ctx:,} tokens{sequences} for {source.path.name} (KV cache {format_bytes(kv)}, "
            f"compute buffer {format_bytes(compute)}, weights {format_bytes(weights)})",
            hint="load it with a smaller n_ctx"
            + (" or n_seq_max" if n_seq > 1 else "")
            + (" or n_ubatch" if compute > kv else ""),
        )

    @property
    def info(self) -> EngineInfo:
        return self._info

    @property
    def capacity(self) -> Capacity:
        return self._capacity

    def tokenize(self, text: str, *, add_bos: bool, special: bool = True) -> list[int]:
        self._check_open()
        data = text.encode("utf-8")
        capacity = len(data) + 8
        while True:
            buf = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, capacity, add_bos, special)
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

    def open(self, request: SequenceRequest) -> EngineSequence:
        """A sequence in a free slot: the one whose cache shares the longest start with the prompt,
        when the request allows, else the least recently used one (no model work here)."""
        self._check_open()
        prompt = request.prompt_ids
        chain = self._sampler_chain(request.config, request.seed)
        try:
            slot, keep = self._slots.take(prompt, request.budget, reuse=request.reuse_prefix)
        except BaseException:
            llama_cpp.llama_sampler_free(chain)
            raise
        sequence = LlamaCppSequence(self, slot, chain, request.logits_step, list(prompt[keep:]), keep)
        self._open.add(sequence)
        return sequence

    def step(self, sequences: Sequence[EngineSequence]) -> list[int]:
        """One ``llama_batch``: each generating sequence's last token and the new prompts, in
        chunks of ``n_batch``; each sequence is sampled as soon as the decode holding its last row
        returns (its logits last only until the next decode)."""
        self._check_open()
        seqs: list[LlamaCppSequence] = []
        for sequence in sequences:
            if not isinstance(sequence, LlamaCppSequence) or sequence._engine is not self or sequence._released:
                raise GenerationError("step() was given a sequence this llama.cpp model has not open; open it first")
            if sequence._broken:
                raise GenerationError("this sequence failed in an earlier step and its cache is gone; release it")
            seqs.append(sequence)
        out = [0] * len(seqs)
        # The generating sequences go together in one batch; each new prompt is decoded in a batch
        # of its own, as it would be alone. (A prompt's rows computed beside other rows came out
        # another way by rounding on float32 weights: a 1e-6 change in the first token's logits.)
        # In the order of their sequence ids, as llama.cpp's own batch API users feed them: in the
        # scheduler's order (not the slots'), 8 calls ran 15% slower in about half the rounds of
        # benchmarks/batching.py and at the ceiling in the others; sorted, 1.006 of the ceiling.
        # (Our guess at why: llama.cpp splits a batch over separate KV streams by sequence.)
        generating = sorted((i for i, seq in enumerate(seqs) if seq._sampled), key=lambda i: seqs[i]._slot.seq_id)
        if generating:
            self._use_threads(prompt=False)
            self._feed(generating, seqs, out)
        for i, seq in enumerate(seqs):
            if not seq._sampled:
                self._use_threads(prompt=True)
                self._feed([i], seqs, out)
        return out

    def _use_threads(self, *, prompt: bool) -> None:
        """llama.cpp takes ``n_threads_batch`` for every batch of more than one token, so a step
        that decodes several calls' next tokens would run on the prompt's threads: those steps
        are decoding, and get ``n_threads`` (options.prompt_threads says why they differ)."""
        batch = self._prompt_threads if prompt else self._threads
        if batch != self._batch_threads:
            llama_cpp.llama_set_n_threads(self._ctx, self._threads, batch)
            self._batch_threads = batch

    def _feed(self, indices: list[int], seqs: list[LlamaCppSequence], out: list[int]) -> None:
        """Decode the pending ids of ``seqs[i]`` for each i, in chunks of ``n_batch``, sampling each
        sequence as soon as the decode holding its last row returns."""
        tokens, pos, wants, seq_ids, cap = self._tokens, self._pos, self._wants, self._batch.seq_id, self._n_batch
        n = 0
        ready: list[tuple[int, int]] = []  # (batch row, index in seqs) to sample after the decode
        for index in indices:
            seq = seqs[index]
            pending, slot = seq._pending, seq._slot
            start, total = 0, len(pending)
            while True:
                take = min(cap - n, total - start)
                first = len(slot.ids)
                chunk = pending[start : start + take]
                tokens[n : n + take] = chunk
                pos[n : n + take] = range(first, first + take)
                wants[n : n + take] = 0
                for row in range(n, n + take):
                    seq_ids[row][0] = slot.seq_id
                slot.ids.extend(chunk)
                n += take
                start += take
                if start == total:
                    break
                self._decode(n, ready, seqs, out)  # the batch is full and this prompt goes on
                n, ready = 0, []
            wants[n - 1] = 1
            ready.append((n - 1, index))
            if n == cap:
                self._decode(n, ready, seqs, out)
                n, ready = 0, []
        if n:
            self._decode(n, ready, seqs, out)

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Teacher forcing (:class:`phi_backends.backend.ScoringEngine`): the logits after every position.

        It clears the whole KV cache, so the prefixes kept for later calls are forgotten too.
        """
        self._check_open()
        if self._open:
            raise GenerationError("scoring needs the llama.cpp model to itself; release its open sequences first")
        n = len(ids)  # the core checked 0 < n <= context_length
        vocab = self._info.vocab_size
        out = np.empty((n, vocab), dtype=np.float32)
        llama_cpp.llama_memory_clear(self._memory, True)
        self._slots.forget_all()
        self._use_threads(prompt=True)
        batch = self._batch
        try:
            for start in range(0, n, self._n_batch):
                chunk = ids[start : start + self._n_batch]
                size = len(chunk)
                batch.n_tokens = size
                self._tokens[:size] = chunk
                self._pos[:size] = range(start, start + size)
                self._wants[:size] = 1  # an output row for every position, not only the last
                for i in range(size):
                    batch.seq_id[i][0] = 0
                rc = llama_cpp.llama_decode(self._ctx, batch)
                if rc != 0:
                    raise GenerationError(f"llama_decode failed with code {rc} while scoring token ids")
                rows = np.ctypeslib.as_array(llama_cpp.llama_get_logits(self._ctx), shape=(size, vocab))
                out[start : start + size] = rows
        finally:
            llama_cpp.llama_memory_clear(self._memory, True)
        return out

    def close(self) -> None:
        for sequence in list(getattr(self, "_open", ())):
            self._release(sequence)
        if getattr(self, "_batch", None) is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
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

    def _decode(self, n: int, ready: list[tuple[int, int]], seqs: list[LlamaCppSequence], out: list[int]) -> None:
        """Decode the batch's first ``n`` rows, then sample each ready row: the logits step first,
        on the very buffer the native chain reads next (which accepts the token itself)."""
        ctx = self._ctx
        self._batch.n_tokens = n
        rc = llama_cpp.llama_decode(ctx, self._batch)
        if rc != 0:
            self._decode_failed(rc, n, seqs)
        for row, index in ready:
            seq = seqs[index]
            if seq._logits_step is not None:
                seq._logits_step(self._logits_row(row))
            token = llama_cpp.llama_sampler_sample(seq._chain, ctx, row)
            out[index] = token
            seq._pending = [token]
            seq._sampled = True

    def _logits_row(self, row: int) -> np.ndarray:
        """The batch row's logits as a writable float32 view (no copy) of llama.cpp's buffer."""
        pointer = llama_cpp.llama_get_logits_ith(self._ctx, row)
        address = ctypes.cast(pointer, ctypes.c_void_p).value
        if not address:
            raise GenerationError(f"llama.cpp has no logits for batch row {row}")
        return np.frombuffer(self._row_type.from_address(address), dtype=np.float32)

    def _decode_failed(self, rc: int, n: int, seqs: list[LlamaCppSequence]) -> None:
        # What the failed decode left in these sequences' cells is unknown: drop them, so that
        # no later prompt reuses them, and refuse to step these sequences again.
        for seq in seqs:
            seq._broken = True
            self._slots.forget(seq._slot)
        if rc == 1:
            raise GenerationError(
                f"llama.cpp found no room in its KV cache ({self._info.context_length} cells) for {n} tokens "
                f"of {len(seqs)} sequences; load the model with a larger n_ctx or run fewer calls at once"
            )
        raise GenerationError(f"llama_decode failed with code {rc} (2: aborted, <0: error) decoding {n} tokens")

    def _release(self, sequence: LlamaCppSequence) -> None:
        if sequence._released:
            return
        sequence._released = True
        self._open.discard(sequence)
        llama_cpp.llama_sampler_free(sequence._chain)
        self._slots.release(sequence._slot)

    def _trim(self, seq_id: int, keep: int) -> bool:
        return bool(llama_cpp.llama_memory_seq_rm(self._memory, seq_id, keep, -1))

    def _sampler_chain(self, config: SamplingConfig, seed: int) -> Any:
        return sampler_chain(config, seed, vocab_size=self._info.vocab_size, context_length=self._info.context_length)

    def _token_text(self, token_id: int) -> str | None:
        if token_id < 0:
            return None
        text = llama_cpp.llama_vocab_get_text(self._vocab, token_id)
        return text.decode("utf-8", errors="replace") if text else None


class LlamaCppSequence:
    """One call in a slot of the engine's context (:class:`phi_backends.backend.EngineSequence`)."""

    __slots__ = (
        "__weakref__",
        "_broken",
        "_chain",
        "_engine",
        "_logits_step",
        "_pending",
        "_released",
        "_reused",
        "_sampled",
        "_slot",
    )

    def __init__(
        self,
        engine: LlamaCppEngine,
        slot: Slot,
        chain: Any,
        logits_step: LogitsStep | None,
        pending: list[int],
        reused: int,
    ) -> None:
        self._engine = engine
        self._slot = slot
        self._chain = chain
        self._logits_step = logits_step
        self._pending = pending  # the ids the next step feeds: the prompt's remainder, then the last sampled one
        self._reused = reused
        self._sampled = False  # True once its prompt is computed: it feeds one token per step
        self._released = False
        self._broken = False

    @property
    def reused_tokens(self) -> int:
        return self._reused

    def release(self) -> None:
        self._engine._release(self)
