"""What this machine has (OS, CPU architecture, Metal, CUDA, DirectML): detected once, or injected.

The automatic backend choice (:mod:`phi_backends.selection.choice`) ranks backends for a :class:`Platform`.
:func:`detect` looks at this machine without importing any engine. A platform can also be
given, so that the choice can be shown (and tested) for another machine: a :class:`Platform`
object, or a spec string such as ``"apple-silicon"``, ``"linux-cuda,llama-cpp=cpu"`` or
``"os=darwin,arch=arm64,metal"``, passed as ``platform=`` or set in ``PHI_BACKENDS_PLATFORM``.

A spec is a comma-separated list applied left to right:

- a preset (see :data:`PRESETS`), or ``auto`` for this machine as detected;
- ``os=linux|darwin|windows`` and ``arch=x86_64|arm64``;
- ``metal``, ``cuda``, ``directml`` (and ``no-metal``, ``no-cuda``, ``no-directml``);
- ``BACKEND=FEATURE+FEATURE``: what that backend's engine build supports (for example
  ``llama-cpp=cpu+cuda``, ``onnx=cpu+dml``, ``mlx=cpu+metal``). Where it is set, the backend's
  plugin takes it instead of asking the installed engine; where it is not, the plugin asks.
"""

from __future__ import annotations

import ctypes.util
import difflib
import functools
import os
import platform as _stdlib_platform
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import UsageError

__all__ = ["ARCHES", "DEVICE_WORDS", "ENV", "OSES", "PRESETS", "Platform", "current", "detect"]

ENV = "PHI_BACKENDS_PLATFORM"
OSES = ("linux", "darwin", "windows")
ARCHES = ("x86_64", "arm64")
FLAGS = ("metal", "cuda", "directml")
#: Words an engine build feature may be: a device kind, or an ONNX Runtime execution provider.
DEVICE_WORDS = ("cpu", "gpu", "cuda", "metal", "dml", "vulkan", "rocm", "webgpu", "qnn", "openvino", "nvtensorrtrtx")

_OS_ALIASES = {"macos": "darwin", "mac": "darwin", "osx": "darwin", "win32": "windows", "win": "windows"}
_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "aarch64": "arm64", "armv8": "arm64"}
_WORD_ALIASES = {"directml": "dml", "trt-rtx": "nvtensorrtrtx", "tensorrt-rtx": "nvtensorrtrtx"}

#: Named machines, each with the engine builds usually installed there (pip's default builds,
#: except where the name says otherwise). Later items of a spec override a preset's.
PRESETS: Mapping[str, str] = MappingProxyType(
    {
        "apple-silicon": "os=darwin,arch=arm64,metal,llama-cpp=cpu+metal,mlx=cpu+metal,onnx=cpu",
        "mac-intel": "os=darwin,arch=x86_64,llama-cpp=cpu,onnx=cpu",
        "windows-directml": "os=windows,arch=x86_64,directml,llama-cpp=cpu,onnx=cpu+dml",
        "windows-cuda": "os=windows,arch=x86_64,cuda,directml,llama-cpp=cpu+cuda,onnx=cpu+cuda+dml",
        "windows-cpu": "os=windows,arch=x86_64,llama-cpp=cpu,onnx=cpu",
        "linux-cuda": "os=linux,arch=x86_64,cuda,llama-cpp=cpu+cuda,onnx=cpu+cuda,mlx=cpu+cuda",
        "linux-cpu": "os=linux,arch=x86_64,llama-cpp=cpu,onnx=cpu,mlx=cpu",
        "linux-arm64": "os=linux,arch=arm64,llama-cpp=cpu,onnx=cpu,mlx=cpu",
    }
)
_AUTO = ("auto", "detected")


