"""The one interface every backend is used through: :class:`Generator`.

A Generator wraps one loaded :class:`~phi_backends.backend.Engine` and does, the same way for
every backend: render the prompt with the chat template, tokenize it once, check it fits the
context, run the engine's token stream, detokenize incrementally, hold back and cut stop
strings, stop at the model family's end-of-turn tokens, and report usage and timings.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from .backend import Engine, EngineInfo
from .errors import ContextLengthError, GenerationError, PhiBackendsError, UsageError
from .sampling import SamplingConfig
from .streaming import TextAssembler
from .templates import ChatTemplate, Message, get_template, normalize_messages

__all__ = ["Chunk", "Completion", "FinishReason", "Generator", "Stream", "Timings", "Usage"]

FinishReason = Literal["stop", "length", "cancelled"]
Prompt: TypeAlias = "str | Sequence[Message]"
TemplateArg: TypeAlias = "str | ChatTemplate | None"
AUTO = "auto"
#: The one refusal of a prompt with nothing in it, the same on every backend.
EMPTY_PROMPT = "the prompt is empty: it gives the model no tokens to continue (BOS aside); give some text"


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Timings:
    """Wall-clock figures for one call, in seconds and tokens per second."""

    time_to_first_token: float
    prompt_tokens_per_second: float
    decode_tokens_per_second: float
    total: float


@dataclass(frozen=True)
class Chunk:
    """One piece of a stream. The last chunk has a ``finish_reason``, ``usage`` and ``timings``."""

    text: str
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    timings: Timings | None = None


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: FinishReason
    usage: Usage
    timings: Timings
    seed: int
    backend: str
    model: str
    token_ids: tuple[int, ...] = field(default=(), repr=False)


class Stream(Iterator[Chunk]):
    """An iterator of :class:`Chunk` s for one call.

    ``close()`` (or leaving a ``for`` loop over it that then gets garbage-collected) stops the
    engine at once; ``cancel()`` (safe from another thread or a signal handler) ends the
    stream after the current token with ``finish_reason="cancelled"``. Either way the
    Generator is ready for the next call. After the last chunk, :attr:`completion` holds
    the whole result.
    """

    def __init__(self, start: Callable[[Stream], Iterator[Chunk]]) -> None:
        self._cancel = threading.Event()
        self.completion: Completion | None = None
        self._run = start(self)

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> Chunk:
        return next(self._run)

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def close(self) -> None:
        self._run.close()  # type: ignore[attr-defined]


class Generator:
    """A loaded model behind one backend. Thread-safe: calls are served one at a time.

    :attr:`sampling` is the :class:`SamplingConfig` a call uses when it is given none (from
    the config's ``[sampling]`` table when :func:`phi_backends.load` made this Generator). A
    config given to a call is used whole, not merged with it; to change one field of the
    defaults, pass ``gen.sampling.replace(max_tokens=20)``.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        backend: str,
        model: str,
        template: ChatTemplate | None,
        sampling: SamplingConfig | None = None,
    ) -> None:
        self._engine = engine
        self.backend = backend
        self.model = model
        self.template = template
        self.sampling = sampling if sampling is not None else SamplingConfig()
        self._lock = threading.Lock()
        self._owner: int | None = None
        self._active: weakref.ref[Stream] | None = None
        self._eog_cache: dict[str, frozenset[int]] = {}
        self._closed = False

    @property
    def info(self) -> EngineInfo:
        return self._engine.info

    # -- public API -----------------------------------------------------------------------

    def stream(self, prompt: Prompt, config: SamplingConfig | None = None, *, template: TemplateArg = AUTO) -> Stream:
        """Generate from ``prompt`` (messages, or a str), yielding text as it comes.

        A str is one user message rendered with the chat template, or the prompt text itself
        when ``template=None`` (raw mode). ``template`` may also name a built-in template.
        ``config`` left out uses :attr:`sampling`. The prompt is checked (template, not empty,
        context length) before this returns.
        """
        config = config if config is not None else self.sampling
        chat_template = self._template_for(template)
        prompt_ids = self.prompt_ids(prompt, template=chat_template)
        if _is_empty(prompt_ids, add_bos=self.info.add_bos):
            raise UsageError(EMPTY_PROMPT)
        context = self.info.context_length
        if len(prompt_ids) >= context:
            raise ContextLengthError(
                f"the prompt is {len(prompt_ids)} tokens but the context window is {context}; "
                "shorten the prompt or load the model with a larger context (n_ctx)"
            )
        return Stream(lambda stream: self._run(stream, prompt_ids, config, chat_template))

    def generate(
        self, prompt: Prompt, config: SamplingConfig | None = None, *, template: TemplateArg = AUTO
    ) -> Completion:
        """Like :meth:`stream`, returning the whole :class:`Completion` at the end."""
        stream = self.stream(prompt, config, template=template)
        for _ in stream:
            pass
        assert stream.completion is not None
        return stream.completion

    def prompt_ids(self, prompt: Prompt, *, template: TemplateArg = AUTO) -> list[int]:
        """The token ids the engine is fed for ``prompt``: rendered once, tokenized once."""
        if self._closed:
            raise UsageError("this Generator is closed; load the model again")
        chat_template = template if isinstance(template, ChatTemplate) else self._template_for(template)
        return self._engine.tokenize(self.render(prompt, template=chat_template), add_bos=self.info.add_bos)

    def render(self, prompt: Prompt, *, template: TemplateArg = AUTO) -> str:
        """The prompt text after the chat template (without the BOS token the tokenizer adds)."""
        chat_template = template if isinstance(template, ChatTemplate) else self._template_for(template)
        if chat_template is None:
            if not isinstance(prompt, str):
                raise UsageError("raw mode (template=None) takes a str prompt, not messages")
            return prompt
        return chat_template.render(normalize_messages(prompt), add_generation_prompt=True)

    def close(self) -> None:
        """Free the engine. A stream open in this thread is closed first; one running in
        another thread is waited for."""
        self._close_own_stream()
        with self._lock:
            if not self._closed:
                self._closed = True
                self._engine.close()

    def __enter__(self) -> Generator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Generator model={self.model!r} backend={self.backend!r}>"

    # -- internals -------------------------------------------------------------------------

    def _template_for(self, template: TemplateArg) -> ChatTemplate | None:
        if template is None or isinstance(template, ChatTemplate):
            return template
        if template == AUTO:
            if self.template is None:
                error = self._engine.info.chat_template_error
                because = f" ({error})" if error else ""
                raise UsageError(
                    f"{self.model} has no chat template phi-backends can use{because}; pass a template name "
                    "(phi3, phi3.5, phi4, phi4-mini, chatml) or use raw mode (template=None, --raw)"
                )
            return self.template
        return get_template(template)

    def _eog_ids(self, template: ChatTemplate | None) -> frozenset[int]:
        """The engine's end-of-generation ids plus the template family's end-of-turn tokens."""
        family = template or self.template
        key = family.name if family else ""
        if key not in self._eog_cache:
            ids = set(self.info.eog_token_ids)
            for text in family.end_of_turn if family else ():
                token = self._engine.tokenize(text, add_bos=False)
                if len(token) == 1:
                    ids.add(token[0])
            self._eog_cache[key] = frozenset(ids)
        return self._eog_cache[key]

    def _close_own_stream(self) -> None:
        """Close a stream left suspended by this thread (waiting on it would deadlock)."""
        if self._owner == threading.get_ident() and self._active is not None:
            previous = self._active()
            if previous is not None:
                previous.close()

    def _acquire(self) -> None:
        self._close_own_stream()
        self._lock.acquire()
        self._owner = threading.get_ident()
        if self._closed:
            self._release()
            raise UsageError("this Generator is closed; load the model again")

    def _release(self) -> None:
        self._owner = None
        self._active = None
        self._lock.release()

    def _run(
        self, stream: Stream, prompt_ids: list[int], config: SamplingConfig, template: ChatTemplate | None
    ) -> Iterator[Chunk]:
        self._acquire()
        try:
            self._active = weakref.ref(stream)
            yield from self._generate(stream, prompt_ids, config, template)
        finally:
            self._release()

    def _generate(
        self, stream: Stream, prompt_ids: list[int], config: SamplingConfig, template: ChatTemplate | None
    ) -> Iterator[Chunk]:
        info = self.info
        budget = min(config.max_tokens, info.context_length - len(prompt_ids))  # stream() checked it is >= 1
        eog = self._eog_ids(template)
        seed = config.resolved_seed()
        text = TextAssembler(self._engine.token_bytes, stops=config.stop, strip_leading_space=info.strip_leading_space)
        pieces: list[str] = []
        generated: list[int] = []
        finish: FinishReason = "length"
        start = time.perf_counter()
        first = last = 0.0
        drawn = 0
        tokens = self._engine.generate(prompt_ids, config, seed)
        try:
            for token in tokens:
                last = time.perf_counter()
                if drawn == 0:
                    first = last
                drawn += 1
                if token in eog:
                    finish = "stop"
                    break
                generated.append(token)
                piece = text.add(token)
                if piece:
                    pieces.append(piece)
                    yield Chunk(piece)
                if text.stopped:
                    finish = "stop"
                    break
                if len(generated) >= budget:
                    break
                if stream.cancelled:
                    finish = "cancelled"
                    break
        except PhiBackendsError:
            raise
        except Exception as exc:  # an engine failure must not surface as a bare traceback
            raise GenerationError(f"{self.backend} failed while generating: {type(exc).__name__}: {exc}") from exc
        finally:
            tokens.close()  # type: ignore[attr-defined]
        tail = text.finish()
        if text.stopped and finish == "length":  # a stop string the matcher could only settle at the end
            finish = "stop"
        if tail:
            pieces.append(tail)
        end = time.perf_counter()
        usage = Usage(prompt_tokens=len(prompt_ids), completion_tokens=len(generated))
        timings = _timings(start, first, last, end, len(prompt_ids), drawn)
        stream.completion = Completion(
            text="".join(pieces),
            finish_reason=finish,
            usage=usage,
            timings=timings,
            seed=seed,
            backend=self.backend,
            model=self.model,
            token_ids=tuple(generated),
        )
        yield Chunk(tail, finish_reason=finish, usage=usage, timings=timings)


