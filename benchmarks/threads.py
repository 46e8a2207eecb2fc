"""The default thread count when the machine is shared (goal: default >= 0.8 of the best n_threads).

With one busy neighbour process (a Python loop that never sleeps) running, decode tokens/s of the
llama.cpp backend with its default ``n_threads`` and with each ``n_threads`` from 1 to the cores;
then the same with no neighbour, to show what the default costs on a quiet machine. Every
measurement is its own process (each loads the model, generates once to warm up, then times one
greedy generation), so that no OpenMP team outlives its run; settings are interleaved round by
round and medians are printed.

    python benchmarks/threads.py [--model smollm2] [--tokens 96] [--rounds 3]
    python benchmarks/threads.py --backend onnx [--model smollm2|tiny_phi3|FOLDER] [--precision int4]

On ONNX Runtime GenAI the option is ``threads`` (onnxruntime's intra-op threads; its default,
reported as "default", is onnxruntime's own: one per physical core).
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
model, threads, tokens, backend = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
key, options = ("n_threads", {"n_ctx": 1024}) if backend == "llama-cpp" else ("threads", {})
if threads != "default":
    options[key] = int(threads)
cfg = pb.SamplingConfig(temperature=0.0, repeat_penalty=1.0, max_tokens=tokens)
with pb.load(model, backend=backend, **options) as gen:
    gen.reuse_prefix = False
    gen.generate("Write a long story about a hockey team.", cfg.replace(max_tokens=8))
    out = gen.generate("Write a long story about a hockey team.", cfg)
    print(json.dumps({"rate": out.timings.decode_tokens_per_second, "threads": gen.info.metadata["threads"] or 0}))
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


def measure(model: str, threads: str, tokens: int, backend: str) -> tuple[float, int]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, model, threads, str(tokens), backend], capture_output=True, text=True, timeout=600
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
    parser.add_argument("--backend", choices=("llama-cpp", "onnx"), default="llama-cpp")
    parser.add_argument("--precision", choices=("int4", "fp32"), default="int4", help="onnx: which test folder")
    args = parser.parse_args()
    model = args.model
    if args.backend == "onnx" and not os.path.isdir(model):  # a test model name: its cached ONNX folder
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from tests.fixtures.hf_models import onnx_model

        model = str(onnx_model(model, args.precision))
    option = "n_threads" if args.backend == "llama-cpp" else "threads"
    settings = ["default", *(str(n) for n in range(1, cores() + 1))]
    for busy in (True, False):
        rates: dict[str, list[float]] = {s: [] for s in settings}
        default_threads = 0
        with neighbour(busy):
            for r in range(args.rounds):
                for setting in settings if r % 2 == 0 else reversed(settings):
                    rate, used = measure(model, setting, args.tokens, args.backend)
                    rates[setting].append(rate)
                    if setting == "default":
                        default_threads = used
        medians = {s: statistics.median(v) for s, v in rates.items()}
        best = max((s for s in settings if s != "default"), key=lambda s: medians[s])
        print(f"{'one busy neighbour' if busy else 'quiet'}: {args.backend}, {cores()} cores, {args.tokens} tokens, greedy, "
              f"{args.rounds} interleaved rounds")  # fmt: skip
        for s in settings:
            label = f"default ({option}={default_threads or 'engine'})" if s == "default" else f"{option}={s}"
            runs = ", ".join(f"{v:.1f}" for v in rates[s])
            print(f"  {label:<24} {medians[s]:7.1f} tok/s (runs: {runs})")
        goal = "  (goal >= 0.8)" if busy else ""
        print(f"ratio (default / best, {option}={best}): {medians['default'] / medians[best]:.3f}{goal}")


if __name__ == "__main__":
    main()