@dataclass(frozen=True)
class Platform:
    """A machine as the backend choice sees it.

    ``engine_features`` maps a backend name to what its engine build supports (see the module
    docstring); a backend missing from it is asked about its installed engine. ``origin`` says
    where this platform came from ("detected", or the spec and where it was given).
    """

    os: str
    arch: str
    metal: bool = False
    cuda: bool = False
    directml: bool = False
    engine_features: Mapping[str, frozenset[str]] = field(default_factory=dict, hash=False)
    origin: str = field(default="detected", compare=False)

    def __post_init__(self) -> None:
        frozen = {name: frozenset(words) for name, words in sorted(self.engine_features.items())}
        object.__setattr__(self, "engine_features", MappingProxyType(frozen))

    @classmethod
    def from_spec(cls, spec: str, *, origin: str | None = None) -> Platform:
        """Parse a spec string (see the module docstring); UsageError on anything unknown."""
        return _parse(spec, origin=origin if origin is not None else f"simulated: {spec}")

    @property
    def simulated(self) -> bool:
        return self.origin != "detected"

    def features(self, backend: str) -> frozenset[str] | None:
        """The engine build features given for ``backend``, or None: ask the installed engine."""
        return self.engine_features.get(backend)

    @property
    def accelerators(self) -> tuple[str, ...]:
        return tuple(name for name in FLAGS if getattr(self, name))

    @property
    def spec(self) -> str:
        """The spec string that gives this platform back."""
        items = [f"os={self.os}", f"arch={self.arch}", *self.accelerators]
        items += [f"{name}={'+'.join(sorted(words)) or 'none'}" for name, words in self.engine_features.items()]
        return ",".join(items)

    def describe(self) -> str:
        """``"darwin arm64 with Metal; engine builds: ... (simulated: PHI_BACKENDS_PLATFORM=apple-silicon)"``."""
        kinds = {"metal": "Metal", "cuda": "CUDA", "directml": "DirectML"}
        text = f"{self.os} {self.arch}"
        if self.accelerators:
            text += " with " + ", ".join(kinds[a] for a in self.accelerators)
        else:
            text += ", CPU only"
        if self.engine_features:
            text += "; engine builds: " + ", ".join(
                f"{name} {'+'.join(sorted(words)) or 'none'}" for name, words in self.engine_features.items()
            )
        return text + f" ({self.origin})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "os": self.os,
            "arch": self.arch,
            "metal": self.metal,
            "cuda": self.cuda,
            "directml": self.directml,
            "engine_features": {name: sorted(words) for name, words in self.engine_features.items()},
            "origin": self.origin,
            "spec": self.spec,
        }


def current(value: Platform | str | None = None) -> Platform:
    """The platform to choose for: ``value`` if given, else ``$PHI_BACKENDS_PLATFORM``, else :func:`detect`."""
    if isinstance(value, Platform):
        return value
    if value is not None and value.strip():
        return Platform.from_spec(value)
    env = os.environ.get(ENV, "")
    if env.strip():
        try:
            return Platform.from_spec(env, origin=f"simulated: {ENV}={env}")
        except UsageError as exc:
            raise UsageError(f"{ENV}: {exc}; fix or unset it") from None
    return detect()


@functools.cache
def detect() -> Platform:
    """This machine, looked at once per process. Imports no engine."""
    windows_major = sys.getwindowsversion().major if sys.platform == "win32" else 0  # type: ignore[attr-defined,unused-ignore]
    return detect_from(sys.platform, _stdlib_platform.machine(), _has_cuda_driver(), windows_major)


def detect_from(sys_platform: str, machine: str, cuda_driver: bool, windows_major: int = 0) -> Platform:
    """The platform these facts describe (:func:`detect` without looking at the machine)."""
    os_name = "windows" if sys_platform in ("win32", "cygwin") else _OS_ALIASES.get(sys_platform, sys_platform)
    if os_name.startswith("linux"):
        os_name = "linux"
    arch = _ARCH_ALIASES.get(machine.lower(), machine.lower())
    return Platform(
        os=os_name,
        arch=arch,
        metal=os_name == "darwin" and arch == "arm64",
        cuda=cuda_driver and os_name != "darwin",
        directml=os_name == "windows" and windows_major >= 10,
    )


def _has_cuda_driver() -> bool:
    """An NVIDIA driver with its CUDA library (what every CUDA build of an engine needs)."""
    if sys.platform == "darwin":
        return False
    if Path("/proc/driver/nvidia/version").exists():
        return True
    try:
        return ctypes.util.find_library("nvcuda" if sys.platform == "win32" else "cuda") is not None
    except Exception:  # find_library runs tools (ldconfig, gcc) that may be missing or fail
        return False


# -- spec strings ---------------------------------------------------------------------------------


