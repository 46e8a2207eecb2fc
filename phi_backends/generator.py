"""The one interface every backend is used through: :class:`Generator`.

A Generator wraps one loaded :class:`~phi_backends.backend.Engine` and does, the same way for
every backend: render the prompt with the chat template, tokenize it once, check it fits the
context, run the engine's token stream, detokenize incrementally, hold back and cut stop
strings, stop at the model family's end-of-turn tokens, and report usage and timings.
"""

from __future__ import annotations

import atexit
import contextlib
import operator
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from .backend import Capacity, Engine, EngineInfo, ScoringEngine, SequenceRequest
from .constraints import Constraint, ConstraintMask, Vocabulary
from .errors import ContextLengthError, ToolError, UsageError
from .logits import LogitsStep
from .sampling import SamplingConfig
from .scheduling import AsyncStream, Call, Chunk, Completion, FinishReason, Scheduler, Stream, Timings, Usage
from .scheduling.scheduler import CLOSED_MESSAGE
from .scheduling.streams import Starter
from .streaming import TextAssembler
from .templates import ChatTemplate, Message, get_template, normalize_messages
from .templates.prompt_ids import chat_prompt_ids
from .tools import ToolPlan, check_tools, plan_tools
from .tools.definitions import ToolChoiceArg, definitions_text
from .tools.markup import plain_conversation, with_tools

if TYPE_CHECKING:
    import numpy as np

__all__ = ["AsyncStream", "Chunk", "Completion", "FinishReason", "Generator", "Stream", "Timings", "Usage"]

#: messages, a str (one user message; the prompt text itself in raw mode), or token ids (raw mode)
Prompt: TypeAlias = "str | Sequence[Message] | Sequence[int]"
TemplateArg: TypeAlias = "str | ChatTemplate | None"
AUTO = "auto"
#: The one refusal of a prompt with nothing in it, the same on every backend.
#: Generators not closed yet. Closed at interpreter exit, while every thread can still run: an
#: engine left to the interpreter's teardown frees its native state in whatever order modules go
#: (MLX's stream threads were destroyed still joinable: "terminate called without an active
#: exception", SIGABRT, after a script that never called close() had printed its answer).
_open_generators: weakref.WeakSet[Generator] = weakref.WeakSet()


@atexit.register
def _close_open_generators() -> None:
    for gen in list(_open_generators):
        with contextlib.suppress(Exception):
            gen._close_at_exit()


RAW_TOOLS = "tools need a chat template to show them to the model; raw mode (template=None) has none"
RAW_IDS = "a prompt of token ids is fed to the model as it is: pass template=None (raw mode)"
EMPTY_PROMPT = "the prompt is empty: it gives the model no tokens to continue (BOS aside); give some text"


