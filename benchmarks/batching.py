"""Concurrent calls on one llama.cpp Generator against llama.cpp's own batch API (goal: ratio >= 0.9).

For N = 1, 2, 4, 8 streams with different prompts (greedy, same GGUF, threads, n_ctx, a KV cache
per sequence and llama.cpp's own flash-attention choice on every side), three ways of running the
N sequences:

- ceiling: llama.cpp's low-level batch API driven directly (all prompts in one ``llama_batch``,
  then one ``llama_batch`` per step with one token per sequence, a native greedy sampler chain per
  sequence), in ONE long-lived thread: the Generator's own worker, between calls (with libgomp, a
  second OS thread calling llama.cpp slows every thread of the process to about half speed);
- batched: N calls streaming at once from one Generator loaded with ``n_seq_max=8``, queued
  together before the worker's next step (the ceiling's N prompts are all there at its start);
- async: the same N calls queued together, read by N asyncio tasks on one event loop (as a
  server reads them) rather than N threads;
- as-they-come: the same N calls from N threads released together, each joining whatever step
  the worker is at (its prompt is rendered and tokenized first, under the GIL with the others):
  the early calls' first tokens start the window, and the late prompts are computed inside it;
- serialized: the same N calls one after another on that Generator (what a Generator did before
  Core v2: one call at a time).

Measured: aggregate decode tokens/s = total generated tokens of the N sequences / wall time from
the first first-token (of any sequence) to the last token (of any sequence). The prompts'
evaluation is inside that window only where it happens after some sequence already has its first
token (the serialized side's later calls; a batched call that joins a step late). Prefix reuse is
off, so every round evaluates every prompt afresh. Rounds run the three sides round-robin, the
order rotating each round, so that machine noise hits them alike; medians are printed.

Also the time to first token of 8 calls started together (a barrier): the median over the 8
calls of (first chunk - release of the barrier), batched (``n_seq_max=8``) against serialized
(the same Generator admitting one call at a time, as ``n_seq_max=1`` would, on the same worker
thread), alternating.

    python benchmarks/batching.py [--model smollm2] [--tokens 48] [--rounds 3] [--counts 1,2,4,8]
    python benchmarks/batching.py --ceiling-sampler argmax   # NumPy argmax instead of llama.cpp's greedy sampler
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import phi_backends as pb
from phi_backends.models import resolve

PROMPTS = [
    "Write a long story about a hockey team that plays on a frozen lake every winter.",
    "Tell me, in great detail, how bread is baked in a village bakery before dawn.",
    "Describe a long journey by train across a snowy country, station by station.",
    "Write a long letter from a lighthouse keeper to his sister about the storms.",
    "Explain at length how a small town prepares for its summer music festival.",
    "Write a long story about a girl who builds a robot from spare bicycle parts.",
    "Describe, step by step and in detail, a day in the life of a beekeeper.",
    "Write a long adventure story about sailors searching for a lost island.",
]

# (tokens generated, seconds from the first first-token to the last token,
#  tokens after the last first-token, seconds from the last first-token to the last token)
Run = tuple[int, float, int, float]


class Ceiling:
    """llama.cpp's batch API driven directly. Every call into llama.cpp goes through ``on_worker``
    (the Generator's own worker thread, see :func:`main`)."""

    def __init__(
        self, path: str, *, n_ctx: int, threads: int, n_seq_max: int, sampler: str, on_worker: Callable[[Any], Any]
    ) -> None:
        import llama_cpp

        self._ll = llama_cpp
        self._sampler = sampler
        self._call = on_worker
        self._call(lambda: self._load(path, n_ctx, threads, n_seq_max))

    def _load(self, path: str, n_ctx: int, threads: int, n_seq_max: int) -> None:
        ll = self._ll
        ll.llama_backend_init()
        mparams = ll.llama_model_default_params()
        mparams.n_gpu_layers = 0
        self._model = ll.llama_model_load_from_file(path.encode(), mparams)
        self._vocab = ll.llama_model_get_vocab(self._model)
        self._n_vocab = ll.llama_vocab_n_tokens(self._vocab)
        cparams = ll.llama_context_default_params()
        # The context our engine makes: a KV cache of n_ctx cells per sequence, flash attention as
        # llama.cpp chooses (plugins/llama-cpp/phi_backends_llama_cpp/engine.py).
        cparams.n_ctx = n_ctx * n_seq_max
        cparams.n_batch = cparams.n_ubatch = 512
        cparams.n_seq_max = n_seq_max
        cparams.kv_unified = False
        cparams.n_threads = cparams.n_threads_batch = threads
        cparams.no_perf = True
        self._ctx = ll.llama_init_from_model(self._model, cparams)
        self._memory = ll.llama_get_memory(self._ctx)
        self._n_batch = ll.llama_n_batch(self._ctx)
        self._batch = ll.llama_batch_init(self._n_batch, 0, 1)

    def run(self, prompts: list[list[int]], max_tokens: int) -> Run:
        return self._call(lambda: self._run(prompts, max_tokens))  # type: ignore[no-any-return]

    def _sample(self, chain: Any, row: int) -> int:
        ll = self._ll
        if chain is None:
            pointer = ll.llama_get_logits_ith(self._ctx, row)
            return int(np.argmax(np.ctypeslib.as_array(pointer, shape=(self._n_vocab,))))
        return int(ll.llama_sampler_sample(chain, self._ctx, row))

    def _run(self, prompts: list[list[int]], max_tokens: int) -> Run:
        ll, batch = self._ll, self._batch
        ll.llama_memory_clear(self._memory, True)
        chains = []
        for _ in prompts:
            if self._sampler == "chain":
                params = ll.llama_sampler_chain_default_params()
                params.no_perf = True
                chain = ll.llama_sampler_chain_init(params)
                ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_greedy())
                chains.append(chain)
            else:
                chains.append(None)
        try:
            # the prompts, in one batch (they fit n_batch), logits at each prompt's last row
            n = 0
            rows = []
            for seq, ids in enumerate(prompts):
                for p, token in enumerate(ids):
                    batch.token[n], batch.pos[n], batch.n_seq_id[n], batch.logits[n] = token, p, 1, 0
                    batch.seq_id[n][0] = seq
                    n += 1
                batch.logits[n - 1] = 1
                rows.append(n - 1)
            batch.n_tokens = n
            if ll.llama_decode(self._ctx, batch) != 0:
                raise RuntimeError("llama_decode failed on the prompts")
            last = [self._sample(chains[s], rows[s]) for s in range(len(prompts))]
            first = time.perf_counter()
            produced = len(prompts)
            pos = [len(ids) for ids in prompts]
            counts = [1] * len(prompts)
            active = [s for s in range(len(prompts)) if not ll.llama_vocab_is_eog(self._vocab, last[s])]
            end = first
            while active:
                active = [s for s in active if counts[s] < max_tokens]
                if not active:
                    break
                for row, s in enumerate(active):
                    batch.token[row], batch.pos[row], batch.n_seq_id[row], batch.logits[row] = last[s], pos[s], 1, 1
                    batch.seq_id[row][0] = s
                    pos[s] += 1
                batch.n_tokens = len(active)
                if ll.llama_decode(self._ctx, batch) != 0:
                    raise RuntimeError("llama_decode failed")
                still = []
                for row, s in enumerate(active):
                    last[s] = self._sample(chains[s], row)
                    counts[s] += 1
                    produced += 1
                    if not ll.llama_vocab_is_eog(self._vocab, last[s]):
                        still.append(s)
                end = time.perf_counter()
                active = still
            return produced, end - first, produced - len(prompts), end - first
        finally:
            for chain in chains:
                if chain is not None:
                    ll.llama_sampler_free(chain)

    def close(self) -> None:
        def free() -> None:
            ll = self._ll
            ll.llama_batch_free(self._batch)
            ll.llama_free(self._ctx)
            ll.llama_model_free(self._model)

        self._call(free)


