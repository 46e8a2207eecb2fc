"""JSON schemas, patterns and grammars the constraint tests run on every backend.

Each schema is bounded (string lengths, array sizes, number ranges) the way a caller would
bound it, so that even a random-weight model ends its object within the tests' token budget;
the schemas still cover nested objects, arrays with bounds, enums, numbers with ranges,
required and optional keys and strings with patterns.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CHOICES", "GRAMMARS", "REGEXES", "SCHEMAS"]

_NAME = {"type": "string", "maxLength": 12}

SCHEMAS: list[dict[str, Any]] = [
    {"type": "object", "properties": {"name": _NAME}, "required": ["name"], "additionalProperties": False},
    {
        "type": "object",
        "properties": {"age": {"type": "integer", "minimum": 0, "maximum": 120}},
        "required": ["age"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {"price": {"type": "number", "minimum": 0, "maximum": 1000}},
        "required": ["price"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "note": {"type": "null"}},
        "required": ["ok", "note"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {"colour": {"enum": ["red", "green", "blue"]}},
        "required": ["colour"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}},
        "required": ["code"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {"tags": {"type": "array", "items": _NAME, "minItems": 1, "maxItems": 3}},
        "required": ["tags"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "scores": {
                "type": "array",
                "items": {"type": "integer", "minimum": -5, "maximum": 5},
                "minItems": 2,
                "maxItems": 4,
            }
        },
        "required": ["scores"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "player": {
                "type": "object",
                "properties": {"name": _NAME, "number": {"type": "integer", "minimum": 1, "maximum": 99}},
                "required": ["name", "number"],
                "additionalProperties": False,
            }
        },
        "required": ["player"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {"name": _NAME, "nickname": _NAME},
        "required": ["name"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "a": {"type": "integer", "minimum": 0, "maximum": 9},
            "b": {"type": "integer", "minimum": 0, "maximum": 9},
        },
        "required": [],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {"when": {"type": "string", "pattern": "^20[0-9]{2}-[01][0-9]-[0-3][0-9]$"}},
        "required": ["when"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "level": {"type": "string", "enum": ["low", "mid", "high"]},
            "value": {"type": "integer", "minimum": 0, "maximum": 3},
        },
        "required": ["level", "value"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "team": {
                "type": "object",
                "properties": {
                    "name": _NAME,
                    "players": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 99}},
                            "required": ["n"],
                            "additionalProperties": False,
                        },
                        "minItems": 1,
                        "maxItems": 2,
                    },
                },
                "required": ["name", "players"],
                "additionalProperties": False,
            }
        },
        "required": ["team"],
        "additionalProperties": False,
    },
    {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 100}, "minItems": 1, "maxItems": 5},
    {"type": "string", "maxLength": 16},
    {"type": "integer", "minimum": -1000, "maximum": 1000},
    {"enum": ["yes", "no", 1, None]},
    {
        "type": "object",
        "properties": {
            "id": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 999}, {"type": "string", "maxLength": 6}]}
        },
        "required": ["id"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {"ratio": {"type": "number", "minimum": 0, "maximum": 1}, "label": {"const": "fixed"}},
        "required": ["ratio", "label"],
        "additionalProperties": False,
    },
    {
        "$defs": {
            "point": {
                "type": "object",
                "properties": {
                    "x": {"type": "integer", "minimum": 0, "maximum": 9},
                    "y": {"type": "integer", "minimum": 0, "maximum": 9},
                },
                "required": ["x", "y"],
                "additionalProperties": False,
            }
        },
        "type": "object",
        "properties": {"from": {"$ref": "#/$defs/point"}, "to": {"$ref": "#/$defs/point"}},
        "required": ["from", "to"],
        "additionalProperties": False,
    },
]

#: (pattern, a Python ``re`` pattern the whole text must match)
REGEXES: list[str] = [
    r"[0-9]{3}-[0-9]{4}",
    r"(yes|no|maybe)",
    r"[a-z]{1,8}@[a-z]{1,8}\.(com|org)",
    r"-?[0-9]{1,4}\.[0-9]{2}",
]

#: (grammar, a Python ``re`` pattern the text it derives matches); one Lark, one GBNF
GRAMMARS: list[tuple[str, str]] = [
    ('start: "go " direction\ndirection: "north" | "south" | "east" | "west"', r"go (north|south|east|west)"),
    ('root ::= "(" digit ("+" digit){0,3} ")"\ndigit ::= [0-9]', r"\([0-9](\+[0-9]){0,3}\)"),
]

CHOICES: list[str] = ["Montreal", "Toronto", "Boston", "New York Rangers"]

#: Function definitions for the tool-call tests, in OpenAI's shape: bounded arguments, so that a
#: random-weight model's call ends well within ``max_tokens``.
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 8},
                    "unit": {"enum": ["C", "F"]},
                },
                "required": ["city", "unit"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "add",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99}},
                "required": ["a"],
                "additionalProperties": False,
            },
        },
    },
    {"type": "function", "function": {"name": "stop_timer", "description": "No arguments"}},
]
#: Each tool's parameters schema, by name (what a call's arguments must validate against).
TOOL_SCHEMAS: dict[str, dict[str, Any]] = {
    tool["function"]["name"]: tool["function"].get("parameters", {"type": "object", "additionalProperties": False})
    for tool in TOOLS
}
