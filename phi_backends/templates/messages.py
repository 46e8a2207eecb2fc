"""Chat messages: the one shape every template renders, checked once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from ..errors import UsageError, short

__all__ = ["KNOWN_END_OF_TURN", "ROLES", "Message", "normalize_messages", "short"]

Message = Mapping[str, str]
"""One chat message: ``{"role": "system" | "user" | "assistant", "content": str}``."""

ROLES: Final = ("system", "user", "assistant")

#: End-of-turn token texts looked for in a model's own template source.
KNOWN_END_OF_TURN: Final = ("<|end|>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>")


def normalize_messages(prompt: str | Sequence[Message]) -> list[dict[str, str]]:
    """Return the conversation as fresh ``{"role", "content"}`` dicts, checked.

    A ``str`` becomes one user message. Keys other than ``role`` and ``content`` are dropped,
    so every template sees the same input. Raises :class:`UsageError` naming the index of the
    first bad message.
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
            raise UsageError(f"message {index} has no 'role'; give it 'system', 'user' or 'assistant'")
        role = message["role"]
        if not isinstance(role, str) or role not in ROLES:
            raise UsageError(f"message {index} has role {short(role)}; use 'system', 'user' or 'assistant'")
        if "content" not in message:
            raise UsageError(f"message {index} ({role}) has no 'content'; give it a str")
        content = message["content"]
        if not isinstance(content, str):
            raise UsageError(
                f"message {index} ({role}) has content of type {type(content).__name__}; pass the content as a str"
            )
        result.append({"role": role, "content": content})
    return result
