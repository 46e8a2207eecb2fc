"""How a model family writes tools: into its prompt (the definitions, the calls it made, their
results) and into its answers (the calls it makes now).

* **Phi-4-mini** (:data:`PHI4_MINI`), as its published template and model card do: the
  definitions go in the system turn, ``<|system|>{content}<|tool|>[...]<|/tool|><|end|>``; the
  model answers ``<|tool_call|>[{"name": ..., "arguments": {...}}]<|/tool_call|>``; a result is a
  ``tool`` turn, ``<|tool|>{content}<|end|>`` (the template writes every role as ``<|role|>``).
  The template renders these itself (:class:`~phi_backends.templates.BuiltinTemplate`), so the
  markers are control tokens and the JSON between them is text.
* **Every other family** (Phi-3, Phi-3.5, Phi-4, ChatML, a model's own Jinja template) has no tool
  format, so phi-backends uses one documented convention (:data:`CONVENTION`, the Hermes / Qwen
  style, in plain text): the definitions are appended to the system message with an instruction,
  the model answers ``<tool_call>[...]</tool_call>``, and a result is a user turn holding
  ``<tool_response>{content}</tool_response>``. :func:`plain_conversation` rewrites the
  conversation that way before the template renders it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["CONVENTION", "DEFAULT_SYSTEM", "PHI4_MINI", "ToolMarkup", "plain_conversation", "with_tools"]

#: The system message added when tools are given and the conversation has none (the one in
#: Phi-4-mini's model card: its template writes tools only into a system turn).
DEFAULT_SYSTEM: Final = "You are a helpful assistant with some tools."


@dataclass(frozen=True)
class ToolMarkup:
    """The markers a family puts around tool definitions and around the calls it makes."""

    name: str
    call_open: str
    call_close: str
    definitions_open: str = ""
    definitions_close: str = ""
    result_open: str = ""
    result_close: str = ""


PHI4_MINI: Final = ToolMarkup("phi4-mini", "<|tool_call|>", "<|/tool_call|>", "<|tool|>", "<|/tool|>")
CONVENTION: Final = ToolMarkup(
    "convention", "<tool_call>", "</tool_call>", result_open="<tool_response>", result_close="</tool_response>"
)

#: What the convention appends to the system message, before the definitions' JSON.
INSTRUCTION: Final = "You can call these functions; each one's parameters are the JSON schema of its arguments:\n"
#: ... and after it.
HOW_TO_CALL: Final = (
    '\nTo call functions, answer with only <tool_call>[{"name": "the function\'s name", "arguments": {...}}]</tool_call>. '
    "Each result comes back as <tool_response>...</tool_response>."
)


def with_tools(conversation: list[dict[str, str]], definitions: str) -> list[dict[str, str]]:
    """``conversation`` with the tool definitions (JSON text) on its system message, one
    (:data:`DEFAULT_SYSTEM`) added in front when it has none."""
    if conversation and conversation[0]["role"] == "system":
        return [{**conversation[0], "tools": definitions}, *conversation[1:]]
    return [{"role": "system", "content": DEFAULT_SYSTEM, "tools": definitions}, *conversation]


def plain_conversation(conversation: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """The conversation with its tools written by :data:`CONVENTION` into plain system, user and
    assistant messages (consecutive tool results share one user turn), for a template that has
    no tool format of its own. A conversation without tools comes back as it was."""
    if not any(m["role"] == "tool" or "tools" in m or "tool_calls" in m for m in conversation):
        return list(conversation)
    c = CONVENTION
    plain: list[dict[str, str]] = []
    for message in conversation:
        role, content = message["role"], message["content"]
        if "tools" in message:
            content = f"{content}\n\n" if content else ""
            content += INSTRUCTION + message["tools"] + HOW_TO_CALL
        if "tool_calls" in message:
            content += c.call_open + message["tool_calls"] + c.call_close
        if role == "tool":
            result = c.result_open + content + c.result_close
            if plain and "from_tool" in plain[-1]:
                plain[-1]["content"] += "\n" + result
                continue
            plain.append({"role": "user", "content": result, "from_tool": ""})
            continue
        plain.append({"role": role, "content": content})
    for message in plain:
        message.pop("from_tool", None)
    return plain
