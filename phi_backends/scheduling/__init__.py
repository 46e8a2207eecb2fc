"""How calls on one Generator share its engine: one worker thread steps every running sequence.

- :mod:`.call`: one call's state, from its prompt ids to its :class:`~phi_backends.Completion`
  (end of turn, stop strings, budget, cancel, usage, timings, logprobs);
- :mod:`.scheduler`: the worker that admits calls up to the engine's capacity, steps them in one
  engine batch, and lets each leave as soon as it is done (continuous batching);
- :mod:`.streams`: what a caller holds: a :class:`Stream` (threads) or an :class:`AsyncStream`
  (asyncio) fed by the worker.
"""

from .call import Call, Chunk, Completion, FinishReason, Timings, Usage
from .scheduler import Scheduler
from .streams import AsyncStream, Stream

__all__ = ["AsyncStream", "Call", "Chunk", "Completion", "FinishReason", "Scheduler", "Stream", "Timings", "Usage"]
