"""What ``/v1/chat/completions`` and ``/v1/completions`` share: the sampling fields and their
meaning, ``n`` choices as calls of their own, the streams of those calls merged, and ``usage``.

Every field OpenAI defines is either honoured with OpenAI's meaning or refused with a 400 that
names it (pydantic's ``extra="forbid"`` for the fields we do not know); none is ignored. A
sampling field left out takes the server's defaults (the config's ``[sampling]`` table and
``serve``'s sampling flags, as for ``run``), except ``max_tokens``, whose default is the route's.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from ..generator import AsyncStream, Chunk, Completion, Generator
from ..sampling import SamplingConfig
from .errors import APIError
from .limits import Limits

__all__ = [
    "Opened",
    "SamplingFields",
    "StreamOptions",
    "fingerprint",
    "merged",
    "open_streams",
    "refuse",
    "response_head",
    "run_all",
    "sampling_configs",
    "usage",
]

T = TypeVar("T")
#: How often a request that does not stream checks whether its client is still there, in seconds.
DISCONNECT_POLL_S = 0.1


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class SamplingFields(BaseModel):
    """The fields both routes take, with OpenAI's meaning (llama.cpp's for its extra four)."""

    model_config = ConfigDict(extra="forbid")

    model: str
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    # llama.cpp's fields, with its meaning (docs/sampling.md)
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    repeat_last_n: int | None = None


def refuse(field: str, why: str) -> APIError:
    return APIError(400, f"{field} {why}", param=field)


def sampling_configs(
    request: SamplingFields,
    gen: Generator,
    limits: Limits,
    *,
    max_tokens: int | None,
    logprobs: bool | None = None,
    top_logprobs: int | None = None,
) -> list[SamplingConfig]:
    """One SamplingConfig per choice (``n``). ``max_tokens``: the request's (None: as many as the
    context has room for). With a seed, choice ``i`` uses ``seed + i`` (mod 2**32), so the choices
    differ and the whole answer reproduces."""
    n = 1 if request.n is None else request.n
    if not 1 <= n <= limits.max_choices:
        raise refuse("n", f"must be 1 to {limits.max_choices}, got {n}")
    for name in ("frequency_penalty", "presence_penalty"):
        if getattr(request, name) not in (None, 0, 0.0):
            raise refuse(
                name, "is not supported (its meaning differs from llama.cpp's); use repeat_penalty and repeat_last_n"
            )
    if max_tokens is not None and limits.max_tokens is not None and max_tokens > limits.max_tokens:
        raise refuse("max_tokens", f"is {max_tokens}; this server generates at most {limits.max_tokens} per choice")
    given = {
        "temperature": request.temperature,
        "top_p": request.top_p,
        "top_k": request.top_k,
        "min_p": request.min_p,
        "repeat_penalty": request.repeat_penalty,
        "repeat_last_n": request.repeat_last_n,
        "seed": request.seed,
        "stop": request.stop,
        "logit_bias": request.logit_bias,
        "logprobs": logprobs,
        "top_logprobs": top_logprobs,
    }
    limit = max_tokens or limits.max_tokens or gen.info.context_length
    config = gen.sampling.replace(max_tokens=limit, **{k: v for k, v in given.items() if v is not None})
    seed = config.seed
    return [config if seed is None else config.replace(seed=(seed + i) % 2**32) for i in range(n)]


def fingerprint(gen: Generator) -> str:
    return f"phi-backends:{gen.backend}:{gen.model}"


def response_head(kind: str, id_prefix: str, gen: Generator, model: str) -> dict[str, Any]:
    """The fields a response, and every event of a stream, begins with: a new id, its object
    ``kind``, the time, the model's served name and the fingerprint."""
    return {
        "id": id_prefix + uuid.uuid4().hex,
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": fingerprint(gen),
    }


