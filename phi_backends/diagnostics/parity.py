"""Do several backends running one model behave the same? Measured, not assumed.

:func:`run_parity` takes one :class:`~phi_backends.Generator` per backend, all holding the same
model (in each backend's format), and measures on a fixed set of prompts:

1. **Prompt ids**, for each chat template: does every backend feed its engine the same token
   ids for the same conversation? (Template rendering, BOS and the tokenizer all show here.)
2. **Greedy continuations**: each backend's own greedy path (``temperature=0``, no repetition
   penalty, up to ``max_tokens`` new tokens, stopping at end of turn) from its own prompt ids,
   with the first token where each pair of backends diverges.
3. **Teacher-forced top-1 agreement**: every engine is given the same history (the first
   backend's prompt ids and greedy continuation), and at every position of that continuation
   each pair's most likely next tokens are compared. This measures the engines' arithmetic
   alone: a divergence early in a greedy continuation changes everything after it, while here
   every position is scored from the same history. Where a backend's own greedy run already
   had that exact history (same prompt ids, same tokens so far), the token it chose *is* its
   top-1 there, and is used as such; the rest is scored in one forward pass per prompt
   (:class:`~phi_backends.backend.ScoringEngine`). ``score_all=True`` scores every position
   with a forward pass. :attr:`ParityReport.forward_passes` says how many prompts needed one.

4. **Constrained greedy answers**, when asked for (``constrained``, ``phi-backends parity
   --constrained``; :mod:`.constrained_parity`): a JSON schema, regex, grammar, choice or forced
   tool call per prompt; the same text on every backend, and every answer parsed.

:meth:`ParityReport.passed` checks the figures against :class:`Thresholds`; ``phi-backends
parity`` is the command-line face of this module.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from ..errors import PhiBackendsError, UsageError
from ..sampling import SamplingConfig
from ..templates import Message, normalize_messages
from .constrained_parity import CONSTRAINED_PROMPTS, ConstrainedFigure, ConstrainedPrompt, run_constrained

if TYPE_CHECKING:
    from ..generator import Generator

__all__ = [
    "CONSTRAINED_PROMPTS",
    "PROMPTS",
    "TEMPLATES",
    "Continuation",
    "IdsMismatch",
    "PairFigures",
    "ParityReport",
    "PromptIdsFigure",
    "Thresholds",
    "greedy_config",
    "read_prompts",
    "run_parity",
]

Prompt: TypeAlias = "str | tuple[Message, ...]"

#: The templates whose prompt ids are compared: the model's own ("auto") and every built-in.
TEMPLATES: tuple[str, ...] = ("auto", "phi3", "phi3.5", "phi4", "phi4-mini", "chatml")

_HOCKEY = (
    "Ice hockey grew out of stick-and-ball games played on frozen ponds and rivers in northern Europe "
    "and Canada. The first organised indoor game took place in Montreal in March 1875, with rules "
    "adapted from field hockey and a flat wooden puck instead of a ball, so that it would stay on the "
    "ice and not fly into the spectators. Students at McGill University wrote the first rulebook a "
    "few years later. By the 1890s amateur leagues had spread across Canada, and in 1893 the Governor "
    "General, Lord Stanley of Preston, donated a silver bowl for the best amateur team in the "
    "country: the Stanley Cup, now the oldest trophy competed for by professional athletes in North "
    "America. Professional teams formed in the early 1900s, and the National Hockey League was "
    "founded in 1917 with four Canadian teams."
)

#: The built-in prompt set: short and long, code, lists, Unicode, system messages, several turns.
PROMPTS: tuple[Prompt, ...] = (
    "Write a haiku about ice hockey.",
    "What is the capital of France?",
    "Explain in three sentences why the sky is blue.",
    "List five fruits that are rich in vitamin C, one per line.",
    "Write a Python function that returns the n-th Fibonacci number, with a docstring.",
    "What does this code print?\n\n```python\ndef f(xs):\n    total = 0\n    for x in xs:\n"
    "        if x % 2 == 0:\n            total += x\n    return total\n\nprint(f([1, 2, 3, 4, 5, 6]))\n```",
    "Translate into French: 'The weather is nice today, let's go for a walk by the lake.'",
    "Grüße aus München! Wie geht's dir heute? Antworte bitte auf Deutsch.",
    "What do these greetings mean: 你好, こんにちは, 안녕하세요, नमस्ते, Γειά σου, שלום, مرحبا?",
    "Tell a very short story about this emoji sequence: 🏒🥅🎉 👨‍👩‍👧 ❄️",
    (
        {"role": "user", "content": "My name is Ada and I like chess."},
        {"role": "assistant", "content": "Nice to meet you, Ada! Chess is a wonderful game."},
        {"role": "user", "content": "What is my name, and which game do I like?"},
    ),
    (
        {"role": "system", "content": "You are a pirate. Always answer like a pirate."},
        {"role": "user", "content": "How do I boil an egg?"},
    ),
    _HOCKEY + "\n\nSummarize the text above in one sentence.",
    "A train travels 120 km in 1.5 hours. What is its average speed? Show your reasoning step by step.",
    'Return a JSON object with the keys "name", "age" and "city" for a fictional person.',
    "Make a markdown table comparing cats and dogs on three traits.",
    "Fix the spelling in this list:\n- recieve\n- seperate\n-\tdefinately\n- occured",
    "Write an SQL query that selects the ten most recent orders from a table named orders.",
    (
        {"role": "system", "content": "You are a patient maths tutor."},
        {"role": "user", "content": "Give me a number between 1 and 10."},
        {"role": "assistant", "content": "7"},
        {"role": "user", "content": "Double it and add three."},
        {"role": "assistant", "content": "17"},
        {"role": "user", "content": "Now explain how you got that."},
    ),
    "Tell me a story about a robot who learns to skate.",
)


def greedy_config(max_tokens: int) -> SamplingConfig:
    """The continuations' settings: each engine's greedy path, nothing else."""
    return SamplingConfig(temperature=0.0, repeat_penalty=1.0, max_tokens=max_tokens)


@dataclass(frozen=True)
class Thresholds:
    """What :meth:`ParityReport.passed` asks of the figures (shares in [0, 1])."""

    prompt_ids: float = 1.0  # of the prompts, per template, with the same ids on every backend
    top1: float = 0.99  # teacher-forced top-1 agreement, for every pair of backends
    identical: float = 0.90  # of the prompts, greedy continuations identical on every backend

    def __post_init__(self) -> None:
        for name in ("prompt_ids", "top1", "identical"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise UsageError(f"the {name} threshold must be a number between 0 and 1, got {value!r}")


@dataclass(frozen=True)
class IdsMismatch:
    """Where two backends' prompt ids first differ (or why a backend could not render the prompt)."""

    prompt: int
    backends: tuple[str, str]
    position: int
    ids: tuple[tuple[int, ...], tuple[int, ...]]  # a few ids from ``position`` on, per backend
    error: str = ""


