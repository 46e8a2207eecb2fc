"""The logits step: what the core does to a model's logits before any engine's sampler reads them.

For each token of a call, in this order, the same on every engine:

1. the model's logits for the sequence: one float32 row of ``EngineInfo.vocab_size`` (padding
   ids past the tokenizer included);
2. ``SamplingConfig.logit_bias``: each listed id's logit plus its bias; a bias of -100 bans the
   token outright (its logit becomes -inf, as OpenAI documents -100 to mean);
3. a constraint's mask (:mod:`phi_backends.constraints`): every token it does not allow next
   becomes -inf;
4. log-probabilities, when the call asks for them, are read here: the log-softmax of the row as
   it now is, so before the repetition penalty, the temperature and the filters;
5. the engine's sampler: the chain :class:`~phi_backends.SamplingConfig` documents.

Engines call a :class:`LogitsStep` on the row in place (llama.cpp on the very buffer its native
sampler chain reads next, so it keeps its own sampler and speed). A call that needs none of this
gets no step at all (``LogitsStep.for_call`` returns None), and pays nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import SamplingConfigError
from .sampling import MAX_BIAS, SamplingConfig

if TYPE_CHECKING:
    import numpy as np

    from .constraints import ConstraintMask

__all__ = ["LogitsStep", "TokenLogprob"]


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token's log-probability and, with ``top_logprobs``, the most likely tokens.

    ``top`` holds ``(token_id, logprob)`` pairs, most likely first (the lower id first on a tie).
    """

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


class LogitsStep:
    """One call's logits step (a new one per call: it keeps the last row it saw)."""

    def __init__(self, config: SamplingConfig, vocab_size: int, mask: ConstraintMask | None = None) -> None:
        import numpy as np

        self.check(config, vocab_size)
        bias = config.logit_bias
        self._ids = np.fromiter((token for token, _ in bias), dtype=np.intp, count=len(bias))
        values = np.fromiter((value for _, value in bias), dtype=np.float32, count=len(bias))
        values[values <= -MAX_BIAS] = -np.inf  # -100 bans, whatever the logit was
        self._values = values
        #: the call's constraint, if it has one (Call feeds it each token the sampler chose)
        self.mask = mask
        self._logprobs = config.reports_logprobs
        self._top = config.top_logprobs
        self._row: np.ndarray | None = None  # the last row seen, minus its maximum (a buffer reused every token)
        self._exp: np.ndarray | None = None  # scratch for the softmax's sum
        self._seen = False
        self._log_total = 0.0

    @staticmethod
    def for_call(config: SamplingConfig, vocab_size: int, mask: ConstraintMask | None = None) -> LogitsStep | None:
        """The step ``config`` (and a constraint's ``mask``) needs, or None when it needs none."""
        if not config.logit_bias and not config.reports_logprobs and mask is None:
            return None
        return LogitsStep(config, vocab_size, mask)

    @staticmethod
    def check(config: SamplingConfig, vocab_size: int) -> None:
        """Refuse a ``logit_bias`` id outside the model's vocabulary (SamplingConfigError)."""
        for token, _ in config.logit_bias:
            if token >= vocab_size:
                raise SamplingConfigError(
                    f"logit_bias names token id {token}, but this model's vocabulary has ids 0 to {vocab_size - 1}; "
                    "use ids from this model's tokenizer"
                )

    def __call__(self, logits: np.ndarray) -> None:
        """Apply the step to one row of logits, in place."""
        if self._ids.size:
            logits[self._ids] += self._values
        if self.mask is not None:
            self.mask.apply(logits)
        if self._logprobs:
            self.record(logits)

    def record(self, logits: np.ndarray) -> None:
        """Read the log-probabilities of a row the step has already changed (an engine that ran
        ahead shows the step an earlier row again, see the MLX plugin's ``LogitsBridge``)."""
        import numpy as np

        if self._logprobs:
            # Kept as the row minus its maximum (the engine may overwrite its buffer next), in
            # buffers kept for the whole call: fresh arrays per token cost a tenth of a millisecond
            # at 49k ids, and a plain copy is slower here than a subtraction into a kept buffer.
            if self._row is None or self._row.shape != logits.shape:
                self._row = np.empty(logits.shape, dtype=np.float32)
                self._exp = np.empty(logits.shape, dtype=np.float32)
            shifted, scratch = self._row, self._exp
            assert scratch is not None
            np.subtract(logits, logits.max(), out=shifted)
            np.exp(shifted, out=scratch)
            self._log_total = math.log(float(scratch.sum()))  # pairwise float32 sum: ~1e-7 relative
            self._seen = True

    def logprob(self, token: int) -> TokenLogprob | None:
        """The log-probabilities of the row last seen, for the token the sampler chose."""
        row = self._row
        if row is None or not self._seen:
            return None
        self._seen = False
        total = self._log_total
        top: tuple[tuple[int, float], ...] = ()
        if self._top:
            top = tuple((int(i), float(row[i]) - total) for i in _best(row, self._top))
        return TokenLogprob(token=token, logprob=float(row[token]) - total, top=top)


def _best(row: np.ndarray, k: int) -> np.ndarray:
    """The ids of the ``k`` largest values of ``row``, largest first (the lower id first on a tie).

    A partition of the whole row costs about 0.1 ms at 49k ids, every token. The k largest are
    all within some distance of the maximum: find a distance that keeps at least k candidates
    (one comparison pass, rarely two), then partition only those.
    """
    import numpy as np

    k = min(k, row.size)
    top = 0.0  # the step keeps the row minus its maximum
    candidates: np.ndarray | None = None
    if math.isfinite(top):
        for gap in (4.0, 16.0, 64.0):
            found = np.flatnonzero(row >= top - gap)
            if found.size >= k:
                candidates = found
                break
    if candidates is None:  # a flat or mostly banned row: every id is a candidate
        candidates = np.arange(row.size)
    values = row[candidates]
    if candidates.size > k:
        keep = np.argpartition(-values, k - 1)[:k]
        # ties with the k-th value outside ``keep`` must compete on id: take every id with that value
        kth = float(values[keep].min())
        keep = np.flatnonzero(values >= kth)
        candidates, values = candidates[keep], values[keep]
    order = np.lexsort((candidates, -values))[:k]
    return candidates[order]
