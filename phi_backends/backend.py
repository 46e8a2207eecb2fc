"""What a backend plugin provides: a :class:`Backend` that loads models into :class:`Engine` s.

The core owns everything that must mean the same on every engine: prompt templates, sampling
semantics, detokenization, stop strings, end-of-turn handling, usage and timings. An engine
only tokenizes, maps token ids to bytes, and advances its open sequences by one sampled token
per step (several in one batch where the engine can), running the core's logits step
(:mod:`phi_backends.logits`) on each row of logits before its sampler.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from .sampling import SamplingConfig

if TYPE_CHECKING:
    import numpy as np

    from .logits import LogitsStep
    from .models.catalogue import CatalogueEntry
    from .selection.platform import Platform

__all__ = [
    "Availability",
    "Backend",
    "Capacity",
    "Engine",
    "EngineInfo",
    "EngineSequence",
    "Fit",
    "ModelFormat",
    "ModelKind",
    "ModelQuery",
    "ModelSource",
    "ScoringEngine",
    "SequenceRequest",
    "SerialEngine",
    "Verdict",
]


@dataclass(frozen=True)
class Availability:
    """Whether a backend can run on this machine, and why not."""

    ok: bool
    reason: str = ""
    devices: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelSource:
    """A model resolved to files on disk, as handed to a backend."""

    path: Path
    format: str
    name: str
    template: str | None = None  # a built-in template name chosen by the catalogue, if any


@dataclass(frozen=True)
class EngineInfo:
    """Facts about a loaded model that the core needs."""

    context_length: int
    vocab_size: int
    add_bos: bool
    bos_token: str | None
    eos_token: str | None
    eog_token_ids: frozenset[int]
    chat_template: str | None = None  # the model file's own template: untrusted input
    chat_template_error: str | None = None  # why the model's template could not be read, if it could not
    strip_leading_space: bool = False  # SentencePiece: drop the space of the first piece
    architecture: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Capacity:
    """How many sequences an engine advances at once, and the memory they share.

    ``max_sequences`` 1 means the engine cannot batch: the core runs its calls one after another.
    ``kv_tokens`` is the number of KV-cache cells all running sequences share (llama.cpp's
    unified cache); None when each sequence has its own cache of ``info.context_length``.
    The core admits a call only while the prompts and token budgets of the running ones fit it.
    ``reuses_prefix`` says whether :meth:`Engine.open` can take a prompt's start from the cache
    of an earlier call; ``exact_reuse`` whether a prompt continued from such a cache gets, bit
    for bit, the logits a fresh computation gets (llama.cpp's CPU kernels round differently for
    other batch shapes, so the cache of an earlier call is not bit-identical there: False).
    ``exact_batching`` says whether a sequence's logits in a batch are, bit for bit, its logits
    alone (llama.cpp on float weights: False, its batched matrix products round differently).
    ``any_thread`` says whether the engine may be called from any thread, one call at a time
    (onnxruntime-genai: True; llama.cpp's OpenMP team and MLX's streams belong to a thread:
    False). A one-sequence engine that allows it has a lone reader's call stepped on the
    reader's own thread, as the engine's own loop would be, with no hand-off per token.
    """

    max_sequences: int = 1
    kv_tokens: int | None = None
    reuses_prefix: bool = False
    exact_reuse: bool = True
    exact_batching: bool = True
    any_thread: bool = False


@dataclass(frozen=True)
class SequenceRequest:
    """One call as the core hands it to an engine: the prompt, how to sample, and the budget.

    ``logits_step`` is None when the call needs none; otherwise the engine calls it on the
    model's logits for this sequence (a writable float32 NumPy row of ``info.vocab_size``, changed
    in place) after the model and before its sampler reads them, on every token
    (:mod:`phi_backends.logits` documents the order). ``budget`` is the most tokens the core will
    ask for (the engine may reserve cache for ``len(prompt_ids) + budget``). ``reuse_prefix``
    False asks the engine to compute the whole prompt afresh.
    """

    prompt_ids: tuple[int, ...]
    config: SamplingConfig
    seed: int
    budget: int
    logits_step: LogitsStep | None = None
    reuse_prefix: bool = True


@runtime_checkable
class EngineSequence(Protocol):
    """One sequence inside an engine, from :meth:`Engine.open` until :meth:`release`."""

    @property
    def reused_tokens(self) -> int:
        """How many of the prompt's first ids came from the cache of an earlier call (0: none).

        Known once the first :meth:`Engine.step` that included this sequence has returned.
        """
        ...

    def release(self) -> None:
        """The sequence is over: the core will not step it again. The engine frees its slot and
        may keep its cache (prompt and fed tokens) for a later prompt that starts the same way."""
        ...


@runtime_checkable
class Engine(Protocol):
    """One loaded model: a tokenizer, and a step that advances several sequences by a token each.

    The core drives an engine from one thread at a time (its scheduler's worker); ``tokenize``
    and ``token_bytes`` may also be called from other threads meanwhile.
    """

    @property
    def info(self) -> EngineInfo: ...

    @property
    def capacity(self) -> Capacity: ...

    def tokenize(self, text: str, *, add_bos: bool, special: bool = True) -> list[int]:
        """Token ids for ``text``, parsing special tokens such as ``<|end|>``.

        With ``special=False`` the text of a control (special) token is tokenized as the plain
        text it spells, as the tokenizer would if that token were not in its vocabulary; tokens
        the vocabulary adds as ordinary text (Hugging Face's added tokens that are not
        ``special``, llama.cpp's user-defined ones) may still be matched. The core tokenizes a
        message's content this way, so that it cannot forge a turn; it calls it with
        ``add_bos=False`` on pieces that follow a control token or begin the prompt.
        """
        ...

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes a token stands for; ``b""`` for control tokens. Must be cheap."""
        ...

    def open(self, request: SequenceRequest) -> EngineSequence:
        """Start a sequence (no model work yet: the next :meth:`step` computes its prompt).

        ``request.prompt_ids`` always hold a token besides BOS and fit the context (the core
        checked). At most ``capacity.max_sequences`` are open at once. Nothing of another call
        may change what this one generates, beyond floating-point rounding (docs/concurrency.md).
        """
        ...

    def step(self, sequences: Sequence[EngineSequence]) -> list[int]:
        """Advance each open sequence by one sampled token, in one engine batch where it can.

        A sequence in its first step computes its prompt (what the cache did not hold) and
        samples its first token; later steps feed the token sampled last and sample the next.
        Returns the sampled ids, one per sequence, in order. The engine never stops a sequence
        by itself: the core decides (end of turn, stop strings, budget, cancel) and releases it.
        """
        ...

    def close(self) -> None: ...


class SerialEngine:
    """A base for engines that run one sequence at a time, each as an iterator of sampled ids.

    Subclass it and write :meth:`tokens`; it provides :attr:`capacity` (one sequence, no prefix
    reuse), :meth:`open` and :meth:`step`. An engine that batches or reuses caches implements
    the :class:`Engine` protocol itself.
    """

    capacity: Capacity = Capacity()

    def tokens(self, request: SequenceRequest) -> Iterator[int]:
        """Yield sampled ids after ``request.prompt_ids`` until closed (the core stops it), running
        ``request.logits_step`` on each row of logits when it is not None."""
        raise NotImplementedError

    def open(self, request: SequenceRequest) -> EngineSequence:
        return _IteratorSequence(self.tokens(request))

    def step(self, sequences: Sequence[EngineSequence]) -> list[int]:
        return [next(sequence.tokens) for sequence in sequences if isinstance(sequence, _IteratorSequence)]


class _IteratorSequence:
    reused_tokens = 0

    def __init__(self, tokens: Iterator[int]) -> None:
        self.tokens = tokens

    def release(self) -> None:
        close = getattr(self.tokens, "close", None)
        if close is not None:
            close()


@runtime_checkable
class ScoringEngine(Protocol):
    """An optional capability of an :class:`Engine`: teacher forcing (``phi-backends parity`` uses it).

    An engine that has it is checked with ``isinstance(engine, ScoringEngine)``; one that has not
    is still a complete engine.
    """

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """The raw logits after each position of ``ids``, fed in one go to a fresh cache.

        A float32 array of shape ``(len(ids), vocab)``: row ``i`` scores the token that would
        follow ``ids[: i + 1]``. Nothing carries over to or from the sequences of :meth:`Engine.step`.
        The core calls it only with ``ids`` that are not empty and fit ``info.context_length``.
        """
        ...


# -- what a backend is asked when one is chosen for a model (docs/choice.md) ---------------------

ModelKind = Literal["path", "catalogue", "hub"]


class Fit(IntEnum):
    """How well a backend runs a model on a platform; higher is better (docs/choice.md)."""

    UNUSABLE = 0  # cannot run it here
    FALLBACK = 1  # runs, but leaves this machine's accelerator unused, or runs on a slow path
    GOOD = 2  # runs well: on the CPU of a machine without an accelerator, or on a secondary GPU path
    BEST = 3  # runs on this machine's accelerator through the engine's own first-class path

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class ModelQuery:
    """A model as the user named it, before anything is downloaded.

    ``formats`` are those it is available in: one for a local path, the catalogue's artifacts
    for a catalogue name, a GGUF for a hub file, every known format for a hub repository
    (which format it holds is known only once it is listed).
    """

    name: str
    kind: ModelKind
    formats: frozenset[str]
    path: Path | None = None  # a local path, resolved
    entry: CatalogueEntry | None = None  # a catalogue name's entry

    def offers(self, formats: Iterable[str]) -> bool:
        """Does the model come in one of ``formats``?"""
        return not self.formats.isdisjoint(formats)


@dataclass(frozen=True)
class Verdict:
    """One backend's answer: its fit, one line saying why, and the engine options it assumes.

    ``options`` are those the fit depends on (``provider="dml"``, ``n_gpu_layers=-1``):
    :func:`phi_backends.load` uses them for the chosen backend unless the caller sets them.
    """

    backend: str
    fit: Fit
    reason: str
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fit", Fit(self.fit))
        object.__setattr__(self, "reason", " ".join(str(self.reason).split()))
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))


