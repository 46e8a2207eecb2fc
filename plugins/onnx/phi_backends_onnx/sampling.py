"""How the onnx backend chooses a token, as one function (see :mod:`.engine` for the two paths).

Greedy decoding without a repetition penalty on the CPU provider, in a call with no logits step,
is the engine's own argmax; everything else is :class:`~phi_backends.sampling.ReferenceSampler` on the raw logits, the
chosen token then forced on the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from phi_backends import SamplingConfig
from phi_backends.sampling import ReferenceSampler

if TYPE_CHECKING:
    from .engine import OnnxEngine

__all__ = ["sampling_probabilities"]


def sampling_probabilities(
    config: SamplingConfig,
    logits: np.ndarray,
    history: Sequence[int],
    *,
    seed: int = 0,
    engine: OnnxEngine | None = None,
) -> tuple[np.ndarray, int]:
    """What the engine's step does with ``logits`` after generating ``history`` (no logits step).

    Returns the distribution the next token is drawn from (one-hot for greedy decoding) and
    the token the first step of a call with ``seed`` takes. Without an ``engine`` the
    engine's own argmax cannot run, so greedy decoding is the emulated path's.
    """
    if engine is not None and engine.uses_engine_greedy(config):
        token = engine.engine_argmax(logits)
        probs = np.zeros(int(logits.size))
        probs[token] = 1.0
        return probs, token
    sampler = ReferenceSampler(config, seed)
    probs = sampler.probabilities(logits, list(history))
    return probs, sampler.sample(logits, list(history))