def _parse(spec: str, *, origin: str) -> Platform:
    values: dict[str, Any] = {}
    features: dict[str, frozenset[str]] = {}
    for item in _items(spec):
        key, sep, raw = item.partition("=")
        key, raw = key.strip().lower(), raw.strip().lower()
        if not sep:
            _apply_word(key, values, features, spec, origin)
        elif key == "os":
            values["os"] = _choose(_OS_ALIASES.get(raw, raw), OSES, "os", spec)
        elif key == "arch":
            values["arch"] = _choose(_ARCH_ALIASES.get(raw, raw), ARCHES, "arch", spec)
        elif key in FLAGS:
            values[key] = _boolean(raw, key, spec)
        else:
            features[_backend_name(key, spec)] = _feature_words(raw, key, spec)
    missing = [k for k in ("os", "arch") if k not in values]
    if missing:
        raise UsageError(
            f"platform {spec!r} does not say its {' or '.join(missing)}; add "
            + ", ".join(f"{k}={'|'.join(OSES if k == 'os' else ARCHES)}" for k in missing)
            + f", or start from a preset: {', '.join(PRESETS)}"
        )
    found = Platform(**values, engine_features=features, origin=origin)
    _check_consistent(found, spec)
    return found


def _items(spec: str) -> list[str]:
    items = [item.strip() for item in spec.split(",") if item.strip()]
    if not items:
        raise UsageError(f"empty platform spec {spec!r}; {_valid()}")
    return items


def _apply_word(word: str, values: dict[str, Any], features: dict[str, frozenset[str]], spec: str, origin: str) -> None:
    if word in PRESETS:
        preset = _parse(PRESETS[word], origin=origin)
        values.update(os=preset.os, arch=preset.arch, metal=preset.metal, cuda=preset.cuda, directml=preset.directml)
        features.update(preset.engine_features)
    elif word in _AUTO:
        here = detect()
        values.update(os=here.os, arch=here.arch, metal=here.metal, cuda=here.cuda, directml=here.directml)
    elif word in FLAGS:
        values[word] = True
    elif word.startswith("no-") and word[3:] in FLAGS:
        values[word[3:]] = False
    else:
        raise UsageError(
            f"unknown platform item {word!r} in {spec!r}; {_did_you_mean(word, [*PRESETS, *FLAGS])}{_valid()}"
        )


def _choose(value: str, allowed: tuple[str, ...], key: str, spec: str) -> str:
    if value not in allowed:
        raise UsageError(f"unknown {key} {value!r} in platform {spec!r}; {key} is one of {', '.join(allowed)}")
    return value


def _boolean(raw: str, key: str, spec: str) -> bool:
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"{key}={raw!r} in platform {spec!r} is not yes or no; write {key} or no-{key}")


def _backend_name(name: str, spec: str) -> str:
    from .. import plugins  # no engine is imported: plugins only register backend objects

    known = sorted(set(plugins.KNOWN_BACKENDS) | set(plugins.backends()) | set(plugins.broken))
    if name not in known:
        raise UsageError(
            f"unknown platform key {name!r} in {spec!r}; {_did_you_mean(name, known)}keys are os, arch, {', '.join(FLAGS)} and a backend name "
            f"({', '.join(known)}) to give its engine build's features"
        )
    return name


def _feature_words(raw: str, backend: str, spec: str) -> frozenset[str]:
    words = {_WORD_ALIASES.get(w.strip(), w.strip()) for w in raw.split("+") if w.strip()}
    if words == {"none"}:
        return frozenset()
    unknown = sorted(words - set(DEVICE_WORDS))
    if unknown or not words:
        what = f"unknown engine feature {unknown[0]!r}" if unknown else "no engine features"
        raise UsageError(
            f"{what} for {backend} in platform {spec!r}; write {backend}=FEATURE+FEATURE with features from: "
            f"{', '.join(DEVICE_WORDS)} (or none)"
        )
    return frozenset(words)


def _check_consistent(found: Platform, spec: str) -> None:
    if found.metal and not (found.os == "darwin" and found.arch == "arm64"):
        raise UsageError(f"platform {spec!r} has Metal but is not os=darwin,arch=arm64; drop metal or fix os/arch")
    if found.directml and found.os != "windows":
        raise UsageError(f"platform {spec!r} has DirectML but is not os=windows; drop directml or set os=windows")
    if found.cuda and found.os == "darwin":
        raise UsageError(f"platform {spec!r} has CUDA on macOS, which CUDA does not support; drop cuda")


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def _valid() -> str:
    return (
        f"use a preset ({', '.join(PRESETS)}, auto) or items os={'|'.join(OSES)}, arch={'|'.join(ARCHES)}, "
        f"{', '.join(FLAGS)} (no-cuda...), BACKEND=FEATURE+FEATURE"
    )
