"""``phi-backends serve`` against llama-cpp-python's own server and against the library called
directly (issue 14's goals), on the same GGUF, threads and context.

Two measurements, each side run in turn within every round (the order rotating), medians printed:

1. **8 concurrent streaming clients** (different prompts, greedy, ``max_tokens`` each, the end
   of turn banned so every answer is whole): the median time to first token (from the moment the
   8 requests are sent together) and the aggregate tokens/s (all tokens / time to the last token).
   - ``serve``: ``phi-backends serve`` (a process), with ``-O n_seq_max=8``: the 8 calls in one batch;
   - ``llama-cpp-python``: ``python -m llama_cpp.server`` (a process) with ``--interrupt_requests
     False`` (as shipped, a new request cuts off the running one: 7 of 8 streams end early);
   - ``library``: 8 ``Generator.astream`` calls at once on a Generator loaded as ``serve`` loads it,
     in this process.
   Goals: median TTFT ≤ 0.25× llama-cpp-python's; aggregate ≥ 1.1× its, ≥ 0.9× the library's.
2. **One streaming client**: decode tokens/s (first token to last) over HTTP against the library
   directly (goal ≥ 0.95), and the time to first token HTTP adds.

Tokens are counted by tokenizing each answer's text with the model's tokenizer, the same way for
every side. ``--busy`` adds one busy neighbour process (a Python spin loop) for the whole run.

    python benchmarks/serving.py [--model smollm2] [--tokens 64] [--rounds 3] [--busy]

Needs ``pip install 'phi-backends[server]' 'llama-cpp-python[server]' httpx`` and the llama-cpp plugin.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import httpx
from batching import PROMPTS  # the same 8 prompts as that benchmark (a sibling script)

import phi_backends as pb
from phi_backends.models import resolve

#: (seconds to the first token, seconds to the last token, the text), per client
Answer = tuple[float, float, str]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def _server(args: list[str], ready: str) -> Iterator[None]:
    """A server process, up once ``ready`` answers 200; stopped at the end. Its log goes to a file
    (a pipe nobody reads would fill and stop it)."""
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 300
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise SystemExit(f"{args[0]} exited: {log.read()[-2000:]}")
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(ready, timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise SystemExit(f"{' '.join(args)} did not answer {ready}")
                time.sleep(0.2)
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _http_clients(base: str, model: str, prompts: list[str], body: dict[str, Any]) -> list[Answer]:
    """Stream one chat completion per prompt, all sent at once; each one's times and text."""
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=len(prompts) + 2)) as client:
        start = time.perf_counter()

        async def one(prompt: str) -> Answer:
            request = {**body, "model": model, "messages": [{"role": "user", "content": prompt}], "stream": True}
            first, last, pieces = 0.0, 0.0, []
            async with client.stream("POST", base + "/v1/chat/completions", json=request) as reply:
                reply.raise_for_status()
                async for line in reply.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    choices = json.loads(line[6:]).get("choices") or [{}]
                    text = (choices[0].get("delta") or {}).get("content")
                    if text:
                        last = time.perf_counter() - start
                        first = first or last
                        pieces.append(text)
            return first, last, "".join(pieces)

        return await asyncio.gather(*(one(prompt) for prompt in prompts))


async def _library_clients(gen: pb.Generator, prompts: list[str], config: pb.SamplingConfig) -> list[Answer]:
    start = time.perf_counter()

    async def one(prompt: str) -> Answer:
        first, last, pieces = 0.0, 0.0, []
        async for chunk in gen.astream([{"role": "user", "content": prompt}], config):
            if chunk.text:
                last = time.perf_counter() - start
                first = first or last
                pieces.append(chunk.text)
        return first, last, "".join(pieces)

    return await asyncio.gather(*(one(prompt) for prompt in prompts))


