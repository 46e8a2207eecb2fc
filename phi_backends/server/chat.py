"""``POST /v1/chat/completions``: an OpenAI request turned into Generator calls (one per choice), and
their answers turned back into OpenAI's response or server-sent events.

Every field OpenAI defines is either honoured with OpenAI's meaning or refused with a 400 that
names it (pydantic's ``extra="forbid"`` for the fields we do not know); none is ignored. A
sampling field left out takes the server's defaults (the config's ``[sampling]`` table and
``serve``'s sampling flags, as for ``run``), except ``max_tokens``: as in OpenAI's API, as many
tokens as the context has room for.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..constraints import Constraint
from ..errors import PhiBackendsError
from ..generator import AsyncStream, Chunk, Completion, Generator
from ..logits import TokenLogprob
from ..tools import ToolCall
from .errors import APIError, error_body, status_of

__all__ = ["MAX_CHOICES", "ChatRequest", "call_arguments", "chat_events", "chat_response", "open_streams"]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The body of ``POST /v1/chat/completions``."""

    model_config = ConfigDict(extra="forbid")

    model: str
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    # llama.cpp's fields, with its meaning (docs/sampling.md)
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    repeat_last_n: int | None = None


#: The most choices one request may ask for (``n``): each is a sequence of its own.
MAX_CHOICES = 8


def _refuse(field: str, why: str) -> APIError:
    return APIError(400, f"{field} {why}", param=field)


def call_arguments(request: ChatRequest, gen: Generator) -> list[dict[str, Any]]:
    """The Generator calls the request asks for, one per choice (``n``): messages, SamplingConfig,
    constraint and tools. With a seed, choice ``i`` uses ``seed + i`` (mod 2**32), so the choices
    differ and the whole answer reproduces."""
    n = 1 if request.n is None else request.n
    if not 1 <= n <= MAX_CHOICES:
        raise _refuse("n", f"must be 1 to {MAX_CHOICES}, got {n}")
    if request.top_logprobs is not None and not request.logprobs:
        raise _refuse("top_logprobs", "needs logprobs: true")
    for name in ("frequency_penalty", "presence_penalty"):
        if getattr(request, name) not in (None, 0, 0.0):
            raise _refuse(
                name, "is not supported (its meaning differs from llama.cpp's); use repeat_penalty and repeat_last_n"
            )
    if request.parallel_tool_calls is False:
        raise _refuse("parallel_tool_calls", "false is not served yet; leave it out")
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
        "logprobs": request.logprobs,
        "top_logprobs": request.top_logprobs,
    }
    # the server's defaults (the config's [sampling], serve's flags) for what the request leaves
    # out, but max_tokens: as OpenAI's API, as many as the context has room for
    limit = request.max_completion_tokens or request.max_tokens or gen.info.context_length
    config = gen.sampling.replace(max_tokens=limit, **{k: v for k, v in given.items() if v is not None})
    common = {
        "prompt": [_message(i, m) for i, m in enumerate(request.messages)],
        "constraint": _response_format(request.response_format),
        "tools": request.tools,
        "tool_choice": request.tool_choice,
    }
    seed = config.seed
    return [{**common, "config": config if seed is None else config.replace(seed=(seed + i) % 2**32)} for i in range(n)]


def _message(index: int, message: Mapping[str, Any]) -> dict[str, Any]:
    """A message with its content parts joined: text parts only (``{"type": "text", "text": ...}``)."""
    content = message.get("content")
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise APIError(
                    400,
                    f"messages[{index}] has a content part of type {kind!r}; only text parts are served",
                    param=f"messages[{index}].content",
                )
            texts.append(part["text"])
        return {**message, "content": "".join(texts)}
    return dict(message)


def _response_format(value: Mapping[str, Any] | None) -> Constraint | None:
    if value is None or value.get("type") == "text":
        return None
    if value.get("type") == "json_object":
        return Constraint.json_object()
    if value.get("type") == "json_schema":
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        if not isinstance(schema, Mapping):
            raise APIError(
                400,
                'response_format json_schema needs {"json_schema": {"name": ..., "schema": {...}}}',
                param="response_format",
            )
        return Constraint.json_schema(schema)
    raise APIError(
        400,
        f"response_format type {value.get('type')!r} is not text, json_object or json_schema",
        param="response_format",
    )


def _fingerprint(gen: Generator) -> str:
    return f"phi-backends:{gen.backend}:{gen.model}"


