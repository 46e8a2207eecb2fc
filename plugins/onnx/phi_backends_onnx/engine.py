"""An ONNX Runtime GenAI model folder loaded in onnxruntime-genai.

One sequence at a time (``Capacity.max_sequences`` 1): onnxruntime-genai's generator batches
are static on the CPU, so the core serializes calls. Each call runs on an ``og.Generator``
whose ``max_length`` (prompt + generated tokens, in this engine) bounds what it can hold; when a
call ends its generator is kept, and the next call whose prompt starts with the ids it holds
rewinds it to that prefix and appends only the rest (:mod:`.sequence`). The engine's own
sampler is used only where it is provably the same as :class:`~phi_backends.SamplingConfig`:

- greedy decoding without a repetition penalty, on the CPU provider, for a call with no logits
  step: the engine's own argmax (``do_sample=False``), tested against
  :class:`~phi_backends.sampling.ReferenceSampler` (highest logit, lowest id on a tie);
- everything else is emulated: the raw logits (``get_logits``) go through the core's logits
  step and then ReferenceSampler, and the chosen token is forced with ``set_logits`` +
  ``generate_next_token`` (the engine's sampler then has one candidate). The engine's own
  temperature comes before its filters as ours does, but its repetition penalty counts the
  prompt, it has no min_p, and its random stream cannot be reproduced, so it is never used.

The engine's end-of-sequence handling never decides anything: every id in
``genai_config.json``'s ``eos_token_id`` is in ``info.eog_token_ids``, so the core stops at
it before the engine would end the sequence.

onnxruntime-genai holds the GIL in ``append_tokens`` and ``generate_next_token`` (measured:
a sleeping ticker thread got no turn during a 500-id ``append_tokens``).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime_genai as og

from phi_backends import EngineInfo, ModelSource, SamplingConfig
from phi_backends.backend import Capacity, EngineSequence, SequenceRequest
from phi_backends.diagnostics.memory import check_fits, format_bytes
from phi_backends.errors import (
    BackendUnavailableError,
    GenerationError,
    ModelFormatError,
    OptionError,
    PhiBackendsError,
)
from phi_backends.formats.hf_folder import engine_info_from_folder, folder_bos_token_id
from phi_backends.formats.hf_tokenizer import read_hf_tokenizer
from phi_backends.sampling import ReferenceSampler

from .genai_folder import CONFIG_NAME, GenaiFolder, read_genai_folder
from .options import EngineOptions
from .providers import Installation, canonical_provider, check_usable
from .sequence import (
    NOT_DONE_MESSAGE,
    REWINDING_DEVICES,
    KeptGenerator,
    OnnxSequence,
    replace_last_token,
    reusable_prefix,
    rope_switch,
)
from .tokenizer_folder import template_free_folder

__all__ = ["NATIVE_GREEDY_DEVICES", "OnnxEngine", "replace_last_token"]

#: The fewest tokens a new generator has room for, so that a short chat reuses it turn after turn
#: (1,024 tokens of fp32 cache: 46 MiB for SmolLM2-135M, 768 MiB for Phi-3-mini).
RESERVED_LENGTH = 1024
#: Where the engine's argmax is tested to be ReferenceSampler's greedy choice (tests/test_sampling_paths.py).
NATIVE_GREEDY_DEVICES = frozenset({"CPU"})
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: Texts of onnxruntime-genai errors that mean "this provider cannot run here", not "bad model".
_PROVIDER_FAILURES = ("interface not available", "not been built with", "not supported in this build", "provider")


class OnnxEngine:
    def __init__(self, source: ModelSource, options: EngineOptions, installation: Installation) -> None:
        folder = source.path
        if options.provider is not None:
            check_usable(options.provider, installation, requested="")
        genai = read_genai_folder(folder)  # checks genai_config.json, the .onnx files and their data first
        provider = options.provider or _configured_provider(genai, installation)
        if provider == "cpu" and options.provider_options:
            raise OptionError("the cpu provider takes no provider_options; drop them or choose another provider")
        facts = read_hf_tokenizer(folder)
        self._model: Any = None
        self._folder = folder
        # The KV cache lives in this machine's memory on the cpu provider only (a GPU's is not reported here).
        self._kv_bytes = _kv_bytes_per_token(folder) if provider == "cpu" else None
        self._model = self._load_model(genai, provider, options)
        # Not og.Tokenizer(self._model): that parses the folder's (untrusted) chat template, and crashes on some.
        with template_free_folder(folder) as tokenizer_files:
            self._tokenizer = _og_call(lambda: og.Tokenizer(str(tokenizer_files)), f"the tokenizer of {folder}")
        self._folder = folder
        self._plain_tokenizer: Any = None
        self._text_lock = threading.Lock()
        self._device = str(self._model.device_type)
        self._native_greedy = self._device in NATIVE_GREEDY_DEVICES
        self._vocab = genai.vocab_size
        self._model_type = genai.model_type
        self._kept: KeptGenerator | None = None
        self._capacity = Capacity(
            max_sequences=1,
            kv_tokens=None,
            reuses_prefix=self._device in REWINDING_DEVICES,
            any_thread=True,  # an og.Generator is not tied to the thread that made it
        )
        self._token_bytes = facts.token_bytes
        self._bos = folder_bos_token_id(facts, genai.bos_token_id)
        # onnxruntime-genai's encode() adds no BOS (0.8+); should a tokenizer ever add one, drop it.
        probe = self._tokenizer.encode("a").tolist()
        self._encode_adds_bos = self._bos is not None and probe[:1] == [self._bos]
        self._check_logits(genai)
        self._info = engine_info_from_folder(
            source.path,
            facts,
            bos_token_id=self._bos,
            eos_token_ids={*genai.eos_token_ids, *(int(i) for i in self._tokenizer.eos_token_ids)},
            context_length=min(genai.context_length, options.max_length or genai.context_length),
            vocab_size=genai.vocab_size,
            architecture=genai.model_type,
            metadata={
                "provider": provider,
                "device": self._device,
                "folder": str(folder),
                "context_length": genai.context_length,
                "engine": f"{installation.distribution} {installation.version}",
                "native_greedy": self._native_greedy,
                "threads": options.threads,
            },
        )

    @property
    def info(self) -> EngineInfo:
        return self._info

    def tokenize(self, text: str, *, add_bos: bool, special: bool = True) -> list[int]:
        self._check_open()
        tokenizer = self._tokenizer if special else self._text_tokenizer()
        ids: list[int] = tokenizer.encode(text).tolist()
        if self._encode_adds_bos and ids[:1] == [self._bos]:
            ids = ids[1:]
        if add_bos and self._bos is not None:
            ids.insert(0, self._bos)
        return ids

    def _text_tokenizer(self) -> Any:
        """The tokenizer that leaves control tokens' text as text (:mod:`.tokenizer_folder`), made
        on first use: most prompts never need it."""
        with self._text_lock:
            if self._plain_tokenizer is None:
                with template_free_folder(self._folder, special_tokens=False) as files:
                    self._plain_tokenizer = _og_call(
                        lambda: og.Tokenizer(str(files)), f"the tokenizer of {self._folder}"
                    )
            return self._plain_tokenizer

    def token_bytes(self, token_id: int) -> bytes:
        table = self._token_bytes
        return table[token_id] if 0 <= token_id < len(table) else b""

    @property
    def capacity(self) -> Capacity:
        return self._capacity

    def open(self, request: SequenceRequest) -> EngineSequence:
        self._check_open()
        native = self.uses_engine_greedy(request.config) and request.logits_step is None
        sampler = None if native else ReferenceSampler(request.config, request.seed)
        return OnnxSequence(request=request, native=native, sampler=sampler, owner=self)

    def step(self, sequences: Sequence[EngineSequence]) -> list[int]:
        if len(sequences) == 1:  # always, one sequence at a time; no comprehension on the per-token path
            return [self._step(self._own(sequences[0]))]
        return [self._step(self._own(sequence)) for sequence in sequences]  # _own checks the model is open

    def keep(self, sequence: OnnxSequence) -> None:
        """Called by ``sequence.release()``: keep its generator for a later prompt, if it is sound.

        Not for a call that turned reuse off: its generator has no room past its own call."""
        generator = sequence.generator
        if generator is None or sequence.broken or self._model is None or not sequence.generated:
            return
        if not sequence.request.reuse_prefix:
            return
        switch = rope_switch(self._model_type)
        long_rope = sequence.long_rope or (switch is not None and int(generator.token_count()) > switch)
        self._kept = KeptGenerator(generator, sequence.max_length, long_rope)

    def uses_engine_greedy(self, config: SamplingConfig) -> bool:
        """Whether a call with ``config`` and no logits step picks tokens with the engine's own
        argmax (else: emulation)."""
        return self._native_greedy and config.greedy and not config.penalizes

    def engine_argmax(self, logits: np.ndarray) -> int:
        """The token the engine's own greedy step picks from ``logits`` (one row of ``vocab_size``)."""
        self._check_open()
        generator = self._new_generator(min(self._info.context_length, 2))
        try:
            generator.append_tokens(np.asarray([self._bos if self._bos is not None else 0], dtype=np.int32))
            generator.get_logits()  # the engine takes new logits only once it has computed its own
            generator.set_logits(np.asarray(logits, dtype=np.float32).reshape(1, -1))
            generator.generate_next_token()
            return int(generator.get_next_tokens()[0])
        finally:
            del generator

    def _own(self, sequence: EngineSequence) -> OnnxSequence:
        if self._model is None:
            self._check_open()
        if not isinstance(sequence, OnnxSequence) or sequence.owner is not self:
            raise GenerationError("this sequence was not opened by this onnxruntime-genai model")
        if sequence.released:
            raise GenerationError("this sequence was released; open a new one")
        return sequence

    def _step(self, sequence: OnnxSequence) -> int:
        # Per token, between two generate_next_token calls, as little runs as the step needs:
        # the step evicts the CPU caches, so every line here costs several times its warm cost,
        # and single-stream decode is held to the engine's own loop (benchmarks/overhead.py).
        try:
            generator = sequence.generator
            if generator is None:
                self._start(sequence)
            elif generator.is_done():  # the core stops first (end of sequence, budget); never reached
                raise GenerationError(NOT_DONE_MESSAGE)
            if sequence.native:  # the engine's own argmax: the engine's loop exactly
                generator = sequence.generator
                generator.generate_next_token()
                token = int(generator.get_next_tokens()[0])
            else:
                token = self._emulated(sequence)
        except BaseException:
            sequence.broken = True
            raise
        sequence.generated.append(token)
        return token

    def _start(self, sequence: OnnxSequence) -> None:
        """The first step: the prompt, or what a kept generator does not hold of it, goes in."""
        request = sequence.request
        prompt = request.prompt_ids
        need = min(self._info.context_length, len(prompt) + request.budget)
        switch = rope_switch(self._model_type)
        kept, self._kept = self._kept, None
        if kept is not None and request.reuse_prefix and self._device in REWINDING_DEVICES:
            common = reusable_prefix(kept, prompt, need, switch)
            if common:
                try:
                    kept.generator.rewind_to(common)
                    kept.generator.append_tokens(np.asarray(prompt[common:], dtype=np.int32))
                except Exception:  # a provider that cannot rewind after all: start afresh below
                    pass
                else:
                    sequence.generator, sequence.max_length, sequence.long_rope = (
                        kept.generator,
                        kept.max_length,
                        kept.long_rope,
                    )
                    sequence.reused = common
                    return
        del kept  # frees its KV cache before the new one is allocated
        # The cache is allocated whole up front (its size, and the time to create it, grow with
        # max_length), and a kept generator is reused only while it has room: room for twice
        # this call, and at least RESERVED_LENGTH tokens, lets the next turns of a chat (this
        # prompt, the answer, a new message, the same budget) reuse it, at most doubling the
        # cache of a single call past that floor. That room costs decode speed (SmolLM2 int4 on
        # 2 cores: 2-3% slower per token at max_length 1024 than at 303, the same 256 tokens
        # generated), so a call that turned reuse off gets exactly what it can use.
        if request.reuse_prefix:
            sequence.max_length = min(self._info.context_length, max(2 * need, RESERVED_LENGTH))
        else:
            sequence.max_length = need
        sequence.long_rope = switch is not None and len(prompt) > switch
        generator = self._new_generator(sequence.max_length)
        sequence.generator = generator
        generator.append_tokens(np.asarray(prompt, dtype=np.int32))

    def _emulated(self, sequence: OnnxSequence) -> int:
        """Raw logits through the logits step and ReferenceSampler; the chosen token is forced on the engine.

        Forcing (``set_logits`` with one finite logit, then the engine's greedy step) rather than
        ``append_tokens`` works on every provider: DirectML cannot append to a running sequence.
        The token is forced at once, so that after any step the generator holds what the
        engine's own greedy step would leave: the sampled token in the sequence, not yet in the cache.
        """
        generator, sampler, step = sequence.generator, sequence.sampler, sequence.request.logits_step
        assert sampler is not None
        row = generator.get_logits().reshape(-1)  # a fresh, writable float32 copy on every call
        if step is not None:
            step(row)
        token = sampler.sample(row, sequence.generated)
        forced = sequence.forced
        if forced is None:
            forced = sequence.forced = np.full((1, self._vocab), -np.inf, dtype=np.float32)
        elif sequence.generated:
            forced[0, sequence.generated[-1]] = -np.inf
        forced[0, token] = 0.0
        generator.set_logits(forced)
        generator.generate_next_token()
        if int(generator.get_next_tokens()[0]) != token:
            replace_last_token(generator, token)
        return token

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Teacher forcing (:class:`phi_backends.backend.ScoringEngine`): the logits after every position.

        One ``append_tokens`` runs the whole sequence; the model's ``logits`` output then holds a
        row per position. A model that outputs only the last row is fed one token at a time.
        """
        self._check_open()
        n, context = len(ids), self._info.context_length  # the core checked 0 < n <= context
        tokens = np.asarray(ids, dtype=np.int32)
        generator = self._new_generator(min(context, n + 1))
        try:
            generator.append_tokens(tokens)
            out = np.asarray(generator.get_output("logits"), dtype=np.float32)
            if out.ndim == 3 and out.shape[1] == n:
                return np.ascontiguousarray(out[0])
            del generator
            generator = self._new_generator(min(context, n + 1))
            rows = []
            for token in tokens:
                generator.append_tokens(token.reshape(1))
                rows.append(np.asarray(generator.get_logits(), dtype=np.float32).reshape(-1))
            return np.stack(rows)
        finally:
            del generator

    def close(self) -> None:
        self._kept = None  # its generator before the model it runs
        self._tokenizer = None
        self._plain_tokenizer = None
        self._model = None

    # -- internals ---------------------------------------------------------------------------

    def _load_model(self, genai: GenaiFolder, provider: str, options: EngineOptions) -> Any:
        folder = genai.path

        def load() -> Any:
            config = og.Config(str(folder))
            session: dict[str, Any] = {"log_severity_level": options.log_level}
            if options.threads is not None:
                session["intra_op_num_threads"] = options.threads
            config.overlay(json.dumps({"model": {"decoder": {"session_options": session}}}))
            configured = [_known(name) for name in genai.providers]
            if configured[:1] != [provider] or provider == "cpu":
                config.clear_providers()
                if provider != "cpu":
                    config.append_provider(provider)
            for key, value in options.provider_options:
                config.set_provider_option(provider, key, value)
            return og.Model(config)

        return _og_call(load, f"{folder} with the {provider} provider")

    def _new_generator(self, max_length: int) -> Any:
        if self._kv_bytes:  # onnxruntime-genai allocates the whole cache now; past the memory the kernel kills us
            kv = max_length * self._kv_bytes
            check_fits(
                kv,
                what=f"a KV cache of {max_length:,} tokens for {self._folder.name} ({format_bytes(self._kv_bytes)} a token)",
                hint="use a shorter prompt or fewer max_tokens, or load the model with a smaller max_length",
            )
        params = og.GeneratorParams(self._model)
        # Every search option that could change a token is set: the folder's genai_config.json may hold others.
        params.set_search_options(
            max_length=max_length,
            min_length=0,
            do_sample=False,
            num_beams=1,
            num_return_sequences=1,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            batch_size=1,
        )
        return og.Generator(self._model, params)

    def _check_logits(self, genai: GenaiFolder) -> None:
        """Run one token now, so that a config that does not match the .onnx file fails at load."""
        probe = self._bos if self._bos is not None else genai.eos_token_ids[0]

        def run() -> Any:
            generator = self._new_generator(min(2, genai.context_length))
            generator.append_tokens(np.asarray([probe], dtype=np.int32))
            return generator.get_logits()

        mismatch = (
            f"{genai.path / CONFIG_NAME} says vocab_size {genai.vocab_size}, which does not match the model's logits"
        )
        try:
            logits = _og_call(run, f"{genai.path} (a first token)")
        except ModelFormatError as exc:
            if "output: logits" in str(exc):  # onnxruntime's shape check, in its words
                raise ModelFormatError(f"{mismatch}; re-download the model folder") from None
            raise
        if logits.shape[-1] != genai.vocab_size:
            raise ModelFormatError(f"{mismatch} ({logits.shape[-1]}); re-download the model folder")

    def _check_open(self) -> None:
        if self._model is None:
            raise GenerationError("this onnxruntime-genai model was closed; load it again")


def _kv_bytes_per_token(folder: Path) -> int | None:
    """What one token's keys and values take (float32, as the CPU exports hold them: an
    overestimate for float16 ones); None when genai_config.json does not say."""
    try:
        decoder = json.loads((folder / CONFIG_NAME).read_bytes())["model"]["decoder"]
        layers, heads = int(decoder["num_hidden_layers"]), int(decoder["num_key_value_heads"])
        head_size = int(decoder.get("head_size") or int(decoder["hidden_size"]) // int(decoder["num_attention_heads"]))
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError, RecursionError):
        return None  # read_genai_folder checked the file; a field it does not need may be missing
    return 2 * layers * heads * head_size * 4


def _configured_provider(genai: GenaiFolder, installation: Installation) -> str:
    """The folder's own provider (the first in genai_config.json), else cpu."""
    if not genai.providers:
        return "cpu"
    name = genai.providers[0]
    requested = f" (asked for by {genai.path / CONFIG_NAME})"
    try:
        provider = canonical_provider(name)
    except OptionError:
        raise BackendUnavailableError(
            f"execution provider {name!r}{requested} is not one the onnx backend knows; "
            f"providers usable here: {', '.join(installation.usable)} (pass provider=NAME, --provider NAME)"
        ) from None
    check_usable(provider, installation, requested)
    return provider


def _known(name: str) -> str:
    try:
        return canonical_provider(name)
    except OptionError:
        return name


def _og_call(call: Any, what: str) -> Any:
    """Run an onnxruntime-genai call; its RuntimeError becomes one line naming ``what``."""
    try:
        return call()
    except PhiBackendsError:
        raise
    except Exception as exc:
        lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
        text = " ".join(lines)[:300].rstrip(" .") or type(exc).__name__
        if any(marker in text.lower() for marker in _PROVIDER_FAILURES):
            raise BackendUnavailableError(f"onnxruntime-genai could not load {what}: {text}") from None
        raise ModelFormatError(
            f"onnxruntime-genai could not load {what}: {text}; check that the folder is a complete "
            "ONNX Runtime GenAI model (re-download it)"
        ) from None
