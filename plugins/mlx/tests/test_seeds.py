"""Per-call seeds on MLX: reproducible, and independent of any other model or MLX's global RNG.

mlx-lm's own sampler draws from MLX's process-wide random state (``mx.random.seed``); ours
draws from a key chain made from each call's seed, so nothing outside the call can move it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlx.core as mx
import pytest

import phi_backends as pb

STORY = "Tell me a long story about the sea"
CONFIG = pb.SamplingConfig(temperature=1.0, top_p=0.95, seed=17, max_tokens=24)


@pytest.fixture(scope="module")
def pair(tiny_phi3_mlx: Path) -> Iterator[tuple[pb.Generator, pb.Generator]]:
    with (
        pb.load(str(tiny_phi3_mlx), backend="mlx") as first,
        pb.load(str(tiny_phi3_mlx), backend="mlx") as second,
    ):
        yield first, second


def test_two_generators_interleaved_keep_their_seeds(pair: tuple[pb.Generator, pb.Generator]) -> None:
    first, second = pair
    alone_a = first.generate(STORY, CONFIG, template=None).text
    alone_b = second.generate("Once upon a time", CONFIG.replace(seed=99), template=None).text
    assert alone_a != alone_b
    a = first.stream(STORY, CONFIG, template=None)
    b = second.stream("Once upon a time", CONFIG.replace(seed=99), template=None)
    texts = {"a": "", "b": ""}
    live = {"a": a, "b": b}
    while live:  # one token from each in turn
        for name, stream in list(live.items()):
            try:
                texts[name] += next(stream).text
            except StopIteration:
                del live[name]
    assert texts == {"a": alone_a, "b": alone_b}


def test_suspended_streams_leave_the_threads_default_stream_alone(pair: tuple[pb.Generator, pb.Generator]) -> None:
    """mlx-lm's generate_step keeps `with mx.stream(...)` open while suspended; closed out of order,
    two of them would leave one engine's stream as the thread's default."""
    first, second = pair
    default = mx.default_stream(mx.default_device())
    a = first.stream(STORY, CONFIG, template=None)
    b = second.stream(STORY, CONFIG, template=None)
    next(a), next(b)
    assert mx.default_stream(mx.default_device()) == default
    a.close()  # first in, first out
    b.close()
    assert mx.default_stream(mx.default_device()) == default


def test_global_mlx_seed_neither_matters_nor_moves(pair: tuple[pb.Generator, pb.Generator]) -> None:
    first, _ = pair
    mx.random.seed(1)
    one = first.generate(STORY, CONFIG, template=None).text
    after_one = mx.random.uniform().item()
    mx.random.seed(2)
    two = first.generate(STORY, CONFIG, template=None).text
    assert one == two, "MLX's global seed does not reach our sampler"
    mx.random.seed(1)
    assert mx.random.uniform().item() == after_one, "generating does not draw from MLX's global RNG"


def test_same_seed_same_tokens_on_smollm2(smollm2_mlx: Path) -> None:
    """A real model, every filter on: same seed, same ids; another seed, other ids."""
    cfg = pb.SamplingConfig(temperature=1.5, top_k=50, top_p=0.95, min_p=0.01, seed=5, max_tokens=4)
    prompt = "My favourite winter sport is"
    with pb.load(str(smollm2_mlx), backend="mlx") as gen:
        first = gen.generate(prompt, cfg, template=None).token_ids
        assert gen.generate(prompt, cfg, template=None).token_ids == first
        assert gen.generate(prompt, cfg.replace(seed=6), template=None).token_ids != first
