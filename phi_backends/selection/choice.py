"""The automatic backend choice: each plugin rates its own backend, the core ranks the answers.

For a model and a platform, every installed backend gets one :class:`Assessment`: ``unusable``
where the model does not come in a format it reads or its ``availability()`` is not ok (the
core decides that), else its plugin's verdict from the ``assess_model`` hook, else the core's
default (``fallback``). Usable backends are ranked by fit, then by the caller's preference
order, then by :func:`builtin_order`; the first is chosen. docs/choice.md has the scoring.
Everything this module knows of a backend or a format comes from the registered objects
(:func:`phi_backends.plugins.registry`, :func:`phi_backends.plugins.model_formats`).
"""

from __future__ import annotations

import difflib
import importlib.metadata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .. import models, plugins
from ..backend import Backend, Fit, ModelFormat, ModelQuery, Verdict
from ..errors import BackendUnavailableError, ModelFormatError, UnknownBackendError, UsageError
from . import platform as platforms
from .platform import Platform

__all__ = ["BUILTIN_ORDER", "Assessment", "Choice", "Explanation", "choose", "explain", "model_query"]

#: Ties in fit that no preference breaks go to the first of these: the backends this project
#: publishes, in the order of its extras (pyproject.toml); any other backend comes after them.
BUILTIN_ORDER: tuple[str, ...] = tuple(plugins.KNOWN_BACKENDS)


@dataclass(frozen=True)
class Assessment:
    """One backend in an :class:`Explanation`: its fit here, why, and its rank (1 = chosen)."""

    backend: str
    fit: Fit
    reason: str
    rank: int | None = None  # None: it cannot run this model here
    installed: bool = True
    formats: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)
    judged_by: str = "plugin"  # "plugin": its plugin's verdict; "core": the core's rule

    @property
    def state(self) -> str:
        return str(self.fit) if self.installed else "missing"

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "rank": self.rank,
            "fit": str(self.fit),
            "installed": self.installed,
            "reason": self.reason,
            "formats": list(self.formats),
            "options": dict(self.options),
            "judged_by": self.judged_by,
        }


@dataclass(frozen=True)
class Explanation:
    """Why a backend would be chosen for ``model`` on ``platform``: every backend, ranked."""

    model: str
    kind: str
    formats: tuple[str, ...]
    platform: Platform
    preference: tuple[str, ...]
    order: tuple[str, ...]
    backends: tuple[Assessment, ...]  # the ranked ones first, then those that cannot run it
    chosen: str | None
    why: str
    broken: Mapping[str, str] = field(default_factory=dict, hash=False)  # plugin -> what went wrong

    def assessment(self, backend: str) -> Assessment:
        found = next((a for a in self.backends if a.backend == backend), None)
        if found is None:
            raise KeyError(backend)
        return found

    @property
    def ranking(self) -> tuple[str, ...]:
        """The backends that can run the model here, best first."""
        return tuple(a.backend for a in self.backends if a.rank is not None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "kind": self.kind,
            "formats": list(self.formats),
            "platform": self.platform.as_dict(),
            "preference": list(self.preference),
            "order": list(self.order),
            "backends": [a.as_dict() for a in self.backends],
            "chosen": self.chosen,
            "why": self.why,
            "broken": dict(self.broken),
        }

    def lines(self) -> list[str]:
        """The explanation as text, as ``phi-backends backends --explain`` prints it."""
        kinds = {"path": "local path", "catalogue": "catalogue name", "hub": "hub id"}
        formats = ", ".join(self.formats) or "none phi-backends reads"
        order = f"built-in: {', '.join(self.order)}"
        if self.preference:
            order = f"preference: {', '.join(self.preference)}; then {order}"
        out = [
            f"model     {self.model} ({kinds.get(self.kind, self.kind)}; formats: {formats})",
            f"platform  {self.platform.describe()}",
            f"order     {order}",
            "",
            f"{'rank':<5} {'backend':<10} {'fit':<9} reason",
        ]
        for a in self.backends:
            rank = str(a.rank) if a.rank is not None else "-"
            out.append(f"{rank:<5} {a.backend:<10} {a.state:<9} {a.reason}")
        out += ["", f"chosen: {self.chosen or 'none'}: {self.why}"]
        out += [f"broken plugin {name}: {error}" for name, error in self.broken.items()]
        return out


