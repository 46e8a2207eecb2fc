"""The platform the backend choice ranks for: detected once without any engine, or injected."""

from __future__ import annotations

import ctypes.util
import platform as stdlib_platform
import subprocess
import sys
from pathlib import Path

import pytest

from phi_backends import Platform
from phi_backends.errors import UsageError
from phi_backends.selection import platform as platforms
from tests.bad_inputs import expect_api_error


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (("linux", "x86_64", False, 0), Platform("linux", "x86_64")),
        (("linux", "aarch64", True, 0), Platform("linux", "arm64", cuda=True)),
        (("darwin", "arm64", False, 0), Platform("darwin", "arm64", metal=True)),
        (("darwin", "x86_64", True, 0), Platform("darwin", "x86_64")),  # no CUDA on macOS, whatever a library says
        (("win32", "AMD64", True, 10), Platform("windows", "x86_64", cuda=True, directml=True)),
        (("win32", "ARM64", False, 10), Platform("windows", "arm64", directml=True)),
        (("win32", "AMD64", False, 6), Platform("windows", "x86_64")),  # Windows 8: no DirectML
    ],
)
def test_detection_rules(facts: tuple[str, str, bool, int], expected: Platform) -> None:
    assert platforms.detect_from(*facts) == expected


def test_this_machine_is_detected_once() -> None:
    here = platforms.detect()
    assert here is platforms.detect()
    assert here.origin == "detected" and not here.simulated and not here.engine_features
    assert here.os == {"linux": "linux", "darwin": "darwin", "win32": "windows"}.get(sys.platform, sys.platform)
    machine = stdlib_platform.machine().lower()
    assert here.arch == {"amd64": "x86_64", "aarch64": "arm64"}.get(machine, machine)
    if sys.platform == "linux":
        driver = Path("/proc/driver/nvidia/version").exists() or ctypes.util.find_library("cuda") is not None
        assert here.cuda == driver
        assert not here.metal and not here.directml


