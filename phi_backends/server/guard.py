"""What every HTTP request passes before the app sees it: the API key and the body's size.

One plain ASGI middleware, not Starlette's ``BaseHTTPMiddleware``: that one runs the app in a task
and copies every response chunk through a memory stream, a cost paid per streamed token.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_body

__all__ = ["Guard"]


class Guard:
    """Refuses a request without a valid key (401; ``open_paths`` need none) or with a body larger
    than ``max_body_bytes`` (413), whether the body says its length or comes in chunks. ``observe``
    is told each answered request's path and status (the metrics)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: Sequence[str],
        max_body_bytes: int,
        open_paths: frozenset[str],
        observe: Callable[[str, int], None],
    ) -> None:
        self.app = app
        self.keys = [key.encode() for key in keys]
        self.max_body_bytes = max_body_bytes
        self.open_paths = open_paths
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        status = 500  # what the client sees when the app fails before it answers

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            refusal, receive = await self._check(scope, receive)
            if refusal is not None:
                await refusal(scope, receive, observed)
            else:
                await self.app(scope, receive, observed)
        finally:
            self.observe(path, status)

    async def _check(self, scope: Scope, receive: Receive) -> tuple[JSONResponse | None, Receive]:
        headers = Headers(scope=scope)
        if self.keys and scope["path"] not in self.open_paths:
            given = headers.get("authorization", "")
            token = given[7:].encode() if given[:7].lower() == "bearer " else b""
            if not any(hmac.compare_digest(token, key) for key in self.keys):
                why = "a valid API key is needed: send Authorization: Bearer <key>"
                return _error(why, 401, code="invalid_api_key"), receive
        length = headers.get("content-length")
        if length is not None:  # the server (h11) holds the body to its stated length
            if length.isdigit() and int(length) > self.max_body_bytes:
                return self._too_large(int(length)), receive
            return None, receive
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return None, receive
        # a chunked body says no length: read it here, up to the limit, and hand it on
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                return None, _replaying([message], receive)
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                return self._too_large(None), receive
            if not message.get("more_body", False):
                return None, _replaying([{"type": "http.request", "body": bytes(body), "more_body": False}], receive)

    def _too_large(self, length: int | None) -> JSONResponse:
        size = f"{length} bytes" if length is not None else f"over {self.max_body_bytes} bytes"
        return _error(f"the request body is {size}; this server takes at most {self.max_body_bytes} bytes", 413)


def _error(message: str, status: int, *, code: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, status, code=code), status_code=status)


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    """``receive`` with ``messages`` given first (a body already read)."""
    pending = list(messages)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay
