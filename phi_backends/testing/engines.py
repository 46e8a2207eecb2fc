"""Driving an :class:`~phi_backends.backend.Engine` directly, without a Generator, in tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import cast

import numpy as np

from ..backend import Engine, EngineSequence, SequenceRequest
from ..logits import LogitsStep, TokenLogprob
from ..sampling import SamplingConfig

__all__ = ["SequenceRun", "drive_sequence", "drive_sequences", "run_sequence", "sequence_request"]


@dataclass(frozen=True)
class SequenceRun:
    """What one sequence gave: its tokens, how many prompt ids came from a cache, and more.

    ``logprobs`` has one entry a token, read from the request's :class:`LogitsStep` right after
    the step that drew it (None without one); ``rows``, with ``keep_rows``, a copy of each
    logits row the model gave, before the request's own step changed it.
    """

    tokens: list[int]
    reused_tokens: int
    logprobs: list[TokenLogprob | None]
    rows: list[np.ndarray] = field(default_factory=list)


class _RowKeeper:
    """A logits step that keeps a copy of each row, then runs the call's own step."""

    def __init__(self, then: LogitsStep | None) -> None:
        self.then = then
        self.rows: list[np.ndarray] = []

    def __call__(self, row: np.ndarray) -> None:
        self.rows.append(row.copy())
        if self.then is not None:
            self.then(row)


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


def drive_sequences(
    engine: Engine,
    requests: Sequence[SequenceRequest],
    *,
    tokens: Sequence[int] | None = None,
    joins: Sequence[int] | None = None,
    stop_at_eog: bool = False,
    keep_rows: bool = False,
) -> list[SequenceRun]:
    """Run ``requests`` together as a scheduler would: each opened at the step ``joins`` gives it
    (default 0), stepped with the others then running, released after its ``tokens`` (default its
    budget) or, with ``stop_at_eog``, after an end-of-generation id of the engine.

    ``keep_rows`` puts a row keeper in front of every request's logits step (a step even where
    the request had none, which may send an engine down its logits path)."""
    counts = list(tokens) if tokens is not None else [request.budget for request in requests]
    starts = list(joins) if joins is not None else [0] * len(requests)
    if not len(counts) == len(starts) == len(requests):
        raise ValueError("tokens and joins need one entry a request")
    keepers = [_RowKeeper(request.logits_step) for request in requests] if keep_rows else []
    ids: list[list[int]] = [[] for _ in requests]
    logprobs: list[list[TokenLogprob | None]] = [[] for _ in requests]
    reused = [0] * len(requests)
    running: dict[int, EngineSequence] = {}
    try:
        step = 0
        while running or any(start >= step for start in starts):
            for i, request in enumerate(requests):
                if starts[i] == step:
                    opened = replace(request, logits_step=cast(LogitsStep, keepers[i])) if keep_rows else request
                    running[i] = engine.open(opened)
                    if counts[i] == 0:
                        reused[i] = running[i].reused_tokens
                        running.pop(i).release()
            if running:
                order = list(running)
                for i, token in zip(order, engine.step([running[i] for i in order]), strict=True):
                    ids[i].append(token)
                    own = requests[i].logits_step
                    logprobs[i].append(own.logprob(token) if isinstance(own, LogitsStep) else None)
                    if len(ids[i]) == counts[i] or (stop_at_eog and token in engine.info.eog_token_ids):
                        reused[i] = running[i].reused_tokens
                        running.pop(i).release()
            step += 1
    finally:
        for sequence in running.values():
            sequence.release()
    return [
        SequenceRun(ids[i], reused[i], logprobs[i], keepers[i].rows if keep_rows else []) for i in range(len(requests))
    ]


def drive_sequence(
    engine: Engine,
    request: SequenceRequest,
    *,
    tokens: int | None = None,
    stop_at_eog: bool = False,
    keep_rows: bool = False,
) -> SequenceRun:
    """One sequence alone: opened, stepped for ``tokens`` (default its budget), released."""
    counts = None if tokens is None else [tokens]
    (run,) = drive_sequences(engine, [request], tokens=counts, stop_at_eog=stop_at_eog, keep_rows=keep_rows)
    return run


def run_sequence(
    engine: Engine, prompt_ids: Sequence[int], config: SamplingConfig, *, seed: int, n: int, reuse_prefix: bool = True
) -> list[int]:
    """The first ``n`` tokens one sequence samples alone (opened, stepped ``n`` times, released)."""
    request = sequence_request(engine, prompt_ids, config, seed=seed, budget=n, reuse_prefix=reuse_prefix)
    return drive_sequence(engine, request).tokens
