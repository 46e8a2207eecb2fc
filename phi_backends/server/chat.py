"""``POST /v1/chat/completions``: an OpenAI chat request turned into Generator calls (one per
choice), and their answers turned back into OpenAI's response or server-sent events.

The fields both routes share, and what happens to one we cannot honour, are in :mod:`.calls`.
``max_tokens`` left out is, as in OpenAI's chat API, as many tokens as the context has room for.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from pydantic import Field

from ..constraints import Constraint
from ..errors import PhiBackendsError
from ..generator import Completion, Generator
from ..logits import TokenLogprob
from ..tools import ToolCall
from .calls import Opened, SamplingFields, merged, refuse, response_head, sampling_configs, usage
from .errors import APIError, error_body, status_of
from .limits import Limits

__all__ = ["ChatRequest", "call_arguments", "chat_events", "chat_response"]


class ChatRequest(SamplingFields):
    """The body of ``POST /v1/chat/completions``."""

    messages: list[dict[str, Any]] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None


def call_arguments(request: ChatRequest, gen: Generator, limits: Limits) -> list[dict[str, Any]]:
    """The Generator calls the request asks for, one per choice (``n``): messages, SamplingConfig,
    constraint and tools."""
    if len(request.messages) > limits.max_messages:
        raise refuse(
            "messages", f"holds {len(request.messages)} messages; this server takes at most {limits.max_messages}"
        )
    if request.top_logprobs is not None and not request.logprobs:
        raise refuse("top_logprobs", "needs logprobs: true")
    configs = sampling_configs(
        request,
        gen,
        limits,
        max_tokens=request.max_completion_tokens or request.max_tokens,
        logprobs=request.logprobs,
        top_logprobs=request.top_logprobs,
    )
    common = {
        "prompt": [_message(i, m) for i, m in enumerate(request.messages)],
        "constraint": _response_format(request.response_format),
        "tools": request.tools,
        "tool_choice": request.tool_choice,
        "parallel_tool_calls": request.parallel_tool_calls is not False,
    }
    return [{**common, "config": config} for config in configs]


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
        **response_head("chat.completion", "chatcmpl-", gen, model),
        "choices": [_choice(i, out, gen) for i, out in enumerate(outs)],
        "usage": usage(outs, len(outs)),
    }


async def chat_events(
    gen: Generator, opened: Sequence[Opened], model: str, *, include_usage: bool, timeout: float | None
) -> AsyncIterator[str]:
    """The server-sent events of streamed calls (one per choice), as their chunks come. An engine
    failure or the time limit mid-stream is one error event, then the end."""
    head = response_head("chat.completion.chunk", "chatcmpl-", gen, model)

    # Once per token: the fields every event shares are written to JSON once, here.
    opening = "data: " + json.dumps(head, ensure_ascii=False)[:-1] + ', "choices": [{"index": '
    closing = '}], "usage": null}\n\n' if include_usage else "}]}\n\n"

    def event(index: int, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> str:
        if len(delta) == 1 and "content" in delta:  # the usual event: one piece of text
            written = '{"content": ' + json.dumps(delta["content"], ensure_ascii=False) + "}"
        else:
            written = json.dumps(delta, ensure_ascii=False)
        rest = json.dumps(logprobs, ensure_ascii=False) if logprobs is not None else "null"
        return (
            f'{opening}{index}, "delta": {written}, "logprobs": {rest}, "finish_reason": {json.dumps(finish)}{closing}'
        )

    try:  # closed here too: a client may leave before the first chunk is read
        calls = [0] * len(opened)
        for index in range(len(opened)):
            yield event(index, {"role": "assistant", "content": ""})
        try:
            async for index, item in merged(opened, timeout):
                delta: dict[str, Any] = {}
                if item.text:
                    delta["content"] = item.text
                if item.tool_calls:
                    delta["tool_calls"] = [
                        _call_delta(calls[index] + i, call) for i, call in enumerate(item.tool_calls)
                    ]
                    calls[index] += len(item.tool_calls)
                if delta or item.logprobs:
                    yield event(index, delta, logprobs=_logprobs(item.logprobs, gen) if item.logprobs else None)
                if item.finish_reason is not None:
                    yield event(index, {}, item.finish_reason)
        except (PhiBackendsError, APIError) as exc:
            yield error_event(exc)
            return
        outs = [stream.completion for stream, _ in opened]
        finished = [out for out in outs if out is not None]
        if include_usage and len(finished) == len(outs):
            yield f"data: {json.dumps({**head, 'choices': [], 'usage': usage(finished, len(finished))})}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        for stream, _ in opened:
            await stream.aclose()


def error_event(exc: PhiBackendsError | APIError) -> str:
    """One ``data: {"error": ...}`` event: what goes wrong after a stream's 200."""
    if isinstance(exc, APIError):
        body = error_body(exc.message, exc.status, param=exc.param, code=exc.code)
    else:
        status, code = status_of(exc)
        body = error_body(str(exc), status, code=code)
    return f"data: {json.dumps(body)}\n\n"


def _call_delta(index: int, call: ToolCall) -> dict[str, Any]:
    return {"index": index, **call.openai()}
