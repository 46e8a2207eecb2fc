"""A model folder loaded by mlx-lm, generating through mlx-lm's ``generate_step``.

The core renders the chat template (the folder's own, sandboxed) and decides when to stop;
here we load the weights with mlx-lm's ``load_model``, tokenize with the folder's
Hugging Face tokenizer, and advance one call at a time (``Capacity.max_sequences`` 1): each
call is a ``generate_step`` of its own, sampling with our own pieces (:mod:`.sampling`), that
each :meth:`MlxEngine.step` takes one token from. The cache a call leaves is kept for the next
call's prompt (:mod:`.sequence`).

Device: every engine runs everything (loading, prompt processing, decoding) on an MLX stream
of the device it was asked for: ``generate_step`` takes the stream as an argument. So the
device a model runs on does not depend on MLX's process-wide default device or on when mlx-lm
was imported (mlx-lm builds its own module-level stream on whatever the default device is at
import time), and two models on different devices can live in one process. We never change
the process-wide default. The stream is one per device for the whole process (thread-local:
each thread gets its own), not one per engine: MLX never frees a stream, and each holds a
thread, so a stream per engine leaked a thread on every load. For the same reason an engine
computes only on a thread lent from :mod:`.threads`, never on the core's worker threads.
"""

from __future__ import annotations

import importlib.metadata
import threading
import weakref
from collections.abc import Generator, Mapping, Sequence
from typing import Any

import mlx.core as mx
import numpy as np
from mlx_lm.generate import generate_step, wired_limit
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.utils import _get_classes, load_model
from transformers import AutoTokenizer

from phi_backends import EngineInfo, ModelSource
from phi_backends.backend import Capacity, EngineSequence, SequenceRequest
from phi_backends.diagnostics.memory import check_fits, format_bytes
from phi_backends.errors import GenerationError, ModelFormatError, RuntimeFailure
from phi_backends.formats.hf_folder import engine_info_from_folder, folder_bos_token_id
from phi_backends.formats.hf_tokenizer import HFTokenizerFacts

from .model_folder import DEFAULT_CONTEXT, ModelFolder
from .options import EngineOptions
from .sampling import SamplingPlan
from .sequence import LogitsBridge, MlxSequence, PrefixCache
from .threads import give_back, lend

MLX_LM_VERSION = importlib.metadata.version("mlx-lm")

#: One call at a time: each call runs its own ``generate_step``. The last call's cache is kept
#: for the next prompt that starts the same way (:mod:`.sequence`).
CAPACITY = Capacity(max_sequences=1, kv_tokens=None, reuses_prefix=True)

_streams: dict[str, Any] = {}
_streams_lock = threading.Lock()


def _device_stream(device: Any) -> Any:
    """The process's one thread-local MLX stream on ``device``, made on first use and never freed."""
    key = str(mx.Device(device))
    with _streams_lock:
        if key not in _streams:
            _streams[key] = mx.new_thread_local_stream(device)
        return _streams[key]


