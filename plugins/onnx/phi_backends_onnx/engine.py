"""An ONNX Runtime GenAI model folder loaded in onnxruntime-genai.

Every call runs a new ``og.Generator`` (a fresh KV cache; nothing carries over between calls)
whose ``max_length`` (prompt + generated tokens, in this engine) is the prompt plus
``max_tokens``, capped by the context. The engine's own sampler is used only where it is
provably the same as :class:`~phi_backends.SamplingConfig`:

- greedy decoding without a repetition penalty, on the CPU provider: the engine's own argmax
  (``do_sample=False``), tested against :class:`~phi_backends.sampling.ReferenceSampler`
  (highest logit, lowest id on a tie);
- everything else is emulated: the raw logits (``get_logits``) go through ReferenceSampler,
  and the chosen token is forced with ``set_logits`` + ``generate_next_token`` (the engine's
  sampler then has one candidate). The engine's own temperature comes before its filters as
  ours does, but its repetition penalty counts the prompt, it has no min_p, and its random
  stream cannot be reproduced, so it is never used.

The engine's end-of-sequence handling never decides anything: every id in
``genai_config.json``'s ``eos_token_id`` is in ``info.eog_token_ids``, so the core stops at
it before the engine would end the sequence.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import onnxruntime_genai as og

from phi_backends import EngineInfo, ModelSource, SamplingConfig
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
from .tokenizer_folder import template_free_folder

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
        self._model = self._load_model(genai, provider, options)
        # Not og.Tokenizer(self._model): that parses the folder's (untrusted) chat template, and crashes on some.
        with template_free_folder(folder) as tokenizer_files:
            self._tokenizer = _og_call(lambda: og.Tokenizer(str(tokenizer_files)), f"the tokenizer of {folder}")
        self._device = str(self._model.device_type)
        self._native_greedy = self._device in NATIVE_GREEDY_DEVICES
        self._vocab = genai.vocab_size
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

    def tokenize(self, text: str, *, add_bos: bool) -> list[int]:
        self._check_open()
        ids: list[int] = self._tokenizer.encode(text).tolist()
        if self._encode_adds_bos and ids[:1] == [self._bos]:
            ids = ids[1:]
        if add_bos and self._bos is not None:
            ids.insert(0, self._bos)
        return ids

    def token_bytes(self, token_id: int) -> bytes:
        table = self._token_bytes
        return table[token_id] if 0 <= token_id < len(table) else b""

    def generate(self, prompt_ids: Sequence[int], config: SamplingConfig, seed: int) -> Iterator[int]:
        self._check_open()
        generator = self._new_generator(min(self._info.context_length, len(prompt_ids) + config.max_tokens))
        try:
            generator.append_tokens(np.asarray(prompt_ids, dtype=np.int32))
            if self.uses_engine_greedy(config):
                yield from self._engine_greedy(generator)
            else:
                yield from self._emulated(generator, ReferenceSampler(config, seed))
        finally:
            del generator  # frees the KV cache now, not at the next garbage collection

    def uses_engine_greedy(self, config: SamplingConfig) -> bool:
        """Whether ``generate`` picks tokens with the engine's own argmax (else: emulation)."""
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

    def _engine_greedy(self, generator: Any) -> Iterator[int]:
        """The engine's own argmax: the engine's loop exactly, as fast as it gets."""
        while True:
            self._check_not_done(generator)
            generator.generate_next_token()
            yield int(generator.get_next_tokens()[0])

    def _emulated(self, generator: Any, sampler: ReferenceSampler) -> Iterator[int]:
        """Raw logits through ReferenceSampler; the chosen token is forced on the engine.

        Forcing (``set_logits`` with one finite logit, then the engine's greedy step) rather than
        ``append_tokens`` works on every provider: DirectML cannot append to a running sequence.
        """
        generated: list[int] = []
        forced = np.full((1, self._vocab), -np.inf, dtype=np.float32)
        previous = 0
        while True:
            self._check_not_done(generator)
            token = sampler.sample(generator.get_logits().reshape(-1), generated)
            generated.append(token)
            yield token
            forced[0, previous] = -np.inf
            forced[0, token] = 0.0
            previous = token
            generator.set_logits(forced)
            generator.generate_next_token()
            if int(generator.get_next_tokens()[0]) != token:
                replace_last_token(generator, token)

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
        self._tokenizer = None
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

    @staticmethod
    def _check_not_done(generator: Any) -> None:
        if generator.is_done():  # the core stops first (end of sequence, max_tokens); never reached
            raise GenerationError("onnxruntime-genai ended the sequence before phi-backends stopped it")


def replace_last_token(generator: Any, token: int) -> None:
    """Put ``token`` in place of the engine's own last choice.

    ``generate_next_token`` can recompute the logits we set and choose by itself: for Phi-3
    models onnxruntime-genai re-runs the whole sequence when it reaches 4097 tokens (to switch
    RoPE factors). The engine's token is then replaced by ours, on the recomputed cache.
    """
    generator.rewind_to(generator.token_count() - 1)
    generator.append_tokens(np.asarray([token], dtype=np.int32))


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
