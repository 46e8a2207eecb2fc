"""The OpenAI-compatible HTTP API over one or more loaded Generators (FastAPI; OpenAPI docs at ``/docs``)."""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from .. import __version__
from ..errors import PhiBackendsError
from ..generator import Generator
from .chat import ChatRequest, call_arguments, chat_events, chat_response, open_streams
from .errors import APIError, error_body, status_of
from .limits import MAX_BODY_BYTES, MAX_QUEUE, RETRY_AFTER_S

__all__ = ["create_app"]

T = TypeVar("T")
#: How often a non-streamed request checks whether its client is still there, in seconds.
DISCONNECT_POLL_S = 0.1


def create_app(
    models: Mapping[str, Generator],
    *,
    api_keys: Sequence[str] = (),
    max_queue: int = MAX_QUEUE,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The app serving ``models`` (name → loaded Generator). With ``api_keys``, every route but
    ``/health`` needs ``Authorization: Bearer <one of them>`` (compared in constant time).

    ``max_queue``: the requests a model takes at once, running or waiting for a sequence; one more
    is answered 503 with ``Retry-After``. ``max_body_bytes``: a larger body is answered 413.
    """
    app = FastAPI(title="phi-backends", version=__version__)
    keys = [key.encode() for key in api_keys]
    started = int(time.time())
    in_flight = dict.fromkeys(models, 0)

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_body_bytes:
            message = f"the request body is {int(length)} bytes; this server takes at most {max_body_bytes}"
            return JSONResponse(error_body(message, 413), status_code=413)
        return await call_next(request)

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Any) -> Any:
        if keys and request.url.path != "/health":
            given = request.headers.get("authorization", "")
            token = given[7:].encode() if given[:7].lower() == "bearer " else b""
            if not any(hmac.compare_digest(token, key) for key in keys):
                message = "a valid API key is needed: send Authorization: Bearer <key>"
                return JSONResponse(error_body(message, 401, code="invalid_api_key"), status_code=401)
        return await call_next(request)

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(error_body(exc.message, exc.status, param=exc.param, code=exc.code), status_code=exc.status)

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
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        data = [{"id": name, "object": "model", "created": started, "owned_by": "phi-backends"} for name in models]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatRequest, request: Request) -> Any:
        gen = models.get(body.model)
        if gen is None:
            raise APIError(
                404, f"model {body.model!r} is not served here; GET /v1/models lists: {', '.join(models)}",
                param="model", code="model_not_found",
            )  # fmt: skip
        calls = call_arguments(body, gen)
        if in_flight[body.model] >= max_queue:
            message = f"{body.model} has {max_queue} requests running or waiting, as many as it takes; retry shortly"
            headers = {"Retry-After": str(RETRY_AFTER_S)}
            return JSONResponse(error_body(message, 503, code="overloaded"), status_code=503, headers=headers)
        in_flight[body.model] += 1
        streaming = False
        try:
            if body.stream:
                opened = await open_streams(gen, calls)
                include = body.stream_options is not None and body.stream_options.include_usage
                events = _counted(chat_events(gen, opened, body.model, include_usage=include), in_flight, body.model)
                streaming = True
                return StreamingResponse(events, media_type="text/event-stream")
            outs = await _unless_gone(request, [gen.agenerate(**arguments) for arguments in calls])
            if outs is None:
                return JSONResponse(error_body("the client closed the connection", 499), status_code=499)
            return chat_response(outs, gen, body.model)
        finally:
            if not streaming:  # a stream's events count it until they end
                in_flight[body.model] -= 1

    return app


async def _counted(events: AsyncIterator[str], counts: dict[str, int], model: str) -> AsyncIterator[str]:
    """``events``, with the model's request count taken down when they end (or the client leaves)."""
    try:
        async for event in events:
            yield event
    finally:
        counts[model] -= 1


async def _unless_gone(request: Request, works: Sequence[Awaitable[T]]) -> list[T] | None:
    """The results of ``works`` (run together), or None once the client has disconnected. Whatever
    is still running when one fails or the client leaves is cancelled, which ends its call and
    frees its sequence."""
    tasks = [asyncio.ensure_future(work) for work in works]
    try:
        while True:
            done, pending = await asyncio.wait(tasks, timeout=DISCONNECT_POLL_S, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                error = task.exception()
                if error is not None:
                    raise error
            if not pending:
                return [task.result() for task in tasks]
            if await request.is_disconnected():
                return None
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


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