class Generator:
    """A loaded model behind one backend. Thread-safe and asyncio-friendly.

    Calls from several threads or tasks run at once: the Generator's worker advances them
    together in one engine batch where the engine can batch (llama.cpp), up to
    :attr:`max_sequences` at a time; the others wait for a free slot (docs/concurrency.md).

    :attr:`sampling` is the :class:`SamplingConfig` a call uses when it is given none (from
    the config's ``[sampling]`` table when :func:`phi_backends.load` made this Generator). A
    config given to a call is used whole, not merged with it; to change one field of the
    defaults, pass ``gen.sampling.replace(max_tokens=20)``.

    :attr:`reuse_prefix` (default True): a call whose prompt starts with the ids of an earlier
    call's prompt and output continues from that KV cache, where the engine can
    (:attr:`capacity`); set it to False to compute every prompt afresh.

    :attr:`special_tokens_in_content` (default False): a message's content is tokenized as text,
    so that a message spelling ``<|im_end|>`` or ``<|end|>`` cannot end its turn and forge
    another; only the chat template's own markup becomes control tokens. Set it to True to let
    content hold control tokens (content you wrote yourself, with markup in it). A raw prompt
    (``template=None``) is the caller's own markup: its control tokens are always parsed.
    See docs/security.md.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        backend: str,
        model: str,
        template: ChatTemplate | None,
        sampling: SamplingConfig | None = None,
        reuse_prefix: bool = True,
        special_tokens_in_content: bool = False,
    ) -> None:
        self._engine = engine
        self.backend = backend
        self.model = model
        self.template = template
        self.sampling = sampling if sampling is not None else SamplingConfig()
        self.reuse_prefix = reuse_prefix
        self.special_tokens_in_content = special_tokens_in_content
        self._scheduler = Scheduler(engine, backend=backend)
        self._vocabulary = Vocabulary(
            engine.token_bytes, lambda text: engine.tokenize(text, add_bos=False, special=False), engine.info.vocab_size
        )
        self._calls: weakref.WeakSet[Call] = weakref.WeakSet()  # every call a stream may still read
        self._lock = threading.Lock()
        self._eog_cache: dict[str, frozenset[int]] = {}
        self._closed = False
        self._engine_closed = False
        _open_generators.add(self)

    @property
    def info(self) -> EngineInfo:
        return self._engine.info

    @property
    def capacity(self) -> Capacity:
        """How many calls the engine runs at once, and whether it reuses prompt caches."""
        return self._engine.capacity

    @property
    def max_sequences(self) -> int:
        """How many calls run at once (1: one after another); further calls wait for a slot."""
        return self._scheduler.max_sequences

    @property
    def load(self) -> tuple[int, int]:
        """How many calls hold an engine sequence now, and how many wait for one (a server's queue depth)."""
        return self._scheduler.load

    # -- public API -----------------------------------------------------------------------

    def stream(
        self,
        prompt: Prompt,
        config: SamplingConfig | None = None,
        *,
        template: TemplateArg = AUTO,
        constraint: Constraint | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: ToolChoiceArg = None,
        parallel_tool_calls: bool = True,
    ) -> Stream:
        """Generate from ``prompt`` (messages, or a str), yielding text as it comes.

        A str is one user message rendered with the chat template, or the prompt text itself
        when ``template=None`` (raw mode); raw mode also takes token ids, fed as they are (no BOS
        is added). ``template`` may also name a built-in template.
        ``config`` left out uses :attr:`sampling`. The prompt is checked (template, not empty,
        context length, logit_bias ids, the constraint against this vocabulary) before this
        returns, and the call starts at once. ``constraint`` (:class:`~phi_backends.Constraint`)
        limits the text to a JSON schema, any JSON object, a regex, a grammar or a choice; its
        text then parses unless the call ends by ``max_tokens``, a stop string or a cancel, and
        :attr:`Completion.value` holds the parsed value.

        ``tools`` (OpenAI's function definitions) are shown to the model as its family's template
        does (Phi-4-mini's ``<|tool|>`` block; a documented convention for the others, see
        docs/structured-output.md); the calls it makes come as :attr:`Chunk.tool_calls` and
        :attr:`Completion.tool_calls`, not as text. ``tool_choice``: ``"auto"`` (the default), ``"none"``,
        ``"required"`` or a function's name (or OpenAI's ``{"type": "function", "function": {"name": ...}}``);
        the last two are enforced by a constraint, so the model cannot answer in prose instead.
        ``parallel_tool_calls=False``: one call at most (the grammar allows one under ``required``;
        otherwise the turn ends once the first call is read).
        """
        return Stream(
            self._prepare(prompt, config, template, constraint, tools, tool_choice, parallel_tool_calls),
            self._on_close,
            self._scheduler.drive,
        )

    def generate(
        self,
        prompt: Prompt,
        config: SamplingConfig | None = None,
        *,
        template: TemplateArg = AUTO,
        constraint: Constraint | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: ToolChoiceArg = None,
        parallel_tool_calls: bool = True,
    ) -> Completion:
        """Like :meth:`stream`, returning the whole :class:`Completion` at the end."""
        stream = self.stream(
            prompt,
            config,
            template=template,
            constraint=constraint,
            tools=tools,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
        )
        try:
            for _ in stream:
                pass
        finally:
            stream.close()
        assert stream.completion is not None
        return stream.completion

    def astream(
        self,
        prompt: Prompt,
        config: SamplingConfig | None = None,
        *,
        template: TemplateArg = AUTO,
        constraint: Constraint | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: ToolChoiceArg = None,
        parallel_tool_calls: bool = True,
    ) -> AsyncStream:
        """Like :meth:`stream`, for asyncio: ``async for chunk in gen.astream(...)``.

        Never blocks the event loop: the prompt is prepared in a thread and the engine runs on
        the Generator's worker. The prompt's errors are raised by the first step of the loop.
        Cancelling the reading task ends the call and frees its slot.
        """
        if self._closed:
            raise UsageError(CLOSED_MESSAGE)
        return AsyncStream(
            lambda: self._prepare(prompt, config, template, constraint, tools, tool_choice, parallel_tool_calls),
            self._on_close,
        )

    async def agenerate(
        self,
        prompt: Prompt,
        config: SamplingConfig | None = None,
        *,
        template: TemplateArg = AUTO,
        constraint: Constraint | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: ToolChoiceArg = None,
        parallel_tool_calls: bool = True,
    ) -> Completion:
        """Like :meth:`generate`, for asyncio (``await gen.agenerate(...)``)."""
        stream = self.astream(
            prompt,
            config,
            template=template,
            constraint=constraint,
            tools=tools,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
        )
        try:
            async for _ in stream:
                pass
        finally:
            await stream.aclose()
        assert stream.completion is not None
        return stream.completion

    def prompt_ids(
        self, prompt: Prompt, *, template: TemplateArg = AUTO, tools: Sequence[Mapping[str, Any]] | None = None
    ) -> list[int]:
        """The token ids the engine is fed for ``prompt`` (and ``tools``): the chat template's markup
        as control tokens, the messages' contents as text (unless :attr:`special_tokens_in_content`)."""
        if self._closed:
            raise UsageError(CLOSED_MESSAGE)
        chat_template = template if isinstance(template, ChatTemplate) else self._template_for(template)
        return self._prompt_ids(prompt, chat_template, _definitions(tools, chat_template))

    def _prompt_ids(self, prompt: Prompt, chat_template: ChatTemplate | None, definitions: str | None) -> list[int]:
        if _is_ids(prompt):
            if chat_template is not None:
                raise UsageError(RAW_IDS)
            return _token_ids(list(prompt), self.info.vocab_size)
        add_bos = self.info.add_bos
        if chat_template is None or self.special_tokens_in_content:
            text = self._render(prompt, chat_template, definitions)
            _check_encodable(text)
            return self._engine.tokenize(text, add_bos=add_bos)
        messages = self._conversation(prompt, chat_template, definitions)
        for message in messages:  # the markup is the template's; only contents can hold lone surrogates
            for key, text in message.items():
                if key != "role":
                    _check_encodable(text)
        return chat_prompt_ids(chat_template, messages, self._engine.tokenize, add_bos=add_bos)

    def render(
        self, prompt: Prompt, *, template: TemplateArg = AUTO, tools: Sequence[Mapping[str, Any]] | None = None
    ) -> str:
        """The prompt text after the chat template (without the BOS token the tokenizer adds)."""
        chat_template = template if isinstance(template, ChatTemplate) else self._template_for(template)
        return self._render(prompt, chat_template, _definitions(tools, chat_template))

    def _render(self, prompt: Prompt, chat_template: ChatTemplate | None, definitions: str | None) -> str:
        if _is_ids(prompt):
            if chat_template is not None:
                raise UsageError(RAW_IDS)
            ids = _token_ids(list(prompt), self.info.vocab_size)
            return b"".join(map(self._engine.token_bytes, ids)).decode("utf-8", errors="replace")
        if chat_template is None:
            if not isinstance(prompt, str):
                what = (
                    "messages"
                    if isinstance(prompt, Sequence) and not isinstance(prompt, bytes)
                    else type(prompt).__name__
                )
                raise UsageError(f"raw mode (template=None) takes a str prompt or token ids, not {what}")
            return prompt
        return chat_template.render(self._conversation(prompt, chat_template, definitions), add_generation_prompt=True)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token of this model's vocabulary (``b""`` for a control token)."""
        return self._engine.token_bytes(token_id)

    @property
    def can_score(self) -> bool:
        """Whether :meth:`score` works: the engine is a :class:`~phi_backends.backend.ScoringEngine`."""
        return isinstance(self._engine, ScoringEngine)

    def score(self, ids: Sequence[int]) -> np.ndarray:
        """Teacher forcing: the raw logits after each position of ``ids`` (``ScoringEngine.logits``),
        a float32 array of shape ``(len(ids), vocab)``.

        Runs on the worker between calls (none is running meanwhile). UsageError when the engine
        cannot score or there are no ids; ContextLengthError when they do not fit.
        """
        engine = self._engine
        if not isinstance(engine, ScoringEngine):
            raise UsageError(f"the {self.backend} engine cannot score token ids (it has no logits method)")
        if self._closed:
            raise UsageError(CLOSED_MESSAGE)
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
            raise UsageError(f"ids must be a sequence of token ids (ints), got {type(ids).__name__}")
        ids = list(ids)
        if not ids:
            raise UsageError("no token ids to score; give at least one")
        ids = _token_ids(ids, self.info.vocab_size)
        context = self.info.context_length
        if len(ids) > context:
            raise ContextLengthError(
                f"{len(ids)} token ids do not fit the context window of {context}; "
                "load the model with a larger context (n_ctx) or use shorter prompts"
            )
        return self._scheduler.exclusive(lambda: engine.logits(ids))

    def close(self) -> None:
        """Free the engine. Calls made from this thread end at once; calls running for other
        threads are let finish first. After this every call raises UsageError."""
        me = threading.get_ident()
        self._close(lambda call: call.owner == me)

    def _close(self, drop: Callable[[Call], bool]) -> None:
        self._closed = True
        _open_generators.discard(self)
        for call in list(self._calls):  # finished calls too: what they buffered is not read any more
            if drop(call):
                call.close()
        self._scheduler.close(drop=drop)
        with self._lock:
            if not self._engine_closed:
                self._engine_closed = True
                self._engine.close()

    def _close_at_exit(self) -> None:
        """Close now, ending every call: the interpreter is exiting, and no thread will read them."""
        self._close(lambda call: True)

    def __del__(self) -> None:
        # Dropped without close(): the worker thread holds the engine (a running thread is a GC
        # root), so the model would stay in memory for the rest of the process. No stream can
        # still read this Generator (each one holds it), so close it now.
        with contextlib.suppress(Exception):
            if not getattr(self, "_closed", True):
                self.close()

    def __enter__(self) -> Generator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Generator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        import asyncio

        await asyncio.to_thread(self.close)

    def __repr__(self) -> str:
        return f"<Generator model={self.model!r} backend={self.backend!r}>"

    # -- internals -------------------------------------------------------------------------

    def _prepare(
        self,
        prompt: Prompt,
        config: SamplingConfig | None,
        template: TemplateArg,
        constraint: Constraint | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: ToolChoiceArg = None,
        parallel_tool_calls: bool = True,
    ) -> Starter:
        """Check and tokenize the prompt now; return what queues the call."""
        if self._closed:
            raise UsageError(CLOSED_MESSAGE)
        if config is None:
            config = self.sampling
        elif not isinstance(config, SamplingConfig):
            raise UsageError(
                f"config must be a SamplingConfig, got {type(config).__name__}; "
                "build one with SamplingConfig(...) or SamplingConfig.from_mapping(...)"
            )
        info = self.info
        LogitsStep.check(config, info.vocab_size)
        if constraint is not None and not isinstance(constraint, Constraint):
            raise UsageError(
                f"constraint must be a Constraint, got {type(constraint).__name__}; "
                "build one with Constraint.json_schema(...), .regex(...), .grammar(...), .choice(...) or .json_object()"
            )
        chat_template = self._template_for(template)
        plan = self._tool_plan(tools, tool_choice, chat_template, parallel_tool_calls)
        if plan is not None and constraint is not None and plan.choice.mode != "none":
            raise ToolError(
                "a call cannot have both a constraint and tools the model may call; "
                'pass tool_choice="none", or leave out the constraint (a tool\'s parameters constrain its arguments)'
            )
        banned = plan.banned() if plan is not None else ()
        if banned:  # tool_choice="none": the call's logit_bias bans the marker that opens a call
            kept = tuple((token, bias) for token, bias in config.logit_bias if token not in banned)
            config = config.replace(logit_bias=kept + tuple((token, -100.0) for token in banned))
        prompt_ids = self._prompt_ids(prompt, chat_template, plan.definitions if plan is not None else None)
        if _is_empty(prompt_ids, add_bos=info.add_bos):
            raise UsageError(EMPTY_PROMPT)
        context = info.context_length
        if len(prompt_ids) >= context:
            raise ContextLengthError(
                f"the prompt is {len(prompt_ids)} tokens but the context window is {context}; "
                "shorten the prompt or load the model with a larger context (n_ctx)"
            )
        budget = min(config.max_tokens, context - len(prompt_ids))
        eog = self._eog_ids(chat_template)
        ids = tuple(prompt_ids)
        reuse = self.reuse_prefix
        # made now, so that a constraint this vocabulary cannot express is refused before the call starts
        enforced = constraint if plan is None or plan.constraint is None else plan.constraint
        mask = (
            ConstraintMask(enforced, self._vocabulary.tokenizer(eog), info.vocab_size, eog)
            if enforced is not None
            else None
        )
        token_bytes = self._engine.token_bytes if plan is None else plan.token_bytes(self._engine.token_bytes)

        def start(deliver: Callable[[Any], None]) -> Call:
            request = SequenceRequest(
                prompt_ids=ids,
                config=config,
                seed=config.resolved_seed(),
                budget=budget,
                logits_step=LogitsStep.for_call(config, info.vocab_size, mask),
                reuse_prefix=reuse,
            )
            text = TextAssembler(token_bytes, stops=config.stop, strip_leading_space=info.strip_leading_space)
            call = Call(
                request,
                text=text,
                eog=eog,
                backend=self.backend,
                model=self.model,
                deliver=deliver,
                constraint=constraint,
                tools=plan.reader() if plan is not None else None,
            )
            self._scheduler.submit(call)
            self._calls.add(call)
            return call

        return start

    def _conversation(self, prompt: Prompt, template: ChatTemplate, definitions: str | None) -> list[dict[str, str]]:
        """The checked messages, with the tool definitions (JSON text) on the system message,
        written out by the documented convention for a template with no tool format of its own."""
        messages = normalize_messages(cast("str | Sequence[Message]", prompt))  # ids are raw: never here
        if definitions is not None:
            messages = with_tools(messages, definitions)
        return messages if getattr(template, "tool_markup", None) is not None else plain_conversation(messages)

    def _tool_plan(
        self,
        tools: Sequence[Mapping[str, Any]] | None,
        tool_choice: ToolChoiceArg,
        template: ChatTemplate | None,
        parallel: bool = True,
    ) -> ToolPlan | None:
        if not isinstance(parallel, bool):
            raise ToolError(f"parallel_tool_calls must be True or False, got {parallel!r:.40}")
        if tools is None and tool_choice is None:
            return None
        if template is None:
            raise ToolError(RAW_TOOLS)
        markup = getattr(template, "tool_markup", None)
        return plan_tools(tools, tool_choice, markup, self._marker_id, parallel=parallel)

    def _marker_id(self, text: str) -> int | None:
        """The control token that is ``text`` in this vocabulary, or None (the marker is then text)."""
        ids = self._engine.tokenize(text, add_bos=False)
        return ids[0] if len(ids) == 1 and not self._engine.token_bytes(ids[0]) else None

    def _on_close(self, call: Call) -> None:
        self._scheduler.wake()

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
        if not isinstance(template, str):
            raise UsageError(f"template must be a template name, a ChatTemplate or None, got {type(template).__name__}")
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


def _definitions(tools: Sequence[Mapping[str, Any]] | None, template: ChatTemplate | None) -> str | None:
    """The definitions of ``tools`` as the prompt shows them (None for no tools), checked."""
    if tools is None:
        return None
    if template is None:
        raise ToolError(RAW_TOOLS)
    checked = check_tools(tools)
    return definitions_text(checked) if checked else None


def _is_ids(prompt: object) -> bool:
    """Whether ``prompt`` is token ids: a list or tuple whose first item is an int (the rest are
    checked by :func:`_token_ids`)."""
    return (
        isinstance(prompt, (list, tuple))
        and bool(prompt)
        and hasattr(prompt[0], "__index__")
        and not isinstance(prompt[0], bool)
    )


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


def _check_encodable(text: str) -> None:
    """Refuse text no tokenizer can encode: lone surrogates, which Python makes of bytes that were
    not UTF-8 (``surrogateescape``: file names, ``sys.argv``, ``os.environ``) or of a split pair."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UsageError(
            f"the prompt is not valid Unicode text: it holds the lone surrogate U+{ord(text[exc.start]):04X} "
            f"at character {exc.start} (often bytes that were not UTF-8, decoded with surrogateescape); "
            "pass text decoded from UTF-8"
        ) from None


def _token_ids(ids: list[Any], vocab: int) -> list[int]:
    """Ints (NumPy's too) in ``[0, vocab)``: an id past the vocabulary reads past the engine's tables."""
    checked = []
    for index, token in enumerate(ids):
        try:
            value = operator.index(token)
        except TypeError:
            value = -1
        if isinstance(token, bool) or not 0 <= value < vocab:
            raise UsageError(f"ids[{index}] is {token!r:.40}, not a token id; ids are ints in [0, {vocab})")
        checked.append(value)
    return checked
