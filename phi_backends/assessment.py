"""What a backend plugin is asked, and what it answers, when a backend is chosen for a model.

The core asks every plugin one question through the ``assess_model`` hook (see
:mod:`phi_backends.hookspecs`): "can your backend run this :class:`ModelQuery` on this
:class:`~phi_backends.platform.Platform`, and how well?" A plugin answers with a :class:`Verdict`
for its own backend; it knows nothing of the others. :mod:`phi_backends.choice` ranks the answers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from .catalogue import CatalogueEntry

__all__ = ["Fit", "ModelKind", "ModelQuery", "Verdict"]

ModelKind = Literal["path", "catalogue", "hub"]


class Fit(IntEnum):
    """How well a backend runs a model on a platform; higher is better (docs/choice.md)."""

    UNUSABLE = 0  # cannot run it here
    FALLBACK = 1  # runs, but leaves this machine's accelerator unused, or runs on a slow path
    GOOD = 2  # runs well: on the CPU of a machine without an accelerator, or on a secondary GPU path
    BEST = 3  # runs on this machine's accelerator through the engine's own first-class path

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class ModelQuery:
    """A model as the user named it, before anything is downloaded.

    ``formats`` are those it is available in: one for a local path, the catalogue's artifacts
    for a catalogue name, a GGUF for a hub file, every known format for a hub repository
    (which format it holds is known only once it is listed).
    """

    name: str
    kind: ModelKind
    formats: frozenset[str]
    path: Path | None = None  # a local path, resolved
    entry: CatalogueEntry | None = None  # a catalogue name's entry

    def offers(self, formats: Iterable[str]) -> bool:
        """Does the model come in one of ``formats``?"""
        return not self.formats.isdisjoint(formats)


@dataclass(frozen=True)
class Verdict:
    """One backend's answer: its fit, one line saying why, and the engine options it assumes.

    ``options`` are those the fit depends on (``provider="dml"``, ``n_gpu_layers=-1``):
    :func:`phi_backends.load` uses them for the chosen backend unless the caller sets them.
    """

    backend: str
    fit: Fit
    reason: str
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fit", Fit(self.fit))
        object.__setattr__(self, "reason", " ".join(str(self.reason).split()))
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
