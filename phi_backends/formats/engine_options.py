"""Engine options, the same way for every backend: names checked, values coerced, one-line errors.

A backend declares its options as a frozen dataclass whose field annotations say what each
value is (``int``, ``float``, ``bool``, ``str``, optionally ``| None``) and calls
:func:`option_values` to turn what the caller passed (Python values from ``load(**options)``,
or strings and JSON scalars from the CLI's ``-O KEY=VALUE``) into constructor arguments. Range
checks, which differ per engine, stay with the backend; what every engine shares is checked
here: numbers are finite, whole numbers fit the C ``int`` the engines take, and a thread count
is at most the cores this process may use.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import OptionError, PhiBackendsWarning, short

__all__ = [
    "INT_MAX",
    "INT_MIN",
    "check_threads",
    "coerce_option",
    "cpu_count",
    "option_values",
    "warn_beyond_training",
]

# The engines take whole-number options as C ints; ctypes truncates a larger Python int silently
# (n_ctx=2**32+16 would become 16), so a value outside this range is refused rather than wrapped.
INT_MIN, INT_MAX = -(2**31), 2**31 - 1
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
#: Options a user may give for the wrong backend, and what to say then.
_ELSEWHERE = {
    "provider": "execution providers are ONNX Runtime's (the onnx backend's option); drop --provider "
    "(or -O provider=), or run the model with --backend onnx",
    "verbose": "it has no engine log of its own to show; drop --verbose (or -O verbose=)",
}


def option_values(
    cls: type[Any],
    options: Mapping[str, Any],
    *,
    backend: str,
    converters: Mapping[str, Callable[[str, Any], Any]] | None = None,
) -> dict[str, Any]:
    """Constructor arguments for the options dataclass ``cls`` from ``options``.

    An unknown name is an :class:`OptionError` listing the known ones; ``None`` means "the
    default"; ``converters`` handle fields whose values are not plain scalars.
    """
    known = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for name, value in options.items():
        if name not in known:
            if name in _ELSEWHERE:
                raise OptionError(f"the {backend} backend has no option {name!r}: {_ELSEWHERE[name]}")
            raise OptionError(f"the {backend} backend has no option {name!r}; its options are: {', '.join(known)}")
        if value is None:
            continue
        convert = (converters or {}).get(name)
        values[name] = convert(name, value) if convert else coerce_option(name, value, known[name].type)
    return values


def coerce_option(name: str, value: Any, annotation: Any) -> Any:
    """``value`` as the annotation's scalar type: bool, int, float or str."""
    text = str(annotation)
    if "bool" in text:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in (*_TRUE, *_FALSE):
            return value.strip().lower() in _TRUE
        raise OptionError(f"option {name} must be true or false, got {short(value)}")
    if "str" in text:
        if isinstance(value, str):
            return value.strip()
        raise OptionError(f"option {name} must be a string, got {short(value)}")
    if "float" in text:
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise OptionError(f"option {name} must be a number, got {short(value)}") from None
        if not math.isfinite(number):  # nan reaches the engine as is, and makes garbage of its output
            raise OptionError(f"option {name} must be a finite number, got {short(value)}")
        return number
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        whole = int(value)
    except (TypeError, ValueError, OverflowError):
        raise OptionError(f"option {name} must be a whole number, got {short(value)}") from None
    if not INT_MIN <= whole <= INT_MAX:
        bound = f"at most {INT_MAX}" if whole > 0 else f"at least {INT_MIN}"
        raise OptionError(f"option {name} must be {bound} (the engines take a 32-bit whole number), got {whole}")
    return whole


def cpu_count() -> int:
    """The cores this process may run on (its affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def check_threads(name: str, value: int | None) -> None:
    """A thread count is at least 1 and at most the cores: more threads than cores do not add
    speed, they wait for each other at every step (a decode fell from ~80 to under 1 token/s)."""
    if value is None:
        return
    if value < 1:
        raise OptionError(f"{name} must be at least 1, got {value}")
    cores = cpu_count()
    if value > cores:
        raise OptionError(
            f"{name}={value} is more threads than the {cores} cores this process may use, which slows every "
            f"step down; use at most {cores}, or leave {name} unset for the default"
        )


def warn_beyond_training(name: str, value: int | None, trained: int | None) -> None:
    """A :class:`PhiBackendsWarning` when a context window ``value`` passes the ``trained``
    context of the model: the engines accept it (RoPE scaling can make it useful), and past the
    training context the output degrades, so the user is told rather than refused."""
    if value is not None and trained and value > trained:
        warnings.warn(
            f"{name}={value} is beyond the {trained} tokens this model was trained on; past that its output "
            f"degrades (use a model with a longer context, or a smaller {name})",
            PhiBackendsWarning,
            stacklevel=3,
        )