@dataclass(frozen=True)
class Choice:
    """The chosen backend, and the engine options its fit assumes (the caller's own options win)."""

    backend: Backend
    assessment: Assessment
    explanation: Explanation | None = None  # None when the backend was named, not chosen

    @property
    def options(self) -> Mapping[str, Any]:
        return self.assessment.options if self.assessment.rank is not None else {}


#: What a model names, classified once: :func:`phi_backends.models.query`, under the name plugins' tests use.
model_query = models.query


def explain(
    model: ModelQuery | str, *, platform: Platform | str | None = None, preference: Sequence[str] | None = ()
) -> Explanation:
    """Rank every backend for ``model`` on ``platform`` (default: ``$PHI_BACKENDS_PLATFORM``, else this machine).

    ``model`` is a :func:`model_query` (a string is classified here)."""
    query = model if isinstance(model, ModelQuery) else model_query(model)
    where = platforms.current(platform)
    installed = plugins.backends()
    prefer = _check_preference(preference or (), installed)
    rows, broken = _assess(query, where, installed, list(installed))
    rows.sort(key=lambda a: _sort_key(a, prefer))
    ranked = [a for a in rows if a.fit > Fit.UNUSABLE]
    rows = [_with_rank(a, ranked.index(a) + 1 if a in ranked else None) for a in rows]
    rows += _not_installed(installed)
    broken = {**plugins.broken, **broken}
    chosen = ranked[0].backend if ranked else None
    why = _why(ranked, prefer) if ranked else _why_none(query, rows, installed)
    return Explanation(
        model=query.name,
        kind=query.kind,
        formats=tuple(sorted(query.formats)),
        platform=where,
        preference=prefer,
        order=BUILTIN_ORDER,
        backends=tuple(rows),
        chosen=chosen,
        why=why,
        broken=MappingProxyType(broken),
    )


def choose(
    model: ModelQuery | str,
    *,
    backend: str | None = None,
    preference: Sequence[str] | None = (),
    platform: Platform | str | None = None,
) -> Choice:
    """The backend to load ``model`` with: ``backend`` if named (checked against the model's
    format), else the first of :func:`explain`'s ranking; with the options its verdict assumes.
    ``model`` is a :func:`model_query` (a string is classified here, after a named backend is found)."""
    if backend:
        named = plugins.get_backend(backend)
        query = model if isinstance(model, ModelQuery) else model_query(model)
        if query.formats and not query.offers(named.formats):
            raise UsageError(_wrong_backend(query, named))
        rows, _ = _assess(query, platforms.current(platform), plugins.backends(), [named.name])
        mine = rows[0]
        return Choice(named, _with_rank(mine, 1 if mine.fit > Fit.UNUSABLE else None))
    explanation = explain(model, platform=platform, preference=preference)
    if explanation.chosen is None:
        if explanation.kind == "path" and not explanation.formats:
            raise ModelFormatError(explanation.why)
        raise BackendUnavailableError(explanation.why)
    chosen = explanation.assessment(explanation.chosen)
    return Choice(plugins.backends()[chosen.backend], chosen, explanation)


# -- the parts ------------------------------------------------------------------------------------


def _check_preference(preference: Sequence[str], installed: Mapping[str, Backend]) -> tuple[str, ...]:
    known = sorted(set(installed) | set(plugins.KNOWN_BACKENDS) | set(plugins.broken) | set(plugins.blocked_plugins()))
    names: list[str] = []
    for raw in preference:
        name = str(raw).strip()
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UnknownBackendError(
                f"unknown backend {name!r} in the backend preference order; {hint}known backends: {', '.join(known)}"
            )
        if name not in names:
            names.append(name)
    return tuple(names)


