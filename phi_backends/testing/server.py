"""Running an app of :mod:`phi_backends.server` for a test: under uvicorn on 127.0.0.1, on a free
port, in a thread, stopped at the end (FastAPI and uvicorn are imported only here)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["serving"]


@contextlib.contextmanager
def serving(app: Any, *, timeout: float = 30) -> Iterator[str]:
    """``app`` under uvicorn on 127.0.0.1 (a free port) in a thread, with its lifespan (models
    given as loaders load in it); yields its URL and stops it at the end."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=timeout)
        if thread.is_alive():
            raise RuntimeError("the server did not stop")
