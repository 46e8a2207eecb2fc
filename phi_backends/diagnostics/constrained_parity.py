"""Parity under constraints: a constrained greedy call should give the same text on every backend.

The constraint is the core's (one llguidance matcher, one mask in the logits step), so on the
same weights every engine picks from the same allowed tokens; what can still differ is the
engines' arithmetic, as for unconstrained greedy continuations. ``phi-backends parity
--constrained`` runs :data:`CONSTRAINED_PROMPTS` (a JSON schema of each common shape, a regex, a
grammar, a choice and a forced tool call) on every backend, greedy, and reports on how many the
texts (and tool calls) are identical everywhere and whether each one parsed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..sampling import SamplingConfig

if TYPE_CHECKING:
    from ..generator import Generator

__all__ = ["CONSTRAINED_PROMPTS", "ConstrainedFigure", "ConstrainedPrompt", "ConstrainedResult", "run_constrained"]

Kind = Literal["json_schema", "regex", "grammar", "choice", "tool_call"]


@dataclass(frozen=True)
class ConstrainedPrompt:
    """A prompt and what holds its answer: a constraint's kind and source, or a tool to call."""

    prompt: str
    kind: Kind
    spec: Any

    def call_arguments(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`Generator.generate` that apply it."""
        from ..constraints import Constraint

        if self.kind == "tool_call":
            return {"tools": [self.spec], "tool_choice": self.spec["function"]["name"]}
        make = {"json_schema": Constraint.json_schema, "regex": Constraint.regex, "grammar": Constraint.grammar}
        return {"constraint": make[self.kind](self.spec) if self.kind in make else Constraint.choice(self.spec)}


CONSTRAINED_PROMPTS: tuple[ConstrainedPrompt, ...] = (
    ConstrainedPrompt(
        "Describe a hockey player.",
        "json_schema",
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 20},
                "number": {"type": "integer", "minimum": 1, "maximum": 99},
                "position": {"enum": ["goalie", "defence", "forward"]},
            },
            "required": ["name", "number", "position"],
            "additionalProperties": False,
        },
    ),
    ConstrainedPrompt(
        "Name three hockey teams.",
        "json_schema",
        {"type": "array", "items": {"type": "string", "maxLength": 16}, "minItems": 3, "maxItems": 3},
    ),
    ConstrainedPrompt(
        "Score of the last game?",
        "json_schema",
        {
            "type": "object",
            "properties": {
                "home": {"type": "integer", "minimum": 0, "maximum": 15},
                "away": {"type": "integer", "minimum": 0, "maximum": 15},
                "overtime": {"type": "boolean"},
            },
            "required": ["home", "away", "overtime"],
            "additionalProperties": False,
        },
    ),
    ConstrainedPrompt("A phone number for the rink:", "regex", r"[0-9]{3}-[0-9]{3}-[0-9]{4}"),
    ConstrainedPrompt(
        "Which way to the rink?", "grammar", 'start: "go " direction\ndirection: "north" | "south" | "east" | "west"'
    ),
    ConstrainedPrompt("Which team wins the cup?", "choice", ["Montreal", "Toronto", "Boston", "New York Rangers"]),
    ConstrainedPrompt(
        "What is the weather in Oslo?",
        "tool_call",
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city today",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string", "maxLength": 20}, "unit": {"enum": ["C", "F"]}},
                    "required": ["city", "unit"],
                    "additionalProperties": False,
                },
            },
        },
    ),
)


@dataclass(frozen=True)
class ConstrainedResult:
    """One backend's constrained greedy answer to one prompt."""

    text: str  # the text, or the tool calls as "name(arguments)" lines
    finish_reason: str
    parsed: bool  # the constraint's value was read (or the tool call made)


@dataclass(frozen=True)
class ConstrainedFigure:
    prompts: tuple[ConstrainedPrompt, ...]
    template: str
    max_tokens: int
    results: Mapping[str, tuple[ConstrainedResult, ...]]

    @property
    def identical(self) -> int:
        """Prompts whose answer is the same text (or the same tool calls) on every backend."""
        columns = zip(*self.results.values(), strict=True)
        return sum(len({(r.text, r.finish_reason) for r in column}) == 1 for column in columns)

    @property
    def unparsed(self) -> list[str]:
        """``backend #prompt`` for every answer that did not parse."""
        return [f"{b} #{i + 1}" for b, rs in self.results.items() for i, r in enumerate(rs) if not r.parsed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "template": self.template,
            "max_tokens": self.max_tokens,
            "identical": self.identical,
            "total": len(self.prompts),
            "unparsed": self.unparsed,
            "prompts": [{"prompt": p.prompt, "kind": p.kind, "spec": p.spec} for p in self.prompts],
            "results": {
                b: [{"text": r.text, "finish_reason": r.finish_reason, "parsed": r.parsed} for r in rs]
                for b, rs in self.results.items()
            },
        }


def run_constrained(
    generators: Mapping[str, Generator], prompts: Sequence[ConstrainedPrompt], *, template: str, max_tokens: int
) -> ConstrainedFigure:
    """Each prompt's constrained greedy answer on each backend."""
    config = SamplingConfig(temperature=0.0, repeat_penalty=1.0, max_tokens=max_tokens)
    results: dict[str, tuple[ConstrainedResult, ...]] = {}
    for name, gen in generators.items():
        answers = []
        for item in prompts:
            out = gen.generate(item.prompt, config, template=template, **item.call_arguments())
            if item.kind == "tool_call":
                text = "\n".join(f"{c.name}({c.arguments})" for c in out.tool_calls)
                answers.append(ConstrainedResult(text, out.finish_reason, bool(out.tool_calls)))
            else:
                answers.append(ConstrainedResult(out.text, out.finish_reason, out.value is not None))
        results[name] = tuple(answers)
    return ConstrainedFigure(tuple(prompts), template, max_tokens, results)
