"""``load()``: from a model name and an optional backend to a ready :class:`Generator`."""

from __future__ import annotations

from typing import Any

from . import models, plugins
from .backend import Backend, Engine, ModelSource
from .catalogue import DEFAULT_MODEL
from .errors import BackendUnavailableError, PhiBackendsError
from .generator import AUTO, Generator, TemplateArg
from .templates import ChatTemplate, detect_template, get_template, jinja_template

__all__ = ["choose_backend", "load"]

#: Tried in this order when no backend is named (a later issue makes this platform-aware).
PREFERENCE = ("llama-cpp", "onnx", "mlx")


def load(
    model: str | None = None,
    *,
    backend: str | None = None,
    template: TemplateArg = AUTO,
    progress: bool = True,
    **options: Any,
) -> Generator:
    """Load ``model`` (catalogue name, local path or hub repo id) and return a Generator.

    ``backend`` names the engine (``llama-cpp``, ``onnx``, ``mlx``); left out, one is chosen
    from the model's format and what is installed. ``template`` is ``"auto"`` (the
    catalogue's, else the model file's own, rendered in a sandbox), a built-in template name,
    or None for raw prompts only. Other keyword arguments are engine options, passed through
    to the backend (for llama.cpp, e.g. ``n_gpu_layers=-1``, ``n_ctx=8192``).
    """
    name = model or DEFAULT_MODEL
    models.classify(name)  # a missing path or an unknown name is reported before anything else
    chosen = plugins.get_backend(backend) if backend else choose_backend(name)
    availability = chosen.availability()
    if not availability.ok:
        raise BackendUnavailableError(f"backend {chosen.name!r} cannot run here: {availability.reason}")
    validate = getattr(chosen, "validate_options", None)  # optional: see Backend's docstring
    if callable(validate):
        validate(options)  # an option that cannot work fails before anything is downloaded
    source = models.resolve(name, formats=chosen.formats, provider=options.get("provider"), progress=progress)
    engine = chosen.load(source, options)
    try:
        chat_template = _choose_template(template, source, engine)
    except PhiBackendsError:
        engine.close()
        raise
    return Generator(engine, backend=chosen.name, model=source.name, template=chat_template)


def choose_backend(model: str) -> Backend:
    """The first installed, runnable backend that reads a format ``model`` comes in."""
    installed = plugins.backends()
    if not installed:
        raise BackendUnavailableError(
            "no backend is installed; install one, e.g. pip install 'phi-backends[llama-cpp]'"
        )
    formats = _formats_of(model)
    order = [installed[n] for n in PREFERENCE if n in installed] + [
        b for n, b in installed.items() if n not in PREFERENCE
    ]
    candidates = [b for b in order if formats is None or set(b.formats) & formats]
    if not candidates:
        wanted = ", ".join(sorted(formats or ()))
        hints = [f"pip install '{extra}'" for n, extra in plugins.KNOWN_BACKENDS.items() if n not in installed]
        raise BackendUnavailableError(
            f"no installed backend reads {wanted} models; installed: {', '.join(installed)}"
            + (f"; install another: {' or '.join(hints)}" if hints else "")
        )
    reasons = []
    for candidate in candidates:
        availability = candidate.availability()
        if availability.ok:
            return candidate
        reasons.append(f"{candidate.name}: {availability.reason}")
    raise BackendUnavailableError("no installed backend can run here (" + "; ".join(reasons) + ")")


def _formats_of(model: str) -> set[str] | None:
    """The formats ``model`` is available in, or None when any format would do."""
    kind, value = models.classify(model)
    if kind == "path":
        fmt = models.detect_format(value)
        return {fmt} if fmt else None
    if kind == "catalogue":
        return set(value.artifacts)
    return {"gguf"} if model.lower().endswith(".gguf") else None


def _choose_template(template: TemplateArg, source: ModelSource, engine: Engine) -> ChatTemplate | None:
    if template is None or isinstance(template, ChatTemplate):
        return template
    if template != AUTO:
        return get_template(template)
    if source.template:
        return get_template(source.template)
    info = engine.info

    def vocab_has(text: str) -> bool:
        return len(engine.tokenize(text, add_bos=False)) == 1

    found = detect_template(info.chat_template, vocab_has)
    if found is not None:
        return found
    if info.chat_template:
        return jinja_template(info.chat_template, bos_token=info.bos_token, eos_token=info.eos_token)
    return None
