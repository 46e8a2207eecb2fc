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

* **The model file's own template** (:func:`jinja_template`), for everything else. Templates
  inside model files are untrusted input (CVE-2024-34359 was remote code execution through a
  GGUF chat template), so they are rendered in ONE module-level
  :class:`jinja2.sandbox.ImmutableSandboxedEnvironment` configured like Hugging Face's
  (``trim_blocks``, ``lstrip_blocks``, ``loopcontrols``, ``{% generation %}``, a ``tojson``
  filter that does not escape HTML or non-ASCII, ``raise_exception`` and ``strftime_now``),
  with these additional bounds, each turning into a one-line :class:`TemplateError`:

  ===============================  =====================================================
  template source                  at most :data:`MAX_SOURCE_CHARS` characters
  ``range()``                      at most :data:`MAX_RANGE` items
  loop iterations + calls          at most :data:`MAX_STEPS` per render
  wall clock                       :data:`MAX_RENDER_SECONDS` per render (checked every
                                   64 steps; one single slow C-level operation is not
                                   interrupted, but the size bounds below keep each short)
  call nesting (macro recursion)   at most :data:`MAX_CALL_DEPTH` nested calls
  any one string/list made         at most ``MAX_OUTPUT_CHARS + 2 * input`` characters or
  (``+ * % ~``, filters, methods)  items, where ``input`` is the length of all message
                                   contents; checked *before* the value is built
  the rendered text                the same bound
  everything written by ``{{ }}``  at most ``4 *`` that bound per render (output captured
  and literal text in loops        by ``{% set %}`` blocks and macros included)
  integers                         ``**`` and ``*`` results at most :data:`MAX_INT_BITS` bits
  ``tojson(indent=...)``           at most :data:`MAX_JSON_INDENT`
  ===============================  =====================================================

  Unsafe attribute access (``__class__``, ``__globals__``, ``mro``, mutating methods such
  as ``list.append``, ``str.format`` field tricks) raises at once instead of producing an
  empty "undefined" value. ``lipsum`` and the ``pprint`` filter are not provided.

