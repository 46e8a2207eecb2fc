"""The OpenAI-compatible HTTP API over one or more Generators (FastAPI; OpenAPI docs at ``/docs``)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware

from .. import __version__
from ..errors import PhiBackendsError
from ..generator import Generator
from .calls import Opened, open_streams, run_all
from .chat import ChatRequest, call_arguments, chat_events, chat_response
from .completions import CompletionRequest, completion_arguments, completion_events, completion_response
from .errors import APIError, error_body, status_of
from .guard import Guard
from .limits import RETRY_AFTER_S, Limits
from .metrics import CONTENT_TYPE, Metrics
from .models import ModelSpec, Served, ServedModels

__all__ = ["create_app"]

#: What needs no API key: a load balancer's or an orchestrator's probe.
OPEN_PATHS = frozenset({"/health"})


def create_app(
    models: Mapping[str, ModelSpec],
    *,
    api_keys: Sequence[str] = (),
    limits: Limits | None = None,
    cors_origins: Sequence[str] = (),
    on_load: Callable[[str, Generator | PhiBackendsError], None] | None = None,
) -> FastAPI:
    """The app serving ``models``: name → a loaded Generator (which the caller closes), or a
    function that loads one. Those are loaded one after another once the server starts (``/health``
    answers 503 meanwhile, and requests for them 503 with ``Retry-After``) and closed when it stops;
    ``on_load(name, generator or error)`` hears of each load's outcome.

    With ``api_keys``, every route but ``/health`` needs ``Authorization: Bearer <one of them>``
    (compared in constant time). ``limits``: :class:`Limits` (queue, body size, messages, choices,
    ``max_tokens``, time). ``cors_origins``: the browser origins allowed to call (``"*"`` for any);
    none by default, so no CORS header is sent.
    """
    limits = limits or Limits()
    served = ServedModels(models)
    started = int(time.time())

    def live() -> dict[str, tuple[bool, int, int, int]]:
        return {
            name: (model.gen is not None, model.in_flight, *(model.gen.load if model.gen is not None else (0, 0)))
            for name, model in served.by_name.items()
        }

    metrics = Metrics(live)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.ensure_future(
            served.load(on_load or (lambda name, outcome: None))
        )  # not awaited: the server answers meanwhile
        try:
            yield
        finally:
            loading.cancel()
            await asyncio.gather(loading, return_exceptions=True)
            served.close()

    app = FastAPI(title="phi-backends", version=__version__, lifespan=lifespan)
    app.add_middleware(
        Guard, keys=list(api_keys), max_body_bytes=limits.max_body_bytes, open_paths=OPEN_PATHS,
        observe=metrics.answered,
    )  # fmt: skip
    if cors_origins:  # outermost: a browser's preflight needs no key
        app.add_middleware(
            CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )  # fmt: skip

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        body = error_body(exc.message, exc.status, param=exc.param, code=exc.code)
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(PhiBackendsError)
    async def library_error(request: Request, exc: PhiBackendsError) -> JSONResponse:
        status, code = status_of(exc)
        return JSONResponse(error_body(str(exc), status, code=code), status_code=status)

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return JSONResponse(error_body(message, 400, param=param), status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(error_body(str(exc.detail), exc.status_code), status_code=exc.status_code)

    @app.get("/health")
    async def health() -> JSONResponse:
        states = {name: model.state for name, model in served.by_name.items()}
        status = (
            "ok"
            if all(s == "ready" for s in states.values())
            else "error"
            if "failed" in states.values()
            else "loading"
        )
        return JSONResponse({"status": status, "models": states}, status_code=200 if status == "ok" else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.text(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        data = [
            {"id": name, "object": "model", "created": started, "owned_by": "phi-backends"} for name in served.names
        ]
        return {"object": "list", "data": data}

    def admit(model: Served, kind: str) -> None:
        if model.in_flight >= limits.max_queue:
            raise APIError(
                503, f"{model.name} has {limits.max_queue} requests running or waiting, as many as it takes; retry shortly",
                code="overloaded", headers={"Retry-After": str(RETRY_AFTER_S)},
            )  # fmt: skip
        metrics.admitted(model.name, kind)

    async def answer(
        request: Request,
        model: Served,
        gen: Generator,
        calls: list[dict[str, Any]],
        n: int,
        respond: Callable[[list[Any]], dict[str, Any]],
        events: Callable[[list[Opened]], AsyncIterator[str]] | None,
    ) -> Any:
        """Run ``calls`` (streamed into ``events``, or answered whole by ``respond``), holding a
        place in the model's queue until the last event or the answer."""

        def done(opened: list[Opened]) -> None:
            model.in_flight -= 1
            for i, (stream, _) in enumerate(opened):
                if stream.completion is not None:
                    metrics.completed(model.name, stream.completion, prompt=i % n == 0)

        model.in_flight += 1
        streaming = False
        try:
            if events is not None:
                opened = await open_streams([functools.partial(gen.astream, **arguments) for arguments in calls])
                streaming = True
                body = _finally(events(opened), lambda: done(opened))
                # started here: a generator never started never runs its finally, so a client that
                # left before the response began would keep its place and its calls; a started one
                # is closed when dropped
                first = await body.__anext__()
                return StreamingResponse(_prepend(first, body), media_type="text/event-stream")
            outs = await run_all(
                [gen.agenerate(**arguments) for arguments in calls], request.is_disconnected, limits.request_timeout_s
            )
            if outs is None:
                return JSONResponse(error_body("the client closed the connection", 499), status_code=499)
            for i, out in enumerate(outs):
                metrics.completed(model.name, out, prompt=i % n == 0)
            return respond(outs)
        finally:
            if not streaming:  # a stream's events hold its place until they end
                model.in_flight -= 1

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatRequest, request: Request) -> Any:
        model, gen = served.ready(body.model)
        calls = call_arguments(body, gen, limits)
        admit(model, "chat")
        include = body.stream_options is not None and body.stream_options.include_usage
        timeout = limits.request_timeout_s
        return await answer(
            request, model, gen, calls, len(calls),  # the choices share one prompt
            lambda outs: chat_response(outs, gen, body.model),
            (lambda opened: chat_events(gen, opened, body.model, include_usage=include, timeout=timeout))
            if body.stream else None,
        )  # fmt: skip

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request) -> Any:
        model, gen = served.ready(body.model)
        calls = completion_arguments(body, gen, limits)
        admit(model, "completion")
        timeout = limits.request_timeout_s
        return await answer(
            request, model, gen, calls, body.n or 1,
            lambda outs: completion_response(outs, calls, gen, body.model, body),
            (lambda opened: completion_events(gen, opened, calls, body.model, body, timeout=timeout))
            if body.stream else None,
        )  # fmt: skip

    return app


async def _finally(events: AsyncIterator[str], then: Callable[[], None]) -> AsyncIterator[str]:
    """``events``, with ``then()`` run when they end (or the client leaves)."""
    try:
        async for event in events:
            yield event
    finally:
        then()


async def _prepend(first: str, rest: AsyncIterator[str]) -> AsyncIterator[str]:
    yield first
    async for event in rest:
        yield event


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """The first problem pydantic found, as one line naming the field."""
    errors = exc.errors()
    if not errors:
        return "the request body is not valid", None
    first = errors[0]
    where = [str(part) for part in first.get("loc", ()) if part != "body"]
    field = ".".join(where) or None
    if first.get("type") == "extra_forbidden" and field:
        return f"{field} is not a field phi-backends serves (docs/serving.md lists them)", field
    if first.get("type") in ("json_invalid", "model_attributes_type") or field is None:
        return "the request body must be a JSON object (" + str(first.get("msg", "")) + ")", None
    return f"{field}: {first.get('msg', 'is not valid')}", field
