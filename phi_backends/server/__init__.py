"""``phi-backends serve``: the OpenAI HTTP API over loaded Generators.

- :mod:`.app`: :func:`create_app`, the FastAPI app (routes, API keys, error handlers);
- :mod:`.chat`: ``/v1/chat/completions``, an OpenAI request to one Generator call and back;
- :mod:`.errors`: errors in OpenAI's shape with the right status;
- :mod:`.limits`: the limits' defaults.

Needs the ``server`` extra (``pip install 'phi-backends[server]'``: FastAPI and uvicorn), imported
only when :func:`create_app` is first used, so the CLI's other commands never import FastAPI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(name)
