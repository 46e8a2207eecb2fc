"""``load()``: from a model name and an optional backend to a ready :class:`Generator`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from . import config, models
from .backend import Backend, Engine, ModelQuery, ModelSource
from .errors import BackendUnavailableError, PhiBackendsError, UsageError
from .generator import AUTO, Generator, TemplateArg
from .selection import choice
from .selection.choice import Choice, Explanation
from .selection.platform import Platform
from .templates import ChatTemplate, detect_template, get_template, jinja_template
from .templates.fit import warn_if_foreign

__all__ = ["choose_backend", "explain", "load"]


def load(
    model: str | None = None,
    *,
    backend: str | None = None,
    template: TemplateArg = AUTO,
    platform: Platform | str | None = None,
    progress: bool = True,
    special_tokens_in_content: bool = False,
    **options: Any,
) -> Generator:
    """Load ``model`` (catalogue name, local path or hub repo id) and return a Generator.

    ``backend`` names the engine (``llama-cpp``, ``onnx``, ``mlx``); left out, one is chosen
    from the model's format, the ``platform`` (default: detected) and what is installed.
    ``template`` is ``"auto"`` (the config's template if it sets one, else the catalogue's,
    else the model file's own, rendered in a sandbox), a built-in template name, or None for
    raw prompts only. ``special_tokens_in_content=True`` lets messages' contents hold control
    tokens (by default their text is tokenized as text: docs/security.md;
    :attr:`Generator.special_tokens_in_content`). Other keyword arguments are engine options, passed through to the
    backend (for llama.cpp, e.g. ``n_gpu_layers=-1``, ``n_ctx=8192``).

    What is left out comes from the configuration (flags > environment > project file > user
    file > defaults; see docs/config.md): the model, the backend or the preference order of
    the automatic choice, the platform, the template, the backend's options (the call's win
    key by key) and the sampling defaults (:attr:`Generator.sampling`). The arguments given
    are the configuration's flag layer.
    """
    if template is not None and not isinstance(template, (str, ChatTemplate)):
        raise UsageError(
            f"argument template: must be a template name, a ChatTemplate or None, got {type(template).__name__}"
        )
    if not isinstance(progress, bool):
        raise UsageError(f"argument progress: must be True or False, got {type(progress).__name__}")
    if not isinstance(special_tokens_in_content, bool):
        raise UsageError(
            f"argument special_tokens_in_content: must be True or False, got {type(special_tokens_in_content).__name__}"
        )
    # None or a ChatTemplate is used as given; a name is a config value, and "auto" asks the config.
    named = template if isinstance(template, str) and template != AUTO else None
    given = {"model": model, "backend": backend, "platform": platform, "template": named}
    flags = {key: (key, value) for key, value in given.items()}
    arguments = {key: (key, value) for key, value in options.items()}
    gen = load_with_flags(flags, arguments, template=template if named is None else AUTO, progress=progress)
    gen.special_tokens_in_content = special_tokens_in_content
    return gen


def load_with_flags(
    flags: config.Flags, options: config.Flags, *, template: TemplateArg = AUTO, progress: bool = True
) -> Generator:
    """:func:`load` with its flag layer built: ``flags`` for the config's keys (``model``,
    ``sampling.seed``, ...) and ``options`` for the chosen backend's table. ``template``: "auto"
    for the config's, or a template (None: raw prompts) that overrides it.
    ``phi-backends run`` loads through here, with the flags ``phi-backends config`` shows."""
    return loader_with_flags(flags, options, template=template, progress=progress)[1]()


def loader_with_flags(
    flags: config.Flags, options: config.Flags, *, template: TemplateArg = AUTO, progress: bool = True
) -> tuple[str, Callable[[], Generator]]:
    """What :func:`load_with_flags` does, in two steps: everything that can be checked without
    fetching or loading the model is checked now (the config, the model's name or path, the
    backend, its options, the sampling defaults), and the function returned fetches and loads it
    (``phi-backends serve`` answers its health checks meanwhile). Also returns the model as
    configured (a name, a path or a repo id)."""
    cfg, query, picked = configure(flags, options)
    chosen = picked.backend
    sampling = cfg.sampling()  # fields that exclude each other fail before anything is downloaded
    # The choice's options (what its verdict assumes) < the config's, flags included, for this backend.
    merged = {**picked.options, **cfg.options(chosen.name)}
    chosen.validate_options(merged)  # an option that cannot work fails before anything is downloaded
    if isinstance(template, str) and template == AUTO:
        template = cfg.template

    def load_now() -> Generator:
        source = models.resolve(query, formats=chosen.formats, provider=merged.get("provider"), progress=progress)
        engine = chosen.load(source, merged)
        try:
            chat_template = _choose_template(template, source, engine)
        except PhiBackendsError:
            engine.close()
            raise
        return Generator(engine, backend=chosen.name, model=source.name, template=chat_template, sampling=sampling)

    return cfg.model, load_now


def configure(flags: config.Flags, options: config.Flags) -> tuple[config.Config, ModelQuery, Choice]:
    """The configuration under ``flags``, its model classified once and its backend chosen, with
    ``options`` as flags of that backend's table; a config value that fails names its file and key."""
    cfg = config.resolve(flags)
    try:  # a missing path or an unknown name is reported before anything else
        query = models.query(cfg.model)
    except PhiBackendsError as exc:
        raise cfg.blame("model", exc) from None
    try:  # a backend that does not read the model's format fails here
        picked = choice.choose(query, backend=cfg.backend, preference=cfg.backends, platform=cfg.platform_for_choice())
    except PhiBackendsError as exc:
        raise cfg.blame("backend", exc) from None
    chosen = picked.backend
    availability = chosen.availability()
    if not availability.ok:
        error = BackendUnavailableError(f"backend {chosen.name!r} cannot run here: {availability.reason}")
        raise cfg.blame("backend", error)
    cfg = cfg.with_options(chosen.name, options)
    cfg.check_options(chosen)  # a bad option in a config file is reported with its file and key
    return cfg, query, picked