def _spin() -> None:  # pragma: no cover - the busy neighbour
    while True:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--single-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--busy", action="store_true", help="one busy neighbour process for the whole run")
    args = parser.parse_args()

    path = str(resolve(args.model, formats=("gguf",)).path)
    options = {"n_threads": args.threads, "n_ctx": args.n_ctx, "n_seq_max": 8}
    gen = pb.load(path, backend="llama-cpp", **options)
    banned = {str(token): -100.0 for token in sorted(gen.info.eog_token_ids)}  # every answer runs to max_tokens
    body = {"temperature": 0, "max_tokens": args.tokens, "logit_bias": banned}
    config = pb.SamplingConfig(
        temperature=0, max_tokens=args.tokens, logit_bias=tuple((int(k), v) for k, v in banned.items())
    )

    def tokens(text: str) -> int:
        return len(gen.prompt_ids(text, template=None)) - (1 if gen.info.add_bos else 0)

    ours, theirs = _free_port(), _free_port()
    cli = str(Path(sys.executable).with_name("phi-backends"))  # the console script next to this Python
    serve = [cli, "serve", "--model", path, "--name", "m", "--port", str(ours)]
    serve += ["--backend", "llama-cpp", *(f"-O{k}={v}" for k, v in options.items())]
    llama = [sys.executable, "-m", "llama_cpp.server", "--model", path, "--model_alias", "m", "--port", str(theirs)]
    llama += ["--n_threads", str(args.threads), "--n_ctx", str(args.n_ctx), "--interrupt_requests", "False"]
    neighbour = multiprocessing.Process(target=_spin, daemon=True) if args.busy else None
    if neighbour is not None:
        neighbour.start()

    sides: dict[str, Callable[[list[str], int], Coroutine[Any, Any, list[Answer]]]] = {
        "serve": lambda prompts, n: _http_clients(f"http://127.0.0.1:{ours}", "m", prompts, {**body, "max_tokens": n}),
        "llama-cpp-python": lambda prompts, n: _http_clients(
            f"http://127.0.0.1:{theirs}", "m", prompts, {**body, "max_tokens": n}
        ),
        "library": lambda prompts, n: _library_clients(gen, prompts, config.replace(max_tokens=n)),
    }
    ttft: dict[str, list[float]] = {name: [] for name in sides}
    rate: dict[str, list[float]] = {name: [] for name in sides}
    single: dict[str, list[float]] = {name: [] for name in sides}
    single_ttft: dict[str, list[float]] = {name: [] for name in sides}
    try:
        with _server(serve, f"http://127.0.0.1:{ours}/health"), _server(llama, f"http://127.0.0.1:{theirs}/v1/models"):
            for side in sides.values():  # warm-up: first calls, caches, connections
                asyncio.run(side(PROMPTS[:2], 8))
            order = list(sides)
            for round_ in range(args.rounds):
                order = order[1:] + order[:1]
                for name in order:
                    answers = asyncio.run(sides[name](PROMPTS, args.tokens))
                    counts = [tokens(text) for _, _, text in answers]
                    short = [i for i, c in enumerate(counts) if c < args.tokens * 0.9]
                    if short:
                        print(
                            f"  {name}: clients {short} got fewer than {args.tokens} tokens: {counts}", file=sys.stderr
                        )
                    ttft[name].append(statistics.median(first for first, _, _ in answers))
                    rate[name].append(sum(counts) / max(last for _, last, _ in answers))
                    ((first, last, text),) = asyncio.run(
                        sides[name](PROMPTS[round_ % 8 : round_ % 8 + 1], args.single_tokens)
                    )
                    single[name].append((tokens(text) - 1) / (last - first))
                    single_ttft[name].append(first)
                    print(
                        f"round {round_ + 1} {name:>16}: 8 clients median TTFT {ttft[name][-1]:.3f} s, "
                        f"{rate[name][-1]:.1f} tok/s; one client {single[name][-1]:.1f} tok/s, TTFT {first:.3f} s",
                        flush=True,
                    )
    finally:
        if neighbour is not None:
            neighbour.terminate()
        gen.close()

    med = {name: (statistics.median(ttft[name]), statistics.median(rate[name])) for name in sides}
    one = {name: (statistics.median(single[name]), statistics.median(single_ttft[name])) for name in sides}
    print(
        f"\nmedians over {args.rounds} rounds ({'with' if args.busy else 'without'} a busy neighbour), {args.tokens} tokens per client:"
    )
    for name in sides:
        print(f"  {name:>16}: 8 clients TTFT {med[name][0]:.3f} s, aggregate {med[name][1]:.1f} tok/s; "
              f"one client {one[name][0]:.1f} tok/s, TTFT {one[name][1]:.3f} s")  # fmt: skip
    s, peer, lib = med["serve"], med["llama-cpp-python"], med["library"]
    print(f"8 clients: TTFT serve/llama-cpp-python {s[0] / peer[0]:.2f} (goal <= 0.25)")
    print(f"8 clients: aggregate serve/llama-cpp-python {s[1] / peer[1]:.2f} (goal >= 1.1)")
    print(f"8 clients: aggregate serve/library {s[1] / lib[1]:.2f} (goal >= 0.9)")
    print(f"one client: decode serve/library {one['serve'][0] / one['library'][0]:.2f} (goal >= 0.95); "
          f"TTFT added by HTTP {one['serve'][1] - one['library'][1]:+.3f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
