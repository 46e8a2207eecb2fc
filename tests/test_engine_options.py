"""Engine options: names checked, values coerced by annotation, one-line errors (all backends)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import pytest

from phi_backends.errors import OptionError, PhiBackendsWarning
from phi_backends.formats.engine_options import check_threads, cpu_count, option_values, warn_beyond_training
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


def test_none_means_default() -> None:
    assert option_values(Demo, {"n_ctx": None}, backend="demo") == {}


def test_provider_on_a_backend_without_providers_is_refused() -> None:
    """--provider used to be dropped silently by every backend but onnx."""
    with pytest.raises(OptionError) as info:
        option_values(Demo, {"provider": "cuda"}, backend="demo")
    expect_api_error(
        info.value,
        OptionError,
        "the demo backend has no option 'provider'",
        "--backend onnx",
        what="provider=cuda for a backend without execution providers",
    )


def test_verbose_on_a_backend_without_an_engine_log_is_refused() -> None:
    """The CLI's --verbose is -O verbose=true; MLX has no such log, and says so."""
    with pytest.raises(OptionError) as info:
        option_values(Demo, {"verbose_log": True}, backend="demo")  # an unknown option: the usual list
    assert "its options are: n_ctx" in str(info.value)

    @dataclass(frozen=True)
    class Quiet:
        n_ctx: int | None = None

    with pytest.raises(OptionError) as info:
        option_values(Quiet, {"verbose": True}, backend="quiet")
    expect_api_error(
        info.value,
        OptionError,
        "no engine log of its own",
        "drop --verbose",
        what="--verbose on a backend without a log",
    )


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
        ("a numeric engine option given nan", {"scale": float("nan")}, "scale must be a finite number"),
        ("a numeric engine option given 'nan'", {"scale": "nan"}, "scale must be a finite number"),
        ("a numeric engine option given inf", {"scale": float("inf")}, "scale must be a finite number"),
        ("a numeric engine option given '-Infinity'", {"scale": "-Infinity"}, "scale must be a finite number"),
        ("a numeric engine option given 1e400", {"scale": "1e400"}, "scale must be a finite number"),
        ("a whole-number engine option given inf", {"n_ctx": float("inf")}, "n_ctx must be a whole number"),
        ("a whole-number engine option given nan", {"n_ctx": float("nan")}, "n_ctx must be a whole number"),
        ("a whole-number engine option given 2**32 + 16", {"n_ctx": 2**32 + 16}, "n_ctx must be at most 2147483647"),
        ("a whole-number engine option given -2**40", {"n_ctx": -(2**40)}, "n_ctx must be at least -2147483648"),
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


def test_whole_numbers_at_the_c_int_bounds_pass() -> None:
    assert option_values(Demo, {"n_ctx": 2**31 - 1}, backend="demo") == {"n_ctx": 2**31 - 1}
    assert option_values(Demo, {"n_ctx": -(2**31)}, backend="demo") == {"n_ctx": -(2**31)}


def test_thread_counts_stop_at_the_cores() -> None:
    cores = cpu_count()
    check_threads("n_threads", cores)  # every core is fine
    check_threads("n_threads", None)  # the default
    with pytest.raises(OptionError) as info:
        check_threads("n_threads", cores + 1)
    expect_api_error(
        info.value,
        OptionError,
        f"n_threads={cores + 1} is more threads than the {cores} cores",
        f"use at most {cores}",
        what="n_threads one more than the cores",
    )
    with pytest.raises(OptionError, match="n_threads must be at least 1, got 0"):
        check_threads("n_threads", 0)


def test_a_context_beyond_training_warns_and_within_it_does_not() -> None:
    with pytest.warns(PhiBackendsWarning, match="n_ctx=8192 is beyond the 4096 tokens this model was trained on"):
        warn_beyond_training("n_ctx", 8192, 4096)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_beyond_training("n_ctx", 4096, 4096)
        warn_beyond_training("n_ctx", None, 4096)  # our default
        warn_beyond_training("n_ctx", 8192, None)  # the model does not say