def choose_backend(
    model: str,
    *,
    backend: str | None = None,
    preference: Sequence[str] = (),
    platform: Platform | str | None = None,
) -> Backend:
    """The backend :func:`load` uses for ``model``: ``backend`` if named (after checking that it
    reads the format ``model`` comes in), else the best ranked by :func:`explain`."""
    return choice.choose(model, backend=backend, preference=preference, platform=platform).backend


def explain(
    model: str | None = None,
    *,
    platform: Platform | str | None = None,
    preference: Sequence[str] | None = None,
) -> Explanation:
    """Which backend :func:`load` would choose for ``model`` (default: the default model), and why.

    Every backend is listed with its fit on ``platform`` (a :class:`Platform`, a spec string
    such as ``"apple-silicon"`` or ``"linux-cuda,llama-cpp=cpu"``; default:
    ``$PHI_BACKENDS_PLATFORM``, else this machine), a one-line reason and its rank; ties in fit
    go to the first in ``preference``, then to the built-in order. See docs/choice.md.
    What is left out comes from the configuration, as for :func:`load` (docs/config.md).
    """
    given = {"model": model, "platform": platform, "backends": preference}
    return explain_with_flags({key: (key, value) for key, value in given.items()})


def explain_with_flags(flags: config.Flags) -> Explanation:
    """:func:`explain` with its flag layer built (``model``, ``platform``, ``backends``), as
    ``phi-backends backends --explain`` calls it."""
    cfg = config.resolve(flags)
    explanation = choice.explain(models.query(cfg.model), platform=cfg.platform_for_choice(), preference=cfg.backends)
    configured = cfg.backend
    if configured is None or configured == explanation.chosen:
        return explanation
    # load() uses a configured backend whatever the ranking says: say so, and what the ranking gave.
    named = f"{cfg['backend'].origin} names {configured}"
    usable = [a for a in explanation.backends if a.backend == configured and a.rank is not None]
    if not usable:
        return dataclasses.replace(explanation, chosen=None, why=f"{named}, which cannot run this model here")
    ranked = f"without it: {explanation.chosen} ({explanation.why})" if explanation.chosen else explanation.why
    return dataclasses.replace(explanation, chosen=configured, why=f"{named}; {ranked}")


def _choose_template(template: TemplateArg, source: ModelSource, engine: Engine) -> ChatTemplate | None:
    if template is None or isinstance(template, ChatTemplate):
        return template

    def vocab_has(text: str) -> bool:
        return len(engine.tokenize(text, add_bos=False)) == 1

    if template != AUTO:
        named = get_template(template)
        warn_if_foreign(named, vocab_has)  # a template of another family: garbage, so say so
        return named
    if source.template:
        return get_template(source.template)
    info = engine.info

    found = detect_template(info.chat_template, vocab_has)
    if found is not None:
        return found
    if info.chat_template:
        return jinja_template(info.chat_template, bos_token=info.bos_token, eos_token=info.eos_token)
    return None