def _usage(outs: Sequence[Completion]) -> dict[str, Any]:
    """The request's usage: the prompt once (every choice has the same), the completions summed."""
    prompt = outs[0].usage.prompt_tokens
    completion = sum(out.usage.completion_tokens for out in outs)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": outs[0].usage.cached_tokens},
    }


def _logprobs(entries: tuple[TokenLogprob, ...] | None, gen: Generator) -> dict[str, Any] | None:
    """OpenAI's ``logprobs`` of a choice: per token its text, log-probability, bytes and the most likely."""
    if entries is None:
        return None

    def one(token: int, logprob: float) -> dict[str, Any]:
        data = gen.token_bytes(token)
        return {"token": data.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(data)}

    content = [{**one(e.token, e.logprob), "top_logprobs": [one(t, lp) for t, lp in e.top]} for e in entries]
    return {"content": content, "refusal": None}


def _choice(index: int, out: Completion, gen: Generator) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": out.text if out.text or not out.tool_calls else None}
    if out.tool_calls:
        message["tool_calls"] = [call.openai() for call in out.tool_calls]
    logprobs = _logprobs(out.logprobs, gen)
    return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": out.finish_reason}


def chat_response(outs: Sequence[Completion], gen: Generator, model: str) -> dict[str, Any]:
    """The ``chat.completion`` object for the finished calls, one choice each."""
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": _fingerprint(gen),
        "choices": [_choice(i, out, gen) for i, out in enumerate(outs)],
        "usage": _usage(outs),
    }


Opened = tuple[AsyncStream, Chunk]


async def open_streams(gen: Generator, calls: Sequence[dict[str, Any]]) -> list[Opened]:
    """Start the streamed calls and read each one's first chunk, so that what is wrong with the
    prompt (a template, the context length, a tool) is an error status, not an event after a 200."""
    started: list[AsyncStream] = []
    opened: list[Opened] = []
    try:
        for arguments in calls:
            stream = gen.astream(**arguments)
            started.append(stream)
            opened.append((stream, await stream.__anext__()))
    except BaseException:
        for stream in started:
            await stream.aclose()
        raise
    return opened


async def chat_events(
    gen: Generator, opened: Sequence[Opened], model: str, *, include_usage: bool
) -> AsyncIterator[str]:
    """The server-sent events of streamed calls (one per choice), as their chunks come. A client
    that goes away cancels this generator, which closes every call (each sequence is freed within
    one step)."""
    head = {
        "id": "chatcmpl-" + uuid.uuid4().hex,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": _fingerprint(gen),
    }

    def event(index: int, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> str:
        body = {**head, "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}
        if include_usage:
            body["usage"] = None
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    queue: asyncio.Queue[tuple[int, Chunk | PhiBackendsError | None]] = asyncio.Queue()

    async def read(index: int, stream: AsyncStream, first: Chunk) -> None:
        try:
            await queue.put((index, first))
            async for chunk in stream:
                await queue.put((index, chunk))
            await queue.put((index, None))
        except PhiBackendsError as exc:
            await queue.put((index, exc))

    readers = [asyncio.ensure_future(read(i, stream, first)) for i, (stream, first) in enumerate(opened)]
    calls = [0] * len(opened)
    try:
        for index in range(len(opened)):
            yield event(index, {"role": "assistant", "content": ""})
        left = len(opened)
        while left:
            index, item = await queue.get()
            if item is None:
                left -= 1
                continue
            if isinstance(item, PhiBackendsError):  # the engine failed mid-stream: one error event, then the end
                status, code = status_of(item)
                yield f"data: {json.dumps(error_body(str(item), status, code=code))}\n\n"
                return
            delta: dict[str, Any] = {}
            if item.text:
                delta["content"] = item.text
            if item.tool_calls:
                delta["tool_calls"] = [_call_delta(calls[index] + i, call) for i, call in enumerate(item.tool_calls)]
                calls[index] += len(item.tool_calls)
            if delta or item.logprobs:
                yield event(index, delta, logprobs=_logprobs(item.logprobs, gen) if item.logprobs else None)
            if item.finish_reason is not None:
                yield event(index, {}, item.finish_reason)
        outs = [stream.completion for stream, _ in opened]
        finished = [out for out in outs if out is not None]
        if include_usage and len(finished) == len(outs):
            yield f"data: {json.dumps({**head, 'choices': [], 'usage': _usage(finished)})}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for stream, _ in opened:
            await stream.aclose()


def _call_delta(index: int, call: ToolCall) -> dict[str, Any]:
    return {"index": index, **call.openai()}
