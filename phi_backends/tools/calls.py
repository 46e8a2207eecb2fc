"""Tool calls: what the model asked for (:class:`ToolCall`), read from its text and written back
into a conversation in the model's own format."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ToolError, short

__all__ = ["ToolCall", "calls_text", "parse_calls"]


@dataclass(frozen=True)
class ToolCall:
    """One function call the model made. ``arguments`` is JSON text, as in OpenAI's API;
    :attr:`args` is its value. ``id`` is made here (``call_`` and 24 hex digits), for the ``tool``
    message that answers it."""

    name: str
    arguments: str
    id: str = field(default_factory=lambda: "call_" + secrets.token_hex(12))

    @property
    def args(self) -> Any:
        """The arguments as a Python value (a dict)."""
        return json.loads(self.arguments)

    def openai(self) -> dict[str, Any]:
        """The call in OpenAI's shape: ``{"id", "type": "function", "function": {"name", "arguments"}}``."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


def parse_calls(body: str) -> tuple[ToolCall, ...] | None:
    """The calls in the text between a tool-call block's markers: a JSON list of
    ``{"name": ..., "arguments": {...}}`` (one such object alone is taken as a list of one), or
    None when it is not that."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    items = value if isinstance(value, list) else [value]
    calls: list[ToolCall] = []
    for item in items:
        if not isinstance(item, dict):
            return None
        name, arguments = item.get("name"), item.get("arguments", {})
        if not isinstance(name, str) or not name or not isinstance(arguments, dict):
            return None
        calls.append(ToolCall(name, json.dumps(arguments, ensure_ascii=False)))
    return tuple(calls) if calls else None


def calls_text(calls: Any, where: str) -> str:
    """A message's ``tool_calls`` as the model writes them: ``[{"name": ..., "arguments": {...}}]``.

    Takes OpenAI's shape (``{"id", "type", "function": {"name", "arguments"}}``, the arguments
    as JSON text or a dict), the flat ``{"name", "arguments"}``, :class:`ToolCall` s, or that
    list already written as JSON text. ToolError names the first call that is none of these.
    """
    if isinstance(calls, str):
        try:
            calls = json.loads(calls)
        except ValueError:
            raise ToolError(f"{where} is text that is not JSON; pass the list of tool calls") from None
    if isinstance(calls, (bytes, Mapping)) or not isinstance(calls, Sequence):
        raise ToolError(f"{where} must be a list of tool calls, got {type(calls).__name__}")
    written = [_call(f"{where}[{index}]", call) for index, call in enumerate(calls)]
    return json.dumps(written)


def _call(where: str, call: Any) -> dict[str, Any]:
    if isinstance(call, ToolCall):
        return {"name": call.name, "arguments": call.args}
    if not isinstance(call, Mapping):
        raise ToolError(f"{where} is a {type(call).__name__}, not a tool call")
    function = call.get("function", call)
    if not isinstance(function, Mapping):
        raise ToolError(f'{where} has a "function" of type {type(function).__name__}; give {{"name", "arguments"}}')
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise ToolError(f"{where} has name {short(name)}; give the function's name")
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            raise ToolError(f"{where} ({name}) has arguments that are not JSON: {short(arguments)}") from None
    if not isinstance(arguments, Mapping):
        raise ToolError(f"{where} ({name}) has arguments of type {type(arguments).__name__}; give a JSON object")
    return {"name": name, "arguments": dict(arguments)}