def _assess(
    query: ModelQuery, where: Platform, installed: Mapping[str, Backend], names: Sequence[str]
) -> tuple[list[Assessment], dict[str, str]]:
    """An assessment for each of ``names``, and the plugins whose answer could not be used.

    Only the plugins of backends that read the model's format and can run here are asked.
    """
    settled: dict[str, Assessment] = {}
    for name in names:
        formats = tuple(installed[name].formats)
        if not query.offers(formats):
            reason = _format_mismatch(query, formats)
            settled[name] = Assessment(name, Fit.UNUSABLE, reason, formats=formats, judged_by="core")
            continue
        try:
            available = installed[name].availability()
        except Exception as exc:  # a plugin bug: say so, do not crash the choice
            reason = f"its availability() failed ({type(exc).__name__}: {exc}); reinstall its plugin"
            settled[name] = Assessment(name, Fit.UNUSABLE, reason, formats=formats, judged_by="core")
            continue
        if not available.ok:
            settled[name] = Assessment(name, Fit.UNUSABLE, available.reason, formats=formats, judged_by="core")
    asked = [name for name in names if name not in settled]
    verdicts, broken = _ask_backends(query, where, asked)
    rows = []
    for name in names:
        formats = tuple(installed[name].formats)
        verdict = verdicts.get(name)
        if name in settled:
            rows.append(settled[name])
        elif verdict is None:
            reason = f"its plugin does not rate it; it reads {_format_words(formats)} and can run here"
            rows.append(Assessment(name, Fit.FALLBACK, reason, formats=formats, judged_by="core"))
        else:
            rows.append(Assessment(name, verdict.fit, verdict.reason, formats=formats, options=verdict.options))
    return rows, broken


def _ask_backends(
    query: ModelQuery, where: Platform, asked: Sequence[str]
) -> tuple[dict[str, Verdict], dict[str, str]]:
    """The verdicts of the ``asked`` backends, and the plugins whose answer was unusable.

    Each backend is asked on its own, so that one that raises or answers nonsense is reported
    (under the plugin that registered it), not fatal to the choice.
    """
    verdicts: dict[str, Verdict] = {}
    broken: dict[str, str] = {}
    table = plugins.registry()
    for name in asked:
        backend, plugin = table[name].backend, table[name].plugin_name
        try:
            answer = backend.assess_model(query, where)
        except Exception as exc:
            broken[plugin] = f"assess_model failed: {type(exc).__name__}: {exc}"
            continue
        if answer is None:
            continue
        if not isinstance(answer, Verdict):
            broken[plugin] = f"assess_model returned {type(answer).__name__}, not a Verdict or None"
        elif answer.backend != name:
            broken[plugin] = (
                f"assess_model answered for backend {answer.backend!r}, which this plugin does not register"
            )
        else:
            verdicts[name] = answer
    return verdicts, broken


def _sort_key(a: Assessment, prefer: tuple[str, ...]) -> tuple[int, int, int, str]:
    def place(order: tuple[str, ...]) -> int:
        return order.index(a.backend) if a.backend in order else len(order)

    return -int(a.fit), place(prefer), place(BUILTIN_ORDER), a.backend


def _with_rank(a: Assessment, rank: int | None) -> Assessment:
    return Assessment(a.backend, a.fit, a.reason, rank, a.installed, a.formats, a.options, a.judged_by)


def _not_installed(installed: Mapping[str, Backend]) -> list[Assessment]:
    rows = []
    for name in sorted(set(plugins.KNOWN_BACKENDS) | set(plugins.broken)):
        if name in installed:
            continue
        if name in plugins.broken:
            reason = f"installed but its plugin failed to load: {plugins.broken[name]}; reinstall it"
        elif name in plugins.blocked_plugins():
            reason = f"blocked by {plugins.BLOCK_ENV}"
        else:
            reason = f"not installed: {plugins.install_command(name)}"
        rows.append(Assessment(name, Fit.UNUSABLE, reason, installed=False, judged_by="core"))
    return rows


def _why(ranked: list[Assessment], prefer: tuple[str, ...]) -> str:
    top = ranked[0]
    if len(ranked) == 1:
        return f"the only backend that can run it here ({top.fit})"
    peers = [a.backend for a in ranked[1:] if a.fit == top.fit]
    if not peers:
        return f"it fits best ({top.fit}; next: {ranked[1].backend}, {ranked[1].fit})"
    tied = f"it fits as well as {', '.join(peers)} ({top.fit}) and comes first in"
    if top.backend in prefer:
        return f"{tied} the preference order ({', '.join(prefer)})"
    return f"{tied} the built-in order ({', '.join(BUILTIN_ORDER)})"


