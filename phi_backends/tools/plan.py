"""One call's tool setup (:class:`ToolPlan`): the definitions to render, the markers as this
model's vocabulary spells them, and the constraint that enforces ``required`` or a named function."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..constraints import Constraint
from ..constraints.spec import compact_schema
from ..errors import ConstraintError, ToolError
from .definitions import Tool, ToolChoice, ToolChoiceArg, check_tool_choice, check_tools, definitions_text
from .markup import CONVENTION, ToolMarkup
from .reader import ToolCallReader

__all__ = ["ToolPlan", "plan_tools"]


@dataclass(frozen=True)
class ToolPlan:
    tools: tuple[Tool, ...]
    choice: ToolChoice
    markup: ToolMarkup
    #: the definitions as the prompt shows them (JSON text)
    definitions: str
    #: the control token of the opening and closing call markers, where the vocabulary has one
    open_id: int | None
    close_id: int | None
    #: makes the model call a tool (``required``, a named function); None otherwise
    constraint: Constraint | None
    #: False: one call at most (OpenAI's ``parallel_tool_calls``)
    parallel: bool = True

    def reader(self) -> ToolCallReader | None:
        """What reads the calls out of the text; None under ``tool_choice="none"`` (all text is content)."""
        if self.choice.mode == "none":
            return None
        return ToolCallReader(self.markup, max_calls=None if self.parallel else 1)

    def token_bytes(self, token_bytes: Callable[[int], bytes]) -> Callable[[int], bytes]:
        """``token_bytes`` with the marker control tokens spelled out (engines give control tokens
        no text), so that the reader sees where a block begins and ends."""
        spelled = {
            i: m.encode()
            for i, m in ((self.open_id, self.markup.call_open), (self.close_id, self.markup.call_close))
            if i is not None
        }
        if not spelled or self.choice.mode == "none":
            return token_bytes
        return lambda token: spelled.get(token) or token_bytes(token)

    def banned(self) -> tuple[int, ...]:
        """Under ``tool_choice="none"``, the opening marker's control token (the model cannot begin a call)."""
        return (self.open_id,) if self.choice.mode == "none" and self.open_id is not None else ()


def plan_tools(
    tools: Sequence[Any] | None,
    tool_choice: ToolChoiceArg,
    markup: ToolMarkup | None,
    marker_id: Callable[[str], int | None],
    *,
    parallel: bool = True,
) -> ToolPlan | None:
    """The plan for a call given ``tools`` and ``tool_choice`` (None when it has no tools).

    ``markup``: the template's own tool format (None: the convention); ``marker_id(text)``: the
    control token that is ``text`` in this vocabulary, or None. ``parallel=False``: one call at
    most (enforced by the grammar under ``required``; otherwise the turn ends after the first).
    """
    checked = check_tools(tools) if tools is not None else ()
    choice = check_tool_choice(tool_choice, checked)
    if not checked:
        return None
    markup = markup or CONVENTION
    open_id, close_id = marker_id(markup.call_open), marker_id(markup.call_close)
    definitions = definitions_text(checked)
    constraint = None
    if choice.enforced:
        chosen = [tool for tool in checked if choice.mode == "required" or tool.name == choice.name]
        schemas = json.dumps([[tool.name, tool.parameters] for tool in chosen])
        constraint = _enforcing(
            schemas,
            choice.mode == "function" or not parallel,
            _terminal(open_id, markup.call_open),
            _terminal(close_id, markup.call_close),
        )
    return ToolPlan(checked, choice, markup, definitions, open_id, close_id, constraint, parallel)


def _terminal(token: int | None, text: str) -> str:
    """A marker in llguidance's Lark: its control token by id, or its text."""
    return f"<[{token}]>" if token is not None else json.dumps(text)


@functools.lru_cache(maxsize=64)
def _enforcing(schemas: str, one: bool, opening: str, closing: str) -> Constraint:
    """The grammar of one tool-call block calling the given functions (``[[name, parameters], ...]``
    as JSON text: a cache key), at least one call, exactly one with ``one``."""
    items = [
        {
            "type": "object",
            "properties": {"name": {"const": name}, "arguments": parameters},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for name, parameters in json.loads(schemas)
    ]
    schema: dict[str, Any] = {
        "type": "array",
        "items": items[0] if len(items) == 1 else {"anyOf": items},
        "minItems": 1,
    }
    if one:
        schema["maxItems"] = 1
    grammar = f"start: {opening} calls {closing}\ncalls: %json {compact_schema(schema)}\n"
    try:
        return Constraint.grammar(grammar)
    except ConstraintError as exc:
        reason = str(exc).removeprefix("the grammar is not valid: ")
        raise ToolError(f"the tools' parameters cannot be enforced as JSON schemas: {reason}") from None
