"""Which devices MLX offers on this machine, and the sentence `phi-backends backends` prints."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys

from phi_backends import Availability

INSTALL_HINT = (
    "pip install 'mlx-lm>=0.32,<0.33' (Apple silicon: Metal); on Linux also pip install 'mlx[cpu]', "
    "or 'mlx[cuda]' for an NVIDIA GPU"
)
#: mlx-lm's generate_step and load() as this plugin uses them.
MLX_LM_SERIES = "0.32"


def probe() -> Availability:
    """Imports ``mlx.core`` (fast) and finds ``mlx_lm`` without importing it (slow: transformers)."""
    try:
        import mlx.core as mx
    except Exception as exc:  # ImportError, or OSError from a missing shared library
        return Availability(False, f"mlx cannot be imported ({type(exc).__name__}: {exc}); {INSTALL_HINT}")
    if importlib.util.find_spec("mlx_lm") is None:
        return Availability(False, f"mlx-lm is not installed; {INSTALL_HINT}")
    mlx_lm_version = importlib.metadata.version("mlx-lm")
    if not mlx_lm_version.startswith(MLX_LM_SERIES + "."):
        return Availability(
            False,
            f"mlx-lm {mlx_lm_version} is installed but this plugin needs mlx-lm {MLX_LM_SERIES}.x; {INSTALL_HINT}",
        )
    versions = f"mlx {_version('mlx')}, mlx-lm {mlx_lm_version}"
    metal = bool(mx.metal.is_available())
    cuda = not metal and bool(mx.is_available(mx.gpu))
    if metal or cuda:
        kind = "Metal" if metal else "CUDA"
        return Availability(
            True,
            f"{versions}; {kind} is available: models run on the GPU (device=gpu) unless loaded with device=cpu",
            ("gpu", "cpu"),
        )
    where = "this is not macOS on Apple silicon" if sys.platform != "darwin" else "no Metal device found"
    return Availability(
        True,
        f"{versions}; Metal is not available ({where}) and this mlx has no GPU backend: models run on the CPU "
        "(device=cpu), which is slow",
        ("cpu",),
    )


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"
