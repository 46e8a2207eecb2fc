"""Chat templates: one place that turns a conversation into prompt text for every engine.

Every backend feeds its engine token ids made from ONE rendered string, so the prompt format
lives here and nowhere else. Two kinds of template exist:

* **Built-ins** (:data:`BUILTIN_TEMPLATES`), plain Python string building, for the model
  families phi-backends knows. Each renders exactly what the published Hugging Face
  ``chat_template`` of the model renders, **without the BOS token**:

  ============  ==========================================================================
  ``phi3``      Phi-3-mini-4k/128k-instruct: ``<|{role}|>\\n{content}<|end|>\\n`` per message,
                generation prompt ``<|assistant|>\\n``
  ``phi3.5``    Phi-3.5-mini-instruct: the same, but a system message with empty content is
                left out (the published template tests ``message['content']``)
  ``phi4-mini`` Phi-4-mini-instruct: ``<|{role}|>{content}<|end|>``, generation prompt
                ``<|assistant|>`` (no newlines anywhere)
  ``phi4``      Phi-4 (14B): ``<|im_start|>{role}<|im_sep|>{content}<|im_end|>``, generation
                prompt ``<|im_start|>assistant<|im_sep|>``
  ``chatml``    ``<|im_start|>{role}\\n{content}<|im_end|>\\n``, generation prompt
                ``<|im_start|>assistant\\n``; no default system message is added
  ============  ==========================================================================

  With ``add_generation_prompt=False`` the published Phi-3, Phi-3.5 and Phi-4-mini templates
  end the text with the EOS token text ``<|endoftext|>`` instead of a generation prompt; the
  built-ins do the same. Phi-4 and ChatML end with the last message.

* **The model file's own template** (:func:`jinja_template`, from
  :mod:`phi_backends.templates.sandbox` and re-exported here), for everything else. Templates
  inside model files are untrusted input, so they are rendered in a bounded Jinja sandbox;
  that module's docstring lists the bounds, each turning into a one-line :class:`TemplateError`.

BOS: the tokenizer adds BOS, so no rendered text starts with it. The built-ins never write it;
a model's own template that writes ``{{ bos_token }}`` first has that BOS text removed once
from the start of the result. The BOS text is only removed when the template uses the
``bos_token`` variable: SmolLM2's BOS text is ``<|im_start|>``, which its template writes
literally and which must stay.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

from ..errors import TemplateError, UsageError
from ..tools.markup import PHI4_MINI as PHI4_MINI_TOOLS
from ..tools.markup import ToolMarkup, plain_conversation
from .messages import Message, normalize_messages
from .messages import short as _short
from .sandbox import jinja_template
from .spans import Span

__all__ = ["BUILTIN_TEMPLATES", "BuiltinTemplate", "ChatTemplate", "detect_template", "get_template"]

# --------------------------------------------------------------------------------------------
# The interface and the built-ins


@runtime_checkable
class ChatTemplate(Protocol):
    """Turns a conversation into prompt text (without BOS) for one model family."""

    @property
    def name(self) -> str:
        """The template's name (a key of :data:`BUILTIN_TEMPLATES`, or the model's name)."""
        ...

    @property
    def end_of_turn(self) -> tuple[str, ...]:
        """Token texts that end an assistant turn; generation stops at any of them."""
        ...

    def render(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> str:
        """Render ``messages``; with ``add_generation_prompt`` end ready for the reply."""
        ...


@dataclass(frozen=True, repr=False)
class BuiltinTemplate:
    """A published chat format rebuilt with plain string operations (fast; no Jinja)."""

    name: str
    end_of_turn: tuple[str, ...]
    turn_start: str
    """Text before each message's content; ``{role}`` is replaced by the role."""
    turn_end: str
    generation_prompt: str
    closing: str
    """Written instead of the generation prompt when ``add_generation_prompt`` is False."""
    skip_empty_system: bool = False
    description: str = ""
    #: the family's own tool format; None: tools are written by the documented convention
    #: (:func:`phi_backends.tools.markup.plain_conversation`)
    tool_markup: ToolMarkup | None = None

    def __repr__(self) -> str:
        return f"BuiltinTemplate({self.name!r})"

    def render(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> str:
        return self.render_with_spans(messages, add_generation_prompt=add_generation_prompt)[0]

    def render_with_spans(
        self, messages: Sequence[Message], *, add_generation_prompt: bool = True
    ) -> tuple[str, list[Span]]:
        """The rendered text, and where each content written in it starts and ends (the tool
        definitions and tool calls a message carries count as content: they are the caller's text)."""
        parts: list[str] = []
        spans: list[Span] = []
        length = 0
        conversation = normalize_messages(messages)
        markup = self.tool_markup
        if markup is None:
            conversation = plain_conversation(conversation)
        for message in conversation:
            role, content = message["role"], message["content"]
            if self.skip_empty_system and role == "system" and not content and "tools" not in message:
                continue
            pieces = [(self.turn_start.replace("{role}", role), False), (content, True)]
            if markup is not None and "tools" in message:
                pieces += [
                    (markup.definitions_open, False),
                    (message["tools"], True),
                    (markup.definitions_close, False),
                ]
            if markup is not None and "tool_calls" in message:
                pieces += [(markup.call_open, False), (message["tool_calls"], True), (markup.call_close, False)]
            pieces.append((self.turn_end, False))
            for text, is_content in pieces:
                if is_content:
                    spans.append((length, length + len(text)))
                parts.append(text)
                length += len(text)
        parts.append(self.generation_prompt if add_generation_prompt else self.closing)
        return "".join(parts), spans


_PHI3_EOT: Final = ("<|end|>", "<|endoftext|>", "<|assistant|>")

PHI3: Final = BuiltinTemplate(
    name="phi3",
    end_of_turn=_PHI3_EOT,
    turn_start="<|{role}|>\n",
    turn_end="<|end|>\n",
    generation_prompt="<|assistant|>\n",
    closing="<|endoftext|>",
    description="Phi-3-mini-4k-instruct, Phi-3-mini-128k-instruct",
)
PHI3_5: Final = BuiltinTemplate(
    name="phi3.5",
    end_of_turn=_PHI3_EOT,
    turn_start="<|{role}|>\n",
    turn_end="<|end|>\n",
    generation_prompt="<|assistant|>\n",
    closing="<|endoftext|>",
    skip_empty_system=True,
    description="Phi-3.5-mini-instruct",
)
PHI4_MINI: Final = BuiltinTemplate(
    name="phi4-mini",
    end_of_turn=("<|end|>", "<|endoftext|>"),
    turn_start="<|{role}|>",
    turn_end="<|end|>",
    generation_prompt="<|assistant|>",
    closing="<|endoftext|>",
    description="Phi-4-mini-instruct",
    tool_markup=PHI4_MINI_TOOLS,
)
PHI4: Final = BuiltinTemplate(
    name="phi4",
    end_of_turn=("<|im_end|>", "<|endoftext|>"),
    turn_start="<|im_start|>{role}<|im_sep|>",
    turn_end="<|im_end|>",
    generation_prompt="<|im_start|>assistant<|im_sep|>",
    closing="",
    description="Phi-4 (14B)",
)
CHATML: Final = BuiltinTemplate(
    name="chatml",
    end_of_turn=("<|im_end|>", "<|endoftext|>"),
    turn_start="<|im_start|>{role}\n",
    turn_end="<|im_end|>\n",
    generation_prompt="<|im_start|>assistant\n",
    closing="",
    description="ChatML (no default system message)",
)

BUILTIN_TEMPLATES: Final[Mapping[str, ChatTemplate]] = types.MappingProxyType(
    {t.name: t for t in (PHI3, PHI3_5, PHI4_MINI, PHI4, CHATML)}
)


def _name_key(name: str) -> str:
    return re.sub(r"[\s_-]+", "", name).lower()


def get_template(name: str) -> ChatTemplate:
    """Return the built-in template ``name`` (case, ``-`` and ``_`` do not matter).

    Raises :class:`UsageError` listing the known names, with the closest one suggested.
    """
    key = _name_key(name)
    for known_name, template in BUILTIN_TEMPLATES.items():
        if _name_key(known_name) == key:
            return template
    known = ", ".join(BUILTIN_TEMPLATES)
    close = difflib.get_close_matches(name.strip().lower(), list(BUILTIN_TEMPLATES), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UsageError(f"unknown chat template {_short(name)}; {hint}known templates: {known}")


# --------------------------------------------------------------------------------------------
# Recognising our families

# A role marker followed by a newline: '<|user|>\n', '<|user|>' + '\n', '|>' + '\n'. Matches
# the backslash escape and a real newline (JSON-decoded sources hold the latter).
_ROLE_THEN_NEWLINE: Final = re.compile(
    r"""(?:<\|(?:system|user|assistant)\|>|\+\s*['"]\|>)['"]?(?:\s*\+\s*['"])?(?:\\n|\n)"""
)
_SKIPS_EMPTY_SYSTEM: Final = re.compile(r"""['"]system['"]\s*and\s*message\[['"]content['"]\]""")

_PROBE_USER: Final = ({"role": "user", "content": "Hello, who are you?"},)
_PROBE_TURNS: Final = (
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "2 + 2 = 4."},
    {"role": "user", "content": "And 3 + 3?"},
)
_PROBE_SYSTEM: Final = (
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Name a colour."},
)


def _source_family(source: str) -> BuiltinTemplate | None:
    if "<|im_sep|>" in source:
        return PHI4
    if "<|im_start|>" in source:
        return CHATML
    if "<|assistant|>" in source and "<|end|>" in source:
        if _ROLE_THEN_NEWLINE.search(source):
            return PHI3_5 if _SKIPS_EMPTY_SYSTEM.search(source) else PHI3
        return PHI4_MINI
    return None


def _renders_like(source: str, builtin: BuiltinTemplate) -> bool:
    probes: list[Sequence[Message]] = [_PROBE_USER, _PROBE_TURNS]
    if builtin not in (PHI3, PHI3_5):
        # Microsoft's first Phi-3 template dropped system messages; the built-in is the fix.
        probes.append(_PROBE_SYSTEM)
    try:
        model = jinja_template(source, bos_token="", eos_token="", name="probe")
        return all(model.render(p) == builtin.render(p) for p in probes)
    except TemplateError:
        return False


def detect_template(source: str | None, vocab_has: Callable[[str], bool]) -> ChatTemplate | None:
    """Return the built-in for a model whose template (or vocabulary) is one of ours, else None.

    With a template ``source``, a family is picked by its markers: ``<|im_sep|>`` is Phi-4;
    ``<|im_start|>`` is ChatML; ``<|assistant|>`` and ``<|end|>`` with a newline after the role
    marker is Phi-3 (Phi-3.5 when the template skips empty system messages), without the
    newline Phi-4-mini. To stay conservative the source is then rendered in the sandbox on
    three probe conversations (user only; user, assistant, user; system then user), with a
    generation prompt, and the built-in is returned only if it renders the same text. A
    template that adds a default system message (SmolLM2, Qwen) therefore gets ``None``:
    render it with :func:`jinja_template`. The Phi-3 family skips the system probe, because
    Microsoft's first Phi-3 template silently dropped system messages and the built-in is the
    fix. A template that cannot be rendered also gives ``None``.

    With no source (``None`` or blank), the vocabulary decides: ``<|im_sep|>`` is Phi-4;
    ``<|user|>`` and ``<|end|>`` are Phi-4-mini when ``<|tool|>`` exists too, else Phi-3;
    ``<|im_start|>`` and ``<|im_end|>`` are ChatML. Anything else gives ``None``.
    """
    if source is None or not source.strip():
        if vocab_has("<|im_sep|>") and vocab_has("<|im_start|>"):
            return PHI4
        if vocab_has("<|user|>") and vocab_has("<|end|>"):
            return PHI4_MINI if vocab_has("<|tool|>") else PHI3
        if vocab_has("<|im_start|>") and vocab_has("<|im_end|>"):
            return CHATML
        return None
    family = _source_family(source)
    if family is None or not _renders_like(source, family):
        return None
    return family
