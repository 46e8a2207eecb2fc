"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}`` with the right status."""

from __future__ import annotations

from typing import Any

from ..errors import ContextLengthError, PhiBackendsError, UsageError

__all__ = ["APIError", "error_body", "status_of"]


class APIError(Exception):
    """A request the server answers with an error: its status, message and the field it names."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers


def error_body(message: str, status: int, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    kind = "invalid_request_error" if status < 500 else "server_error"
    if status == 401:
        kind = "authentication_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def status_of(error: PhiBackendsError) -> tuple[int, str | None]:
    """The HTTP status and OpenAI code for one of phi-backends' errors."""
    if isinstance(error, ContextLengthError):
        return 400, "context_length_exceeded"
    if isinstance(error, UsageError):
        return 400, None
    return 500, None  # a RuntimeFailure, or any other: the engine or the machine failed
