"""Engine options: names checked, values coerced by annotation, one-line errors (all backends)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from phi_backends.engine_options import option_values
from phi_backends.errors import OptionError


@dataclass(frozen=True)
class Demo:
    n_ctx: int | None = None
    scale: float = 1.0
    verbose: bool = False
    device: str | None = None


def test_cli_strings_and_python_values_are_coerced() -> None:
    given = {"n_ctx": "2048", "scale": "0.5", "verbose": "Yes", "device": " cpu "}
    assert option_values(Demo, given, backend="demo") == {"n_ctx": 2048, "scale": 0.5, "verbose": True, "device": "cpu"}
    assert option_values(Demo, {"n_ctx": 4096.0, "verbose": False}, backend="demo") == {"n_ctx": 4096, "verbose": False}


def test_none_means_default_and_cross_backend_options_are_ignored() -> None:
    assert option_values(Demo, {"n_ctx": None, "provider": "cuda"}, backend="demo") == {}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"n_ctxx": 1}, "the demo backend has no option 'n_ctxx'; its options are: n_ctx, scale, verbose, device"),
        ({"n_ctx": 2.5}, "n_ctx must be a whole number"),
        ({"n_ctx": True}, "n_ctx must be a whole number"),
        ({"n_ctx": "many"}, "n_ctx must be a whole number"),
        ({"scale": "fast"}, "scale must be a number"),
        ({"verbose": "maybe"}, "verbose must be true or false"),
        ({"device": 3}, "device must be a string"),
    ],
)
def test_bad_options_are_one_line_errors(given: dict[str, Any], message: str) -> None:
    with pytest.raises(OptionError, match=message):
        option_values(Demo, given, backend="demo")


def test_converters_handle_structured_values() -> None:
    def pairs(name: str, value: Any) -> tuple[tuple[str, str], ...]:
        return tuple((str(k), str(v)) for k, v in value.items())

    values = option_values(Demo, {"device": {"id": 1}}, backend="demo", converters={"device": pairs})
    assert values == {"device": (("id", "1"),)}
