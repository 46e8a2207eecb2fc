"""Prompt-processing and decode speed, time to first token and peak memory: ``phi-backends bench``.

Each model is loaded through :func:`phi_backends.api.load_with_flags`, the function ``run`` loads
with (the same configuration, engine options and backend choice), so the figures are what users
get. A measurement is one raw prompt of exactly ``p`` token ids, greedy, at most ``n`` new tokens,
with prefix reuse off (every prompt is computed afresh), read from the Completion's own
:class:`~phi_backends.scheduling.Timings`. One warm-up run before each row is not counted.

Peak memory is the process's peak resident set so far (``getrusage``'s ``ru_maxrss``): with several
models in one run, each row reports the running maximum, so a small model measured after a large
one shows the large one's peak. Measure one model per run to see each one's own peak.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import RuntimeFailure, UsageError
from ..sampling import SamplingConfig

if TYPE_CHECKING:
    from ..config import Flags
    from ..generator import Generator

__all__ = ["BenchRow", "Stat", "bench", "exact_prompt", "peak_rss_bytes"]

#: Ordinary prose, repeated and cut to the prompt length: a raw continuation of it runs on (a
#: model given a list or a question tends to end its turn early, and a row would measure less).
TEXT = (
    "The river ran slowly through the valley, past the old mill and the orchards, and the people "
    "of the village walked along its banks in the evening to watch the light change on the water. "
    "In spring the fields turned green and the farmers worked from dawn until the sun went down, "
    "while the children carried bread and cheese to them and listened to their stories about the "
    "winters of long ago, when the snow lay so deep that the roads were closed for weeks and the "
    "families gathered around the fire to tell the same stories again."
)
#: What is appended, one at a time, to close the last gap of a prompt cut at a word: each is one
#: token after a word in every tokenizer tried (SentencePiece, GPT-2 byte-level BPE, bytes).
FILLERS = (".", ",", " a", "a", "!")
#: The sampling of every measurement: greedy, with no penalty (llama-bench samples nothing at all).
SEED = 0


@dataclass(frozen=True)
class Stat:
    """Mean and standard deviation over repetitions (sd 0 with one); None when no repetition had a value."""

    values: tuple[float | None, ...]

    @property
    def present(self) -> list[float]:
        return [v for v in self.values if v is not None]

    @property
    def mean(self) -> float | None:
        present = self.present
        return statistics.fmean(present) if present else None

    @property
    def sd(self) -> float | None:
        present = self.present
        if not present:
            return None
        return statistics.stdev(present) if len(present) > 1 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "sd": self.sd, "values": list(self.values)}


@dataclass(frozen=True)
class BenchRow:
    """One model × backend × p × n, measured ``repetitions`` times."""

    model: str
    backend: str
    prompt_tokens: int  # p
    max_tokens: int  # n
    generated: tuple[int, ...]  # tokens each repetition generated (fewer than n when the model stopped)
    prompt_tps: Stat  # prompt tokens per second
    decode_tps: Stat  # generated tokens per second after the first; None for a repetition with one token
    ttft: Stat  # time to first token, seconds
    peak_rss: int | None  # bytes: the process's peak so far (None where the platform does not say)

    @property
    def repetitions(self) -> int:
        return len(self.generated)

    def as_dict(self) -> dict[str, Any]:
        ms = Stat(tuple(None if v is None else v * 1000 for v in self.ttft.values))
        return {
            "model": self.model,
            "backend": self.backend,
            "p": self.prompt_tokens,
            "n": self.max_tokens,
            "repetitions": self.repetitions,
            "generated_tokens": list(self.generated),
            "prompt_tokens_per_second": self.prompt_tps.as_dict(),
            "decode_tokens_per_second": self.decode_tps.as_dict(),
            "time_to_first_token_ms": ms.as_dict(),
            "peak_rss_mib": None if self.peak_rss is None else self.peak_rss / 2**20,
        }


def bench(
    models: Sequence[str | None],
    backends: Sequence[str | None],
    prompt_lengths: Sequence[int],
    output_lengths: Sequence[int],
    repetitions: int,
    *,
    options: Mapping[str | None, Flags] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Iterable[BenchRow]:
    """Measure every model × backend × p × n; yield each row as it is done.

    ``None`` as a model or backend means the configuration's (as ``run`` without ``--model`` or
    ``--backend``). ``options``: engine options as the configuration's flag layer (``-O``), by
    backend name; those under None go to every backend (under the running backend's, key by key).
    The lengths are checked before anything loads, and against each model's context once it has.
    """
    check_lengths(prompt_lengths, output_lengths, repetitions)
    from ..api import load_with_flags  # imports plugins (and, on load, an engine) only now

    say = progress or (lambda _: None)
    for model in models:
        for backend in backends:
            flags = {"model": ("MODEL", model), "backend": ("--backend", backend)}
            say(f"loading {model or 'the configured model'} on {backend or 'the chosen backend'}")
            given = _options_for(flags, backend, options or {})
            with load_with_flags(flags, given, template=None, progress=progress is not None) as gen:
                gen.reuse_prefix = False  # prompt processing is measured only if every prompt is computed
                prompts = {p: exact_prompt(gen, p) for p in _fitting(gen, prompt_lengths, output_lengths)}
                for p in prompt_lengths:
                    for n in output_lengths:
                        say(f"{gen.model} on {gen.backend}: p={p} n={n}, {repetitions} repetitions after a warm-up")
                        yield _measure(gen, prompts[p], p, n, repetitions)


def _options_for(flags: Flags, backend: str | None, options: Mapping[str | None, Flags]) -> Flags:
    """The options for the backend that will run: every backend's, under its own (key by key). With
    no backend named, the one ``run`` would choose, found as ``run`` finds it."""
    general = dict(options.get(None, {}))
    if not any(name is not None for name in options):
        return general
    if backend is None:
        from ..api import configure

        backend = configure(flags, general)[2].backend.name
    return {**general, **options.get(backend, {})}


def check_lengths(prompt_lengths: Sequence[int], output_lengths: Sequence[int], repetitions: int) -> None:
    """One line for what can be known wrong before loading anything."""
    if not prompt_lengths or not output_lengths:
        raise UsageError("give at least one prompt length (-p) and one output length (-n)")
    for flag, values in (("-p", prompt_lengths), ("-n", output_lengths)):
        bad = [v for v in values if v < 1]
        if bad:
            raise UsageError(f"{flag} takes token counts of at least 1, got {bad[0]}")
    if repetitions < 1:
        raise UsageError(f"-r takes a number of repetitions of at least 1, got {repetitions}")


def _fitting(gen: Generator, prompt_lengths: Sequence[int], output_lengths: Sequence[int]) -> list[int]:
    """The prompt lengths, once each p + n is known to fit ``gen``'s context (else one line)."""
    context = gen.info.context_length
    p, n = max(prompt_lengths), max(output_lengths)
    if p + n > context:
        raise UsageError(
            f"-p {p} -n {n} needs {p + n} tokens, but the context of {gen.model} on {gen.backend} is {context}; "
            "use shorter lengths or load a larger context (-O n_ctx=N on llama-cpp and mlx, -O max_length=N on onnx)"
        )
    return sorted(set(prompt_lengths))


def exact_prompt(gen: Generator, length: int) -> str:
    """A raw prompt that ``gen`` tokenizes to exactly ``length`` ids (its BOS token included):
    :data:`TEXT` repeated, cut at the word that fits, and closed with :data:`FILLERS`."""

    def count(text: str) -> int:
        return len(gen.prompt_ids(text, template=None))

    base = count("")
    if length <= base:
        raise UsageError(
            f"-p {length} leaves no room for text: {gen.model}'s prompts start with {base} token(s) of its own; "
            f"use -p {base + 1} or more"
        )
    words = TEXT.split(" ")
    while count(" ".join(words)) <= length:
        words += words  # doubling: a few tokenizations of the whole text even for a long prompt
    low, high = 0, len(words)  # count(words[:low]) <= length < count(words[:high])
    while high - low > 1:
        middle = (low + high) // 2
        if count(" ".join(words[:middle])) <= length:
            low = middle
        else:
            high = middle
    text = " ".join(words[:low])
    have = count(text)
    while have < length:
        for filler in FILLERS:
            if count(text + filler) == have + 1:
                text, have = text + filler, have + 1
                break
        else:
            raise RuntimeFailure(
                f"cannot build a prompt of exactly {length} tokens for {gen.model} (its tokenizer merges every "
                f"filler tried); try -p {have}"
            )
    return text


def _measure(gen: Generator, prompt: str, p: int, n: int, repetitions: int) -> BenchRow:
    config = SamplingConfig(temperature=0.0, repeat_penalty=1.0, seed=SEED, max_tokens=n)
    gen.generate(prompt, config, template=None)  # warm-up: first-use allocations and caches, not counted
    generated: list[int] = []
    prompt_tps: list[float | None] = []
    decode_tps: list[float | None] = []
    ttft: list[float | None] = []
    for _ in range(repetitions):
        result = gen.generate(prompt, config, template=None)
        usage, timings = result.usage, result.timings
        if usage.prompt_tokens != p or usage.cached_tokens:
            raise RuntimeFailure(
                f"the prompt built for -p {p} came to {usage.prompt_tokens} tokens ({usage.cached_tokens} reused) "
                f"on {gen.backend}; please report it"
            )
        generated.append(usage.completion_tokens)
        prompt_tps.append(timings.prompt_tokens_per_second)
        # the first token ends the prompt's processing; decode speed is over the tokens after it
        decode_tps.append(timings.decode_tokens_per_second if usage.completion_tokens > 1 else None)
        ttft.append(timings.time_to_first_token)
    return BenchRow(
        model=gen.model,
        backend=gen.backend,
        prompt_tokens=p,
        max_tokens=n,
        generated=tuple(generated),
        prompt_tps=Stat(tuple(prompt_tps)),
        decode_tps=Stat(tuple(decode_tps)),
        ttft=Stat(tuple(ttft)),
        peak_rss=peak_rss_bytes(),
    )


def peak_rss_bytes() -> int | None:
    """The process's peak resident set size so far, in bytes; None where ``resource`` is missing (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # macOS says bytes, Linux KiB
