"""Engine options: names checked, values coerced by annotation, one-line errors (all backends)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from phi_backends.errors import OptionError
from phi_backends.formats.engine_options import option_values
from tests.bad_inputs import expect_api_error


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


def test_unknown_option_lists_the_options() -> None:
    """Recorded for the real backends by their own tests; here the wording of the shared code."""
    with pytest.raises(OptionError, match="the demo backend has no option 'n_ctxx'; its options are: n_ctx, scale"):
        option_values(Demo, {"n_ctxx": 1}, backend="demo")


@pytest.mark.parametrize(
    ("what", "given", "message"),
    [
        ("a whole-number engine option given 2.5", {"n_ctx": 2.5}, "n_ctx must be a whole number"),
        ("a whole-number engine option given True", {"n_ctx": True}, "n_ctx must be a whole number"),
        ("a whole-number engine option given 'many'", {"n_ctx": "many"}, "n_ctx must be a whole number"),
        ("a numeric engine option given 'fast'", {"scale": "fast"}, "scale must be a number"),
        ("a true/false engine option given 'maybe'", {"verbose": "maybe"}, "verbose must be true or false"),
        ("a string engine option given 3", {"device": 3}, "device must be a string"),
    ],
)
def test_bad_options_are_one_line_errors(what: str, given: dict[str, Any], message: str) -> None:
    with pytest.raises(OptionError) as info:
        option_values(Demo, given, backend="demo")
    expect_api_error(info.value, OptionError, message, what=what)


def test_converters_handle_structured_values() -> None:
    def pairs(name: str, value: Any) -> tuple[tuple[str, str], ...]:
        return tuple((str(k), str(v)) for k, v in value.items())

    values = option_values(Demo, {"device": {"id": 1}}, backend="demo", converters={"device": pairs})
    assert values == {"device": (("id", "1"),)}