@dataclass(frozen=True)
class PromptIdsFigure:
    template: str
    identical: int
    total: int
    unavailable: str = ""  # why no backend could use the template (then it is not counted)
    first_mismatch: IdsMismatch | None = None
    render_failures: int = 0  # prompts that some backends could render and others could not

    @property
    def share(self) -> float:
        return self.identical / self.total if self.total else 1.0


@dataclass(frozen=True)
class Continuation:
    """One backend's greedy continuation of one prompt."""

    token_ids: tuple[int, ...]
    text: str
    finish_reason: str


@dataclass(frozen=True)
class PairFigures:
    """Two backends compared over every prompt."""

    backends: tuple[str, str]
    divergence: tuple[int | None, ...]  # per prompt: the first token where the continuations differ
    top1_agree: int = 0
    top1_total: int = 0
    top1_first_difference: tuple[int | None, ...] = ()  # per prompt, as a continuation position
    top1_error: str = ""  # why top-1 agreement could not be measured

    @property
    def identical(self) -> int:
        return sum(d is None for d in self.divergence)

    @property
    def top1(self) -> float | None:
        return self.top1_agree / self.top1_total if self.top1_total and not self.top1_error else None

    @property
    def name(self) -> str:
        return "/".join(self.backends)


@dataclass(frozen=True)
class ParityReport:
    backends: tuple[str, ...]
    models: Mapping[str, str]
    prompts: tuple[Prompt, ...]
    template: str  # the template the continuations were generated with
    max_tokens: int
    prompt_ids: tuple[PromptIdsFigure, ...]
    continuations: Mapping[str, tuple[Continuation, ...]]
    pairs: tuple[PairFigures, ...]
    timings: Mapping[str, float] = field(default_factory=dict)
    #: per backend, the prompts whose teacher-forced positions needed a forward pass (the others
    #: were all decided by the backend's greedy run on the same history)
    forward_passes: Mapping[str, int] = field(default_factory=dict)
    #: the constrained prompt set's answers, when it was run
    constrained: ConstrainedFigure | None = None

    @property
    def identical(self) -> int:
        """Prompts whose greedy continuations are the same on every backend."""
        return sum(all(pair.divergence[i] is None for pair in self.pairs) for i in range(len(self.prompts)))

    @property
    def identical_share(self) -> float:
        return self.identical / len(self.prompts) if self.prompts else 1.0

    def misses(self, thresholds: Thresholds | None = None) -> list[str]:
        """One line per figure that falls short of ``thresholds``; empty when all is well."""
        t = thresholds or Thresholds()
        out: list[str] = []
        for fig in self.prompt_ids:
            if not fig.unavailable and fig.share < t.prompt_ids:
                out.append(
                    f"prompt ids with template {fig.template}: identical on {fig.identical}/{fig.total} prompts "
                    f"({_pct(fig.share)}), needs {_pct(t.prompt_ids)}"
                )
        for pair in self.pairs:
            if pair.top1_error:
                out.append(f"teacher-forced top-1 agreement {pair.name}: not measured ({pair.top1_error})")
            elif pair.top1 is not None and pair.top1 < t.top1:
                out.append(
                    f"teacher-forced top-1 agreement {pair.name}: {_pct(pair.top1)} of {pair.top1_total} positions, "
                    f"needs {_pct(t.top1)}"
                )
        if self.identical_share < t.identical:
            out.append(
                f"greedy continuations identical on every backend for {self.identical}/{len(self.prompts)} prompts "
                f"({_pct(self.identical_share)}), needs {_pct(t.identical)}"
            )
        c = self.constrained
        if c is not None:
            share = c.identical / len(c.prompts) if c.prompts else 1.0
            if share < t.identical:
                out.append(
                    f"constrained greedy answers identical on every backend for {c.identical}/{len(c.prompts)} prompts "
                    f"({_pct(share)}), needs {_pct(t.identical)}"
                )
            if c.unparsed:
                out.append(f"constrained answers that did not parse: {', '.join(c.unparsed)}")
        return out

    def passed(self, thresholds: Thresholds | None = None) -> bool:
        return not self.misses(thresholds)

    def to_dict(self, thresholds: Thresholds | None = None) -> dict[str, Any]:
        """Everything, as JSON-ready data (``phi-backends parity --json``)."""
        t = thresholds or Thresholds()
        misses = self.misses(t)
        return {
            "passed": not misses,
            "misses": misses,
            "thresholds": {"prompt_ids": t.prompt_ids, "top1": t.top1, "identical": t.identical},
            "backends": list(self.backends),
            "models": dict(self.models),
            "template": self.template,
            "max_tokens": self.max_tokens,
            "prompts": [p if isinstance(p, str) else [dict(m) for m in p] for p in self.prompts],
            "prompt_ids": [
                {
                    "template": f.template,
                    "identical": f.identical,
                    "total": f.total,
                    "share": f.share,
                    "unavailable": f.unavailable or None,
                    "first_mismatch": _mismatch_dict(f.first_mismatch),
                }
                for f in self.prompt_ids
            ],
            "greedy": {
                "identical": self.identical,
                "total": len(self.prompts),
                "share": self.identical_share,
                "continuations": {
                    b: [
                        {"token_ids": list(c.token_ids), "text": c.text, "finish_reason": c.finish_reason}
                        for c in conts
                    ]
                    for b, conts in self.continuations.items()
                },
            },
            "pairs": [
                {
                    "backends": list(p.backends),
                    "identical": p.identical,
                    "divergence": list(p.divergence),
                    "top1": p.top1,
                    "top1_agree": p.top1_agree,
                    "top1_total": p.top1_total,
                    "top1_first_difference": list(p.top1_first_difference),
                    "top1_error": p.top1_error or None,
                }
                for p in self.pairs
            ],
            "forward_passes": dict(self.forward_passes),
            "constrained": self.constrained.to_dict() if self.constrained is not None else None,
            "timings": dict(self.timings),
        }


