"""Does a named built-in chat template fit the model it is used with?

A built-in's markup (``<|user|>``, ``<|end|>``, ``<|im_start|>`` ...) means something to a
model only when its vocabulary has each marker as one token; on a model of another family the
markup is split into ordinary text and the model answers with garbage. We warn rather than
refuse: trying a template on a base or fine-tuned model is a legitimate experiment.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable

from ..errors import PhiBackendsWarning
from .builtin import BuiltinTemplate

__all__ = ["foreign_markers", "warn_if_foreign"]

_MARKER = re.compile(r"<\|[^|<>\s]+\|>")


def foreign_markers(template: BuiltinTemplate, vocab_has: Callable[[str], bool]) -> list[str]:
    """The template's markers that are not one token of the vocabulary ``vocab_has`` asks about."""
    markup = template.turn_start.replace("{role}", "user") + template.turn_end + template.generation_prompt
    markers = dict.fromkeys(_MARKER.findall(markup))
    return [m for m in markers if not vocab_has(m)]


def warn_if_foreign(template: object, vocab_has: Callable[[str], bool]) -> None:
    """A :class:`PhiBackendsWarning` when the built-in ``template`` is of another model family."""
    if not isinstance(template, BuiltinTemplate):
        return
    missing = foreign_markers(template, vocab_has)
    if missing:
        warnings.warn(
            f"chat template {template.name!r} does not fit this model: its vocabulary has no "
            f"{', '.join(missing)} token, so the model reads the template's markup as plain text and its "
            'answers will be poor; use the model\'s own template (leave --template out, or template="auto")',
            PhiBackendsWarning,
            stacklevel=3,
        )