def test_detection_imports_no_engine() -> None:
    code = (
        "import sys; from phi_backends.selection import platform; platform.detect();"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('llama_cpp', 'mlx', 'mlx_lm', 'onnxruntime_genai', 'onnxruntime', 'torch')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("preset", list(platforms.PRESETS))
def test_every_preset_parses_and_round_trips(preset: str) -> None:
    parsed = Platform.from_spec(preset)
    assert parsed.simulated and preset in parsed.origin
    assert parsed.os in platforms.OSES and parsed.arch in platforms.ARCHES
    again = Platform.from_spec(parsed.spec)
    assert again == parsed and again.engine_features == parsed.engine_features
    assert preset in parsed.describe()


def test_presets_describe_the_machines_they_name() -> None:
    mac = Platform.from_spec("apple-silicon")
    assert (mac.os, mac.arch, mac.accelerators) == ("darwin", "arm64", ("metal",))
    assert mac.features("mlx") == {"cpu", "metal"} and mac.features("llama-cpp") == {"cpu", "metal"}
    windows = Platform.from_spec("windows-directml")
    assert windows.accelerators == ("directml",) and windows.features("onnx") == {"cpu", "dml"}
    cuda = Platform.from_spec("linux-cuda")
    assert cuda.accelerators == ("cuda",) and "cuda" in (cuda.features("llama-cpp") or ())
    cpu = Platform.from_spec("linux-cpu")
    assert cpu.accelerators == () and cpu.features("llama-cpp") == {"cpu"}


def test_later_items_override_a_preset() -> None:
    spec = Platform.from_spec("linux-cuda,llama-cpp=cpu")
    assert spec.cuda and spec.features("llama-cpp") == {"cpu"}
    assert spec.features("onnx") == {"cpu", "cuda"}, "the preset's other engine builds stay"
    assert not Platform.from_spec("linux-cuda,no-cuda").cuda
    assert Platform.from_spec("linux-cpu,cuda=yes").cuda


def test_items_without_a_preset_and_aliases() -> None:
    mac = Platform.from_spec(" OS=macOS , arch=aarch64, metal ")
    assert mac == Platform("darwin", "arm64", metal=True)
    assert mac.features("mlx") is None, "no engine build given: the plugin asks its installed engine"
    windows = Platform.from_spec("os=windows,arch=amd64,directml,onnx=CPU+DirectML")
    assert windows.features("onnx") == {"cpu", "dml"}
    assert Platform.from_spec("linux-cpu,mlx=none").features("mlx") == frozenset()


def test_auto_is_this_machine_with_overrides() -> None:
    here = platforms.detect()
    auto = Platform.from_spec("auto,llama-cpp=cpu")
    assert (auto.os, auto.arch, auto.accelerators) == (here.os, here.arch, here.accelerators)
    assert auto.features("llama-cpp") == {"cpu"}


def test_current_takes_an_argument_then_the_environment_then_detects(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(platforms.ENV, raising=False)
    assert platforms.current() is platforms.detect()
    given = Platform("linux", "arm64")
    assert platforms.current(given) is given
    monkeypatch.setenv(platforms.ENV, "windows-directml")
    from_env = platforms.current()
    assert from_env.os == "windows" and platforms.ENV in from_env.origin
    assert platforms.current("apple-silicon").os == "darwin", "an argument wins over the environment"
    monkeypatch.setenv(platforms.ENV, "  ")
    assert platforms.current() is platforms.detect()


def test_a_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(platforms.ENV, "apple-silicone")
    with pytest.raises(UsageError) as caught:
        platforms.current()
    expect_api_error(
        caught.value,
        UsageError,
        platforms.ENV,
        "did you mean 'apple-silicon'",
        what="unknown platform preset in PHI_BACKENDS_PLATFORM",
    )


@pytest.mark.parametrize(
    ("spec", "needles", "what"),
    [
        (
            "apple-silicone",
            ["unknown platform item 'apple-silicone'", "did you mean 'apple-silicon'", "linux-cuda"],
            "unknown platform preset",
        ),
        ("os=beos,arch=x86_64", ["unknown os 'beos'", "linux, darwin, windows"], "unknown platform os"),
        ("os=linux,arch=riscv", ["unknown arch 'riscv'", "x86_64, arm64"], "unknown platform arch"),
        ("os=linux", ["does not say its arch", "arch=x86_64|arm64"], "platform spec without arch"),
        (
            "linux-cpu,lama-cpp=cuda",
            ["unknown platform key 'lama-cpp'", "did you mean 'llama-cpp'"],
            "unknown backend in a platform spec",
        ),
        (
            "linux-cpu,llama-cpp=cdua",
            ["unknown engine feature 'cdua'", "cuda"],
            "unknown engine feature in a platform spec",
        ),
        ("linux-cpu,metal", ["has Metal but is not os=darwin,arch=arm64"], "Metal on a non-Apple platform"),
        ("linux-cpu,directml", ["has DirectML but is not os=windows"], "DirectML off Windows"),
        ("apple-silicon,cuda", ["has CUDA on macOS"], "CUDA on macOS"),
        ("linux-cpu,cuda=maybe", ["is not yes or no"], "platform flag that is not yes or no"),
        (" , ", ["empty platform spec"], "empty platform spec"),
    ],
)
def test_bad_specs_are_one_line_usage_errors(spec: str, needles: list[str], what: str) -> None:
    with pytest.raises(UsageError) as caught:
        Platform.from_spec(spec)
    expect_api_error(caught.value, UsageError, *needles, what=what)


def test_platforms_compare_by_machine_not_by_origin() -> None:
    assert Platform.from_spec("linux-cpu") == Platform.from_spec("os=linux,arch=x86_64,llama-cpp=cpu,onnx=cpu,mlx=cpu")
    assert Platform.from_spec("linux-cpu") != Platform.from_spec("linux-cpu,onnx=cpu+cuda")
    assert hash(Platform.from_spec("linux-cpu")) == hash(Platform.from_spec("linux-cpu"))
    with pytest.raises(TypeError):
        Platform.from_spec("linux-cpu").engine_features["onnx"] = frozenset()  # type: ignore[index]
