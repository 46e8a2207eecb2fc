"""``run``'s structured-output flags: at most one constraint, read into a :class:`~phi_backends.Constraint`."""

from __future__ import annotations

import argparse

from ..constraints import Constraint
from .args import read_text_file

__all__ = ["add_constraint_arguments", "read_constraint"]


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