def _mismatch_dict(m: IdsMismatch | None) -> dict[str, Any] | None:
    if m is None:
        return None
    return {
        "prompt": m.prompt,
        "backends": list(m.backends),
        "position": m.position,
        "ids": [list(m.ids[0]), list(m.ids[1])],
        "error": m.error or None,
    }


def _pct(share: float) -> str:
    return f"{share * 100:.1f}%"


# -- running ------------------------------------------------------------------------------------


def run_parity(
    generators: Mapping[str, Generator],
    prompts: Sequence[str | Sequence[Message]] = PROMPTS,
    *,
    templates: Sequence[str] = TEMPLATES,
    max_tokens: int = 64,
    progress: Callable[[str], None] | None = None,
    score_all: bool = False,
    constrained: Sequence[ConstrainedPrompt] = (),
    constrained_max_tokens: int = 128,
) -> ParityReport:
    """Measure how far the backends in ``generators`` (name -> Generator) agree on ``prompts``.

    The continuations and teacher forcing use the first of ``templates`` that every backend
    can render. Teacher forcing needs each engine to be a
    :class:`~phi_backends.backend.ScoringEngine` for the prompts where its greedy run does not
    decide every position (all prompts with ``score_all``); a pair where one cannot score
    gets ``top1_error``. ``constrained`` prompts (:data:`.constrained_parity.CONSTRAINED_PROMPTS`)
    are answered greedily under their constraints, up to ``constrained_max_tokens`` each.
    """
    if len(generators) < 2:
        raise UsageError(f"parity needs at least two backends to compare, got {len(generators)}")
    if not prompts:
        raise UsageError("parity needs at least one prompt")
    if not templates:
        raise UsageError("parity needs at least one chat template")
    if max_tokens < 1:
        raise UsageError(f"max_tokens must be at least 1, got {max_tokens}")
    say = progress or (lambda _: None)
    names = tuple(generators)
    fixed: tuple[Prompt, ...] = tuple(_fix_prompt(p, i) for i, p in enumerate(prompts))
    timings: dict[str, float] = {}

    figures = tuple(_prompt_ids_figure(generators, fixed, t) for t in templates)
    chosen = next((f.template for f in figures if not f.unavailable and not f.render_failures), None)
    if chosen is None:
        reasons = "; ".join(f"{f.template}: {f.unavailable or 'not usable on every backend'}" for f in figures)
        raise UsageError(f"no chat template works on every backend ({reasons}); pass --template NAME")

    config = greedy_config(max_tokens)
    continuations: dict[str, tuple[Continuation, ...]] = {}
    prompt_ids: dict[str, list[list[int]]] = {}

    def greedy(name: str, gen: Generator) -> None:
        start = time.perf_counter()
        out = []
        for i, prompt in enumerate(fixed):
            say(f"{name}: greedy continuation {i + 1}/{len(fixed)}")
            done = gen.generate(prompt, config, template=chosen)
            out.append(Continuation(done.token_ids, done.text, done.finish_reason))
        continuations[name] = tuple(out)
        timings[f"{name}.greedy"] = time.perf_counter() - start
        prompt_ids[name] = [gen.prompt_ids(prompt, template=chosen) for prompt in fixed]

    # The backends run their continuations at once, each on its own Generator: an engine that
    # leaves cores idle (MLX's Linux CPU build multiplies on one thread) lends them to the others.
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(generators)) as pool:
        for future in [pool.submit(greedy, name, gen) for name, gen in generators.items()]:
            future.result()
    continuations = {name: continuations[name] for name in names}  # in the backends' order

    import numpy as np  # here, not at the top: the CLI imports this module for its --help

    reference = names[0]
    top1: dict[str, list[Any] | str] = {}
    passes: dict[str, int] = {}
    for name, gen in generators.items():
        start = time.perf_counter()
        rows: list[Any] = []
        passes[name] = 0
        for i in range(len(fixed)):
            history = prompt_ids[reference][i]
            wanted = continuations[reference][i].token_ids
            decided = () if score_all or prompt_ids[name][i] != history else _decided(continuations[name][i], wanted)
            if len(decided) == len(wanted):
                rows.append(np.asarray(decided, dtype=np.int64))
                continue
            if not gen.can_score:
                top1[name] = f"the {name} engine cannot score token ids (no logits())"
                break
            say(f"{name}: teacher forcing {i + 1}/{len(fixed)}")
            passes[name] += 1
            try:
                logits = gen.score(history + list(wanted[:-1]))
            except PhiBackendsError as exc:
                top1[name] = f"{name} could not score prompt {i + 1}: {exc}"
                break
            rows.append(logits[len(history) - 1 :].argmax(axis=1))
        else:
            top1[name] = rows
        timings[f"{name}.teacher_forcing"] = time.perf_counter() - start

    pairs = tuple(_pair(a, b, continuations, top1) for a, b in itertools.combinations(names, 2))
    answers = None
    if constrained:
        say("constrained prompt set")
        start = time.perf_counter()
        answers = run_constrained(generators, constrained, template=chosen, max_tokens=constrained_max_tokens)
        timings["constrained"] = time.perf_counter() - start
    return ParityReport(
        backends=names,
        models={name: gen.model for name, gen in generators.items()},
        prompts=fixed,
        template=chosen,
        max_tokens=max_tokens,
        prompt_ids=figures,
        continuations=continuations,
        pairs=pairs,
        timings=timings,
        forward_passes=passes,
        constrained=answers,
    )


