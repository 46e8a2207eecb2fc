"""One call's sequence on an ``og.Generator``, and the generator kept after it for the next call.

onnxruntime-genai's generator batches are static on the CPU (a sequence cannot join a running
batch), so the engine runs one sequence at a time. What it can do is rewind: a generator whose
sequence has ended keeps its KV cache, and the next call whose prompt starts with the same ids
rewinds it to the shared prefix and appends only the rest (:func:`reusable_prefix`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from phi_backends.backend import SequenceRequest
    from phi_backends.sampling import ReferenceSampler

    from .engine import OnnxEngine

__all__ = ["KeptGenerator", "OnnxSequence", "replace_last_token", "reusable_prefix", "rope_switch"]

#: Where onnxruntime-genai switches Phi-3's RoPE factors from short to long: past this many
#: tokens the model runs with other factors, and at one more token the engine recomputes the
#: whole cache with them (Generator::GenerateNextToken, by model type).
_ROPE_SWITCH = {"phi3": 4096, "phimoe": 4096, "phi3small": 8192}
#: Devices where onnxruntime-genai appends to a sequence that has started (others refuse: DirectML).
REWINDING_DEVICES = frozenset({"CPU", "CUDA", "WebGPU"})


def rope_switch(model_type: str) -> int | None:
    """The length past which ``model_type`` computes with its long RoPE factors, if it switches."""
    return _ROPE_SWITCH.get(model_type)


@dataclass
class KeptGenerator:
    """A generator whose sequence has ended, its cache kept for a later prompt."""

    generator: Any
    max_length: int
    long_rope: bool  # its cache was computed past the RoPE switch (then all of it uses the long factors)


@dataclass
class OnnxSequence:
    """An open call (:class:`phi_backends.backend.EngineSequence`)."""

    request: SequenceRequest
    native: bool  # the engine's own argmax picks each token (else ReferenceSampler, the token forced)
    sampler: ReferenceSampler | None
    owner: OnnxEngine
    generator: Any = None  # created, or taken from the kept one, by the first step
    max_length: int = 0
    long_rope: bool = False
    generated: list[int] = field(default_factory=list)
    forced: np.ndarray | None = None  # the logits row that forces the emulated path's token
    reused: int = 0
    broken: bool = False  # a step failed midway: the generator's state is unknown, never kept
    released: bool = False

    @property
    def reused_tokens(self) -> int:
        return self.reused

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        self.owner.keep(self)
        self.generator = None


def reusable_prefix(kept: KeptGenerator, prompt: Sequence[int], need: int, switch: int | None) -> int:
    """How many of ``prompt``'s first ids ``kept`` can keep (0: start a fresh generator instead).

    The last id the generator took is not counted: after ``generate_next_token`` it is in the
    sequence but not yet in the cache (and after an end-of-sequence id the cache holds the whole
    sequence, but rewinding to the full length is a no-op that leaves the engine's pending token
    to be computed first). At most ``len(prompt) - 1`` ids are kept, so that the model runs on at
    least one id and produces the logits of this call.
    """
    if kept.max_length < need:
        return 0
    if switch is not None and (len(prompt) > switch) != kept.long_rope:
        return 0  # a fresh generator would use other RoPE factors for the shared ids
    generator = kept.generator
    usable = min(int(generator.token_count()) - 1, len(prompt) - 1)
    if usable <= 0:
        return 0
    held = np.asarray(generator.get_sequence(0))[:usable]
    differ = np.flatnonzero(held != np.asarray(prompt[:usable], dtype=held.dtype))
    return int(differ[0]) if differ.size else usable


def replace_last_token(generator: Any, token: int) -> None:
    """Put ``token`` in place of the engine's own last choice.

    ``generate_next_token`` can recompute the logits we set and choose by itself: for Phi-3
    models onnxruntime-genai re-runs the whole sequence when it reaches 4097 tokens (to switch
    RoPE factors). The engine's token is then replaced by ours, on the recomputed cache.
    """
    generator.rewind_to(generator.token_count() - 1)
    generator.append_tokens(np.asarray([token], dtype=np.int32))


#: onnxruntime-genai ended a sequence (``is_done()``) before the core stopped it: never expected.
NOT_DONE_MESSAGE = "onnxruntime-genai ended the sequence before phi-backends stopped it"
