"""The logits step: what the core does to a model's logits before any engine's sampler reads them.

For each token of a call, in this order, the same on every engine:

1. the model's logits for the sequence: one float32 row of ``EngineInfo.vocab_size`` (padding
   ids past the tokenizer included);
2. ``SamplingConfig.logit_bias``: each listed id's logit plus its bias; a bias of -100 bans the
   token outright (its logit becomes -inf, as OpenAI documents -100 to mean);
3. (reserved for structured output: a constraint's mask of the tokens that may come next);
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

    def __init__(self, config: SamplingConfig, vocab_size: int) -> None:
        import numpy as np

        self.check(config, vocab_size)
        bias = config.logit_bias
        self._ids = np.fromiter((token for token, _ in bias), dtype=np.intp, count=len(bias))
        values = np.fromiter((value for _, value in bias), dtype=np.float32, count=len(bias))
        values[values <= -MAX_BIAS] = -np.inf  # -100 bans, whatever the logit was
        self._values = values
        self._logprobs = config.reports_logprobs
        self._top = config.top_logprobs
        self._row: np.ndarray | None = None
        self._log_total = 0.0

    @staticmethod
    def for_call(config: SamplingConfig, vocab_size: int) -> LogitsStep | None:
        """The step ``config`` needs, or None when it needs none."""
        if not config.logit_bias and not config.reports_logprobs:
            return None
        return LogitsStep(config, vocab_size)

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
        import numpy as np

        if self._ids.size:
            logits[self._ids] += self._values
        if self._logprobs:
            row = np.array(logits, dtype=np.float32, copy=True)  # the engine may overwrite its buffer next
            top = float(row.max())
            self._log_total = top + math.log(float(np.exp(row - top).sum(dtype=np.float64)))
            self._row = row

    def logprob(self, token: int) -> TokenLogprob | None:
        """The log-probabilities of the row last seen, for the token the sampler chose."""
        import numpy as np

        row = self._row
        if row is None:
            return None
        total = self._log_total
        top: tuple[tuple[int, float], ...] = ()
        if self._top:
            k = min(self._top, row.size)
            best = np.argpartition(-row, k - 1)[:k]
            best = best[np.lexsort((best, -row[best]))]
            top = tuple((int(i), float(row[i]) - total) for i in best)
        return TokenLogprob(token=token, logprob=float(row[token]) - total, top=top)