def _decided(own: Continuation, wanted: Sequence[int]) -> tuple[int, ...]:
    """The teacher-forced top-1 tokens that a backend's own greedy continuation ``own`` already
    gives for the reference continuation ``wanted``, from the same prompt ids: at each position
    up to and including the first where they differ, the greedy run had the same history, so
    its token there is the engine's most likely one. (Greedy here is plain argmax: no penalty,
    no sampling. Where ``own`` ended first, its end-of-turn token is not recorded, so that
    position and those after it are not decided.)"""
    agree = _first_difference(own.token_ids, wanted)
    return tuple(own.token_ids[: min(agree + 1, len(own.token_ids), len(wanted))])


def _fix_prompt(prompt: str | Sequence[Message], index: int) -> Prompt:
    if isinstance(prompt, str):
        return prompt
    try:
        return tuple(normalize_messages(prompt))
    except UsageError as exc:
        raise UsageError(f"prompt {index + 1}: {exc}") from None


def _ids_or_error(gen: Generator, prompt: Prompt, template: str) -> list[int] | str:
    try:
        return gen.prompt_ids(prompt, template=template)
    except PhiBackendsError as exc:
        return str(exc)


def _prompt_ids_figure(
    generators: Mapping[str, Generator], prompts: Sequence[Prompt], template: str
) -> PromptIdsFigure:
    names = list(generators)
    identical = 0
    first: IdsMismatch | None = None
    errors: set[str] = set()
    all_failed = True
    partial = 0
    for i, prompt in enumerate(prompts):
        got = {name: _ids_or_error(gen, prompt, template) for name, gen in generators.items()}
        failed = [n for n in names if isinstance(got[n], str)]
        if len(failed) < len(names):
            all_failed = False
        partial += 0 < len(failed) < len(names)
        errors.update(str(got[n]) for n in failed)
        mismatch = _first_ids_mismatch(i, names, got)
        if mismatch is None:
            identical += 1
        elif first is None:
            first = mismatch
    if all_failed:
        return PromptIdsFigure(template, 0, 0, unavailable=sorted(errors)[0] if errors else "no prompts")
    return PromptIdsFigure(template, identical, len(prompts), first_mismatch=first, render_failures=partial)