BOS: the tokenizer adds BOS, so no rendered text starts with it. The built-ins never write it;
a model's own template that writes ``{{ bos_token }}`` first has that BOS text removed once
from the start of the result. The BOS text is only removed when the template uses the
``bos_token`` variable: SmolLM2's BOS text is ``<|im_start|>``, which its template writes
literally and which must stay.
"""

from __future__ import annotations

import contextvars
import datetime
import difflib
import functools
import json
import re
import string
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, runtime_checkable

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.ext import Extension, loopcontrols
from jinja2.parser import Parser
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, pass_eval_context

from .errors import TemplateError, UsageError

__all__ = [
    "BUILTIN_TEMPLATES",
    "KNOWN_END_OF_TURN",
    "MAX_CALL_DEPTH",
    "MAX_INT_BITS",
    "MAX_JSON_INDENT",
    "MAX_OUTPUT_CHARS",
    "MAX_RANGE",
    "MAX_RENDER_SECONDS",
    "MAX_SOURCE_CHARS",
    "MAX_STEPS",
    "BuiltinTemplate",
    "ChatTemplate",
    "JinjaChatTemplate",
    "Message",
    "detect_template",
    "get_template",
    "jinja_template",
    "normalize_messages",
]

Message = Mapping[str, str]
"""One chat message: ``{"role": "system" | "user" | "assistant", "content": str}``."""

ROLES: Final = ("system", "user", "assistant")

#: End-of-turn token texts looked for in a model's own template source.
KNOWN_END_OF_TURN: Final = ("<|end|>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>")

#: Longest template source accepted, in characters (real chat templates are under 40 000).
MAX_SOURCE_CHARS: Final = 256 * 1024
#: Items one ``range()`` call may produce.
MAX_RANGE: Final = 100_000
#: Loop iterations plus calls (macros, methods, globals, filters) one render may make.
MAX_STEPS: Final = 1_000_000
#: Wall-clock seconds one render may take.
MAX_RENDER_SECONDS: Final = 2.0
#: Nested calls (recursive macros, recursive loops) one render may have open at once.
MAX_CALL_DEPTH: Final = 64
#: Base size bound, in characters or items; twice the message contents are added per render.
MAX_OUTPUT_CHARS: Final = 4_000_000
#: Largest integer a template may build with ``*`` or ``**``, in bits.
MAX_INT_BITS: Final = 32_768
#: Largest ``indent`` the ``tojson`` filter accepts.
MAX_JSON_INDENT: Final = 16

_EMITTED_FACTOR: Final = 4
_HINT: Final = "pass --template NAME or --raw"


# --------------------------------------------------------------------------------------------
# Messages


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def normalize_messages(prompt: str | Sequence[Message]) -> list[dict[str, str]]:
    """Return the conversation as fresh ``{"role", "content"}`` dicts, checked.

    A ``str`` becomes one user message. Keys other than ``role`` and ``content`` are dropped,
    so every template sees the same input. Raises :class:`UsageError` naming the index of the
    first bad message.
    """
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, Mapping):
        raise UsageError("got a single message, not a list of messages; pass [message] or the prompt as a str")
    if isinstance(prompt, (bytes, bytearray)) or not isinstance(prompt, Sequence):
        raise UsageError(
            f"the prompt must be a str or a list of messages, not {type(prompt).__name__}; "
            "pass text, or [{'role': 'user', 'content': '...'}]"
        )
    if not prompt:
        raise UsageError(
            "there are no messages to render; pass a prompt string or at least one "
            "{'role': 'user', 'content': '...'} message"
        )
    result: list[dict[str, str]] = []
    for index, message in enumerate(prompt):
        if not isinstance(message, Mapping):
            raise UsageError(
                f"message {index} is a {type(message).__name__}, not a mapping; "
                "pass each message as {'role': ..., 'content': ...}"
            )
        if "role" not in message:
            raise UsageError(f"message {index} has no 'role'; give it 'system', 'user' or 'assistant'")
        role = message["role"]
        if not isinstance(role, str) or role not in ROLES:
            raise UsageError(f"message {index} has role {_short(role)}; use 'system', 'user' or 'assistant'")
        if "content" not in message:
            raise UsageError(f"message {index} ({role}) has no 'content'; give it a str")
        content = message["content"]
        if not isinstance(content, str):
            raise UsageError(
                f"message {index} ({role}) has content of type {type(content).__name__}; pass the content as a str"
            )
        result.append({"role": role, "content": content})
    return result


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

    def __repr__(self) -> str:
        return f"BuiltinTemplate({self.name!r})"

    def render(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> str:
        parts: list[str] = []
        for message in normalize_messages(messages):
            role, content = message["role"], message["content"]
            if self.skip_empty_system and role == "system" and not content:
                continue
            parts += (self.turn_start.replace("{role}", role), content, self.turn_end)
        parts.append(self.generation_prompt if add_generation_prompt else self.closing)
        return "".join(parts)


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
# Per-render bounds


class _LimitExceeded(Exception):
    """A render bound was hit (see the module docstring)."""


class _TemplateRaised(Exception):
    """The template called ``raise_exception(message)``."""


class _NotAtCompileTime(Exception):
    """Filters refuse to run during constant folding; Jinja then runs them at render time."""


@dataclass
class _Budget:
    max_chars: int
    max_emitted: int
    per_tick: int
    deadline: float
    known: dict[int, int] = field(default_factory=dict)
    steps: int = 0
    emitted: int = 0
    depth: int = 0

    def tick(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise _LimitExceeded(f"made more than {MAX_STEPS:,} loop iterations and calls")
        if self.per_tick:
            self.emit(self.per_tick)
        if not self.steps & 63 and time.monotonic() > self.deadline:
            raise _LimitExceeded(f"ran for more than {MAX_RENDER_SECONDS:g} s")

    def emit(self, chars: int) -> None:
        self.emitted += chars
        if self.emitted > self.max_emitted:
            raise _LimitExceeded(f"wrote more than {self.max_emitted:,} characters in all")

    def check_size(self, size: int, what: str = "a value") -> None:
        if size > self.max_chars:
            raise _LimitExceeded(f"built {what} of more than {self.max_chars:,} characters or items")

    def check_result(self, value: object) -> None:
        if isinstance(value, (str, bytes, list, tuple, dict, set, frozenset)):
            self.check_size(len(value))

    def check_int(self, value: object) -> None:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > self.max_chars:
            raise _LimitExceeded(f"used the number {value} where at most {self.max_chars:,} is allowed")

    def check_weight(self, *values: object) -> None:
        self.check_size(_weight(values, self.max_chars, self.known), "text")


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("phi_backends_template_budget", default=None)


def _budget() -> _Budget:
    budget = _BUDGET.get()
    if budget is None:
        raise _NotAtCompileTime()
    return budget


def _weight(value: object, cap: int, known: Mapping[int, int]) -> int:
    """About ``len(str(value))``, counting shared references every time; stops past ``cap``."""
    total = 0
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item) + 2
        elif isinstance(item, bool) or item is None:
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 2
        elif isinstance(item, float):
            total += 24
        elif isinstance(item, Undefined):
            pass
        elif id(item) in known:
            total += known[id(item)]
        elif isinstance(item, Mapping):
            total += 2 + 4 * len(item)
            for key, val in item.items():
                stack += (key, val)
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += 2 + 2 * len(item)
            stack.extend(item)
        elif isinstance(item, Namespace):
            total += 13
            stack.append(object.__getattribute__(item, "_Namespace__attrs"))
        else:
            total += 64
        if total > cap:
            break
    return total


_FORMAT_SPEC_NUMBERS: Final = re.compile(r"\d+")
_PERCENT_SPEC: Final = re.compile(r"%(?:\([^)]*\))?[#0 +-]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_percent_format(text: str, budget: _Budget) -> None:
    for width, precision in _PERCENT_SPEC.findall(text):
        for number in (width, precision):
            if number.isdigit():
                budget.check_int(int(number))


def _check_brace_format(text: str, budget: _Budget) -> None:
    try:
        fields = list(string.Formatter().parse(text))
    except ValueError:
        return  # str.format will raise the same error itself
    for _literal, _name, spec, _conversion in fields:
        for number in _FORMAT_SPEC_NUMBERS.findall(spec or ""):
            budget.check_int(int(number))


def _check_binop(operator: str, left: Any, right: Any, budget: _Budget) -> None:
    sized = (str, list, tuple)
    if operator == "+":
        if isinstance(left, sized) and isinstance(right, sized):
            budget.check_size(len(left) + len(right))
    elif operator == "*":
        if isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise _LimitExceeded(f"built a number of more than {MAX_INT_BITS:,} bits")
        elif isinstance(left, sized) and isinstance(right, int):
            budget.check_size(len(left) * max(right, 0))
        elif isinstance(right, sized) and isinstance(left, int):
            budget.check_size(len(right) * max(left, 0))
    elif operator == "**":
        if (
            isinstance(left, int)
            and isinstance(right, int)
            and right > 0
            and abs(left) > 1
            and left.bit_length() * right > MAX_INT_BITS
        ):
            raise _LimitExceeded(f"built a number of more than {MAX_INT_BITS:,} bits")
    elif operator == "%" and isinstance(left, str):
        _check_percent_format(left, budget)
        args = right if isinstance(right, tuple) else (right,)
        for arg in args:
            budget.check_int(arg)
        budget.check_weight(left, right)


def _is_builtin_callable(obj: object) -> bool:
    return isinstance(obj, (types.BuiltinFunctionType, types.BuiltinMethodType, types.MethodWrapperType))


def _check_call(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any], b: _Budget) -> tuple[Any, ...]:
    """Check a call of a ``str``/``bytes`` method before it runs; return the arguments to use.

    These are the built-in callables a template can reach that multiply sizes (``join``,
    ``replace``, ``center`` and friends, ``expandtabs``, ``translate``, ``format``).
    """
    target = getattr(obj, "__wrapped__", obj)  # the sandbox wraps str.format / format_map
    owner = getattr(target, "__self__", None)
    if not (_is_builtin_callable(target) and isinstance(owner, (str, bytes))):
        return args
    for value in (*args, *kwargs.values()):
        b.check_int(value)
    method = getattr(target, "__name__", "")
    if method == "join" and args:
        items = list(args[0])
        b.check_size(len(items), "a list")
        b.check_size(_weight(items, b.max_chars, b.known) + len(owner) * len(items))
        return (items, *args[1:])
    b.check_weight(args, kwargs)
    if method in ("format", "format_map") and isinstance(owner, str):
        _check_brace_format(owner, b)
    elif method == "replace" and len(args) >= 2:
        _check_replace(owner, args[0], args[1], args[2] if len(args) > 2 else -1, b)
    elif method == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        tab = "\t" if isinstance(owner, str) else b"\t"
        if isinstance(size, int):
            b.check_size(len(owner) + owner.count(tab) * max(size, 0))  # type: ignore[arg-type]
    elif method == "translate" and args and isinstance(args[0], Mapping):
        longest = max((len(v) for v in args[0].values() if isinstance(v, (str, bytes))), default=1)
        b.check_size(len(owner) * max(longest, 1))
    return args


def _check_replace(text: object, old: object, new: object, count: object, b: _Budget) -> None:
    kind = type(text)
    if kind not in (str, bytes) or type(old) is not kind or type(new) is not kind:
        return
    assert isinstance(text, (str, bytes)) and isinstance(old, (str, bytes)) and isinstance(new, (str, bytes))
    hits = text.count(old) if old else len(text) + 1  # type: ignore[arg-type]
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    b.check_size(len(text) + hits * (len(new) - len(old)))


# --------------------------------------------------------------------------------------------
# The sandbox


class _BoundedCodeGenerator(CodeGenerator):
    """Routes every ``{% for %}`` iterable and every ``~`` through the environment's checks."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        iterable = node.iter
        if not (
            isinstance(iterable, nodes.Call)
            and isinstance(iterable.node, nodes.EnvironmentAttribute)
            and iterable.node.name == "phi_loop"
        ):
            hook = nodes.EnvironmentAttribute("phi_loop", lineno=iterable.lineno)
            node.iter = nodes.Call(hook, [iterable], [], None, None, lineno=iterable.lineno)
            node.iter.set_environment(self.environment)
        super().visit_For(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.phi_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _GenerationTag(Extension):
    """Hugging Face's ``{% generation %}…{% endgeneration %}`` (marks assistant text; no-op)."""

    tags = {"generation"}  # noqa: RUF012 - the base class declares it a plain set

    def parse(self, parser: Parser) -> list[nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


class _ChatTemplateEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, plus size, step, time and depth bounds (see the module docstring)."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        # Fail at once; the default returns an Undefined that prints as "".
        raise SecurityError(f"access to attribute {_short(attribute)} of {type(obj).__name__!r} object is unsafe")

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = _budget()
        _check_binop(operator, left, right, budget)
        result = super().call_binop(context, operator, left, right)
        budget.check_result(result)
        return result

    def call(
        __self,  # Jinja's own spelling, so that a keyword argument named "self" cannot clash
        __context: Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        budget = _budget()
        budget.tick()
        # Jinja >= 3.1.5 wraps str.format on attribute access; wrap here too, so that a raw
        # str.format reached any other way (CVE-2024-56326, CVE-2025-27516) is still sandboxed.
        wrap = getattr(__self, "wrap_str_format", None)
        formatted = wrap(__obj) if wrap is not None else None
        if formatted is not None:
            __obj = formatted
        args = _check_call(__obj, args, kwargs, budget)
        if budget.depth >= MAX_CALL_DEPTH:
            raise _LimitExceeded(f"nested calls more than {MAX_CALL_DEPTH} deep (recursion?)")
        budget.depth += 1
        try:
            result = super().call(__context, __obj, *args, **kwargs)
        finally:
            budget.depth -= 1
        budget.check_result(result)
        return result

    def phi_loop(self, iterable: Iterable[Any]) -> Iterator[Any]:
        budget = _budget()
        for item in iterable:
            budget.tick()
            yield item

    def phi_concat(self, values: tuple[Any, ...]) -> str:
        budget = _budget()
        budget.check_weight(*values)
        result = "".join([str(value) for value in values])
        budget.check_result(result)
        return result


@pass_eval_context
def _finalize(eval_ctx: nodes.EvalContext, value: Any) -> Any:
    """Counts everything ``{{ … }}`` writes (forced to run at render time by the decorator)."""
    budget = _budget()
    if not isinstance(value, str):
        budget.check_weight(value)
        value = str(value)
    budget.emit(len(value))
    return value


def _bounded_range(*args: int) -> range:
    for arg in args:
        if not isinstance(arg, int):
            raise TypeError(f"range() needs integers, not {type(arg).__name__}")
    values = range(*args)
    try:
        count = len(values)
    except OverflowError:
        count = MAX_RANGE + 1
    if count > MAX_RANGE:
        raise _LimitExceeded(f"asked range() for more than {MAX_RANGE:,} items")
    return values


def _raise_exception(message: object = "") -> None:
    raise _TemplateRaised(str(message)[:200])


def _strftime_now(format: str) -> str:  # Hugging Face's parameter name
    if not isinstance(format, str) or len(format) > 200:
        raise TypeError("strftime_now() takes a format string of at most 200 characters")
    return datetime.datetime.now().strftime(format)


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | str | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """Hugging Face's ``tojson``: plain ``json.dumps``, no HTML escaping, non-ASCII kept."""
    if (isinstance(indent, int) and indent > MAX_JSON_INDENT) or (
        isinstance(indent, str) and len(indent) > MAX_JSON_INDENT
    ):
        raise _LimitExceeded(f"asked tojson for an indent over {MAX_JSON_INDENT}")
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


# Filters that only rearrange references: no stringification, so no size walk is needed.
_STRUCTURAL_FILTERS: Final = frozenset(
    {
        "abs", "attr", "batch", "bool", "count", "d", "default", "dictsort", "first", "float",
        "groupby", "int", "items", "last", "length", "list", "map", "max", "min", "random",
        "reject", "rejectattr", "reverse", "round", "select", "selectattr", "slice", "sort",
        "unique",
    }
)  # fmt: skip


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    structural = name in _STRUCTURAL_FILTERS

    @functools.wraps(func)  # keeps jinja_pass_arg, so Jinja passes the same first argument
    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.tick()
        values = [a for a in args if not isinstance(a, (jinja2.Environment, nodes.EvalContext))]
        values = [a for a in values if not isinstance(a, Context)]
        for value in (*values[1:], *kwargs.values()):
            budget.check_int(value)
        if not structural:
            budget.check_weight(values, kwargs)
        if name == "join" and values and not isinstance(values[0], (str, Mapping)):
            items = list(values[0])
            budget.check_size(len(items), "a list")
            separator = values[1] if len(values) > 1 else kwargs.get("d", "")
            if isinstance(separator, str):
                budget.check_size(_weight(items, budget.max_chars, budget.known) + len(separator) * len(items))
            position = next(i for i, a in enumerate(args) if a is values[0])
            args = (*args[:position], items, *args[position + 1 :])
        elif name == "replace" and len(values) >= 3:
            count = values[3] if len(values) > 3 else kwargs.get("count")
            _check_replace(values[0], values[1], values[2], count, budget)
        elif name == "indent" and values and isinstance(values[0], str):
            width = values[1] if len(values) > 1 else kwargs.get("width", 4)
            pad = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
            budget.check_size(len(values[0]) + (values[0].count("\n") + 1) * max(pad, 0))
        elif name == "wordwrap" and values and isinstance(values[0], str):
            width = values[1] if len(values) > 1 else kwargs.get("width", 79)
            wrap = values[3] if len(values) > 3 else kwargs.get("wrapstring") or "\n"
            if isinstance(width, int) and isinstance(wrap, str):
                lines = len(values[0]) // max(width, 1) + 1
                budget.check_size(len(values[0]) + lines * (len(wrap) + 1))
        elif name == "format" and values and isinstance(values[0], str):
            _check_percent_format(values[0], budget)
        result = func(*args, **kwargs)
        budget.check_result(result)
        return result

    return guarded


def _make_environment() -> _ChatTemplateEnvironment:
    env = _ChatTemplateEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[loopcontrols, _GenerationTag],
        finalize=_finalize,
        optimized=False,
        autoescape=False,
    )
    env.filters["tojson"] = _tojson
    env.filters.pop("pprint", None)
    for name, func in list(env.filters.items()):
        env.filters[name] = _guard_filter(name, func)
    env.globals.pop("lipsum", None)
    env.globals.update(range=_bounded_range, raise_exception=_raise_exception, strftime_now=_strftime_now)
    return env


_ENV: Final = _make_environment()


# --------------------------------------------------------------------------------------------
# The model's own template


def _who(name: str) -> str:
    return "the model's chat template" if name == "model" else f"the chat template {_short(name)}"


def _detail(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


_BOS_VARIABLE: Final = re.compile(r"\bbos_token\b")


class JinjaChatTemplate:
    """A model's own Jinja chat template, compiled once and rendered in the sandbox."""

    def __init__(self, source: str, *, bos_token: str | None, eos_token: str | None, name: str = "model") -> None:
        who = _who(name)
        if not isinstance(source, str):
            raise TemplateError(f"{who} is a {type(source).__name__}, not text; {_HINT}")
        if len(source) > MAX_SOURCE_CHARS:
            raise TemplateError(
                f"{who} is {len(source):,} characters long, more than the {MAX_SOURCE_CHARS:,} allowed; {_HINT}"
            )
        self._name = name
        self._who = who
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        eot = [eos_token] if eos_token else []
        eot += [text for text in KNOWN_END_OF_TURN if text in source and text not in eot]
        self._end_of_turn = tuple(eot)
        self._strip_bos = bool(bos_token) and _BOS_VARIABLE.search(source) is not None
        try:
            tree = _ENV.parse(source)
            self._per_tick = max(
                (
                    sum(len(data.data) for data in body.find_all(nodes.TemplateData))
                    for body in tree.find_all((nodes.For, nodes.Macro, nodes.CallBlock))
                ),
                default=0,
            )
            self._template = _ENV.from_string(tree)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"{who} has a syntax error on line {exc.lineno}: {_detail(exc)}; {_HINT}") from None
        except RecursionError:
            raise TemplateError(f"{who} nests too deeply to compile; {_HINT}") from None
        except Exception as exc:  # anything else a hostile source may cause
            raise TemplateError(f"{who} cannot be compiled ({type(exc).__name__}: {_detail(exc)}); {_HINT}") from None

    @property
    def name(self) -> str:
        return self._name

    @property
    def end_of_turn(self) -> tuple[str, ...]:
        return self._end_of_turn

    def __repr__(self) -> str:
        return f"JinjaChatTemplate(name={self._name!r}, {len(self.source)} characters)"

    def render(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> str:
        conversation = normalize_messages(messages)
        input_chars = sum(len(m["content"]) for m in conversation)
        max_chars = MAX_OUTPUT_CHARS + 2 * input_chars
        known = {id(m): _weight(dict(m), max_chars, {}) for m in conversation}
        known[id(conversation)] = sum(known.values()) + 2 + 2 * len(conversation)
        budget = _Budget(
            max_chars=max_chars,
            max_emitted=_EMITTED_FACTOR * max_chars,
            per_tick=self._per_tick,
            deadline=time.monotonic() + MAX_RENDER_SECONDS,
            known=known,
        )
        variables: dict[str, Any] = {
            "messages": conversation,
            "add_generation_prompt": bool(add_generation_prompt),
            "tools": None,
            "documents": None,
        }
        if self.bos_token is not None:
            variables["bos_token"] = self.bos_token
        if self.eos_token is not None:
            variables["eos_token"] = self.eos_token
        who = self._who
        token = _BUDGET.set(budget)
        try:
            text = self._template.render(variables)
        except SecurityError as exc:
            raise TemplateError(f"{who} tried an unsafe operation ({_detail(exc)}) and was stopped; {_HINT}") from None
        except _LimitExceeded as exc:
            raise TemplateError(f"{who} was stopped by the sandbox: it {exc}; {_HINT}") from None
        except _TemplateRaised as exc:
            raise TemplateError(
                f"{who} refused this conversation: {_detail(exc)}; change the messages, or {_HINT}"
            ) from None
        except RecursionError:
            raise TemplateError(f"{who} recursed too deeply and was stopped; {_HINT}") from None
        except MemoryError:
            raise TemplateError(f"{who} ran out of memory and was stopped; {_HINT}") from None
        except Exception as exc:  # undefined names, type errors, includes, ...
            raise TemplateError(f"{who} failed to render ({type(exc).__name__}: {_detail(exc)}); {_HINT}") from None
        finally:
            _BUDGET.reset(token)
        if len(text) > max_chars:
            raise TemplateError(
                f"{who} was stopped by the sandbox: it wrote more than {max_chars:,} characters; {_HINT}"
            )
        if self._strip_bos and self.bos_token and text.startswith(self.bos_token):
            text = text[len(self.bos_token) :]
        return text


def jinja_template(
    source: str, *, bos_token: str | None, eos_token: str | None, name: str = "model"
) -> JinjaChatTemplate:
    """Compile a model file's own chat template for sandboxed rendering.

    Raises :class:`TemplateError` at once for a source that is too long or does not compile;
    rendering raises it for anything unsafe or unbounded (see the module docstring).
    ``end_of_turn`` is ``eos_token`` followed by each of :data:`KNOWN_END_OF_TURN` that
    appears literally in ``source``.
    """
    return JinjaChatTemplate(source, bos_token=bos_token, eos_token=eos_token, name=name)


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
