"""``phi-backends serve``: the OpenAI HTTP API over loaded Generators.

- :mod:`.app`: :func:`create_app`, the FastAPI app (routes, API keys, error handlers);
- :mod:`.chat`: ``/v1/chat/completions``, an OpenAI request to one Generator call and back;
- :mod:`.errors`: errors in OpenAI's shape with the right status.

Needs the ``server`` extra (``pip install 'phi-backends[server]'``: FastAPI and uvicorn).
"""

from .app import create_app

__all__ = ["create_app"]
