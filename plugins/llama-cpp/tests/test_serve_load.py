"""``phi_backends.server`` under load on llama.cpp (the tiny Phi-3, 8 sequences in one batch), with
real clients on 127.0.0.1: concurrent clients each get exactly the text the library gives them
alone, and streaming clients that disconnect at random points leave no sequence, thread or memory
behind."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

import phi_backends as pb
from phi_backends.server import create_app
from phi_backends.testing import SCRIPT_TEXT
from phi_backends.testing.contract import os_threads, release_free_heap, resident_memory
from phi_backends.testing.server import serving

USER = [{"role": "user", "content": "Write a haiku about ice hockey"}]
SAMPLED = pb.SamplingConfig(temperature=0.9, top_p=0.95, repeat_penalty=1.1, max_tokens=48)
#: How much resident memory may grow over a round of disconnecting clients (after a warm-up round).
MAX_RSS_GROWTH = 0.05


@pytest.fixture(scope="module")
def gen(tiny_phi3: Path) -> Iterator[pb.Generator]:
    with pb.load(str(tiny_phi3), backend="llama-cpp", n_threads=2, n_seq_max=8) as loaded:
        assert loaded.max_sequences == 8
        yield loaded


@pytest.fixture(scope="module")
def url(gen: pb.Generator) -> Iterator[str]:
    with serving(create_app({"tiny": gen})) as served:
        yield served


def test_eight_streaming_clients_at_once_each_get_exactly_their_text(gen: pb.Generator, url: str) -> None:
    seeds = list(range(1, 9))
    alone = [gen.generate(USER, SAMPLED.replace(seed=seed)).text for seed in seeds]
    assert len(set(alone)) == 8

    async def main() -> list[str]:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)

        async def one(seed: int) -> str:
            stream = await client.chat.completions.create(
                model="tiny", messages=USER, seed=seed, temperature=SAMPLED.temperature, top_p=SAMPLED.top_p,  # type: ignore[arg-type]
                max_tokens=SAMPLED.max_tokens, stream=True, extra_body={"repeat_penalty": SAMPLED.repeat_penalty},
            )  # fmt: skip
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

        return await asyncio.gather(*(one(seed) for seed in seeds))

    assert asyncio.run(main()) == alone


async def _leaving_clients(url: str, count: int, rng: random.Random) -> int:
    """``count`` streaming clients at once, each leaving after a random number of events (0: before
    the first); how many read to the end."""
    body = {"model": "tiny", "messages": USER, "max_tokens": 200, "stream": True}

    async def one(client: httpx.AsyncClient, leave_after: int, seed: int) -> bool:
        async with client.stream("POST", url + "/v1/chat/completions", json={**body, "seed": seed}) as reply:
            assert reply.status_code == 200
            events = 0
            async for line in reply.aiter_lines():
                if line == "data: [DONE]":
                    return True
                events += line.startswith("data: ")
                if events > leave_after:
                    return False
        return False

    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=count)) as client:
        ends = await asyncio.gather(*(one(client, rng.randrange(0, 300), i) for i in range(count)))
    return sum(ends)


def _idle(gen: pb.Generator) -> None:
    for _ in range(500):
        if gen.load == (0, 0):
            return
        time.sleep(0.02)
    raise AssertionError(f"the server still holds calls: {gen.load} (running, waiting)")


def test_sixty_four_clients_that_leave_mid_stream_leave_nothing_behind(gen: pb.Generator, url: str) -> None:
    rng = random.Random(7)
    asyncio.run(_leaving_clients(url, 64, rng))  # warm-up: the pools and caches a first round builds
    _idle(gen)
    release_free_heap()
    rss, threads = resident_memory(), os_threads()
    finished = asyncio.run(_leaving_clients(url, 64, rng))
    _idle(gen)
    release_free_heap()
    grown = resident_memory() / rss - 1
    print(f"\n64 leaving clients ({finished} read to the end): resident memory {rss / 2**20:.1f} MiB -> "
          f"{resident_memory() / 2**20:.1f} MiB ({grown:+.1%}); threads {threads} -> {os_threads()}")  # fmt: skip
    assert grown < MAX_RSS_GROWTH
    assert os_threads() == threads
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    out = client.chat.completions.create(model="tiny", messages=USER, temperature=0)  # type: ignore[arg-type]
    assert out.choices[0].message.content == SCRIPT_TEXT  # and it goes on serving
