"""What a caller gives for tool calling: function definitions and a ``tool_choice``, checked once.

Tools come in OpenAI's shape, ``{"type": "function", "function": {"name", "description",
"parameters"}}``; the flat ``{"name", "description", "parameters"}`` (OpenAI's Responses API,
and what Phi-4-mini's documentation writes) is accepted too. ``parameters`` is a JSON schema of
an object, as OpenAI requires; left out, the function takes no arguments.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from ..errors import ToolError, short

__all__ = ["Tool", "ToolChoice", "ToolChoiceArg", "check_tool_choice", "check_tools", "definitions_text"]

#: OpenAI's rule for function names.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_NO_ARGUMENTS: Mapping[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}

ToolChoiceArg: TypeAlias = "str | Mapping[str, Any] | None"
"""``"auto"``, ``"none"``, ``"required"``, a function's name, or OpenAI's
``{"type": "function", "function": {"name": ...}}``; None is ``"auto"``."""


@dataclass(frozen=True)
class Tool:
    """One function the model may call."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=lambda: dict(_NO_ARGUMENTS), compare=False)

    def definition(self) -> dict[str, Any]:
        """The function as the prompt shows it: ``{"name", "description", "parameters"}``
        (Phi-4-mini's documented format; the description left out when there is none)."""
        shown: dict[str, Any] = {"name": self.name}
        if self.description:
            shown["description"] = self.description
        shown["parameters"] = dict(self.parameters)
        return shown


@dataclass(frozen=True)
class ToolChoice:
    """How the model must use the tools: ``auto`` (it decides), ``none`` (it answers in text),
    ``required`` (it calls one or more), ``function`` (it calls :attr:`name`, once)."""

    mode: Literal["auto", "none", "required", "function"]
    name: str | None = None

    @property
    def enforced(self) -> bool:
        """Whether a constraint makes the model call a tool (``required`` or a named function)."""
        return self.mode in ("required", "function")


AUTO = ToolChoice("auto")


def check_tools(tools: Any) -> tuple[Tool, ...]:
    """``tools`` as :class:`Tool` s, or ToolError naming the first that is not a function definition."""
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
        raise ToolError(
            f"tools must be a list of function definitions, got {type(tools).__name__}; pass "
            '[{"type": "function", "function": {"name": ..., "parameters": {...}}}]'
        )
    checked: list[Tool] = []
    seen: set[str] = set()
    for index, tool in enumerate(tools):
        made = _tool(index, tool)
        if made.name in seen:
            raise ToolError(f"tools[{index}] repeats the function name {made.name!r}; give each function its own name")
        seen.add(made.name)
        checked.append(made)
    return tuple(checked)


def _tool(index: int, tool: Any) -> Tool:
    where = f"tools[{index}]"
    if not isinstance(tool, Mapping):
        raise ToolError(f"{where} is a {type(tool).__name__}, not a function definition; pass a dict")
    if "function" in tool or "type" in tool:
        if tool.get("type") != "function":
            raise ToolError(f"{where} has type {short(tool.get('type'))}; only 'function' tools exist")
        function = tool.get("function")
        if not isinstance(function, Mapping):
            raise ToolError(f'{where} has no "function" object; give {{"name": ..., "parameters": {{...}}}} there')
        where += ".function"
    else:
        function = tool
    name = function.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ToolError(f"{where} has name {short(name)}; a function name is 1 to 64 letters, digits, '_' or '-'")
    description = function.get("description", "")
    if description is None:
        description = ""
    if not isinstance(description, str):
        raise ToolError(f"{where} ({name}) has a description of type {type(description).__name__}; give a str")
    parameters = function.get("parameters", None)
    if parameters is None:
        parameters = _NO_ARGUMENTS
    if not isinstance(parameters, Mapping):
        raise ToolError(
            f"{where} ({name}) has parameters of type {type(parameters).__name__}; give a JSON schema (a dict)"
        )
    if parameters.get("type", "object") != "object":
        raise ToolError(
            f"{where} ({name}) has parameters of type {short(parameters.get('type'))}; "
            'the arguments are a JSON object: give {"type": "object", "properties": {...}}'
        )
    try:
        json.dumps(parameters)
    except (TypeError, ValueError) as exc:
        raise ToolError(f"{where} ({name}) has parameters that are not JSON: {exc}") from None
    return Tool(name, description, dict(parameters))


def definitions_text(tools: Sequence[Tool]) -> str:
    """The definitions as the prompt shows them: JSON text of a list of :meth:`Tool.definition`."""
    return json.dumps([tool.definition() for tool in tools])


def check_tool_choice(choice: ToolChoiceArg, tools: Sequence[Tool]) -> ToolChoice:
    """``choice`` checked against ``tools``; ToolError when it names no tool or asks for one without tools."""
    if choice is None or choice == "auto":
        return AUTO
    if choice == "none":
        return ToolChoice("none")
    names = [tool.name for tool in tools]
    if not names:
        raise ToolError(f"tool_choice is {short(choice)} but no tools are given; pass tools, or leave tool_choice out")
    if choice == "required":
        return ToolChoice("required")
    name: Any = choice
    if isinstance(choice, Mapping):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else choice.get("name")
        if choice.get("type", "function") != "function" or not isinstance(name, str):
            raise ToolError(
                f"tool_choice {short(choice)} is not 'auto', 'none', 'required' or "
                '{"type": "function", "function": {"name": ...}}'
            )
    if not isinstance(name, str):
        raise ToolError(f"tool_choice must be 'auto', 'none', 'required' or a function's name, got {short(choice)}")
    if name not in names:
        raise ToolError(f"tool_choice names the function {name!r}, but the tools define only {', '.join(names)}")
    return ToolChoice("function", name)
