"""Rendering a model file's own Jinja chat template safely: the sandbox and its bounds.

Templates inside model files are untrusted input (CVE-2024-34359 was remote code execution
through a GGUF chat template), so :func:`jinja_template` renders them in ONE module-level
:class:`jinja2.sandbox.ImmutableSandboxedEnvironment` configured like Hugging Face's
(``trim_blocks``, ``lstrip_blocks``, ``loopcontrols``, ``{% generation %}``, a ``tojson``
filter that does not escape HTML or non-ASCII, ``raise_exception`` and ``strftime_now``),
with these additional bounds, each turning into a one-line :class:`TemplateError`:

===============================  =====================================================
template source                  at most :data:`MAX_SOURCE_CHARS` characters
``range()``                      at most :data:`MAX_RANGE` items
loop iterations + calls          at most :data:`MAX_STEPS` per render; a filter that runs
                                 Python code per item (``sort``, ``map``, ``select``,
                                 ``urlize``, ...) counts its input's items (or characters)
                                 as steps *before* it runs
wall clock                       :data:`MAX_RENDER_SECONDS` per render (checked every
                                 64 steps and after every :data:`CLOCK_EVERY_BYTES` built;
                                 one single C-level operation is not interrupted, but the
                                 size and step bounds keep each one short)
call nesting (macro recursion)   at most :data:`MAX_CALL_DEPTH` nested calls
any one string/list made         at most ``MAX_OUTPUT_CHARS + 2 * input`` characters or
(``+ * % ~``, filters, methods)  items, where ``input`` is the length of all message
                                 contents; checked *before* the value is built
the rendered text                the same bound
everything written by ``{{ }}``  at most ``4 *`` that bound per render (output captured
and literal text in loops        by ``{% set %}`` blocks and macros included)
everything built, in all         at most :data:`MAX_BUILT_BYTES` ``+ 64 *`` input bytes per
(strings, lists, ... made by     render, counted pessimistically (``sys.getsizeof``, plus
operators, filters, methods      :data:`ITEM_BYTES` per list item): values kept in variables
and slices)                      cannot pile up, whatever the template keeps alive
integers                         ``**`` and ``*`` results at most :data:`MAX_INT_BITS` bits
``tojson(indent=...)``           at most :data:`MAX_JSON_INDENT`
===============================  =====================================================

Unsafe attribute access (``__class__``, ``__globals__``, ``mro``, mutating methods such
as ``list.append``, ``str.format`` field tricks) raises at once instead of producing an
empty "undefined" value. ``lipsum`` and the ``pprint`` filter are not provided.

BOS: a model's own template that writes ``{{ bos_token }}`` first has that BOS text removed once
from the start of the result, only when the template uses the ``bos_token`` variable (see
:mod:`phi_backends.templates`).
"""

from __future__ import annotations

import contextvars
import datetime
import functools
import json
import re
import string
import sys
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from typing import Any, Final

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.ext import Extension, loopcontrols
from jinja2.parser import Parser
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, pass_eval_context

from ..errors import TemplateError
from .messages import KNOWN_END_OF_TURN, Message, normalize_messages
from .messages import short as _short
from .spans import Span, marked_spans

__all__ = [
    "CLOCK_EVERY_BYTES",
    "ITEM_BYTES",
    "MAX_BUILT_BYTES",
    "MAX_CALL_DEPTH",
    "MAX_INT_BITS",
    "MAX_JSON_INDENT",
    "MAX_OUTPUT_CHARS",
    "MAX_RANGE",
    "MAX_RENDER_SECONDS",
    "MAX_SOURCE_CHARS",
    "MAX_STEPS",
    "JinjaChatTemplate",
    "jinja_template",
]

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
#: Bytes that one render may build in all (strings, lists, ...); 64 bytes per input character are added.
MAX_BUILT_BYTES: Final = 256 * 1024 * 1024
#: What one item of a built list (or tuple, dict, set) is counted as: its pointer plus a fresh small object.
ITEM_BYTES: Final = 88
#: The wall clock is also checked each time this many more bytes have been built.
CLOCK_EVERY_BYTES: Final = 1024 * 1024

