"""One call's life inside the scheduler: the tokens the engine samples become text and a Completion.

Everything here runs on the scheduler's worker thread, after each engine step, so a call leaves
the batch the moment it is done (end of turn, a stop string, its budget, a cancel) rather than
when its caller next reads. What the caller sees arrives through ``deliver``: text chunks, then
the final chunk (with :attr:`Call.completion` set first), or an exception.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ..backend import EngineSequence, SequenceRequest
from ..constraints import Constraint
from ..logits import TokenLogprob
from ..streaming import TextAssembler
from ..tools.calls import ToolCall
from ..tools.reader import ToolCallReader

__all__ = ["Call", "Chunk", "Completion", "FinishReason", "Timings", "Usage"]

#: ``tool_calls``: the model ended its turn after calling tools (:attr:`Completion.tool_calls`)
FinishReason = Literal["stop", "length", "cancelled", "tool_calls"]


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    #: prompt tokens whose KV cache came from an earlier call (multi-turn reuse); not computed again
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Timings:
    """Wall-clock figures for one call, in seconds and tokens per second.

    ``time_to_first_token`` counts from the call's start, including any wait for a free slot
    (``queued``, the part of it spent waiting).
    """

    time_to_first_token: float
    prompt_tokens_per_second: float
    decode_tokens_per_second: float
    total: float
    queued: float = 0.0


@dataclass(frozen=True, slots=True)  # slots: one object per token, not two
class Chunk:
    """One piece of a stream. The last chunk has a ``finish_reason``, ``usage`` and ``timings``.

    ``logprobs`` (when the call asks for them) holds one entry per token generated since the
    previous chunk, in order; a token whose text is held back (half a character, a possible
    stop string) is reported with the chunk that carries its text, or the last chunk.
    ``tool_calls`` holds the tool calls completed since the previous chunk (a call with tools).
    """

    text: str
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    timings: Timings | None = None
    logprobs: tuple[TokenLogprob, ...] | None = None
    tool_calls: tuple[ToolCall, ...] | None = None


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
    #: one entry per id of ``token_ids`` when the call asked for logprobs, else None
    logprobs: tuple[TokenLogprob, ...] | None = field(default=None, repr=False)
    #: a constrained call's value, when it ended with ``finish_reason="stop"``: the parsed JSON
    #: (the pydantic instance for a model class), the text for a regex, grammar or choice
    value: Any = field(default=None, repr=False)
    #: the tools the model called, in order (a call given tools); ``text`` is what it said besides
    tool_calls: tuple[ToolCall, ...] = ()


#: What ``deliver`` is given when the Generator ends a call without a result (it was closed).
CLOSED = object()


class Call:
    """One call from admission to its last chunk. Its methods run on the worker thread, except
    :meth:`cancel` and :meth:`close`, which any thread may call."""

    def __init__(
        self,
        request: SequenceRequest,
        *,
        text: TextAssembler,
        eog: frozenset[int],
        backend: str,
        model: str,
        deliver: Callable[[Any], None],
        constraint: Constraint | None = None,
        tools: ToolCallReader | None = None,
    ) -> None:
        self.request = request
        self._constraint = constraint
        self._tools = tools
        self._tool_calls: list[ToolCall] = []
        step = request.logits_step
        self._mask = step.mask if step is not None else None
        self.sequence: EngineSequence | None = None
        self.completion: Completion | None = None
        self._text = text
        self._add_text = text.adder
        self._eog = eog
        self._backend = backend
        self._model = model
        self._deliver = deliver
        #: set by :meth:`cancel` / :meth:`close` from any thread; plain flags (a store is atomic
        #: and nobody waits on them), read on the per-token path without a call
        self.cancelled = False
        self.closed = False
        self._pieces: list[str] = []
        self._generated: list[int] = []
        self._logprobs: list[TokenLogprob] | None = [] if request.config.reports_logprobs else None
        self._unsent: list[TokenLogprob] = []
        self._start = time.perf_counter()
        self._admitted = self._first = self._last = 0.0
        self._drawn = 0
        self.done = False
        #: its reader steps it (Scheduler.drive): the worker leaves it alone unless others wait
        self.driven = False
        #: its reader was sent back to wait (Scheduler.drive): the worker steps it until it delivers
        self.awaited = False
        self._held: Chunk | None = None
        self.owner = threading.get_ident()  # the thread that made the call (Generator.close ends its own)

    # -- any thread -------------------------------------------------------------------------

    def cancel(self) -> None:
        """End after the current token with ``finish_reason="cancelled"``."""
        self.cancelled = True

    def close(self) -> None:
        """End now; the caller wants nothing more (no final chunk)."""
        self.closed = True

    @property
    def reservation(self) -> int:
        """KV cells this call may need at most: its prompt and its token budget."""
        return len(self.request.prompt_ids) + self.request.budget

    # -- the worker ----------------------------------------------------------------------------

    def admitted(self) -> None:
        self._admitted = time.perf_counter()

    def advance(self, token: int) -> bool:
        """Take the token the engine sampled; True when the call is over (its last chunk sent)."""
        now = time.perf_counter()
        if self._drawn == 0:
            self._first = now
        self._last = now
        self._drawn += 1
        if token in self._eog:
            return self.finish("stop")
        if self._mask is not None:
            self._mask.accept(token)
        self._generated.append(token)
        if self._logprobs is not None:
            step = self.request.logits_step
            entry = step.logprob(token) if step is not None else None
            if entry is not None:
                self._logprobs.append(entry)
                self._unsent.append(entry)
        piece = self._add_text(token)
        if piece:
            if self._tools is not None:
                self._read_tools(piece)
                if self._tools.full:  # parallel_tool_calls=False: one call, and the turn ends
                    return self.finish("stop")
            else:
                self._pieces.append(piece)
                self.awaited = False  # the reader has an item: it steps the call again (Scheduler.drive)
                self._deliver(
                    Chunk(piece, logprobs=self._take_logprobs()) if self._logprobs is not None else Chunk(piece)
                )
        if self._text.stopped:
            return self.finish("stop")
        if len(self._generated) >= self.request.budget:
            return self.finish("length")
        if self.cancelled:
            return self.finish("cancelled")
        return False

    def finish(self, reason: FinishReason) -> bool:
        """Send the last chunk (the text held back, usage, timings) and set :attr:`completion`."""
        tail = self._text.finish()
        if self._text.stopped and reason == "length":  # a stop string the matcher could only settle at the end
            reason = "stop"
        calls: tuple[ToolCall, ...] | None = None
        if self._tools is not None:
            tail, calls = self._tools.flush(tail)
            self._tool_calls += calls
            if self._tool_calls and reason == "stop":
                reason = "tool_calls"
        if tail:
            self._pieces.append(tail)
        end = time.perf_counter()
        prompt = len(self.request.prompt_ids)
        cached = self.sequence.reused_tokens if self.sequence is not None else 0
        usage = Usage(prompt_tokens=prompt, completion_tokens=len(self._generated), cached_tokens=cached)
        timings = self._timings(end, prompt - cached)
        text = "".join(self._pieces)
        self.completion = Completion(
            text=text,
            finish_reason=reason,
            usage=usage,
            timings=timings,
            seed=self.request.seed,
            backend=self._backend,
            model=self._model,
            token_ids=tuple(self._generated),
            logprobs=tuple(self._logprobs) if self._logprobs is not None else None,
            value=self._value(text, reason),
            tool_calls=tuple(self._tool_calls),
        )
        self.done = True
        last = Chunk(
            tail,
            finish_reason=reason,
            usage=usage,
            timings=timings,
            logprobs=self._take_logprobs(),
            tool_calls=calls or None,
        )
        if self.sequence is not None:  # sent by released(): the caller sees the end after the engine's slot is free
            self._held = last
        else:
            self._deliver(last)
        return True

    def released(self) -> None:
        """The scheduler has released the engine's sequence: send the last chunk, if it waited for that."""
        held, self._held = self._held, None
        if held is not None:
            self._deliver(held)

    def fail(self, error: BaseException) -> None:
        self.done = True
        self._deliver(error)

    def drop(self) -> None:
        """The Generator ends the call without a result (closed while it waited or ran)."""
        self.done = True
        self._deliver(CLOSED)

    def _read_tools(self, piece: str) -> None:
        """Send what ``piece`` adds to the content, and the tool calls it completes."""
        assert self._tools is not None
        text, calls = self._tools.feed(piece)
        if not text and not calls:
            return
        if text:
            self._pieces.append(text)
        self._tool_calls += calls
        self.awaited = False
        self._deliver(Chunk(text, logprobs=self._take_logprobs(), tool_calls=calls or None))

    def _value(self, text: str, reason: FinishReason) -> Any:
        if self._constraint is None or reason != "stop":
            return None
        try:
            return self._constraint.parse(text)
        except ValueError:  # cut by a stop string; or a pydantic validator the schema could not express
            return None

    def _take_logprobs(self) -> tuple[TokenLogprob, ...] | None:
        if self._logprobs is None:
            return None
        sent, self._unsent = tuple(self._unsent), []
        return sent

    def _timings(self, end: float, computed_prompt: int) -> Timings:
        queued = max(0.0, self._admitted - self._start) if self._admitted else 0.0
        if self._drawn == 0:
            return Timings(0.0, 0.0, 0.0, end - self._start, queued)
        ttft = self._first - self._start
        prefill = self._first - (self._admitted or self._start)
        decode = (self._drawn - 1) / (self._last - self._first) if self._drawn > 1 and self._last > self._first else 0.0
        return Timings(
            time_to_first_token=ttft,
            prompt_tokens_per_second=computed_prompt / prefill if prefill > 0 else 0.0,
            decode_tokens_per_second=decode,
            total=end - self._start,
            queued=queued,
        )