def stream_times(gen: pb.Generator, prompt: str, cfg: pb.SamplingConfig) -> tuple[list[float], int]:
    """(times of the chunks that carry text, completion tokens) of one streamed call."""
    times = []
    stream = gen.stream(prompt, cfg)
    for chunk in stream:
        if chunk.text:
            times.append(time.perf_counter())
    assert stream.completion is not None
    return times, stream.completion.usage.completion_tokens


def concurrent(
    gen: pb.Generator, prompts: list[str], cfg: pb.SamplingConfig
) -> tuple[float, list[tuple[list[float], int]]]:
    """Stream ``prompts`` from threads released together: (release time, per call (chunk times, tokens))."""
    barrier = threading.Barrier(len(prompts) + 1)
    results: list[tuple[list[float], int]] = [([], 0)] * len(prompts)

    def one(i: int) -> None:
        barrier.wait()
        results[i] = stream_times(gen, prompts[i], cfg)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    barrier.wait()
    released = time.perf_counter()
    for t in threads:
        t.join()
    return released, results


def summarize(results: list[tuple[list[float], int]]) -> Run:
    firsts = [times[0] for times, _ in results]
    last = max(times[-1] for times, _ in results)
    late = max(firsts)
    steady = sum(1 for times, _ in results for t in times if t > late)  # chunks, about one a token
    return sum(n for _, n in results), last - min(firsts), steady, last - late


