"""What the core's logits step costs in decode speed (goal: ratio >= 0.95 for each case).

One Generator, greedy decoding of the same prompt, three cases run round-robin (the order
rotating each round, medians printed): no logits step ("none"); ``logit_bias`` on 100 ids
(-100 on the vocabulary's last 100 ids, which a story never needs, so every case decodes the
same tokens); ``top_logprobs=5`` (each token's log-probability and the 5 most likely). Decode
tokens/s = (tokens - 1) / (last chunk - first chunk), as in overhead.py. Prefix reuse is off.

    python benchmarks/logits_step.py [--model smollm2] [--tokens 128] [--rounds 7]
    python benchmarks/logits_step.py --backend onnx [--model smollm2|tiny_phi3|FOLDER] [--precision int4]
    python benchmarks/logits_step.py --backend mlx [--model smollm2|tiny_phi3|FOLDER] --tokens 48
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import phi_backends as pb

PROMPT = "Write a long story about a hockey team that plays on a frozen lake every winter."


def load(args: argparse.Namespace) -> pb.Generator:
    if args.backend == "llama-cpp":
        from phi_backends.models import resolve

        path = resolve(args.model, formats=("gguf",)).path
        return pb.load(str(path), backend="llama-cpp", n_ctx=args.n_ctx, n_threads=args.threads)
    folder = Path(args.model)
    if not folder.is_dir():  # a test model name: its folder from tests/fixtures, as overhead.py does
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.fixtures.hf_models import mlx_model, onnx_model

        folder = onnx_model(args.model, args.precision) if args.backend == "onnx" else mlx_model(args.model)
    if args.backend == "onnx":
        return pb.load(str(folder), backend="onnx", threads=args.threads)
    return pb.load(str(folder), backend="mlx")


def arguments(description: str) -> argparse.Namespace:
    """The options this benchmark and ``constraints.py`` share (model, backend, tokens, rounds, threads)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--backend", choices=("llama-cpp", "onnx", "mlx"), default="llama-cpp")
    parser.add_argument("--precision", choices=("int4", "fp32"), default="int4", help="onnx: which test folder")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-ctx", type=int, default=2048)
    return parser.parse_args()


def decode_rate(stream: Iterable[pb.Chunk]) -> tuple[float, int]:
    """(decode tokens/s, text chunks) of a stream: (chunks - 1) / (last chunk - first chunk)."""
    first = last = 0.0
    n = 0
    for chunk in stream:
        if chunk.finish_reason is not None:
            continue
        last = time.perf_counter()
        if n == 0:
            first = last
        n += 1
    return (n - 1) / (last - first) if n > 1 else 0.0, n


def main() -> None:
    args = arguments(__doc__.splitlines()[0])

    gen = load(args)
    gen.reuse_prefix = False
    vocab = gen.info.vocab_size
    base = pb.SamplingConfig(temperature=0.0, repeat_penalty=1.0, max_tokens=args.tokens)
    cases = {
        "none": base,
        "logit_bias x100": base.replace(logit_bias={token: -100.0 for token in range(vocab - 100, vocab)}),
        "top_logprobs=5": base.replace(top_logprobs=5),
    }

    def measure(cfg: pb.SamplingConfig) -> tuple[float, int]:
        return decode_rate(gen.stream(PROMPT, cfg))

    names = list(cases)
    runs: dict[str, list[tuple[float, int]]] = {name: [] for name in names}
    for name in names:  # warm up
        measure(cases[name])
    load_before = _loadavg()
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            runs[name].append(measure(cases[name]))

    print(f"{args.backend}, model {Path(gen.model).name}, {args.tokens} new tokens, greedy, threads {args.threads}, "
          f"{args.rounds} round-robin rounds, load average {load_before} -> {_loadavg()}")  # fmt: skip
    rates = {}
    for name in names:
        rates[name] = statistics.median(rate for rate, _ in runs[name])
        print(f"  {name:<16} decode {rates[name]:7.1f} tok/s "
              f"(runs: {', '.join(f'{rate:.0f}' for rate, _ in runs[name])}), {runs[name][0][1]} chunks")  # fmt: skip
    for name in names[1:]:
        print(f"ratio ({name} / none decode tokens/s): {rates[name] / rates['none']:.3f}  (goal >= 0.95)")
    gen.close()


def _loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


if __name__ == "__main__":
    main()
