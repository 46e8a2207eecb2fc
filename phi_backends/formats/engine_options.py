"""Engine options, the same way for every backend: names checked, values coerced, one-line errors.

A backend declares its options as a frozen dataclass whose field annotations say what each
value is (``int``, ``float``, ``bool``, ``str``, optionally ``| None``) and calls
:func:`option_values` to turn what the caller passed (Python values from ``load(**options)``,
or strings and JSON scalars from the CLI's ``-O KEY=VALUE``) into constructor arguments. Range
checks, which differ per engine, stay with the backend.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import OptionError

__all__ = ["CROSS_BACKEND_OPTIONS", "coerce_option", "option_values"]

#: Options the core passes to whichever backend is chosen (the CLI's ``--provider``); a backend
#: without such a field ignores them rather than failing.
CROSS_BACKEND_OPTIONS = frozenset({"provider"})
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


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
            if name in CROSS_BACKEND_OPTIONS:
                continue
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
        raise OptionError(f"option {name} must be true or false, got {value!r}")
    if "str" in text:
        if isinstance(value, str):
            return value.strip()
        raise OptionError(f"option {name} must be a string, got {value!r}")
    if "float" in text:
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise OptionError(f"option {name} must be a number, got {value!r}") from None
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise OptionError(f"option {name} must be a whole number, got {value!r}") from None
