"""``run``'s structured-output flags: at most one constraint, read into a :class:`~phi_backends.Constraint`,
and the tools the model may call (``--tools FILE``, ``--tool-choice``)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..constraints import Constraint
from ..errors import ToolError, UsageError
from ..tools import check_tool_choice, check_tools
from .args import read_text_file

__all__ = ["add_constraint_arguments", "read_constraint", "read_tools"]


def add_constraint_arguments(run: argparse.ArgumentParser) -> None:
    group = run.add_argument_group("structured output (one of; docs/structured-output.md)")
    one = group.add_mutually_exclusive_group()
    one.add_argument(
        "--json-schema", metavar="FILE", default=None, help="JSON that validates against the schema in FILE"
    )
    one.add_argument(
        "--json-object",
        action="store_true",
        help="any JSON object (OpenAI's json_object mode; --json is the output format)",
    )
    one.add_argument("--regex", metavar="PATTERN", default=None, help="text that matches PATTERN as a whole")
    one.add_argument("--grammar", metavar="FILE", default=None, help="text the grammar in FILE derives (Lark or GBNF)")
    one.add_argument(
        "--choice", metavar="TEXT", action="append", default=None, help="one of the given strings (repeat the flag)"
    )
    tools = run.add_argument_group("tool calls (docs/structured-output.md#tool-calls)")
    tools.add_argument(
        "--tools", metavar="FILE", default=None, help="the functions the model may call: a JSON list in OpenAI's shape"
    )
    tools.add_argument(
        "--tool-choice",
        metavar="CHOICE",
        default=None,
        help="auto (default), none, required, or a function's name (required and a name are enforced)",
    )


def read_constraint(args: argparse.Namespace) -> Constraint | None:
    """The constraint the flags ask for, checked now (ConstraintError names what is wrong)."""
    if args.json_schema is not None:
        return Constraint.json_schema(read_text_file(args.json_schema, "JSON schema file"))
    if args.json_object:
        return Constraint.json_object()
    if args.regex is not None:
        return Constraint.regex(args.regex)
    if args.grammar is not None:
        return Constraint.grammar(read_text_file(args.grammar, "grammar file"))
    if args.choice is not None:
        return Constraint.choice(args.choice)
    return None


def read_tools(args: argparse.Namespace) -> tuple[list[Any] | None, str | None]:
    """The ``--tools`` file's definitions and the ``--tool-choice``, checked now (ToolError)."""
    if args.tools is None:
        if args.tool_choice is not None:
            check_tool_choice(args.tool_choice, ())  # "auto" and "none" pass; anything else names no tool
        return None, args.tool_choice
    if args.raw:
        raise UsageError("--tools needs a chat template to show them to the model; drop --raw")
    text = read_text_file(args.tools, "tools file")
    try:
        tools = json.loads(text)
    except ValueError as exc:
        raise ToolError(
            f"tools file {args.tools} is not JSON ({exc}); give a JSON list of function definitions"
        ) from None
    check_tool_choice(args.tool_choice, check_tools(tools))
    return tools, args.tool_choice