class HeldWorker:
    """Holds ``gen``'s worker (a task on it, as scoring would be) until :meth:`release`, so that
    calls made meanwhile all wait, and the worker admits them together at its next step."""

    def __init__(self, gen: pb.Generator) -> None:
        self.scheduler = gen._scheduler  # private: a benchmark's way to hold the worker
        holding, self._gate = threading.Event(), threading.Event()

        def hold() -> None:
            holding.set()
            self._gate.wait()

        self._holder = threading.Thread(target=self.scheduler.exclusive, args=(hold,))
        self._holder.start()
        holding.wait()

    def release(self) -> None:
        self._gate.set()
        self._holder.join()


def batched(gen: pb.Generator, prompts: list[str], cfg: pb.SamplingConfig) -> Run:
    """The N calls queued together, as the ceiling has its N prompts at once: the worker is held
    (by a task on it, as scoring would) until all N are submitted, then admits them in one step."""
    held = HeldWorker(gen)
    results: list[tuple[list[float], int]] = [([], 0)] * len(prompts)
    streams = [gen.stream(p, cfg) for p in prompts]  # each queued behind the held worker

    def read(i: int) -> None:
        times = [time.perf_counter() for chunk in streams[i] if chunk.text]
        completion = streams[i].completion
        assert completion is not None
        results[i] = (times, completion.usage.completion_tokens)

    readers = [threading.Thread(target=read, args=(i,)) for i in range(len(prompts))]
    for t in readers:
        t.start()
    held.release()
    for t in readers:
        t.join()
    return summarize(results)


def batched_async(gen: pb.Generator, prompts: list[str], cfg: pb.SamplingConfig) -> Run:
    """The same N calls as :func:`batched`, read by N asyncio tasks on one event loop (a server's
    way) instead of N threads: one thread wakes per step, not N."""
    import asyncio

    held = HeldWorker(gen)

    async def read(prompt: str) -> tuple[list[float], int]:
        stream = gen.astream(prompt, cfg)
        times = [time.perf_counter() async for chunk in stream if chunk.text]
        assert stream.completion is not None
        return times, stream.completion.usage.completion_tokens

    async def run_all() -> list[tuple[list[float], int]]:
        tasks = [asyncio.create_task(read(p)) for p in prompts]
        while len(held.scheduler._waiting) < len(prompts):  # each task prepares its prompt in a thread first
            await asyncio.sleep(0.001)
        await asyncio.to_thread(held.release)
        return list(await asyncio.gather(*tasks))

    results = asyncio.run(run_all())
    return summarize(results)


def batched_as_they_come(gen: pb.Generator, prompts: list[str], cfg: pb.SamplingConfig) -> Run:
    """N threads released together, each preparing its prompt (template, tokens) and joining
    whatever step the worker is at: later calls' prompts are computed inside the window, between
    the earlier calls' tokens."""
    return summarize(concurrent(gen, prompts, cfg)[1])


