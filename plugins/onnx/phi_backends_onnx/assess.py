"""How well ONNX Runtime GenAI runs a model on a platform: this plugin's answer to ``assess_model``.

The rules (docs/choice.md): the best fit where this onnxruntime-genai build has the machine's GPU
provider (CUDA on a CUDA machine, DirectML on Windows) and the model comes built for it; good on
the CPU of a machine without an accelerator; a fallback on the CPU of a machine with one (the
reason says what is missing: the provider in this build, or the model's build for it).
"""

from __future__ import annotations

import functools
from pathlib import Path

from phi_backends import Fit, ModelQuery, Platform, Verdict
from phi_backends.errors import PhiBackendsError
from phi_backends.formats.json_files import read_json_object

from .genai_folder import CONFIG_NAME, MAX_CONFIG_BYTES, _providers
from .providers import PROVIDERS, canonical_provider

__all__ = ["NAME", "assess", "build_features", "rate"]

NAME = "onnx"
FORMATS = ("onnx",)
_LABELS = {"cuda": "CUDA", "dml": "DirectML", "cpu": "CPU"}


def assess(model: ModelQuery, platform: Platform) -> Verdict | None:
    if not model.offers(FORMATS):
        return None
    features = platform.features(NAME)
    return rate(model, platform, build_features() if features is None else features)


def rate(model: ModelQuery, platform: Platform, features: frozenset[str]) -> Verdict:
    """The verdict for an onnxruntime-genai build whose usable providers are ``features``."""
    wanted = [p for p, has in (("cuda", platform.cuda), ("dml", platform.directml)) if has]
    if model.kind == "path" and model.path is not None:
        return _rate_folder(model, platform, features, wanted)
    published = _published(model)  # None: any (a hub repository, listed only when downloaded)
    for provider in wanted:
        if provider in features and (published is None or provider in published):
            options = {"provider": provider} if published is not None else {}
            reason = f"the {_LABELS[provider]} provider runs the model on the GPU (provider={provider})"
            return Verdict(NAME, Fit.BEST, reason, options)
    if published is not None and "cpu" not in published:
        reason = f"the catalogue has {model.name} built only for {', '.join(sorted(published))}, which cannot run here"
        return Verdict(NAME, Fit.UNUSABLE, reason)
    if not platform.accelerators:
        return Verdict(NAME, Fit.GOOD, "runs on the CPU (provider=cpu), this machine's only device")
    return Verdict(NAME, Fit.FALLBACK, "runs on the CPU: " + _why_not_gpu(model, platform, features, wanted, published))


def _rate_folder(model: ModelQuery, platform: Platform, features: frozenset[str], wanted: list[str]) -> Verdict:
    """A local folder runs on the provider its genai_config.json names first (else the CPU)."""
    assert model.path is not None
    try:
        named = _folder_providers(model.path)
        provider = canonical_provider(named[0]) if named else "cpu"
    except PhiBackendsError as exc:  # loading it reports this again, with the same words
        return Verdict(NAME, Fit.FALLBACK, f"its {CONFIG_NAME} is not usable, so loading it will fail: {exc}")
    label = _LABELS.get(provider, provider)
    if provider not in features:
        install = PROVIDERS[provider].install
        reason = f"the folder is built for the {label} provider, which this onnxruntime-genai lacks ({install})"
        return Verdict(NAME, Fit.UNUSABLE, reason)
    if provider in wanted:
        return Verdict(NAME, Fit.BEST, f"the folder is built for the {label} provider: runs on the GPU")
    if provider != "cpu":
        return Verdict(NAME, Fit.GOOD, f"the folder is built for the {label} provider")
    if not platform.accelerators:
        return Verdict(NAME, Fit.GOOD, "the folder is built for the CPU provider, this machine's only device")
    if not wanted:
        reason = f"runs on the CPU: onnxruntime-genai has no provider for {_accelerator_words(platform)}"
        return Verdict(NAME, Fit.FALLBACK, reason)
    gpu = " or ".join(_LABELS[p] for p in wanted)
    reason = f"the folder is built for the CPU provider, so it runs on the CPU; for {gpu}, use the model's {gpu} build"
    return Verdict(NAME, Fit.FALLBACK, reason)


def _why_not_gpu(
    model: ModelQuery, platform: Platform, features: frozenset[str], wanted: list[str], published: frozenset[str] | None
) -> str:
    if not wanted:
        return f"onnxruntime-genai has no provider for {_accelerator_words(platform)}"
    reasons = []
    for provider in wanted:
        if provider not in features:
            reasons.append(
                f"this onnxruntime-genai has no {_LABELS[provider]} provider ({PROVIDERS[provider].install})"
            )
        elif published is not None and provider not in published:
            reasons.append(f"the catalogue has no {_LABELS[provider]} build of {model.name}")
    return "; ".join(reasons)


def _accelerator_words(platform: Platform) -> str:
    return ", ".join({"metal": "Metal", "cuda": "CUDA", "directml": "DirectML"}[a] for a in platform.accelerators)


def _published(model: ModelQuery) -> frozenset[str] | None:
    """The providers the catalogue has a build of the model for; None when not known."""
    if model.entry is None or "onnx" not in model.entry.artifacts:
        return None
    subfolders = model.entry.artifacts["onnx"].subfolders
    return frozenset(canonical_provider(p) for p in subfolders) if subfolders else None


def _folder_providers(folder: Path) -> tuple[str, ...]:
    config = read_json_object(folder / CONFIG_NAME, max_bytes=MAX_CONFIG_BYTES, fix="re-download the model folder")
    model = config.get("model")
    decoder = model.get("decoder") if isinstance(model, dict) else None
    return tuple(_providers(decoder)) if isinstance(decoder, dict) else ()


@functools.cache
def build_features() -> frozenset[str]:
    """The execution providers the installed onnxruntime-genai can use here (lower case)."""
    try:
        import onnxruntime_genai as og

        from .providers import probe_installation

        return frozenset(p.lower() for p in probe_installation(og).usable)
    except Exception:  # not importable: its availability() says why, and the core marks it unusable
        return frozenset()
