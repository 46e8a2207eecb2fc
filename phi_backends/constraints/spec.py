"""What a caller asks for: :class:`Constraint`, checked and compiled to llguidance's grammar
when it is made, so a wrong schema, pattern or grammar is refused before any generation."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConstraintError

__all__ = ["Constraint", "ConstraintKind", "compact_schema"]

ConstraintKind = Literal["json_schema", "json_object", "regex", "grammar", "choice"]
#: The grammar ``json_object`` compiles to: any JSON object, as OpenAI's ``json_object`` mode.
ANY_OBJECT = '{"type": "object"}'
_ECHO = re.compile(r"^\s*(\d+\s*\|.*|[\s^~]*)$")  # llguidance's source echo and caret lines
_WHERE = re.compile(r"^at \d+\(\d+\): ")  # a position in the grammar llguidance wrapped a regex in


@dataclass(frozen=True)
class Constraint:
    """A constraint on a call's text. Make one with a class method::

        Constraint.json_schema({"type": "object", "properties": {...}})   # or a pydantic model class
        Constraint.json_object()          # any JSON object
        Constraint.regex(r"\\d{3}-\\d{4}")
        Constraint.grammar(lark_or_gbnf)  # Lark (llguidance's dialect); GBNF is converted
        Constraint.choice(["red", "green", "blue"])

    ``source`` is what was given (the schema as JSON text, the pattern, the grammar, the choices
    as a JSON list); ``grammar`` is llguidance's compiled form, shared by every call that uses it.
    """

    kind: ConstraintKind
    source: str
    grammar_text: str = field(repr=False, compare=False)
    #: a pydantic model class given to :meth:`json_schema`: :meth:`parse` returns its instance
    model: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def json_schema(cls, schema: Mapping[str, Any] | str | type) -> Constraint:
        """JSON that validates against ``schema`` (a dict, its JSON text, or a pydantic model class)."""
        model = None
        if isinstance(schema, type):
            to_schema = getattr(schema, "model_json_schema", None)
            if to_schema is None:
                raise ConstraintError(
                    f"{schema.__name__} is not a pydantic model class; pass a JSON schema (a dict) or a pydantic BaseModel subclass"
                )
            model, schema = schema, to_schema()
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except ValueError as exc:
                raise ConstraintError(f"the JSON schema is not valid JSON: {exc}; fix the schema text") from None
        if not isinstance(schema, Mapping):
            raise ConstraintError(f"a JSON schema must be a JSON object, got {type(schema).__name__}")
        source = json.dumps(schema)
        return cls("json_schema", source, _compile("json_schema", compact_schema(schema)), model)

    @classmethod
    def json_object(cls) -> Constraint:
        """Any JSON object (OpenAI's ``response_format={"type": "json_object"}``)."""
        return cls("json_object", ANY_OBJECT, _compile("json_object", compact_schema(json.loads(ANY_OBJECT))))

    @classmethod
    def regex(cls, pattern: str) -> Constraint:
        """Text that matches ``pattern`` as a whole (Rust ``regex`` syntax: no look-around, no back-references)."""
        if not isinstance(pattern, str) or not pattern:
            raise ConstraintError("a regex constraint needs a non-empty pattern")
        return cls("regex", pattern, _compile("regex", pattern))

    @classmethod
    def grammar(cls, text: str) -> Constraint:
        """Text the grammar derives from its ``start`` rule: Lark (llguidance's dialect), or GBNF
        (llama.cpp's, rule ``root``), which is converted to Lark."""
        if not isinstance(text, str) or not text.strip():
            raise ConstraintError("a grammar constraint needs the grammar's text")
        return cls("grammar", text, _compile("grammar", text))

    @classmethod
    def choice(cls, options: Sequence[str]) -> Constraint:
        """Exactly one of ``options``."""
        if isinstance(options, str) or not options or not all(isinstance(o, str) and o for o in options):
            raise ConstraintError("a choice constraint needs a list of one or more non-empty strings")
        source = json.dumps(list(options))
        return cls("choice", source, _compile("choice", source))

    @property
    def is_json(self) -> bool:
        return self.kind in ("json_schema", "json_object")

    def parse(self, text: str) -> Any:
        """The value of a complete constrained text: the JSON value (the pydantic instance when a
        model class was given) for a JSON constraint, the text itself otherwise."""
        if not self.is_json:
            return text
        if self.model is not None:
            return self.model.model_validate_json(text)
        return json.loads(text)


def compact_schema(schema: Mapping[str, Any]) -> str:
    """The schema with llguidance told to allow no whitespace but one space after ``,`` and ``:``.

    Its default lets any whitespace in between, and a sampled model (or a small one) can spend its
    whole budget on spaces and newlines: measured on SmolLM2 at temperature 1, two calls of three
    ended by ``max_tokens`` inside whitespace. A caller's own ``x-guidance`` settings win."""
    options = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
    given = schema.get("x-guidance")
    if isinstance(given, Mapping):
        options.update(given)
    return json.dumps({**schema, "x-guidance": options})


def _compile(kind: ConstraintKind, source: str) -> str:
    """llguidance's grammar for ``source``; ConstraintError (one line, where it is wrong) if invalid."""
    from llguidance import LLMatcher, grammar_from

    fmt = {"json_schema": "json_schema", "json_object": "json_schema", "regex": "regex", "grammar": "gbnf"}.get(
        kind, "choice"
    )
    try:
        grammar: str = grammar_from(fmt, source)  # type: ignore[arg-type]
    except (ValueError, TypeError) as exc:
        raise ConstraintError(f"the {_NAMES[kind]} is not valid: {_one_line(str(exc))}") from None
    error = LLMatcher.validate_grammar(grammar)
    if error:
        raise ConstraintError(f"the {_NAMES[kind]} is not valid: {_one_line(error)}")
    return grammar


_NAMES = {
    "json_schema": "JSON schema",
    "json_object": "JSON object constraint",
    "regex": "regex",
    "grammar": "grammar",
    "choice": "choice list",
}


def _one_line(message: str) -> str:
    """llguidance's message without the source it echoes and its caret lines."""
    lines = [_WHERE.sub("", line.strip()) for line in message.splitlines() if not _ECHO.match(line)]
    return "; ".join(line for line in lines if line) or message.strip()
