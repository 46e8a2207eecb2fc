"""``POST /v1/completions``: OpenAI's (legacy) text completion. The prompt is raw: no chat template
is applied, as in OpenAI's API and llama.cpp's and vLLM's servers. It is a string, token ids (fed
as they are: no BOS is added), or a list of either (a batch: choice ``p * n + i`` is prompt ``p``'s
choice ``i``). ``max_tokens`` left out is 16, OpenAI's default for this route.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from pydantic import Field

from ..errors import PhiBackendsError
from ..generator import Completion, Generator
from ..logits import TokenLogprob
from .calls import Opened, SamplingFields, merged, refuse, response_head, sampling_configs, usage
from .chat import error_event
from .errors import APIError
from .limits import Limits

__all__ = ["CompletionRequest", "completion_arguments", "completion_events", "completion_response"]

#: OpenAI's default ``max_tokens`` for ``/v1/completions`` (the chat route's is the context).
DEFAULT_MAX_TOKENS = 16
#: The most prompts one request may batch.
MAX_PROMPTS = 64
#: The most alternatives ``logprobs`` may ask for per token (OpenAI: 5; the chat route's 20).
MAX_LOGPROBS = 20

PromptField = str | list[str] | list[int] | list[list[int]]


class CompletionRequest(SamplingFields):
    """The body of ``POST /v1/completions``."""

    prompt: PromptField
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None


def prompts(request: CompletionRequest) -> list[str | list[int]]:
    """The request's prompts: one string or id list, or a batch of them."""
    value = request.prompt
    if isinstance(value, str):
        return [value]
    if not value:
        raise refuse("prompt", "is an empty list; give a string, token ids or a list of them")
    if isinstance(value[0], int):
        return [list(value)]  # type: ignore[arg-type]
    if len(value) > MAX_PROMPTS:
        raise refuse("prompt", f"holds {len(value)} prompts; this server takes at most {MAX_PROMPTS}")
    return list(value)  # type: ignore[arg-type]


def completion_arguments(request: CompletionRequest, gen: Generator, limits: Limits) -> list[dict[str, Any]]:
    """The Generator calls the request asks for: each prompt's ``n`` choices, in raw mode."""
    if request.suffix:
        raise refuse("suffix", "is not supported (no Phi model is trained to fill in the middle)")
    n = 1 if request.n is None else request.n
    if request.best_of not in (None, n):
        raise refuse("best_of", f"must equal n ({n}) when given: choices are not ranked here")
    if request.echo and request.logprobs is not None:
        raise refuse("echo", "with logprobs is not supported (the prompt's log-probabilities are not computed)")
    configs = sampling_configs(
        request,
        gen,
        limits,
        max_tokens=request.max_tokens or DEFAULT_MAX_TOKENS,
        logprobs=True if request.logprobs is not None else None,
        top_logprobs=request.logprobs or None,
    )
    return [{"prompt": prompt, "config": config, "template": None} for prompt in prompts(request) for config in configs]


def _logprobs(entries: tuple[TokenLogprob, ...], gen: Generator, offset: int) -> dict[str, Any]:
    """The legacy ``logprobs`` object: token texts, their log-probabilities, the most likely
    alternatives and each token's character offset in the choice's text."""
    tokens, logprobs, tops, offsets = [], [], [], []
    for entry in entries:
        text = gen.token_bytes(entry.token).decode("utf-8", errors="replace")
        tokens.append(text)
        logprobs.append(entry.logprob)
        top: dict[str, float] = {}
        for token, logprob in entry.top:
            top.setdefault(gen.token_bytes(token).decode("utf-8", errors="replace"), logprob)
        tops.append(top)
        offsets.append(offset)
        offset += len(text)
    return {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": tops, "text_offset": offsets}


def _echoed(gen: Generator, arguments: dict[str, Any], echo: bool) -> str:
    return gen.render(arguments["prompt"], template=None) if echo else ""


def completion_response(
    outs: Sequence[Completion], calls: Sequence[dict[str, Any]], gen: Generator, model: str, request: CompletionRequest
) -> dict[str, Any]:
    """The ``text_completion`` object for the finished calls."""
    choices = []
    for index, (out, arguments) in enumerate(zip(outs, calls, strict=True)):
        echoed = _echoed(gen, arguments, request.echo)
        logprobs = _logprobs(out.logprobs, gen, len(echoed)) if out.logprobs is not None else None
        choices.append(
            {"index": index, "text": echoed + out.text, "logprobs": logprobs, "finish_reason": out.finish_reason}
        )
    return {
        **response_head("text_completion", "cmpl-", gen, model),
        "choices": choices,
        "usage": usage(outs, request.n or 1),
    }


async def completion_events(
    gen: Generator,
    opened: Sequence[Opened],
    calls: Sequence[dict[str, Any]],
    model: str,
    request: CompletionRequest,
    *,
    timeout: float | None,
) -> AsyncIterator[str]:
    """The server-sent events of streamed completions (one call per choice), as their chunks come;
    with ``echo``, each choice's first event is its prompt."""
    head = response_head("text_completion", "cmpl-", gen, model)
    include_usage = request.stream_options is not None and request.stream_options.include_usage

    def event(index: int, text: str, finish: str | None = None, logprobs: Any = None) -> str:
        body = {**head, "choices": [{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}]}
        if include_usage:
            body["usage"] = None
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    try:  # closed here too: a client may leave before the first chunk is read
        offsets = [0] * len(opened)
        if request.echo:
            for index, arguments in enumerate(calls):
                echoed = _echoed(gen, arguments, True)
                offsets[index] = len(echoed)
                yield event(index, echoed)
        try:
            async for index, item in merged(opened, timeout):
                logprobs = None
                if item.logprobs:
                    logprobs = _logprobs(item.logprobs, gen, offsets[index])
                    offsets[index] += sum(len(token) for token in logprobs["tokens"])
                if item.text or logprobs or item.finish_reason is not None:
                    yield event(index, item.text, item.finish_reason, logprobs)
        except (PhiBackendsError, APIError) as exc:
            yield error_event(exc)
            return
        outs = [stream.completion for stream, _ in opened]
        finished = [out for out in outs if out is not None]
        if include_usage and len(finished) == len(outs):
            totals = usage(finished, request.n or 1)
            yield f"data: {json.dumps({**head, 'choices': [], 'usage': totals})}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        for stream, _ in opened:
            await stream.aclose()
