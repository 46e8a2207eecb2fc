"""Driving the onnx engine as the core's scheduler does: open, step until done, release."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import phi_backends as pb
from phi_backends.backend import SequenceRequest
from phi_backends.logits import LogitsStep, TokenLogprob


@dataclass(frozen=True)
class Run:
    tokens: list[int]
    reused: int
    logprobs: list[TokenLogprob | None]


def drive(
    engine: Any,
    prompt: Sequence[int],
    config: pb.SamplingConfig,
    seed: int,
    n: int,
    *,
    reuse: bool = True,
    step: LogitsStep | None = None,
    budget: int | None = None,
) -> Run:
    """Up to ``n`` tokens, stopping after an end-of-generation id as the core does; ``budget``
    (default ``n``) is the room asked for."""
    request = SequenceRequest(
        prompt_ids=tuple(prompt),
        config=config,
        seed=seed,
        budget=n if budget is None else budget,
        logits_step=step,
        reuse_prefix=reuse,
    )
    sequence = engine.open(request)
    tokens: list[int] = []
    logprobs: list[TokenLogprob | None] = []
    try:
        while len(tokens) < n:
            (token,) = engine.step([sequence])
            tokens.append(token)
            logprobs.append(step.logprob(token) if step is not None else None)
            if token in engine.info.eog_token_ids:
                break
        return Run(tokens, sequence.reused_tokens, logprobs)
    finally:
        sequence.release()