def _first_ids_mismatch(index: int, names: list[str], got: Mapping[str, list[int] | str]) -> IdsMismatch | None:
    base_name = names[0]
    base = got[base_name]
    for other in names[1:]:
        ids = got[other]
        if isinstance(base, str) or isinstance(ids, str):
            if isinstance(base, str) and isinstance(ids, str):
                continue  # neither can render it: not a difference between them
            error = base if isinstance(base, str) else ids
            failed = base_name if isinstance(base, str) else other
            return IdsMismatch(index, (base_name, other), 0, ((), ()), error=f"{failed}: {error}")
        if ids != base:
            pos = _first_difference(base, ids)
            return IdsMismatch(index, (base_name, other), pos, (tuple(base[pos : pos + 4]), tuple(ids[pos : pos + 4])))
    return None


def _first_difference(a: Sequence[int], b: Sequence[int]) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def _pair(
    a: str, b: str, continuations: Mapping[str, tuple[Continuation, ...]], top1: Mapping[str, list[Any] | str]
) -> PairFigures:
    divergence: list[int | None] = []
    for ca, cb in zip(continuations[a], continuations[b], strict=True):
        same = ca.token_ids == cb.token_ids and ca.finish_reason == cb.finish_reason
        divergence.append(None if same else _first_difference(ca.token_ids, cb.token_ids))
    ta, tb = top1[a], top1[b]
    if isinstance(ta, str) or isinstance(tb, str):
        error = ta if isinstance(ta, str) else str(tb)
        return PairFigures((a, b), tuple(divergence), top1_error=error)
    agree = total = 0
    first: list[int | None] = []
    for ra, rb in zip(ta, tb, strict=True):
        same = ra == rb
        agree += int(same.sum())
        total += int(same.size)
        first.append(None if same.all() else int((~same).argmax()))
    return PairFigures((a, b), tuple(divergence), agree, total, tuple(first))