def usage(outs: Sequence[Completion], n: int) -> dict[str, Any]:
    """A request's usage: each prompt once (its ``n`` choices share it), every choice's tokens."""
    prompt = sum(out.usage.prompt_tokens for out in outs[::n])
    completion = sum(out.usage.completion_tokens for out in outs)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": sum(out.usage.cached_tokens for out in outs[::n])},
    }


def _late(limit: float | None) -> APIError:
    return APIError(504, f"the request ran past this server's time limit of {limit:g} s", code="timeout")


async def run_all(
    works: Sequence[Awaitable[T]], is_gone: Callable[[], Awaitable[bool]], timeout: float | None
) -> list[T] | None:
    """The results of ``works`` (run together), or None once the client has disconnected; past
    ``timeout`` seconds a 504. Whatever is still running when one fails, the client leaves or time
    runs out is cancelled, which ends its call and frees its sequence."""
    tasks = [asyncio.ensure_future(work) for work in works]
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            done, pending = await asyncio.wait(tasks, timeout=DISCONNECT_POLL_S, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                error = task.exception()
                if error is not None:
                    raise error
            if not pending:
                return [task.result() for task in tasks]
            if await is_gone():
                return None
            if deadline is not None and time.monotonic() > deadline:
                raise _late(timeout)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


Opened = tuple[AsyncStream, Chunk]


async def open_streams(starts: Sequence[Callable[[], AsyncStream]]) -> list[Opened]:
    """Start the streamed calls and read each one's first chunk, so that what is wrong with the
    prompt (a template, the context length, a tool) is an error status, not an event after a 200."""
    started: list[AsyncStream] = []
    opened: list[Opened] = []
    try:
        for start in starts:
            stream = start()
            started.append(stream)
            opened.append((stream, await stream.__anext__()))
    except BaseException:
        for stream in started:
            await stream.aclose()
        raise
    return opened


async def merged(opened: Sequence[Opened], timeout: float | None) -> AsyncIterator[tuple[int, Chunk]]:
    """The chunks of streamed calls (one per choice) as they come, each with its choice's index.
    An engine failure is raised (a PhiBackendsError), and so is the time limit (504): when it
    passes, every call is cancelled (it ends after its current token) and its end is the error.
    Closing this generator (a client that leaves cancels it) closes every call: each sequence is
    freed within one step."""
    late = False

    def expire() -> None:
        nonlocal late
        late = True
        for stream, _ in opened:
            stream.cancel()

    handle = None if timeout is None else asyncio.get_running_loop().call_later(timeout, expire)
    # one choice (the usual request) is read directly; several through a queue their readers fill
    source = _one(opened[0]) if len(opened) == 1 else _many(opened)
    try:
        async for index, chunk in source:
            if late and chunk.finish_reason is not None:
                raise _late(timeout)
            yield index, chunk
    finally:
        if handle is not None:
            handle.cancel()
        await source.aclose()
        for stream, _ in opened:
            await stream.aclose()


async def _one(opened: Opened) -> AsyncGenerator[tuple[int, Chunk], None]:
    stream, first = opened
    yield 0, first
    if first.finish_reason is None:
        async for chunk in stream:
            yield 0, chunk


async def _many(opened: Sequence[Opened]) -> AsyncGenerator[tuple[int, Chunk], None]:
    queue: asyncio.Queue[tuple[int, Chunk | BaseException | None]] = asyncio.Queue()

    async def read(index: int, stream: AsyncStream, first: Chunk) -> None:
        try:
            await queue.put((index, first))
            if first.finish_reason is None:
                async for chunk in stream:
                    await queue.put((index, chunk))
            await queue.put((index, None))
        except Exception as exc:  # handed to the reader of the merged stream
            await queue.put((index, exc))

    readers = [asyncio.ensure_future(read(i, stream, first)) for i, (stream, first) in enumerate(opened)]
    try:
        left = len(opened)
        while left:
            index, item = await queue.get()
            if item is None:
                left -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
