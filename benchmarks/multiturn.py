"""Time to first token of turn 6 of a chat, reusing turns 1-5's KV cache (goal: <= 1.1x llama-cpp-python's).

A 6-turn chat with long user turns whose assistant turns are the model's own greedy answers,
built once by serving turns 1-5 on the Generator (prefix reuse on); turn 6's prompt is about
1,300 tokens. Then, in rounds (the order rotating each round, medians printed):

- phi_backends: the Generator serves turn 5 again (its cache then holds turn 5's prompt and
  answer, as after a real turn 5), then the time to the first chunk of turn 6 is measured;
- llama-cpp-python: ``llama_cpp.Llama`` (same GGUF, threads, n_ctx, n_batch) completes turn 5's
  prompt ids (greedy, same max tokens), then the time to the first chunk of
  ``create_completion(turn 6's ids, stream=True)``: Llama keeps the ids it evaluated last and
  evaluates only what follows their longest common prefix;
- phi_backends with ``reuse_prefix = False`` (reference): turn 6 from an empty cache.

Both engines see the same prompt ids (the Generator's rendering). llama-cpp-python runs on the
Generator's worker thread, so that one OS thread calls into llama.cpp (see overhead.py's
``on_worker``).

    python benchmarks/multiturn.py [--model smollm2] [--answer-tokens 96] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import phi_backends as pb
from phi_backends.models import resolve

TOPICS = [
    "the history of ice hockey on frozen lakes in northern Canada",
    "how a village bakery organizes its work before dawn",
    "the design of a small wooden sailing boat for two people",
    "planning a long train journey across a snowy country",
    "keeping bees on a city rooftop through a whole year",
    "the questions a lighthouse keeper would ask a new assistant",
]
DETAIL = (
    "Please be thorough and concrete. I would like to know about the people involved, the tools "
    "and materials they use, the order in which things happen over a typical day and over a whole "
    "season, the mistakes beginners make and how experienced people avoid them, what it costs, "
    "what can go wrong with the weather, and how all of this has changed over the last hundred "
    "years. Compare it with how the same thing is done in two other countries, and tell me which "
    "habits you think are worth copying and why. Finish with a short list of practical tips that "
    "someone starting next month could follow."
)


def user_turn(i: int) -> str:
    return f"Now tell me about {TOPICS[i]}. {DETAIL}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--answer-tokens", type=int, default=96, help="max tokens of each assistant answer")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-ctx", type=int, default=2048)
    args = parser.parse_args()

    import llama_cpp

    path = resolve(args.model, formats=("gguf",)).path
    # One sequence, as Llama has one cache: with more slots, an earlier round's turn-6 call would
    # still be cached in a slot of its own and the next round would time a cache hit of all of it.
    gen = pb.load(str(path), backend="llama-cpp", n_ctx=args.n_ctx, n_threads=args.threads, n_seq_max=1)
    answer_cfg = pb.SamplingConfig(temperature=0.0, repeat_penalty=1.0, max_tokens=args.answer_tokens)
    first_cfg = answer_cfg.replace(max_tokens=1)

    # serve turns 1-5: the chat's assistant turns are the Generator's own answers
    messages: list[dict[str, str]] = []
    for i in range(5):
        messages.append({"role": "user", "content": user_turn(i)})
        answer = gen.generate(messages, answer_cfg)
        messages.append({"role": "assistant", "content": answer.text})
    turn5 = messages[:-1]
    turn6 = [*messages, {"role": "user", "content": user_turn(5)}]
    turn5_ids, turn6_ids = gen.prompt_ids(turn5), gen.prompt_ids(turn6)

    def on_worker(work: Callable[[], Any]) -> Any:
        return gen._scheduler.exclusive(work)  # private: the Generator's worker thread

    llm = on_worker(
        lambda: llama_cpp.Llama(
            model_path=str(path), n_ctx=args.n_ctx, n_threads=args.threads, n_threads_batch=args.threads,
            n_batch=512, flash_attn=True, verbose=False,  # as our engine runs it (llama.cpp's choice on a CPU)
        )
    )  # fmt: skip
    greedy = {"temperature": 0.0, "repeat_penalty": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0}
    cached: dict[str, int] = {}

    def ours(reuse: bool) -> float:
        gen.reuse_prefix = True
        gen.generate(turn5, answer_cfg)  # turn 5 again: the cache holds its prompt and answer
        gen.reuse_prefix = reuse
        start = time.perf_counter()
        stream = gen.stream(turn6, first_cfg)
        next(iter(stream))
        elapsed = time.perf_counter() - start
        for _ in stream:
            pass
        assert stream.completion is not None
        cached["phi_backends" if reuse else "no reuse"] = stream.completion.usage.cached_tokens
        gen.reuse_prefix = True
        return elapsed

    def theirs_on_worker() -> float:
        llm.create_completion(turn5_ids, max_tokens=args.answer_tokens, **greedy)
        before = llm.n_tokens
        start = time.perf_counter()
        chunks = llm.create_completion(turn6_ids, max_tokens=1, stream=True, **greedy)
        next(iter(chunks))
        elapsed = time.perf_counter() - start
        for _ in chunks:
            pass
        cached["llama-cpp-python"] = _common_prefix(llm.input_ids[:before].tolist(), turn6_ids)
        return elapsed

    sides: dict[str, Callable[[], float]] = {
        "phi_backends": lambda: ours(True),
        "llama-cpp-python": lambda: on_worker(theirs_on_worker),  # type: ignore[no-any-return]
        "no reuse": lambda: ours(False),
    }
    names = list(sides)
    times: dict[str, list[float]] = {name: [] for name in names}
    for name in names:  # warm up
        sides[name]()
    load = _loadavg()
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(sides[name]())

    print(f"model {path.name}, {args.threads} threads, n_ctx {args.n_ctx}, greedy answers of up to "
          f"{args.answer_tokens} tokens; turn 5 prompt {len(turn5_ids)} ids, turn 6 prompt {len(turn6_ids)} ids; "
          f"{args.rounds} round-robin rounds, load average {load} -> {_loadavg()}")  # fmt: skip
    medians = {}
    for name in names:
        medians[name] = statistics.median(times[name])
        label = "phi_backends, reuse_prefix=False" if name == "no reuse" else name
        print(f"  {label:<33} turn-6 first token {medians[name] * 1000:7.1f} ms "
              f"(runs: {', '.join(f'{t * 1000:.0f}' for t in times[name])}; "
              f"{cached[name]} prompt ids from cache)")  # fmt: skip
    ratio = medians["phi_backends"] / medians["llama-cpp-python"]
    print(f"ratio (phi_backends / llama-cpp-python turn-6 first-token time): {ratio:.3f}  (goal <= 1.1)")
    print(f"reuse speed-up (reuse_prefix=False / on): {medians['no reuse'] / medians['phi_backends']:.1f}x")
    on_worker(llm.close)
    gen.close()


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


if __name__ == "__main__":
    main()
