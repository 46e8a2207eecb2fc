"""The default thread count when the machine is shared (goal: default >= 0.8 of the best n_threads).

With one busy neighbour process (a Python loop that never sleeps) running, decode tokens/s of the
llama.cpp backend with its default ``n_threads`` and with each ``n_threads`` from 1 to the cores;
then the same with no neighbour, to show what the default costs on a quiet machine. Every
measurement is its own process (each loads the model, generates once to warm up, then times one
greedy generation), so that no OpenMP team outlives its run; settings are interleaved round by
round and medians are printed.

    python benchmarks/threads.py [--model smollm2] [--tokens 96] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

CHILD = """
import json, sys
import phi_backends as pb
model, threads, tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
options = {} if threads == "default" else {"n_threads": int(threads)}
cfg = pb.SamplingConfig(temperature=0.0, repeat_penalty=1.0, max_tokens=tokens)
with pb.load(model, backend="llama-cpp", n_ctx=1024, **options) as gen:
    gen.reuse_prefix = False
    gen.generate("Write a long story about a hockey team.", cfg.replace(max_tokens=8))
    out = gen.generate("Write a long story about a hockey team.", cfg)
    print(json.dumps({"rate": out.timings.decode_tokens_per_second, "threads": gen.info.metadata["threads"]}))
"""


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@contextmanager
def neighbour(busy: bool) -> Iterator[None]:
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        yield
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()


def measure(model: str, threads: str, tokens: int) -> tuple[float, int]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, model, threads, str(tokens)], capture_output=True, text=True, timeout=600
    )
    if out.returncode != 0:
        raise SystemExit(f"n_threads={threads}: {out.stderr.strip().splitlines()[-1]}")
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return float(data["rate"]), int(data["threads"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    settings = ["default", *(str(n) for n in range(1, cores() + 1))]
    for busy in (True, False):
        rates: dict[str, list[float]] = {s: [] for s in settings}
        default_threads = 0
        with neighbour(busy):
            for r in range(args.rounds):
                for setting in settings if r % 2 == 0 else reversed(settings):
                    rate, used = measure(args.model, setting, args.tokens)
                    rates[setting].append(rate)
                    if setting == "default":
                        default_threads = used
        medians = {s: statistics.median(v) for s, v in rates.items()}
        best = max((s for s in settings if s != "default"), key=lambda s: medians[s])
        print(f"{'one busy neighbour' if busy else 'quiet'}: {cores()} cores, {args.tokens} tokens, greedy, "
              f"{args.rounds} interleaved rounds")  # fmt: skip
        for s in settings:
            label = f"default (n_threads={default_threads})" if s == "default" else f"n_threads={s}"
            runs = ", ".join(f"{v:.1f}" for v in rates[s])
            print(f"  {label:<24} {medians[s]:7.1f} tok/s (runs: {runs})")
        goal = "  (goal >= 0.8)" if busy else ""
        print(f"ratio (default / best, n_threads={best}): {medians['default'] / medians[best]:.3f}{goal}")


if __name__ == "__main__":
    main()
