"""Driving an :class:`~phi_backends.backend.Engine` directly, without a Generator, in tests."""

from __future__ import annotations

from collections.abc import Sequence

from ..backend import Engine, SequenceRequest
from ..logits import LogitsStep
from ..sampling import SamplingConfig

__all__ = ["run_sequence", "sequence_request"]


def sequence_request(
    engine: Engine,
    prompt_ids: Sequence[int],
    config: SamplingConfig,
    *,
    seed: int,
    budget: int | None = None,
    reuse_prefix: bool = True,
) -> SequenceRequest:
    """The request a Generator would make for ``prompt_ids`` (with the logits step the config needs)."""
    return SequenceRequest(
        prompt_ids=tuple(prompt_ids),
        config=config,
        seed=seed,
        budget=budget if budget is not None else config.max_tokens,
        logits_step=LogitsStep.for_call(config, engine.info.vocab_size),
        reuse_prefix=reuse_prefix,
    )


def run_sequence(
    engine: Engine, prompt_ids: Sequence[int], config: SamplingConfig, *, seed: int, n: int, reuse_prefix: bool = True
) -> list[int]:
    """The first ``n`` tokens one sequence samples alone (opened, stepped ``n`` times, released)."""
    sequence = engine.open(sequence_request(engine, prompt_ids, config, seed=seed, budget=n, reuse_prefix=reuse_prefix))
    try:
        return [engine.step([sequence])[0] for _ in range(n)]
    finally:
        sequence.release()