def serialized(gen: pb.Generator, prompts: list[str], cfg: pb.SamplingConfig) -> Run:
    return summarize([stream_times(gen, p, cfg) for p in prompts])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--tokens", type=int, default=48, help="max new tokens per sequence")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--counts", default="1,2,4,8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--ceiling-sampler", choices=("chain", "argmax"), default="chain")
    parser.add_argument("--ttft-rounds", type=int, default=2, help="rounds of the 8-calls-at-once first-token test")
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]

    path = str(resolve(args.model, formats=("gguf",)).path)
    gen = pb.load(path, backend="llama-cpp", n_ctx=args.n_ctx, n_threads=args.threads, n_seq_max=8)
    gen.reuse_prefix = False
    cfg = pb.SamplingConfig(temperature=0.0, repeat_penalty=1.0, max_tokens=args.tokens)
    prompt_ids = [gen.prompt_ids(p) for p in PROMPTS]
    # The ceiling runs on the Generator's own worker thread (between calls), and "today's
    # serialized Generator" is that same Generator admitting one call at a time: with libgomp, a
    # second OS thread running llama.cpp makes more OpenMP threads than cores, and from then on
    # every team in the process spins only briefly at its barriers and runs at about half speed.
    scheduler = gen._scheduler  # private: a benchmark's way onto the worker thread
    ceiling = Ceiling(
        path, n_ctx=args.n_ctx, threads=args.threads, n_seq_max=8, sampler=args.ceiling_sampler,
        on_worker=scheduler.exclusive,
    )  # fmt: skip

    sides: dict[str, Callable[[int], Run]] = {
        "ceiling": lambda n: ceiling.run(prompt_ids[:n], args.tokens),
        "batched": lambda n: batched(gen, PROMPTS[:n], cfg),
        "async": lambda n: batched_async(gen, PROMPTS[:n], cfg),
        "as-they-come": lambda n: batched_as_they_come(gen, PROMPTS[:n], cfg),
        "serialized": lambda n: serialized(gen, PROMPTS[:n], cfg),
    }
    names = list(sides)
    runs: dict[tuple[str, int], list[Run]] = {(name, n): [] for name in names for n in counts}
    for name in names:  # warm up
        sides[name](2)
    load_before = _loadavg()
    for r in range(args.rounds):
        for n in counts:
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                runs[(name, n)].append(sides[name](n))

    print(f"model {path.rsplit('/', 1)[-1]}, up to {args.tokens} new tokens per sequence, greedy, "
          f"{args.threads} threads, n_ctx {args.n_ctx}, ceiling sampler {args.ceiling_sampler}, "
          f"{args.rounds} round-robin rounds, load average {load_before} -> {_loadavg()}")  # fmt: skip
    print("aggregate decode tokens/s = all sequences' tokens / (last token - first first-token); "
          "[steady: tokens after the last first-token / (last token - last first-token)]")  # fmt: skip
    for n in counts:
        rates = {}
        for name in names:
            rs = runs[(name, n)]
            rates[name] = statistics.median(_rate(r[0], r[1]) for r in rs)
            steady = statistics.median(_rate(r[2], r[3]) for r in rs)
            print(f"  N={n} {name:<10} {rates[name]:7.1f} tok/s "
                  f"(runs: {', '.join(f'{_rate(r[0], r[1]):.1f}' for r in rs)}; tokens {rs[0][0]}) "
                  f"[steady {steady:6.1f}]")  # fmt: skip
        print(f"ratio N={n} (batched / ceiling): {rates['batched'] / rates['ceiling']:.3f}  (goal >= 0.9); "
              f"async tasks / ceiling: {rates['async'] / rates['ceiling']:.3f}; "
              f"as they come / ceiling: {rates['as-they-come'] / rates['ceiling']:.3f}; "
              f"batched / serialized: {rates['batched'] / rates['serialized']:.2f}")  # fmt: skip

    if args.ttft_rounds <= 0:
        ceiling.close()
        gen.close()
        return
    ttft: dict[str, list[float]] = {"batched (n_seq_max=8)": [], "serialized (1 at a time)": []}
    limits = {"batched (n_seq_max=8)": 8, "serialized (1 at a time)": 1}
    for r in range(args.ttft_rounds):
        for name in list(ttft) if r % 2 == 0 else reversed(list(ttft)):
            scheduler._max_sequences = limits[name]  # private: what n_seq_max=1 gives, on the same thread
            released, results = concurrent(gen, PROMPTS, cfg)
            ttft[name].append(statistics.median(times[0] - released for times, _ in results))
    scheduler._max_sequences = 8
    print(f"time to first token, 8 calls started together (median of the 8 calls; {args.ttft_rounds} rounds, "
          f"load average {_loadavg()}):")  # fmt: skip
    medians = {}
    for name, values in ttft.items():
        medians[name] = statistics.median(values)
        print(f"  {name:<24} {medians[name] * 1000:8.1f} ms (rounds: {', '.join(f'{v * 1000:.0f}' for v in values)})")
    b, s = medians["batched (n_seq_max=8)"], medians["serialized (1 at a time)"]
    print(f"ratio (serialized / batched median first-token time): {s / b:.2f}x")
    ceiling.close()
    gen.close()


def _rate(tokens: int, seconds: float) -> float:
    return tokens / seconds if seconds > 0 else 0.0


def _loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


if __name__ == "__main__":
    main()
