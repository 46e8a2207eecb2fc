"""The mlx backend's verdicts (its ``assess_model``) on this machine and on simulated ones."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import pytest
from phi_backends_mlx.assess import build_features

import phi_backends as pb
from phi_backends import Fit, Platform, plugins
from phi_backends.selection import choice
from phi_backends.selection import platform as platforms

CATALOGUE = "phi-3-mini-4k-instruct"


def verdict(model: str, spec: str | None) -> pb.Verdict | None:
    where = platforms.detect() if spec is None else Platform.from_spec(spec)
    return plugins.get_backend("mlx").assess_model(model=choice.model_query(model), platform=where)


def test_the_hook_is_registered_with_the_plugin_manager() -> None:
    """Its verdicts reach the core through the one table of registered backends (no separate hook)."""
    impls = list(plugins.registry().values())
    assert "mlx" in [impl.plugin_name for impl in impls]


def test_build_features_are_read_from_the_installed_mlx() -> None:
    found = build_features()
    assert "cpu" in found
    assert ("metal" in found) == bool(mx.metal.is_available())
    assert ("cuda" in found) == bool(mx.cuda.is_available())
    devices = plugins.get_backend("mlx").availability().devices
    assert ("gpu" in devices) == bool(found & {"metal", "cuda"}), "the verdict and availability() agree"


@pytest.mark.parametrize(
    ("spec", "fit", "needle"),
    [
        ("apple-silicon", Fit.BEST, "MLX with Metal: runs on the Apple GPU"),
        ("apple-silicon,mlx=cpu", Fit.FALLBACK, "no Metal support"),
        ("linux-cuda", Fit.GOOD, "MLX with CUDA"),
        ("linux-cuda,mlx=cpu", Fit.FALLBACK, "pip install 'mlx[cuda]'"),
        ("linux-cpu", Fit.FALLBACK, "slow on a CPU"),
        ("linux-arm64", Fit.FALLBACK, "slow on a CPU"),
        ("windows-directml", Fit.UNUSABLE, "MLX does not run on Windows"),
        ("mac-intel", Fit.UNUSABLE, "MLX needs Apple silicon"),
    ],
)
def test_simulated_machines(tiny_phi3_mlx: Path, spec: str, fit: Fit, needle: str) -> None:
    for model in (CATALOGUE, str(tiny_phi3_mlx)):
        found = verdict(model, spec)
        assert found is not None and found.backend == "mlx"
        assert found.fit == fit and needle in found.reason and not found.options, found


def test_this_machine(tiny_phi3_mlx: Path) -> None:
    found = verdict(str(tiny_phi3_mlx), None)
    assert found is not None
    here = platforms.detect()
    if not here.accelerators:  # this project's CI machines
        assert found.fit == Fit.FALLBACK and "slow on a CPU" in found.reason


def test_a_mac_without_engine_build_facts_asks_the_installed_mlx(tiny_phi3_mlx: Path) -> None:
    found = verdict(str(tiny_phi3_mlx), "os=darwin,arch=arm64,metal")
    assert found is not None
    assert found.fit == (Fit.BEST if "metal" in build_features() else Fit.FALLBACK)


def test_no_opinion_on_other_formats(tiny_phi3: Path) -> None:
    assert verdict(str(tiny_phi3), "apple-silicon") is None


def test_the_choice_for_an_mlx_folder(tiny_phi3_mlx: Path) -> None:
    for spec in ("apple-silicon", "linux-cuda", "linux-cpu"):
        assert pb.explain(str(tiny_phi3_mlx), platform=spec, preference=[]).chosen == "mlx", spec
    on_windows = pb.explain(str(tiny_phi3_mlx), platform="windows-directml", preference=[])
    assert on_windows.chosen is None and "MLX does not run on Windows" in on_windows.why