def _why_none(query: ModelQuery, rows: list[Assessment], installed: Mapping[str, Backend]) -> str:
    if query.kind == "path" and not query.formats:
        assert query.path is not None
        what = "folder" if query.path.is_dir() else "file"
        names = [f"{fmt.description} ({fmt.key})" for fmt in plugins.model_formats().values()]
        expected = ", ".join(names[:-1]) + " or " + names[-1]
        return f"{query.path} is not a model {what} phi-backends can read; expected {expected}; point at one of those"
    if not installed:
        hints = " or ".join(plugins.install_command(name) for name in plugins.KNOWN_BACKENDS)
        present = {ep.name for ep in importlib.metadata.entry_points(group=plugins.ENTRY_POINT_GROUP)}
        blocked = [name for name in plugins.blocked_plugins() if name in present]
        if blocked:
            return (
                f"no backend is available: {plugins.BLOCK_ENV} hides {', '.join(blocked)}; "
                f"remove a name from it, or install a backend: {hints}"
            )
        return f"no backend is installed; install one: {hints}"
    readers = [a for a in rows if a.installed and query.offers(a.formats)]
    if not readers:
        hint = " or ".join(plugins.install_command(n) for n in _publishers(query, installed, blocked_too=True))
        return (
            f"no installed backend reads {query.name} ({_format_words(tuple(sorted(query.formats)))}); "
            f"installed: {', '.join(installed)}" + (f"; install one that does: {hint}" if hint else "")
        )
    reasons = "; ".join(f"{a.backend}: {a.reason}" for a in readers)
    return f"no installed backend can run {query.name} here ({reasons})"


def _publishers(query: ModelQuery, installed: Mapping[str, Backend], *, blocked_too: bool = False) -> list[str]:
    """Backends this project publishes that read a format the model comes in, and are not installed
    (nor blocked, unless ``blocked_too``)."""
    table = plugins.model_formats()
    readers = [table[f].reader for f in sorted(query.formats) if f in table]
    return [
        name
        for name in dict.fromkeys(r for r in readers if r)
        if name in plugins.KNOWN_BACKENDS
        and name not in installed
        and (blocked_too or name not in plugins.blocked_plugins())
    ]


def _format(name: str) -> ModelFormat | None:
    return plugins.model_formats().get(name)


def _format_words(formats: Sequence[str]) -> str:
    return " and ".join(fmt.plural if (fmt := _format(f)) else f"{f} models" for f in formats) or "no known format"


def _description(name: str) -> str:
    fmt = _format(name)
    return fmt.description if fmt else name


def _format_mismatch(query: ModelQuery, formats: tuple[str, ...]) -> str:
    reads = f"it reads {_format_words(formats)}"
    if query.kind == "catalogue":
        assert query.entry is not None
        return f"the catalogue has no {'/'.join(formats)} artifact for {query.entry.name}; {reads}"
    if not query.formats:
        return f"{query.name} is not in a format phi-backends reads; {reads}"
    fmt = sorted(query.formats)[0]
    return f"{query.name} is {_description(fmt)}; {reads}"


def _wrong_backend(query: ModelQuery, named: Backend) -> str:
    """A named backend that does not read the model's format: say which backend does."""
    installed = plugins.backends()
    readers = [n for n, b in installed.items() if query.offers(b.formats)]
    missing = [plugins.install_command(n) for n in _publishers(query, installed)]
    if query.kind == "catalogue":
        assert query.entry is not None
        have = ", ".join(sorted(query.formats))
        what = f"the catalogue has no {'/'.join(named.formats)} artifact for {query.entry.name} (it has: {have})"
    else:
        fmt = sorted(query.formats)[0]
        what = (
            f"{query.name} is {_description(fmt)}, which the {named.name} backend does not read "
            f"(it reads {_format_words(named.formats)})"
        )
    if readers:
        use = f"use the {' or '.join(readers)} backend for it, or leave the backend unset to choose automatically"
    elif missing:
        use = f"install a backend that reads it: {' or '.join(missing)}"
    else:
        use = "no installed backend reads it"
    return f"{what}; {use}"
