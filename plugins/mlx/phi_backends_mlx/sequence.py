"""One call on an MLX engine, and the prompt cache the next call may start from.

A call runs mlx-lm's ``generate_step`` on a prompt cache of its own; when it is released, the
engine keeps that cache and the ids it holds (:class:`PrefixCache`), so a later prompt that
starts the same way (the next turn of a chat) is computed from where they part.

``generate_step`` runs one token ahead: before it yields a token it has already fed that token
to the model and computed (lazily) the next one. So when a call is released after ``n`` tokens,
its cache holds the prompt and all ``n`` of them; the cache's ``offset`` says so exactly, and
:meth:`PrefixCache.keep` takes the ids from it rather than assuming.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

from phi_backends.backend import SequenceRequest
from phi_backends.logits import LogitsStep

__all__ = ["LogitsBridge", "MlxSequence", "PrefixCache", "common_prefix"]


class LogitsBridge:
    """The core's logits step as ``generate_step``'s first logits processor.

    The step works in place on a float32 NumPy row, so each row goes to NumPy and back. That is
    cheap next to a forward pass (one vector of the vocabulary's size, on Apple silicon's unified
    memory), but it makes MLX evaluate each token's logits before the sampler is built, which
    undoes ``generate_step``'s overlap of one token's sampling with the next token's model work:
    a call that needs no step gets no bridge, and keeps that overlap.
    """

    def __init__(self, step: LogitsStep) -> None:
        self._step = step
        self._rows: deque[np.ndarray] = deque(maxlen=2)  # the rows of the token yielded last and the one after
        self._first = True

    def __call__(self, tokens: Any, logits: Any) -> Any:
        row = np.array(logits.astype(mx.float32)).reshape(-1)  # a copy: writable, ours
        mask = self._step.mask
        if mask is not None and not self._first:
            # ``tokens`` ends with the token generate_step sampled last and has not yielded yet:
            # the constraint must take it before it masks the row that follows it
            mask.feed(int(tokens[-1].item()))
        self._first = False
        self._step(row)
        self._rows.append(row)
        return mx.array(row)[None]

    def settle(self) -> None:
        """Show the step again the row of the token just yielded, as the step left it.

        ``generate_step`` computed the next token's logits (and so called the step on them)
        before it yielded this one, and the core reads ``step.logprob(token)`` right after
        :meth:`Engine.step` returns: the step must have seen this token's row last. Only the
        log-probabilities are read again (:meth:`LogitsStep.record`): the bias and the
        constraint's mask are already in the row.
        """
        if len(self._rows) == 2:
            self._step.record(self._rows[0])


@dataclass(eq=False)
class MlxSequence:
    """A call from :meth:`MlxEngine.open` until :meth:`release` (``EngineSequence``)."""

    request: SequenceRequest
    cache: list[Any]  # the prompt cache, holding the first ``reused_tokens`` ids of the prompt at open
    reused_tokens: int
    on_release: Callable[[MlxSequence], None] = field(repr=False)
    bridge: LogitsBridge | None = None
    tokens: Generator[int, None, None] | None = None  # the running generate_step, from the first step on
    generated: list[int] = field(default_factory=list)
    failed: bool = False  # a step raised: what the cache holds is unknown

    @property
    def fed(self) -> tuple[int, ...]:
        """The prompt ids the cache does not hold: what ``generate_step`` is given."""
        return self.request.prompt_ids[self.reused_tokens :]

    def release(self) -> None:
        self.on_release(self)


class PrefixCache:
    """The prompt cache the last call left, and exactly the ids it holds."""

    def __init__(self) -> None:
        self._cache: list[Any] | None = None
        self._ids: tuple[int, ...] = ()

    def take(self, prompt: Sequence[int], *, reuse: bool) -> tuple[list[Any] | None, int]:
        """The kept cache trimmed to its longest common prefix with ``prompt`` (at most all but
        its last id: ``generate_step`` needs one to feed), and that prefix's length; or
        ``(None, 0)`` when nothing can be reused. The cache is handed over either way."""
        cache, ids = self._cache, self._ids
        self.clear()
        if not reuse or cache is None:
            return None, 0
        n = common_prefix(ids, prompt, limit=len(prompt) - 1)
        # A rotating cache that has wrapped (max_kv_size) holds no prefix, even one not trimmed.
        if n == 0 or not can_trim_prompt_cache(cache):
            return None, 0
        drop = len(ids) - n
        if drop and trim_prompt_cache(cache, drop) != drop:
            return None, 0  # trimmed only partly (a chunked cache's fixed start): start afresh
        return cache, n

    def keep(self, cache: list[Any], ids: Sequence[int]) -> None:
        """Keep ``cache``, which holds the first ``offset`` of ``ids`` (the prompt, then the tokens)."""
        self.clear()
        offset = getattr(cache[0], "offset", None) if cache else None
        if not isinstance(offset, int) or offset > len(ids) or not can_trim_prompt_cache(cache):
            return  # a cache we could not trim next time anyway: let its memory go now
        self._cache, self._ids = cache, tuple(ids[:offset])

    def clear(self) -> None:
        self._cache, self._ids = None, ()


def common_prefix(a: Sequence[int], b: Sequence[int], *, limit: int) -> int:
    """How many leading ids ``a`` and ``b`` share, at most ``limit``."""
    n = 0
    for x, y in zip(a, b, strict=False):  # the shorter one ends the prefix
        if n >= limit or x != y:
            break
        n += 1
    return n
