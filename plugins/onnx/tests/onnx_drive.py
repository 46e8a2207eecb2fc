"""The onnx tests' call of the kit's driver: stopped after an end-of-generation id, as the core does."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import phi_backends as pb
from phi_backends.backend import SequenceRequest
from phi_backends.logits import LogitsStep
from phi_backends.testing import SequenceRun, drive_sequence


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
) -> SequenceRun:
    """Up to ``n`` tokens; ``budget`` (default ``n``) is the room asked for."""
    request = SequenceRequest(tuple(prompt), config, seed, n if budget is None else budget, step, reuse)
    return drive_sequence(engine, request, tokens=n, stop_at_eog=True)
