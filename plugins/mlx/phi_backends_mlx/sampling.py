""":class:`~phi_backends.SamplingConfig` on MLX arrays, for mlx-lm's ``generate_step``.

mlx-lm's own chain means something else: its sampler applies temperature *after* top-p,
min-p and top-k, its repetition penalty looks at the last 20 tokens *including the prompt*,
and its seed is the process-wide ``mx.random.seed``. So we hand ``generate_step`` our own
pieces instead:

- one *logits processor* that does the whole documented chain on float32 logits: penalty
  over the generated tokens only → temperature → top-k → top-p → min-p, returning the
  tempered logits with every filtered token at ``-inf`` (``generate_step`` then takes the
  log-softmax, which changes nothing the sampler sees);
- a *sampler* that draws with ``mx.random.categorical(key=...)`` from a key made from this
  call's seed and split once per token, so no global random state is read or written and
  two models sampling in one process do not disturb each other.

Greedy decoding without a penalty passes neither: it is mlx-lm's own argmax path,
unchanged, which keeps its asynchronous pipelining. Everything stays lazy MLX ops (no
per-token copy to NumPy). ``tests/test_sampling_paths.py`` checks :func:`filtered_logits`
against :class:`phi_backends.sampling.ReferenceSampler`; :func:`sampling_probabilities` runs the
whole path one step of ``generate_step`` takes, for the cross-backend tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import mlx.core as mx
import numpy as np
from mlx_lm.sample_utils import greedy_sampler

from phi_backends import SamplingConfig

__all__ = ["KeyedSampler", "SamplingPlan", "filtered_logits", "sampling_probabilities"]

LogitsProcessor = Callable[[Any, Any], Any]


def filtered_logits(config: SamplingConfig, logits: Any, generated: Any) -> Any:
    """The documented chain on ``logits`` (shape ``(..., vocab)``), as float32.

    ``generated`` holds the tokens generated so far in this call (an int array, oldest
    first). Greedy configs return the penalised logits; others the tempered logits with
    filtered tokens at ``-inf``, so that ``softmax`` of the result is the distribution the
    next token is drawn from.
    """
    x = logits.astype(mx.float32)
    vocab = x.shape[-1]
    window = _penalty_window(config, generated)
    if window is not None:
        hit = mx.zeros((vocab,), dtype=mx.bool_)
        hit[window] = True  # each distinct token once, however often it occurs
        p = config.repeat_penalty
        x = mx.where(hit, mx.where(x > 0, x / p, x * p), x)
    if config.greedy:
        return x
    # shifted so that the largest is 0 first: a tiny temperature cannot overflow float32 to inf
    x = (x - x.max(axis=-1, keepdims=True)) / config.temperature
    keep = mx.ones(x.shape, dtype=mx.bool_)
    if config.top_k and config.top_k < vocab:
        kth = mx.topk(x, config.top_k, axis=-1).min(axis=-1, keepdims=True)
        keep = x >= kth  # ties with the k-th logit stay, as in the reference
    if config.top_p is not None and config.top_p < 1.0:
        probs = _softmax(x, keep)
        order = mx.argsort(-probs, axis=-1)  # MLX sorts are stable: ties keep the lower id first
        ranked = mx.take_along_axis(probs, order, axis=-1)
        before = mx.cumsum(ranked, axis=-1, inclusive=False)
        # a token stays while the mass ranked above it is below top_p (so the one crossing stays)
        inside = mx.put_along_axis(mx.zeros_like(keep), order, before < config.top_p, axis=-1)
        keep = keep & inside
    if config.min_p:
        probs = _softmax(x, keep)
        keep = keep & (probs >= config.min_p * probs.max(axis=-1, keepdims=True))
    return mx.where(keep, x, -mx.inf)


def _penalty_window(config: SamplingConfig, generated: Any) -> Any | None:
    if not config.penalizes or generated.size == 0:
        return None
    if config.repeat_last_n == -1 or generated.size <= config.repeat_last_n:
        return generated
    return generated[-config.repeat_last_n :]


def _softmax(x: Any, keep: Any) -> Any:
    return mx.softmax(mx.where(keep, x, -mx.inf), axis=-1)


class KeyedSampler:
    """Draws from log-probabilities with its own key chain: ``key(seed)``, split per token."""

    def __init__(self, seed: int) -> None:
        self._key = mx.random.key(seed)

    def __call__(self, logprobs: Any) -> Any:
        keys = mx.random.split(self._key)
        self._key = keys[0]
        return mx.random.categorical(logprobs, axis=-1, key=keys[1])


class SamplingPlan:
    """What one call hands to ``generate_step``: ``sampler`` and ``logits_processors``
    (both None on the native greedy path).

    ``prompt_length`` is how many ids ``generate_step`` is given as its prompt: with a prefix
    taken from the cache, only the prompt's rest, not the whole prompt.
    """

    def __init__(self, config: SamplingConfig, seed: int, prompt_length: int) -> None:
        self.native = config.greedy and not config.penalizes
        self.sampler: Callable[[Any], Any] | None = None
        self.logits_processors: list[LogitsProcessor] | None = None
        if self.native:
            return

        def process(tokens: Any, logits: Any) -> Any:
            # generate_step passes every id it was given or sampled, its prompt first (never the
            # ids a reused cache held before it); the penalty sees only the sampled ones
            return filtered_logits(config, logits, tokens[prompt_length:])

        self.logits_processors = [process]
        self.sampler = _argmax if config.greedy else KeyedSampler(seed)


def _argmax(logprobs: Any) -> Any:
    return mx.argmax(logprobs, axis=-1)  # the first (lowest) id on a tie


def sampling_probabilities(
    config: SamplingConfig, logits: np.ndarray, history: Sequence[int], *, seed: int = 0
) -> tuple[np.ndarray, int]:
    """What one step of the engine does with ``logits`` after generating ``history``.

    The same pieces as ``MlxEngine.step`` hands to ``generate_step`` (our logits processor
    and sampler, or mlx-lm's own greedy sampler), applied as ``generate_step`` applies them.
    Returns the distribution the next token is drawn from (one-hot for greedy decoding) and
    the token drawn by the first step of a call with ``seed``.
    """
    plan = SamplingPlan(config, seed, prompt_length=0)
    x = mx.array(np.asarray(logits, dtype=np.float32).reshape(1, -1))
    tokens = mx.array([int(t) for t in history], dtype=mx.int32)
    for processor in plan.logits_processors or ():
        x = processor(tokens, x)
    logprobs = x - mx.logsumexp(x, keepdims=True)
    drawn = (plan.sampler or greedy_sampler)(logprobs)
    token = int(np.array(drawn).reshape(-1)[0])
    if config.greedy:
        probs = np.zeros(x.shape[-1])
        probs[token] = 1.0
        return probs, token
    # The sampler draws with the Gumbel-max trick on these logits, so it draws from their exact
    # softmax; MLX's own float32 softmax sums 10^5 terms with a relative error near 1e-4.
    z = np.array(x.astype(mx.float32))[0].astype(np.float64)
    e = np.exp(z - z.max())
    return e / e.sum(), token
