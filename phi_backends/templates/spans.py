"""Where the messages' contents land in a rendered prompt.

The prompt ids must keep message content as text (a user typing ``<|im_end|>`` must not end a
turn), so the tokenizer has to know which characters of the rendered prompt came from a message
and which from the template. A built-in template knows that as it builds the text. A model's
own Jinja template is a program we do not control: it is rendered a second time with every
content wrapped in two marker characters that occur nowhere else (from Unicode's private use
area), and the markers' positions are the spans. That second render is used only if, with the
markers taken out, it is the first render character for character: a template that looks at the
content (``content.startswith(...)``, ``content | trim``, ``content[1:]``) may do something else
with the markers there, and then the spans are not trusted (None).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeAlias

from ..errors import TemplateError

__all__ = ["Span", "marked_spans", "searched_spans", "strip_markers"]

Span: TypeAlias = "tuple[int, int]"
"""``(start, end)`` of one content in the rendered text, ``text[start:end]``."""

_PRIVATE_USE = range(0xE000, 0xF900)


def _markers(used: set[str]) -> tuple[str, str] | None:
    free = (chr(code) for code in _PRIVATE_USE if chr(code) not in used)
    opening, closing = next(free, None), next(free, None)
    return (opening, closing) if opening is not None and closing is not None else None


def strip_markers(marked: str, opening: str, closing: str) -> tuple[str, list[Span]] | None:
    """``marked`` without the markers, and the span each opening/closing pair enclosed;
    None when they do not pair up (the template cut a content, or nested one in another)."""
    out: list[str] = []
    spans: list[Span] = []
    length = 0
    start: int | None = None
    at = 0
    for index, char in enumerate(marked):
        if char != opening and char != closing:
            continue
        piece = marked[at:index]
        out.append(piece)
        length += len(piece)
        at = index + 1
        if char == opening:
            if start is not None:
                return None
            start = length
        else:
            if start is None:
                return None
            spans.append((start, length))
            start = None
    if start is not None:
        return None
    out.append(marked[at:])
    return "".join(out), spans


def marked_spans(
    conversation: Sequence[dict[str, str]],
    text: str,
    render: Callable[[list[dict[str, str]]], str],
    *,
    avoid: str = "",
) -> list[Span] | None:
    """The spans of the contents in ``text`` (``render(conversation)``), found by rendering again
    with each content wrapped in markers; None when that render is not ``text`` once the markers
    are out. ``avoid``: other text the template may write (its source)."""
    used = set(avoid).union(*(m["content"] for m in conversation))
    markers = _markers(used)
    if markers is None:
        return None
    opening, closing = markers
    wrapped = [{**m, "content": f"{opening}{m['content']}{closing}"} for m in conversation]
    try:
        marked = render(wrapped)
    except TemplateError:
        return None
    stripped = strip_markers(marked, opening, closing)
    if stripped is None or stripped[0] != text:
        return None
    return stripped[1]


def searched_spans(contents: Sequence[str], text: str) -> tuple[list[Span], list[str]]:
    """Every occurrence in ``text`` of each of ``contents`` (or of it stripped of surrounding
    whitespace, as templates that ``trim`` write it), and the contents found nowhere."""
    spans: list[Span] = []
    missing: list[str] = []
    for content in contents:
        found = False
        for needle in dict.fromkeys((content, content.strip())):
            if not needle:
                continue
            at = text.find(needle)
            while at >= 0:
                found = True
                spans.append((at, at + len(needle)))
                at = text.find(needle, at + 1)
            if found:
                break
        if not found:
            missing.append(content)
    return spans, missing
