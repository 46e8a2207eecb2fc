"""How much phi-backends costs on top of the engine's own loop (goal: ratio >= 0.99).

Same GGUF, same process, same threads and context settings, greedy decoding, runs interleaved
(ABBA order) so that machine noise hits both sides alike. Prints decode tokens/s and time to
first token for llama-cpp-python's own streaming loop and for phi_backends streaming, and the
ratio of their medians.

    python benchmarks/overhead.py [--model smollm2] [--tokens 256] [--rounds 6]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any

import phi_backends as pb
from phi_backends.models import resolve

PROMPT = "Write a long story about a hockey team that plays on a frozen lake every winter."


def measure(stream: Callable[[], Iterable[Any]]) -> tuple[float, float, int]:
    """(time to first token, decode tokens/s, tokens), timed the same way for both sides."""
    start = time.perf_counter()
    first = last = 0.0
    n = 0
    for _ in stream():
        last = time.perf_counter()
        if n == 0:
            first = last
        n += 1
    return first - start, (n - 1) / (last - first) if n > 1 else 0.0, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--flash-attn", action="store_true")
    args = parser.parse_args()

    import llama_cpp

    path = resolve(args.model, formats=("gguf",)).path
    gen = pb.load(str(path), backend="llama-cpp", n_ctx=args.n_ctx, n_threads=args.threads, flash_attn=args.flash_attn)
    threads = gen.info.metadata["threads"]
    engine = llama_cpp.Llama(
        model_path=str(path), n_ctx=args.n_ctx, n_threads=threads, n_threads_batch=threads,
        flash_attn=args.flash_attn, verbose=False,
    )  # fmt: skip
    prompt = gen.render(PROMPT)
    cfg = pb.SamplingConfig(temperature=0.0, repeat_penalty=1.0, max_tokens=args.tokens)

    def theirs() -> Iterable[Any]:
        engine.reset()  # phi_backends evaluates the prompt on every call; make llama-cpp-python do the same
        return engine.create_completion(
            prompt,
            max_tokens=args.tokens,
            temperature=0.0,
            repeat_penalty=1.0,
            top_k=0,
            top_p=1.0,
            min_p=0.0,
            stream=True,
        )

    def ours() -> Iterable[Any]:
        return (c for c in gen.stream(PROMPT, cfg) if c.finish_reason is None)

    sides: dict[str, list[tuple[float, float, int]]] = {"llama-cpp-python": [], "phi_backends": []}
    measure(theirs), measure(ours)  # warm up both
    for i in range(args.rounds):
        order = [("llama-cpp-python", theirs), ("phi_backends", ours)]
        for name, fn in order if i % 2 == 0 else reversed(order):
            sides[name].append(measure(fn))

    print(f"model {path.name}, {args.tokens} new tokens, greedy, {threads} threads, n_ctx {args.n_ctx}, "
          f"flash_attn {args.flash_attn}, {args.rounds} interleaved rounds")  # fmt: skip
    medians = {}
    for name, runs in sides.items():
        ttft = statistics.median(r[0] for r in runs)
        rate = statistics.median(r[1] for r in runs)
        medians[name] = (ttft, rate)
        print(f"  {name:<17} decode {rate:7.1f} tok/s (runs: {', '.join(f'{r[1]:.0f}' for r in runs)}), "
              f"first token {ttft * 1000:6.1f} ms, {runs[0][2]} chunks")  # fmt: skip
    ratio = medians["phi_backends"][1] / medians["llama-cpp-python"][1]
    print(f"ratio (phi_backends / llama-cpp-python decode tokens/s): {ratio:.3f}  (goal >= 0.99)")
    gen.close()


if __name__ == "__main__":
    main()