_EMITTED_FACTOR: Final = 4
_BUILT_PER_INPUT_CHAR: Final = 64
_HINT: Final = "pass --template NAME or --raw"


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
    max_built: int = MAX_BUILT_BYTES
    known: dict[int, int] = field(default_factory=dict)
    steps: int = 0
    emitted: int = 0
    depth: int = 0
    built: int = 0
    clock_at: int = CLOCK_EVERY_BYTES

    def tick(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise _LimitExceeded(f"made more than {MAX_STEPS:,} loop iterations and calls")
        if self.per_tick:
            self.emit(self.per_tick)
        if not self.steps & 63:
            self.check_clock()

    def check_clock(self) -> None:
        if time.monotonic() > self.deadline:
            raise _LimitExceeded(f"ran for more than {MAX_RENDER_SECONDS:g} s")

    def take_steps(self, count: int, what: str) -> None:
        """Count ``count`` steps of Python-level work that one filter is about to do."""
        self.steps += count
        if self.steps > MAX_STEPS:
            raise _LimitExceeded(
                f"made more than {MAX_STEPS:,} loop iterations and calls (the {what} filter over {count:,} items)"
            )
        self.check_clock()

    def charge(self, nbytes: int) -> None:
        """Count ``nbytes`` more built, before or after the value is made (see MAX_BUILT_BYTES)."""
        self.built += nbytes
        if self.built > self.max_built:
            raise _LimitExceeded(f"built more than {self.max_built >> 20:,} MiB of strings and lists in all")
        if self.built >= self.clock_at:
            self.clock_at = self.built + CLOCK_EVERY_BYTES
            self.check_clock()

    def emit(self, chars: int) -> None:
        self.emitted += chars
        if self.emitted > self.max_emitted:
            raise _LimitExceeded(f"wrote more than {self.max_emitted:,} characters in all")

    def check_size(self, size: int, what: str = "a value") -> None:
        if size > self.max_chars:
            raise _LimitExceeded(f"built {what} of more than {self.max_chars:,} characters or items")

    def check_result(self, value: object, *, new: bool = True) -> None:
        """Check a value just made; ``new`` counts it as built (a filter such as ``first``
        returns a value that already existed)."""
        if isinstance(value, (str, bytes, list, tuple, dict, set, frozenset)):
            self.check_size(len(value))
        if new:
            self.charge(_cost(value))

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


def _cost(value: object) -> int:
    """What building ``value`` is counted as, in bytes: its own size, plus ITEM_BYTES per item."""
    if isinstance(value, (str, bytes, bytearray)) or (isinstance(value, int) and value.bit_length() > 64):
        return sys.getsizeof(value)  # small numbers are too small to matter (and often cached)
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        return sys.getsizeof(value) + ITEM_BYTES * len(value)
    return 0


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
    if method in _SPLITTING_METHODS:
        sep = args[0] if args else kwargs.get("sep")
        step = len(sep) if isinstance(sep, (str, bytes)) and sep else 2
        b.charge(ITEM_BYTES * (len(owner) // step + 1))  # before the list of pieces is made
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


_SPLITTING_METHODS: Final = frozenset({"split", "rsplit", "splitlines"})


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
    """Routes every ``{% for %}`` iterable, every ``~`` and every slice through the environment's checks."""

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

    def visit_Getitem(self, node: nodes.Getitem, frame: Frame) -> None:
        if not isinstance(node.arg, nodes.Slice):
            super().visit_Getitem(node, frame)
            return
        # Jinja writes a slice as plain Python subscription, past the environment: count the copy.
        self.write("environment.phi_slice(")
        self.visit(node.node, frame)
        self.write(", slice(")
        for part in (node.arg.start, node.arg.stop, node.arg.step):
            if part is None:
                self.write("None")
            else:
                self.visit(part, frame)
            self.write(", ")
        self.write("))")

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

    def phi_slice(self, obj: Any, part: slice) -> Any:
        result = obj[part]
        _budget().check_result(result)  # ``big[::-1]`` copies
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


# Filters that return one of their inputs (or a part of it), building nothing new.
_SELECTING_FILTERS: Final = frozenset({"attr", "d", "default", "first", "last", "max", "min", "random"})

# Filters that run Python code per item (key functions, tests, attribute lookups, a word
# loop): steps counted per item (per character for text filters) of the first argument,
# before they run, so that one call cannot outlast the wall-clock bound.
_ITEM_STEPS: Final = {
    "batch": 1, "dictsort": 4, "groupby": 4, "items": 1, "join": 1, "list": 1, "map": 1, "max": 1,
    "min": 1, "reject": 1, "rejectattr": 1, "select": 1, "selectattr": 1, "slice": 1, "sort": 4,
    "sum": 1, "title": 1, "unique": 4, "urlize": 4, "wordwrap": 4,
}  # fmt: skip
_TEXT_FILTERS: Final = frozenset({"title", "urlize", "wordwrap"})  # they work on str(value)


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    structural = name in _STRUCTURAL_FILTERS
    selecting = name in _SELECTING_FILTERS
    item_steps = _ITEM_STEPS.get(name, 0)

    @functools.wraps(func)  # keeps jinja_pass_arg, so Jinja passes the same first argument
    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.tick()
        values = [a for a in args if not isinstance(a, (jinja2.Environment, nodes.EvalContext))]
        values = [a for a in values if not isinstance(a, Context)]
        for value in (*values[1:], *kwargs.values()):
            budget.check_int(value)
        if item_steps and values:
            first = values[0]
            if name in _TEXT_FILTERS and not isinstance(first, str):
                budget.take_steps(item_steps * _weight(first, budget.max_chars, budget.known), name)
            elif isinstance(first, Sized):
                budget.take_steps(item_steps * len(first), name)
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
        budget.check_result(result, new=not selecting)
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
        return self._render(normalize_messages(messages), add_generation_prompt)

    def render_with_spans(
        self, messages: Sequence[Message], *, add_generation_prompt: bool = True
    ) -> tuple[str, list[Span] | None]:
        """The rendered text, and where the contents written in it start and end (None where the
        template treats them so that this cannot be known: :mod:`.spans`)."""
        conversation = normalize_messages(messages)
        text = self._render(conversation, add_generation_prompt)
        spans = marked_spans(
            conversation,
            text,
            lambda wrapped: self._render(wrapped, add_generation_prompt),
            avoid=f"{self.source}{self.bos_token or ''}{self.eos_token or ''}",
        )
        return text, spans

    def _render(self, conversation: list[dict[str, str]], add_generation_prompt: bool) -> str:
        input_chars = sum(len(m["content"]) for m in conversation)
        max_chars = MAX_OUTPUT_CHARS + 2 * input_chars
        known = {id(m): _weight(dict(m), max_chars, {}) for m in conversation}
        known[id(conversation)] = sum(known.values()) + 2 + 2 * len(conversation)
        budget = _Budget(
            max_chars=max_chars,
            max_emitted=_EMITTED_FACTOR * max_chars,
            per_tick=self._per_tick,
            deadline=time.monotonic() + MAX_RENDER_SECONDS,
            max_built=MAX_BUILT_BYTES + _BUILT_PER_INPUT_CHAR * input_chars,
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