# -- prompt files -------------------------------------------------------------------------------


def read_prompts(path: Path) -> tuple[Prompt, ...]:
    """Prompts from a file: ``.json`` holds a list, ``.jsonl`` one prompt per line, anything
    else one prompt per non-blank line. A JSON prompt is a string (one user message) or a list
    of ``{"role", "content"}`` messages."""
    fix = "see docs/parity.md for the prompt file formats"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"prompt file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read prompt file {path}: {exc}") from None
    items: list[Any]
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            loaded = json.loads(text)
            if not isinstance(loaded, list):
                raise UsageError(f"{path} should hold a JSON list of prompts; {fix}")
            items = loaded
        elif suffix == ".jsonl":
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            items = [line for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not valid JSON ({exc}); {fix}") from None
    if not items:
        raise UsageError(f"{path} holds no prompts; {fix}")
    prompts: list[Prompt] = []
    for i, item in enumerate(items):
        if isinstance(item, str) and item:
            prompts.append(item)
        elif isinstance(item, list):
            try:
                prompts.append(tuple(normalize_messages(item)))
            except UsageError as exc:
                raise UsageError(f"{path}, prompt {i + 1}: {exc}") from None
        else:
            raise UsageError(
                f"{path}, prompt {i + 1}: expected a non-empty string or a list of messages, got {_kind(item)}; {fix}"
            )
    return tuple(prompts)


def _kind(value: Any) -> str:
    return "an empty string" if value == "" else type(value).__name__
