"""A complete backend that needs no engine: :class:`ScriptedBackend` loads "script models"
into :class:`ScriptedEngine` s, as httpx's ``MockTransport`` stands in for a network.

A script model is a small JSON file (:func:`write_script_model`) with a vocabulary, special
tokens at the real models' ids, a chat template and a script: the text the greedy answer
follows after the generation prompt, then an end-of-turn token. The engine is the Generator's
honest counterpart, not a stub: it tokenizes (special tokens first, everything else as byte
tokens), computes a logit row per step as a pure function of the ids so far, and samples with
the core's own :class:`~phi_backends.sampling.ReferenceSampler`, so the whole
:class:`~phi_backends.testing.BackendContract` runs on it (and the core's own tests exercise
the Generator's lifecycle without an engine).

The logits: standard normal values seeded by a hash of the last few ids, with control tokens
pushed far down, plus :data:`SCRIPT_LOGIT` for the next script token while the output so far
follows the script. That makes the script token about 12 standard deviations above its
competitors' mean (greedy follows it, even under a repetition penalty) but leaves it with only
about 30% of the probability at temperature 1 (tens of thousands of competitors), so sampled
texts leave the script at once, differ between seeds, and run to ``max_tokens``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..backend import (
    Availability,
    Backend,
    Capacity,
    EngineInfo,
    EngineSequence,
    Fit,
    ModelFormat,
    ModelQuery,
    ModelSource,
    SequenceRequest,
    Verdict,
)
from ..errors import GenerationError, ModelFormatError, OptionError, UsageError
from ..formats.engine_options import option_values
from ..formats.json_files import read_json_object
from ..hookspecs import hookimpl
from ..sampling import ReferenceSampler, SamplingConfig
from .contract import SCRIPT_TEXT

if TYPE_CHECKING:
    from ..generator import Generator
    from ..selection.platform import Platform

__all__ = [
    "SCRIPT_FORMAT",
    "ScriptKind",
    "ScriptedBackend",
    "ScriptedEngine",
    "ScriptedPlugin",
    "sampling_probabilities",
    "scripted_generator",
    "write_script_model",
]

ScriptKind = Literal["tiny_phi3", "smollm2"]
MAGIC = "phi_backends_script"  # the first key of every script model file
VERSION = 1
BYTE_BASE = 3  # byte b is token BYTE_BASE + b, as in SentencePiece's byte fallback (<0x0A> is 13)
#: The next script token's logit: far above the best of ~32,000 standard normals (about 4.5),
#: still above it once divided by a repetition penalty of 1.3, yet about 30% likely at temperature 1.
SCRIPT_LOGIT = 10.0
#: Control tokens off the script: e^-30 is ~1e-13, so sampling never ends a turn by chance.
SUPPRESSED_LOGIT = -30.0
HASHED_IDS = 4  # how many of the last ids seed a row: enough to vary, few enough to stay cheap
MAX_FILE_BYTES = 16 * 2**20
FIX = "write it with phi_backends.testing.write_script_model"

SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Phi-3-mini's template, as tests/fixtures/tiny_phi3.py embeds it: detect_template picks the built-in phi3.
PHI3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'system') %}"
    "{{'<|system|>' + '\n' + message['content'] + '<|end|>' + '\n'}}"
    "{% elif (message['role'] == 'user') %}"
    "{{'<|user|>' + '\n' + message['content'] + '<|end|>' + '\n' + '<|assistant|>' + '\n'}}"
    "{% elif message['role'] == 'assistant' %}{{message['content'] + '<|end|>' + '\n'}}"
    "{% endif %}{% endfor %}"
)
SMOLLM2_SCRIPT = "Skates hiss across the pond."


@dataclass(frozen=True)
class _Kind:
    controls: dict[int, str]  # id -> text of every control token (parsed by tokenize, no bytes)
    vocab_size: int
    bos: str | None
    add_bos: bool
    eos: str
    end_of_generation: tuple[str, ...]
    context_length: int
    template: str
    generation_prompt_ends: tuple[str, ...]  # what a generation prompt ends with, as text
    script: str
    script_end: str
    seed: int


def _phi3_controls() -> dict[int, str]:
    added = {32000: "<|endoftext|>", 32001: "<|assistant|>", 32006: "<|system|>", 32007: "<|end|>", 32010: "<|user|>"}
    placeholders = [i for i in range(32002, 32011) if i not in added]
    added.update({i: f"<|placeholder{n}|>" for n, i in enumerate(placeholders, 1)})
    added.update({32011: "<|tool_call|>", 32012: "<|/tool_call|>"})  # Phi-4-mini's, as the tiny Phi-3 fixture has them
    added.update({i: f"<|dummy_{i - 32013}|>" for i in range(32013, 32064)})
    return {0: "<unk>", 1: "<s>", 2: "</s>", **dict(sorted(added.items()))}


KINDS: dict[str, _Kind] = {
    # Phi-3's tokenizer shape: SentencePiece's <unk> <s> </s>, 32,000 pieces, its added tokens up to 32,064.
    "tiny_phi3": _Kind(
        controls=_phi3_controls(),
        vocab_size=32064,
        bos="<s>",
        add_bos=True,
        eos="<|endoftext|>",
        end_of_generation=("<|endoftext|>", "<|assistant|>", "<|end|>"),  # Phi-3-mini's generation_config.json
        context_length=4096,
        template=PHI3_TEMPLATE,
        generation_prompt_ends=("<|assistant|>\n", "<|assistant|>"),
        script=SCRIPT_TEXT,
        script_end="<|end|>",
        seed=3,
    ),
    # SmolLM2's: its three control tokens at ids 0-2, 49,152 tokens, its own template (with a default system message).
    "smollm2": _Kind(
        controls={0: "<|endoftext|>", 1: "<|im_start|>", 2: "<|im_end|>"},
        vocab_size=49152,
        bos="<|im_start|>",
        add_bos=False,
        eos="<|im_end|>",
        end_of_generation=("<|im_end|>",),
        context_length=8192,
        template=SMOLLM2_TEMPLATE,
        generation_prompt_ends=("<|im_start|>assistant\n",),
        script=SMOLLM2_SCRIPT,
        script_end="<|im_end|>",
        seed=5,
    ),
}


def write_script_model(path: Path | str, kind: ScriptKind) -> Path:
    """Write the script model ``kind`` (``"tiny_phi3"`` or ``"smollm2"``) to ``path``; return ``path``.

    ``tiny_phi3`` answers :data:`~phi_backends.testing.SCRIPT_TEXT` then ``<|end|>`` after a
    Phi-3 generation prompt, like the repository's tiny Phi-3 fixture; ``smollm2`` answers a
    short sentence then ``<|im_end|>`` after a ChatML one. Name the file ``*.json``.
    """
    if kind not in KINDS:
        raise UsageError(f"unknown script model kind {kind!r}; kinds: {', '.join(KINDS)}")
    spec = KINDS[kind]
    tokens = [_filler(i) for i in range(spec.vocab_size)]
    tokens[BYTE_BASE : BYTE_BASE + 256] = [f"<0x{b:02X}>" for b in range(256)]
    for token_id, text in spec.controls.items():
        tokens[token_id] = text
    model = {
        MAGIC: VERSION,
        "name": kind.replace("_", "-"),
        "vocabulary": {"tokens": tokens, "controls": sorted(spec.controls), "byte_base": BYTE_BASE},
        "bos_token": spec.bos,
        "add_bos": spec.add_bos,
        "eos_token": spec.eos,
        "end_of_generation": list(spec.end_of_generation),
        "context_length": spec.context_length,
        "chat_template": spec.template,
        "script": {
            "after": list(spec.generation_prompt_ends),
            "text": spec.script,
            "end": spec.script_end,
            "seed": spec.seed,
        },
    }
    out = Path(path)
    out.write_text(json.dumps(model, ensure_ascii=False), encoding="utf-8")
    return out


def _filler(i: int) -> str:
    """Ordinary word pieces for the ids no byte or control token takes ("tan", " bri"): sampled text
    stays readable and every token but the controls carries text."""
    letters = "etaoinshrdlucmfwypvbgkqjxz"
    word, n = "", i + 26
    while n:
        n, digit = divmod(n, 26)
        word += letters[digit]
    return (" " if i % 2 else "") + word


def is_script_model(path: Path) -> bool:
    """A ``.json`` file whose first key is :data:`MAGIC`: cheap (reads the first bytes only)."""
    if path.suffix != ".json" or not path.is_file():
        return False
    try:
        with path.open("rb") as f:
            head = f.read(64)
    except OSError:
        return False
    return re.match(rb'\s*\{\s*"' + MAGIC.encode() + rb'"\s*:', head) is not None


SCRIPT_FORMAT = ModelFormat(
    name="script",
    description="a script model (JSON)",
    plural="script models",
    key=f'a .json file whose first key is "{MAGIC}"',
    detect=is_script_model,
    reader="scripted",
)


@dataclass(frozen=True)
class ScriptedOptions:
    delay: float = 0.0  # seconds to sleep in each step, so that a test can hold a stream open
    max_sequences: int = 4  # sequences one step advances (the scheduler's batching, without an engine)
    kv_tokens: int = 0  # KV cells all sequences share, as llama.cpp's unified cache; 0 = each its own
    any_thread: bool = False  # Capacity.any_thread: with max_sequences 1, a lone reader steps its call

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> ScriptedOptions:
        parsed = cls(**option_values(cls, options, backend="scripted"))
        if not parsed.delay >= 0:
            raise OptionError(f"delay must be a number of seconds >= 0, got {parsed.delay}")
        if not 1 <= parsed.max_sequences <= 256:
            raise OptionError(f"max_sequences must be in [1, 256], got {parsed.max_sequences}")
        if parsed.kv_tokens < 0:
            raise OptionError(f"kv_tokens must be >= 0 (0: no shared limit), got {parsed.kv_tokens}")
        return parsed


class ScriptedBackend:
    """The ``scripted`` backend: reads the ``script`` format; runs everywhere, needs nothing."""

    name: str = "scripted"
    formats: tuple[str, ...] = ("script",)
    install_hint: str = "nothing to install: phi_backends.testing ships it"
    model_formats: tuple[ModelFormat, ...] = (SCRIPT_FORMAT,)

    def availability(self) -> Availability:
        return Availability(True, "in-memory script models", ("cpu",))

    def validate_options(self, options: Mapping[str, Any]) -> None:
        ScriptedOptions.parse(options)

    def assess_model(self, model: ModelQuery, platform: Platform) -> Verdict | None:
        if not model.offers(self.formats):
            return None
        return Verdict(self.name, Fit.GOOD, "script models run on the CPU, the same on every machine")

    def load(self, source: ModelSource, options: Mapping[str, Any]) -> ScriptedEngine:
        parsed = ScriptedOptions.parse(options)
        capacity = Capacity(
            max_sequences=parsed.max_sequences, kv_tokens=parsed.kv_tokens or None, any_thread=parsed.any_thread
        )
        return ScriptedEngine(source.path, delay=parsed.delay, capacity=capacity)


class ScriptedPlugin:
    """A plugin registering one :class:`ScriptedBackend`, for tests that use the plugin manager:
    ``plugins.plugin_manager().register(ScriptedPlugin(), name="scripted")``."""

    def __init__(self) -> None:
        self.backend = ScriptedBackend()

    @hookimpl
    def register_backends(self, register: Callable[[Backend], None]) -> None:
        register(self.backend)


def sampling_probabilities(config: SamplingConfig, logits: np.ndarray, history: Sequence[int]) -> np.ndarray:
    """What :meth:`ScriptedEngine.step` draws the next token from, given ``logits`` after
    generating ``history``: its sampler, the core's own (the sampling contract checks it)."""
    return ReferenceSampler(config, 0).probabilities(logits, history)


