"""The server's limits and their defaults (no FastAPI here: the CLI reads them for its --help)."""

from __future__ import annotations

__all__ = ["MAX_BODY_BYTES", "MAX_QUEUE", "RETRY_AFTER_S"]

#: Requests one model takes at once, running or waiting for a sequence; one more gets 503.
MAX_QUEUE = 64
#: The largest request body, in bytes; a larger one gets 413.
MAX_BODY_BYTES = 8 * 2**20
#: What a client is told to wait before it retries a request the queue had no room for, in seconds.
RETRY_AFTER_S = 1