@dataclass(frozen=True)
class ModelFormat:
    """A model format: how the core recognises a path in it, and the words it uses for it.

    The formats this project's backends read are declared once in :mod:`phi_backends.formats`
    (``gguf``, ``onnx``, ``mlx``); a backend that reads another declares it in its
    :attr:`Backend.model_formats`, and the core learns it from there (no core edit).
    """

    name: str  # what Backend.formats and catalogue entries call it: "gguf"
    description: str  # one model in it, with its article: "a GGUF file"
    plural: str  # "GGUF files"
    key: str  # what makes a path one, said when a path is none: "ending in .gguf"
    detect: Callable[[Path], bool] = field(compare=False, repr=False)  # is this existing path one? cheap, no engine
    priority: int = 0  # when several formats claim one path, the highest wins (a more specific key file)
    locate: Callable[[Path], Path] | None = field(default=None, compare=False, repr=False)  # the path to load
    hub_suffix: str | None = None  # ".gguf": a hub id ``owner/repo/NAME.gguf`` names one file in this format
    reader: str | None = None  # the backend this project publishes for it, named when none installed reads it


@runtime_checkable
class Backend(Protocol):
    """A plugin's backend: everything the core knows of it comes from this object.

    Cheap to create: engines are imported only in :meth:`availability` and :meth:`load`.
    Registered through the ``register_backends`` hook (:mod:`phi_backends.hookspecs`).
    """

    name: str
    formats: tuple[str, ...]  # the names of the model formats it reads
    install_hint: str  # how to install what it needs, said when it cannot run
    model_formats: tuple[ModelFormat, ...]  # formats it introduces, beyond phi_backends.formats.KNOWN_FORMATS

    def availability(self) -> Availability:
        """Can this backend run here? Imports the engine (may take a moment)."""
        ...

    def validate_options(self, options: Mapping[str, Any]) -> None:
        """Raise :class:`~phi_backends.errors.OptionError` for an unknown option or a bad value.

        Called before a model is resolved (and perhaps downloaded), so an option that cannot
        work fails at once; and for each key of a config file's table, to name the key.
        """
        ...

    def assess_model(self, model: ModelQuery, platform: Platform) -> Verdict | None:
        """How well can this backend run ``model`` on ``platform``? None: no opinion (``fallback``).

        Asked only where ``model`` comes in a format it reads and its ``availability()`` is ok.
        It rates how well its engine fits ``platform``, taking its engine build's features from
        ``platform.features(self.name)`` where given (a simulated machine) and from the
        installed engine otherwise. It knows nothing of the other backends: the core ranks the
        answers (docs/choice.md). Must be fast and must not load a model; an exception, or an
        answer for another backend, is reported as a broken plugin, not raised.
        """
        ...

    def load(self, source: ModelSource, options: Mapping[str, Any]) -> Engine:
        """Load ``source`` with engine-specific ``options``; raise :mod:`phi_backends.errors`."""
        ...
