"""What a constraint costs in decode speed (goal: constrained / unconstrained >= 0.9 on each backend),
the mask's time per token, and the time to compile a schema, cold and cached.

One Generator, greedy decoding of the same prompt, the two cases run in turn (the order
alternating each round, medians printed): no constraint ("none"), and a JSON schema whose
story string is at least 400 characters long, so that both decode a long text (their tokens differ: decode tokens/s
is compared, each = (tokens - 1) / (last chunk - first chunk), as in overhead.py). The mask's
own time is read by timing ``ConstraintMask.apply`` in the constrained rounds. Prefix reuse is off.

    python benchmarks/constraints.py [--backend llama-cpp|onnx|mlx] [--model smollm2] [--tokens 128] [--rounds 7]
"""

from __future__ import annotations

import statistics
import time

from logits_step import arguments, decode_rate, load  # the same models and options as that benchmark (a sibling script)

import phi_backends as pb
from phi_backends.constraints import ConstraintMask

PROMPT = "Write a long story about a hockey team that plays on a frozen lake every winter, as JSON."
SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string", "maxLength": 60}, "story": {"type": "string", "minLength": 400}},
    "required": ["title", "story"],
    "additionalProperties": False,
}


def main() -> None:
    args = arguments(__doc__.splitlines()[0])

    import llguidance  # noqa: F401  (its import is not the schema's compile time)

    start = time.perf_counter()
    constraint = pb.Constraint.json_schema(SCHEMA)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    pb.Constraint.json_schema(SCHEMA)
    again = time.perf_counter() - start

    gen = load(args)
    gen.reuse_prefix = False
    base = pb.SamplingConfig(temperature=0.0, repeat_penalty=1.0, max_tokens=args.tokens)
    start = time.perf_counter()
    gen.stream(PROMPT, base.replace(max_tokens=1), constraint=constraint).close()
    first_call = time.perf_counter() - start  # builds the model's llguidance vocabulary, once per Generator
    start = time.perf_counter()
    gen.stream(PROMPT, base.replace(max_tokens=1), constraint=constraint).close()
    next_call = time.perf_counter() - start

    mask_times: list[float] = []
    apply = ConstraintMask.apply

    def timed_apply(self: ConstraintMask, logits: object) -> None:
        t = time.perf_counter()
        apply(self, logits)  # type: ignore[arg-type]
        mask_times.append(time.perf_counter() - t)

    ConstraintMask.apply = timed_apply  # type: ignore[method-assign]

    def measure(with_constraint: bool) -> tuple[float, int]:
        return decode_rate(gen.stream(PROMPT, base, constraint=constraint if with_constraint else None))

    measure(False), measure(True)  # warm up
    mask_times.clear()
    runs: dict[bool, list[tuple[float, int]]] = {False: [], True: []}
    for r in range(args.rounds):
        for case in (False, True) if r % 2 == 0 else (True, False):
            runs[case].append(measure(case))
    rates = {case: statistics.median(rate for rate, _ in runs[case]) for case in runs}
    tokens = {case: statistics.median(n for _, n in runs[case]) for case in runs}
    paired = [c[0] / u[0] for c, u in zip(runs[True], runs[False], strict=True)]
    print(f"{args.backend} {gen.model}, vocabulary {gen.info.vocab_size}, greedy, {args.rounds} rounds")
    print(
        f"  schema compile: cold {cold * 1e3:.2f} ms, again {again * 1e3:.2f} ms (a Constraint is compiled once and reused)"
    )
    print(
        f"  first constrained call's setup (llguidance vocabulary, once per Generator): {first_call * 1e3:.0f} ms; "
        f"a later call's: {next_call * 1e3:.1f} ms"
    )
    print(f"  none         decode {rates[False]:7.1f} tok/s ({tokens[False]:.0f} tokens)")
    print(f"  json schema  decode {rates[True]:7.1f} tok/s ({tokens[True]:.0f} tokens)")
    print(
        f"  mask per token: median {statistics.median(mask_times) * 1e6:.0f} us, "
        f"p99 {sorted(mask_times)[int(len(mask_times) * 0.99)] * 1e6:.0f} us"
    )
    print(f"ratio (json schema / none decode tokens/s): {rates[True] / rates[False]:.3f}; "
          f"median of paired rounds {statistics.median(paired):.3f}  (goal >= 0.9)")  # fmt: skip


if __name__ == "__main__":
    main()
