"""``POST /v1/chat/completions``: an OpenAI request turned into one Generator call, and its answer
turned back into OpenAI's response or server-sent events.

Every field OpenAI defines is either honoured with OpenAI's meaning or refused with a 400 that
names it (pydantic's ``extra="forbid"`` for the fields we do not know); none is ignored. A
sampling field left out takes the server's defaults (the config's ``[sampling]`` table and
``serve``'s sampling flags, as for ``run``), except ``max_tokens``: as in OpenAI's API, as many
tokens as the context has room for.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..constraints import Constraint
from ..errors import PhiBackendsError
from ..generator import AsyncStream, Chunk, Completion, Generator
from ..logits import TokenLogprob
from ..tools import ToolCall
from .errors import APIError, error_body, status_of

__all__ = ["ChatRequest", "call_arguments", "chat_events", "chat_response", "open_stream"]


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


def _refuse(field: str, why: str) -> APIError:
    return APIError(400, f"{field} {why}", param=field)


def call_arguments(request: ChatRequest, gen: Generator) -> dict[str, Any]:
    """The Generator call the request asks for: its messages, SamplingConfig, constraint and tools."""
    if request.n not in (None, 1):
        raise _refuse("n", "must be 1 here: several choices per request are not served yet")
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
    return {
        "prompt": [_message(i, m) for i, m in enumerate(request.messages)],
        "config": config,
        "constraint": _response_format(request.response_format),
        "tools": request.tools,
        "tool_choice": request.tool_choice,
    }


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


def _usage(out: Completion) -> dict[str, Any]:
    usage = out.usage
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
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


def chat_response(out: Completion, gen: Generator, model: str) -> dict[str, Any]:
    """The ``chat.completion`` object for a finished call."""
    message: dict[str, Any] = {"role": "assistant", "content": out.text if out.text or not out.tool_calls else None}
    if out.tool_calls:
        message["tool_calls"] = [call.openai() for call in out.tool_calls]
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": _fingerprint(gen),
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": _logprobs(out.logprobs, gen),
                "finish_reason": out.finish_reason,
            }
        ],
        "usage": _usage(out),
    }


async def open_stream(gen: Generator, arguments: dict[str, Any]) -> tuple[AsyncStream, Chunk]:
    """Start a streamed call and read its first chunk, so that what is wrong with the prompt (a
    template, the context length, a tool) is an error status, not an event after a 200."""
    stream = gen.astream(**arguments)
    try:
        return stream, await stream.__anext__()
    except BaseException:
        await stream.aclose()
        raise


async def chat_events(
    gen: Generator, stream: AsyncStream, first: Chunk, model: str, *, include_usage: bool
) -> AsyncIterator[str]:
    """The server-sent events of a streamed call whose first chunk is ``first``. A client that goes
    away cancels this generator, which closes the call (its sequence is freed within one step)."""
    head = {
        "id": "chatcmpl-" + uuid.uuid4().hex,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": _fingerprint(gen),
    }

    def event(delta: dict[str, Any], finish: str | None = None, logprobs: dict[str, Any] | None = None) -> str:
        body = {**head, "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}
        if include_usage:
            body["usage"] = None
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    async def chunks() -> AsyncIterator[Chunk]:
        yield first
        async for chunk in stream:
            yield chunk

    calls = 0
    try:
        yield event({"role": "assistant", "content": ""})
        async for chunk in chunks():
            delta: dict[str, Any] = {}
            if chunk.text:
                delta["content"] = chunk.text
            if chunk.tool_calls:
                delta["tool_calls"] = [_call_delta(calls + i, call) for i, call in enumerate(chunk.tool_calls)]
                calls += len(chunk.tool_calls)
            if delta or chunk.logprobs:
                yield event(delta, logprobs=_logprobs(chunk.logprobs, gen) if chunk.logprobs else None)
            if chunk.finish_reason is not None:
                yield event({}, chunk.finish_reason)
        out = stream.completion
        if include_usage and out is not None:
            yield f"data: {json.dumps({**head, 'choices': [], 'usage': _usage(out)})}\n\n"
        yield "data: [DONE]\n\n"
    except PhiBackendsError as exc:  # the engine failed mid-stream: one error event, then the end
        status, code = status_of(exc)
        yield f"data: {json.dumps(error_body(str(exc), status, code=code))}\n\n"
    finally:
        await stream.aclose()


def _call_delta(index: int, call: ToolCall) -> dict[str, Any]:
    return {"index": index, **call.openai()}
