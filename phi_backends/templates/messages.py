"""Chat messages: the one shape every template renders, checked once."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from ..errors import ToolError, UsageError, short
from ..tools.calls import calls_text
from ..tools.definitions import check_tools, definitions_text

__all__ = ["KNOWN_END_OF_TURN", "ROLES", "Message", "normalize_messages", "short", "tools_text"]

Message = Mapping[str, Any]
"""One chat message: ``{"role": "system" | "user" | "assistant" | "tool", "content": str}``.

An assistant message may carry ``tool_calls`` (the calls it made, OpenAI's shape, its content
then may be None); a ``tool`` message is a function's result (its ``tool_call_id`` and ``name``
are not shown to the model: no Phi template writes them). A system message may carry ``tools``
(Phi-4-mini's template's own key: the definitions as JSON text); pass tools to a call instead.
"""

ROLES: Final = ("system", "user", "assistant", "tool")

#: End-of-turn token texts looked for in a model's own template source.
KNOWN_END_OF_TURN: Final = ("<|end|>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>")


def normalize_messages(prompt: str | Sequence[Message]) -> list[dict[str, str]]:
    """Return the conversation as fresh ``{"role", "content"}`` dicts, checked.

    A ``str`` becomes one user message. An assistant's ``tool_calls`` are kept as the JSON text
    the model writes (``[{"name": ..., "arguments": {...}}]``), a system message's ``tools`` as
    the definitions' JSON text; other keys are dropped, so every template sees the same input.
    Raises :class:`UsageError` naming the index of the first bad message.
    """
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, Mapping):
        raise UsageError("got a single message, not a list of messages; pass [message] or the prompt as a str")
    if isinstance(prompt, (bytes, bytearray)) or not isinstance(prompt, Sequence):
        raise UsageError(
            f"the prompt must be a str or a list of messages, not {type(prompt).__name__}; "
            "pass text, or [{'role': 'user', 'content': '...'}]"
        )
    if not prompt:
        raise UsageError(
            "there are no messages to render; pass a prompt string or at least one "
            "{'role': 'user', 'content': '...'} message"
        )
    result: list[dict[str, str]] = []
    for index, message in enumerate(prompt):
        if not isinstance(message, Mapping):
            raise UsageError(
                f"message {index} is a {type(message).__name__}, not a mapping; "
                "pass each message as {'role': ..., 'content': ...}"
            )
        if "role" not in message:
            raise UsageError(f"message {index} has no 'role'; give it 'system', 'user', 'assistant' or 'tool'")
        role = message["role"]
        if not isinstance(role, str) or role not in ROLES:
            raise UsageError(f"message {index} has role {short(role)}; use 'system', 'user', 'assistant' or 'tool'")
        calls = message.get("tool_calls") if role == "assistant" else None
        if "content" not in message and not calls:
            raise UsageError(f"message {index} ({role}) has no 'content'; give it a str")
        content = message.get("content")
        if content is None and calls:
            content = ""
        if not isinstance(content, str):
            raise UsageError(
                f"message {index} ({role}) has content of type {type(content).__name__}; pass the content as a str"
            )
        normal = {"role": role, "content": content}
        if calls:
            normal["tool_calls"] = calls_text(calls, f"message {index} (assistant) tool_calls")
        if role == "system" and message.get("tools") is not None:
            normal["tools"] = tools_text(message["tools"], f"message {index} (system) tools")
        result.append(normal)
    return result


def tools_text(tools: Any, where: str) -> str:
    """Function definitions as the prompt shows them (JSON text of ``Tool.definition()`` s)."""
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except ValueError:
            raise ToolError(f"{where} is text that is not JSON; pass the list of function definitions") from None
    try:
        return definitions_text(check_tools(tools))
    except ToolError as exc:
        raise ToolError(f"{where}: {exc}") from None