def _is_empty(prompt_ids: Sequence[int], *, add_bos: bool) -> bool:
    """Whether the prompt holds no token but the BOS the tokenizer adds.

    No engine may be handed ``[]``: llama.cpp aborts the process (``GGML_ASSERT(logits !=
    nullptr)``) on a fresh context and silently samples the previous call's logits on a used
    one; onnxruntime-genai and mlx-lm raise. ``[BOS]`` alone every engine runs, but it comes only
    from a raw ``""`` or a template that renders nothing (or only its BOS text), so it is refused
    too: then an empty prompt means the same whether or not the model adds a BOS. With
    ``add_bos`` the first id is that BOS; a template may have written it again.
    """
    if not prompt_ids:
        return True
    return add_bos and all(token == prompt_ids[0] for token in prompt_ids)


def _timings(start: float, first: float, last: float, end: float, prompt_tokens: int, drawn: int) -> Timings:
    if drawn == 0:
        return Timings(0.0, 0.0, 0.0, end - start)
    ttft = first - start
    decode = (drawn - 1) / (last - first) if drawn > 1 and last > first else 0.0
    return Timings(
        time_to_first_token=ttft,
        prompt_tokens_per_second=prompt_tokens / ttft if ttft > 0 else 0.0,
        decode_tokens_per_second=decode,
        total=end - start,
    )