class ScriptedSequence:
    """One call in a script model: its ids so far and its own sampler (nothing is shared)."""

    reused_tokens = 0  # no cache to reuse: every row is computed from the ids

    def __init__(self, request: SequenceRequest) -> None:
        self.request = request
        self.ids = list(request.prompt_ids)
        self.generated: list[int] = []
        self.sampler = ReferenceSampler(request.config, request.seed)

    def release(self) -> None:
        pass


class ScriptedEngine:
    """One loaded script model (see the module's docstring). Also a ``ScoringEngine``."""

    def __init__(self, path: Path | str, *, delay: float = 0.0, capacity: Capacity | None = None) -> None:
        path = Path(path)
        data = read_json_object(path, max_bytes=MAX_FILE_BYTES, fix=FIX)
        self._delay = delay
        self._capacity = capacity or Capacity(max_sequences=4)
        #: how many sequences each step advanced, oldest first: what a test sees of the batching
        self.batch_sizes: list[int] = []
        #: the thread each step ran on, oldest first: who stepped (the worker, or a reader)
        self.step_threads: list[int] = []
        try:
            if data.get(MAGIC) != VERSION:
                raise ValueError(f'its "{MAGIC}" key is not {VERSION}')
            vocabulary = data["vocabulary"]
            tokens: list[str] = vocabulary["tokens"]
            controls = {int(i): str(tokens[int(i)]) for i in vocabulary["controls"]}
            self._byte_base = byte_base = int(vocabulary["byte_base"])
            self._controls = {text: token_id for token_id, text in controls.items()}
            self._special = re.compile("|".join(map(re.escape, sorted(self._controls, key=len, reverse=True))))
            # One buffer and its offsets rather than 32,000 small objects kept for the model's life.
            pieces = [self._bytes_of(i, str(text), controls) for i, text in enumerate(tokens)]
            self._bytes = b"".join(pieces)
            self._offsets = np.cumsum([0, *map(len, pieces)])
            del pieces
            self._info = self._read_info(data, path)
            # Off the script only text tokens compete: control tokens and bytes that are no printable
            # ASCII (half a UTF-8 character) are pushed down, so sampled text stays valid and turn-free.
            printable = {byte_base + b for b in (*range(0x20, 0x7F), 0x0A)}
            suppressed = [
                i in controls or (byte_base <= i < byte_base + 256 and i not in printable) for i in range(len(tokens))
            ]
            self._floor: np.ndarray | None = np.where(suppressed, SUPPRESSED_LOGIT, 0.0).astype(np.float32)
            script = data["script"]
            self._seed = int(script["seed"])
            self._after = tuple(tuple(self.tokenize(str(text), add_bos=False)) for text in script["after"])
            self._script = (*self.tokenize(str(script["text"]), add_bos=False), self._controls[script["end"]])
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise ModelFormatError(f"{path} is not a valid script model ({type(exc).__name__}: {exc}); {FIX}") from None

    # -- the Engine protocol -----------------------------------------------------------------

    @property
    def info(self) -> EngineInfo:
        return self._info

    @property
    def capacity(self) -> Capacity:
        return self._capacity

    def tokenize(self, text: str, *, add_bos: bool, special: bool = True) -> list[int]:
        self._check_open()
        ids: list[int] = []
        if add_bos and self._info.bos_token is not None:
            ids.append(self._controls[self._info.bos_token])
        at = 0
        for match in self._special.finditer(text) if special else ():
            ids.extend(self._byte_ids(text[at : match.start()]))
            ids.append(self._controls[match.group()])
            at = match.end()
        ids.extend(self._byte_ids(text[at:]))
        return ids

    def token_bytes(self, token_id: int) -> bytes:
        start, end = self._offsets[token_id : token_id + 2]
        return self._bytes[start:end]

    def open(self, request: SequenceRequest) -> ScriptedSequence:
        self._check_open()
        if not request.prompt_ids:
            raise UsageError("the prompt is empty: it gave no tokens (and this model adds no BOS); give some text")
        return ScriptedSequence(request)

    def step(self, sequences: Sequence[EngineSequence]) -> list[int]:
        self.batch_sizes.append(len(sequences))
        self.step_threads.append(threading.get_ident())
        tokens = []
        for sequence in sequences:
            assert isinstance(sequence, ScriptedSequence)
            row = self._row(sequence.ids)  # a new array: the logits step may change it
            step = sequence.request.logits_step
            if step is not None:
                step(row)
            token = sequence.sampler.sample(row, sequence.generated)
            sequence.ids.append(token)
            sequence.generated.append(token)
            tokens.append(token)
        if self._delay:
            time.sleep(self._delay)
        return tokens

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        self._check_open()
        ids = list(ids)
        return np.stack([self._row(ids[: i + 1]) for i in range(len(ids))])

    def close(self) -> None:
        # Drop every table: a closed Generator the caller still holds must not keep them.
        self._floor = None
        self._bytes, self._offsets = b"", np.zeros(1, dtype=np.int64)

    # -- internals -------------------------------------------------------------------------

    def _row(self, ids: Sequence[int]) -> np.ndarray:
        """The logits after ``ids``: a pure function of them (step and logits agree)."""
        floor = self._check_open()
        rng = np.random.default_rng([self._seed, *ids[-HASHED_IDS:]])
        row = rng.standard_normal(floor.size, dtype=np.float32)
        row = np.where(floor < 0, floor, row)
        position = self._script_position(ids)
        if position is not None:
            row[self._script[position]] = SCRIPT_LOGIT
        return row

    def _script_position(self, ids: Sequence[int]) -> int | None:
        """How much of the script follows the last generation prompt in ``ids`` (None: off the script)."""
        n = len(ids)
        for done in range(min(n, len(self._script) - 1) + 1):
            start = n - done
            if list(ids[start:]) == list(self._script[:done]) and any(
                start >= len(end) and tuple(ids[start - len(end) : start]) == end for end in self._after
            ):
                return done
        return None

    def _byte_ids(self, text: str) -> list[int]:
        return [self._byte_base + b for b in text.encode("utf-8")]

    def _bytes_of(self, token_id: int, text: str, controls: Mapping[int, str]) -> bytes:
        if token_id in controls:
            return b""
        if self._byte_base <= token_id < self._byte_base + 256:
            return bytes([token_id - self._byte_base])
        return text.encode("utf-8")

    def _read_info(self, data: Mapping[str, Any], path: Path) -> EngineInfo:
        eog = frozenset(self._controls[text] for text in data["end_of_generation"])
        bos = data["bos_token"]
        if bos is not None and bos not in self._controls:
            raise ValueError(f"bos_token {bos!r} is no control token")
        return EngineInfo(
            context_length=int(data["context_length"]),
            vocab_size=len(self._offsets) - 1,
            add_bos=bool(data["add_bos"]) and bos is not None,
            bos_token=bos,
            eos_token=data["eos_token"],
            eog_token_ids=eog,
            chat_template=data["chat_template"],
            architecture="script",
            metadata={"path": str(path), "name": data["name"]},
        )

    def _check_open(self) -> np.ndarray:
        if self._floor is None:
            raise GenerationError("this script model was closed; load it again")
        return self._floor


def scripted_generator(path: Path | str, *, template: str = "phi3", **options: Any) -> Generator:
    """A Generator on the script model at ``path`` (written by :func:`write_script_model`) with the
    built-in chat ``template``, as tests of the core use one: no plugin registration needed.
    ``options`` are the scripted engine's (``max_sequences``, ``delay``, ...)."""
    from ..generator import Generator
    from ..templates import get_template

    path = Path(path)
    engine = ScriptedBackend().load(ModelSource(path=path, format="script", name=path.name), options)
    return Generator(engine, backend="scripted", model=path.name, template=get_template(template))
