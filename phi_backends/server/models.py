"""The models an app serves, by name: each loaded already (a Generator) or loaded once the server
runs (a function that loads it), so that the server answers ``/health`` while a model loads."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Literal, TypeAlias

from ..errors import PhiBackendsError
from ..generator import Generator
from .errors import APIError
from .limits import RETRY_AFTER_S

__all__ = ["Loader", "ModelSpec", "Served", "ServedModels"]

Loader: TypeAlias = Callable[[], Generator]
#: A served model: a loaded Generator (the caller closes it), or what loads one (the app closes it).
ModelSpec: TypeAlias = "Generator | Loader"
State = Literal["loading", "ready", "failed"]
log = logging.getLogger("phi_backends.server")


class Served:
    """One served model: its Generator once loaded, the requests the server holds for it."""

    def __init__(self, name: str, spec: ModelSpec) -> None:
        self.name = name
        self.gen: Generator | None = spec if isinstance(spec, Generator) else None
        self.loader: Loader | None = None if isinstance(spec, Generator) else spec
        self.error: str | None = None
        self.in_flight = 0

    @property
    def state(self) -> State:
        return "ready" if self.gen is not None else "failed" if self.error is not None else "loading"


class ServedModels:
    def __init__(self, models: Mapping[str, ModelSpec]) -> None:
        if not models:
            raise ValueError("an app serves at least one model")
        self.by_name = {name: Served(name, spec) for name, spec in models.items()}

    @property
    def names(self) -> list[str]:
        return list(self.by_name)

    def ready(self, name: str) -> tuple[Served, Generator]:
        """The model ``name`` and its Generator, or the error to answer: 404 for a name not served,
        503 with ``Retry-After`` while it loads, 503 when it failed to load."""
        served = self.by_name.get(name)
        if served is None:
            raise APIError(
                404, f"model {name!r} is not served here; GET /v1/models lists: {', '.join(self.by_name)}",
                param="model", code="model_not_found",
            )  # fmt: skip
        if served.gen is not None:
            return served, served.gen
        if served.error is not None:
            raise APIError(503, f"model {name!r} failed to load: {served.error}", code="model_not_loaded")
        raise APIError(
            503, f"model {name!r} is still loading; retry shortly", code="model_loading",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )  # fmt: skip

    async def load(self, report: Callable[[str, Generator | PhiBackendsError], None]) -> None:
        """Load the models not loaded yet, one after another (two at once would need both in
        memory at their peak); ``report(name, generator or error)`` hears of each."""
        for served in self.by_name.values():
            if served.loader is None or served.gen is not None:
                continue
            log.info("loading %s", served.name)
            try:
                gen = await asyncio.to_thread(served.loader)
            except PhiBackendsError as exc:
                served.error = str(exc)
                report(served.name, exc)
                continue
            served.gen = gen
            report(served.name, gen)

    def close(self) -> None:
        """Close the Generators this app loaded (not those it was given)."""
        for served in self.by_name.values():
            if served.loader is not None and served.gen is not None:
                served.gen.close()
                served.gen = None
                served.error = "the server is shutting down"