class MlxEngine:
    def __init__(
        self, source: ModelSource, options: EngineOptions, folder: ModelFolder, facts: HFTokenizerFacts
    ) -> None:
        """``folder`` and ``facts`` were read and checked by the backend before mlx-lm was imported."""
        _check_architecture(folder)
        self._options = options
        self._folder_name = folder.path.name
        self._kv_bytes, self._heads = _kv_bytes_per_token(folder)
        self._device = mx.gpu if options.device == "gpu" else mx.cpu
        self._stream = _device_stream(self._device)
        self._model: Any = None
        self._running: MlxSequence | None = None  # the one open sequence (Capacity.max_sequences 1)
        self._prefix = PrefixCache()
        # transformers' encode sets split_special_tokens on the tokenizer's one Rust tokenizer
        # for the call, so calls with different `special` on two threads must not overlap.
        self._encode_lock = threading.Lock()
        # Every MLX computation of this engine runs on this thread (.threads says why).
        self._thread = lend()
        self._returned = weakref.finalize(self, give_back, self._thread)
        try:
            self._model, self._tokenizer, eos_ids = self._thread.run(self._load, folder, options)
        except BaseException:
            self._returned()
            raise
        self._token_bytes = facts.token_bytes
        self._bos_id = folder_bos_token_id(facts, self._tokenizer.bos_token_id)
        self._info = engine_info_from_folder(
            source.path,
            facts,
            bos_token_id=self._bos_id,
            eos_token_ids=eos_ids,
            context_length=options.n_ctx or folder.context_length or DEFAULT_CONTEXT,
            vocab_size=folder.vocab_size or facts.vocab_size,  # the weights' rows: padding past the tokenizer's ids
            architecture=folder.model_type,
            metadata={
                "folder": str(source.path),
                "device": options.device,
                "quantization": dict(folder.quantization) if folder.quantization else None,
                "n_ctx_train": folder.context_length,
                "kv_bits": options.kv_bits,
                "max_kv_size": options.max_kv_size,
                "mlx_lm": MLX_LM_VERSION,
            },
        )

    @property
    def info(self) -> EngineInfo:
        return self._info

    @property
    def stream(self) -> Any:
        """The MLX stream (on this engine's device) that every computation of this model runs on."""
        return self._stream

    def tokenize(self, text: str, *, add_bos: bool, special: bool = True) -> list[int]:
        self._check_open()
        # split_special_tokens: the special added tokens are not matched (transformers passes it
        # to the tokenizers library as encode_special_tokens); non-special added ones still are.
        with self._encode_lock:
            encoded = self._tokenizer.encode(text, add_special_tokens=False, split_special_tokens=not special)
        ids = [int(i) for i in encoded]
        if add_bos and self._bos_id is not None:
            ids.insert(0, self._bos_id)
        return ids

    def token_bytes(self, token_id: int) -> bytes:
        table = self._token_bytes
        return table[token_id] if 0 <= token_id < len(table) else b""  # ids past the tokenizer: padding rows

    @property
    def capacity(self) -> Capacity:
        return CAPACITY

    def open(self, request: SequenceRequest) -> MlxSequence:
        model = self._check_open()
        if self._running is not None:
            raise GenerationError("this MLX model runs one call at a time; release the open one first")
        self._check_memory(request)
        cache, reused = self._prefix.take(request.prompt_ids, reuse=request.reuse_prefix)
        if cache is None:
            cache = make_prompt_cache(model, max_kv_size=self._options.max_kv_size)
        bridge = LogitsBridge(request.logits_step) if request.logits_step is not None else None
        sequence = MlxSequence(request, cache, reused, on_release=self._release, bridge=bridge)
        self._running = sequence
        return sequence

    def _check_memory(self, request: SequenceRequest) -> None:
        """Refuse a call whose cache this machine cannot hold: mlx-lm grows the cache as the call
        goes (Metal's unified memory on a Mac is the same memory), until the process is killed."""
        if not self._kv_bytes:
            return
        options = self._options
        prompt = len(request.prompt_ids)
        tokens = prompt + request.budget
        if options.max_kv_size:
            tokens = min(tokens, options.max_kv_size)
        kv = tokens * self._kv_bytes
        # a prefill chunk's attention scores: each of its rows against the whole prompt, per head
        scores = min(options.prefill_step_size, prompt) * tokens * self._heads * 4
        check_fits(
            kv + scores,
            what=f"a call of {prompt:,} prompt tokens and up to {request.budget:,} more on {self._folder_name} "
            f"(KV cache {format_bytes(kv)}, attention scores {format_bytes(scores)})",
            hint="use a shorter prompt or fewer max_tokens, or set max_kv_size, kv_bits or a smaller prefill_step_size",
        )

    def step(self, sequences: Sequence[EngineSequence]) -> list[int]:
        return self._thread.run(self._step, sequences)

    def _step(self, sequences: Sequence[EngineSequence]) -> list[int]:
        return [self._advance(sequence) for sequence in sequences]

    def _advance(self, sequence: EngineSequence) -> int:
        if sequence is not self._running or not isinstance(sequence, MlxSequence):
            raise GenerationError("this MLX sequence was released, or belongs to another model")
        if sequence.tokens is None:
            sequence.tokens = self._run(sequence)
        try:
            token = next(sequence.tokens)
        except BaseException:
            sequence.failed = True
            raise
        sequence.generated.append(token)
        if sequence.bridge is not None:
            sequence.bridge.settle()
        return token

    def _release(self, sequence: MlxSequence) -> None:
        self._thread.run(self._finish, sequence)

    def _finish(self, sequence: MlxSequence) -> None:
        if sequence is not self._running:
            return  # released already
        self._running = None
        if sequence.tokens is not None:
            sequence.tokens.close()
        if not sequence.failed and self._model is not None:
            self._prefix.keep(sequence.cache, [*sequence.request.prompt_ids, *sequence.generated])

    def _run(self, sequence: MlxSequence) -> Generator[int, None, None]:
        """``generate_step`` on what the sequence's cache does not hold yet, a token per ``next``."""
        model = self._check_open()
        options = self._options
        request = sequence.request
        fed = sequence.fed
        # The penalty window counts from the first id generate_step is given (its `tokens`):
        # with a reused prefix, that is the first id not reused, never the prompt's start.
        plan = SamplingPlan(request.config, request.seed, len(fed))
        processors = [*([sequence.bridge] if sequence.bridge else []), *(plan.logits_processors or [])]
        with mx.stream(self._stream):
            prompt = mx.array(list(fed), dtype=mx.int32)
        steps = generate_step(
            prompt,
            model,
            self._stream,
            max_tokens=-1,  # the core decides when to stop
            sampler=plan.sampler,
            logits_processors=processors or None,
            prompt_cache=sequence.cache,
            max_kv_size=options.max_kv_size,
            prefill_step_size=options.prefill_step_size,
            kv_bits=options.kv_bits,
            kv_group_size=options.kv_group_size,
            quantized_kv_start=options.quantized_kv_start,
        )
        streams: list[Any] = [self._stream]
        outside = _Defaults(self._device)
        with wired_limit(model, streams):  # what mlx-lm's stream_generate does (Metal only)
            try:
                for token, _logprobs in steps:
                    # generate_step holds `with mx.stream(ours)` open across its yields: while we are
                    # suspended, the caller's thread must see its own default stream, not ours.
                    # (Every step it computes opens our stream again.)
                    outside.restore()
                    yield int(token)  # generate_step yields Python ints (its annotation says arrays)
            finally:
                steps.close()
                outside.restore()

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Teacher forcing (:class:`phi_backends.backend.ScoringEngine`): the logits after every position.

        The ids go through the model in ``prefill_step_size`` chunks on a fresh cache, as
        ``generate_step`` feeds a prompt.
        """
        return self._thread.run(self._logits, ids)

    def _logits(self, ids: Sequence[int]) -> np.ndarray:
        model = self._check_open()
        n = len(ids)  # the core checked 0 < n <= context_length
        step = self._options.prefill_step_size
        rows: list[np.ndarray] = []
        with mx.stream(self._stream):
            cache = make_prompt_cache(model, max_kv_size=self._options.max_kv_size)
            for start in range(0, n, step):
                chunk = mx.array(list(ids[start : start + step]), dtype=mx.int32)[None]
                out = model(chunk, cache=cache)[0].astype(mx.float32)
                mx.eval(out)
                rows.append(np.array(out))
        return np.concatenate(rows) if len(rows) > 1 else rows[0]

    def close(self) -> None:
        if self._running is not None:
            self._running.release()
        self._prefix.clear()
        if self._model is not None:
            # Drop the tokenizer too: a closed Generator the caller still holds must not keep it.
            self._model = self._tokenizer = None
            self._token_bytes = ()
            mx.clear_cache()
        self._returned()  # the thread goes back to be lent again (once, however often close is called)

    # -- internals -------------------------------------------------------------------------

    def _check_open(self) -> Any:
        if self._model is None:
            raise GenerationError("this MLX model was closed; load it again")
        return self._model

    def _load(self, folder: ModelFolder, options: EngineOptions) -> tuple[Any, Any, set[int]]:
        """The model (mlx-lm's ``load_model``), the folder's Hugging Face tokenizer, and the ids
        mlx-lm would stop at. Not ``mlx_lm.load``: its tokenizer wrapper builds streaming
        detokenizers and tool/thinking tables we never use, and left about 1 MiB of heap behind on
        each of the first dozen loads (100 load/close cycles grew resident memory by 5.8%)."""
        try:
            with mx.stream(self._stream):
                model, config = load_model(
                    folder.path,
                    model_config=dict(folder.config_overrides) or None,
                    trust_remote_code=options.trust_remote_code,
                )
                # load_model builds the model with random initial weights and replaces them with
                # the file's without ever evaluating them; each draw split MLX's global PRNG key
                # lazily, so the key held the whole unevaluated chain: ~20 KiB more native memory
                # on every load, never freed. Evaluating the key lets the chain go.
                mx.eval(mx.random.state)
            tokenizer = AutoTokenizer.from_pretrained(folder.path, trust_remote_code=options.trust_remote_code)
        except MemoryError:
            raise RuntimeFailure(f"not enough memory to load {folder.path.name} with MLX") from None
        except Exception as exc:  # mlx-lm raises ValueError, KeyError, TypeError, OSError, RuntimeError...
            raise ModelFormatError(
                f"mlx-lm {MLX_LM_VERSION} could not load {folder.path}: {_reason(exc)}; "
                "check that config.json matches the weights, or re-download or re-convert the model"
            ) from None
        # What mlx-lm stops at (mlx_lm.load): generation_config.json's (else config.json's)
        # eos_token_id, plus the tokenizer's EOS token.
        configured = config.get("eos_token_id")
        eos_ids = {int(i) for i in ([configured] if isinstance(configured, int) else configured or [])}
        if tokenizer.eos_token_id is not None:
            eos_ids.add(int(tokenizer.eos_token_id))
        return model, tokenizer, eos_ids


class _Defaults:
    """The calling thread's default device and default streams, to put back."""

    def __init__(self, engine_device: Any) -> None:
        self._device = mx.default_device()
        devices = [self._device] if mx.Device(engine_device) == self._device else [self._device, engine_device]
        self._streams = [mx.default_stream(d) for d in devices]

    def restore(self) -> None:
        mx.set_default_device(self._device)
        for stream in self._streams:  # each is the default of its own device
            mx.set_default_stream(stream)


def _check_architecture(folder: ModelFolder) -> None:
    """mlx-lm has a class for the folder's model_type (or the folder brings its own, when trusted)."""
    if folder.config.get("model_file") is not None:
        return  # allowed by trust_remote_code (model_folder.check_custom_code); mlx-lm imports it
    try:
        _get_classes(dict(folder.config))  # imports mlx_lm.models.<model_type> (after mlx-lm's renames)
    except Exception:
        raise ModelFormatError(
            f"{folder.path / 'config.json'}: model_type {folder.model_type!r} is not an architecture mlx-lm "
            f"{MLX_LM_VERSION} can run; use another backend, or a phi-backends-mlx whose mlx-lm supports it"
        ) from None


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _kv_bytes_per_token(folder: ModelFolder) -> tuple[int, int]:
    """One token's keys and values in float16 (mlx-lm's cache holds the activations' type), and
    the attention heads; (0, 0) when config.json does not say."""
    config = folder.config
    nested = config.get("text_config")  # multimodal configs keep the language model's here
    text: Mapping[str, Any] = nested if isinstance(nested, Mapping) else {}

    def number(*keys: str) -> int:
        for source in (config, text):
            for key in keys:
                value = source.get(key)
                if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                    return value
        return 0

    layers, heads = number("num_hidden_layers", "n_layer"), number("num_attention_heads", "n_head")
    kv_heads = number("num_key_value_heads") or heads
    head_dim = folder.head_dim or 0
    return 2 * layers * kv_heads * head_dim * 2, heads
