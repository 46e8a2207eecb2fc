"""How well MLX runs a model on a platform: this plugin's answer to the ``assess_model`` hook.

The rules (docs/choice.md): MLX with Metal on Apple silicon is the best fit there; MLX with
CUDA on a CUDA machine is good; MLX on a CPU runs, slowly (a fallback); there is no MLX for
Windows or for Intel Macs.
"""

from __future__ import annotations

import functools

from phi_backends import Fit, ModelQuery, Platform, Verdict

__all__ = ["NAME", "assess", "build_features", "rate"]

NAME = "mlx"
FORMATS = ("mlx",)
SLOW = "MLX is made for Apple GPUs and is slow on a CPU"


def assess(model: ModelQuery, platform: Platform) -> Verdict | None:
    if not model.offers(FORMATS):
        return None
    features = platform.features(NAME)
    return rate(platform, build_features() if features is None else features)


def rate(platform: Platform, features: frozenset[str]) -> Verdict:
    """The verdict for an mlx build with ``features`` (``cpu``, ``metal``, ``cuda``) on ``platform``."""
    if platform.os == "windows":
        return Verdict(NAME, Fit.UNUSABLE, "MLX does not run on Windows")
    if platform.os == "darwin" and platform.arch != "arm64":
        return Verdict(NAME, Fit.UNUSABLE, "MLX needs Apple silicon; this Mac has an Intel CPU")
    if platform.metal:
        if "metal" in features:
            return Verdict(NAME, Fit.BEST, "MLX with Metal: runs on the Apple GPU")
        return Verdict(
            NAME, Fit.FALLBACK, f"this mlx has no Metal support, so it runs on the CPU ({SLOW}); pip install -U mlx"
        )
    if platform.cuda:
        if "cuda" in features:
            return Verdict(NAME, Fit.GOOD, "MLX with CUDA: runs on the NVIDIA GPU")
        reason = f"this mlx has no CUDA support, so it runs on the CPU ({SLOW}); for the GPU: pip install 'mlx[cuda]'"
        return Verdict(NAME, Fit.FALLBACK, reason)
    return Verdict(NAME, Fit.FALLBACK, f"runs on the CPU: {SLOW}")


@functools.cache
def build_features() -> frozenset[str]:
    """``cpu``, plus ``metal`` or ``cuda`` where the installed mlx has that GPU backend working here."""
    try:
        import mlx.core as mx
    except Exception:  # not importable: its availability() says why, and the core marks it unusable
        return frozenset()
    found = {"cpu"}
    if mx.metal.is_available():
        found.add("metal")
    cuda = getattr(mx, "cuda", None)  # mlx builds before CUDA support have no mx.cuda
    if cuda is not None and cuda.is_available():
        found.add("cuda")
    return frozenset(found)
