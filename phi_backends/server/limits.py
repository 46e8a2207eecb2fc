"""The server's limits and their defaults (no FastAPI here: the CLI reads them for its --help)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..errors import UsageError

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_CHOICES",
    "MAX_MESSAGES",
    "MAX_QUEUE",
    "REQUEST_TIMEOUT_S",
    "RETRY_AFTER_S",
    "Limits",
]

#: Requests one model takes at once, running or waiting for a sequence; one more gets 503.
MAX_QUEUE = 64
#: The largest request body, in bytes; a larger one gets 413.
MAX_BODY_BYTES = 8 * 2**20
#: The most messages one chat request may hold (OpenAI's own limit).
MAX_MESSAGES = 2048
#: The most choices one request may ask for (``n``): each is a sequence of its own.
MAX_CHOICES = 8
#: How long one request may run, in seconds, before it is ended with 504 (a stream: an error event).
REQUEST_TIMEOUT_S = 600.0
#: What a client is told to wait before it retries a request the server had no room for, in seconds.
RETRY_AFTER_S = 1


@dataclass(frozen=True)
class Limits:
    """What one request, and one model's queue, may take. ``max_tokens=None``: as many tokens as the
    context has room for; ``request_timeout_s=None``: no time limit."""

    max_queue: int = MAX_QUEUE
    max_body_bytes: int = MAX_BODY_BYTES
    max_messages: int = MAX_MESSAGES
    max_choices: int = MAX_CHOICES
    max_tokens: int | None = None
    request_timeout_s: float | None = REQUEST_TIMEOUT_S

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if value is None and field.name in ("max_tokens", "request_timeout_s"):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise UsageError(f"the server limit {field.name} must be a positive number, got {value!r}")
