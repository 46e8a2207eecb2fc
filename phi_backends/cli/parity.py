"""``phi-backends parity``: one model in several formats, one backend each, measured against each other."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from ..diagnostics.parity import TEMPLATES, ParityReport, Thresholds
from ..errors import UsageError

__all__ = ["add_parity_parser", "parity_command"]

_DEFAULTS = Thresholds()


def add_parity_parser(commands: Any) -> None:
    """Add the ``parity`` sub-command to ``commands`` (the parser's sub-parsers)."""
    parity = commands.add_parser(
        "parity",
        help="check that several backends running one model agree",
        description=(
            "Run one model, given in several formats, on one backend each and compare: prompt token ids for "
            "each chat template, greedy continuations, and teacher-forced top-1 agreement for each pair. "
            "Exit 0 when every figure meets its threshold, 1 when one does not. See docs/parity.md."
        ),
    )
    parity.add_argument(
        "-m",
        "--model",
        action="append",
        default=[],
        metavar="BACKEND=MODEL",
        help="a backend and the model in its format, e.g. llama-cpp=model.gguf or onnx=./model-onnx; give two or more",
    )
    parity.add_argument(
        "-O",
        "--option",
        action="append",
        default=[],
        metavar="BACKEND.KEY=VALUE",
        help="an engine option for one backend, e.g. llama-cpp.n_threads=2 or onnx.provider=cuda; repeatable",
    )
    parity.add_argument(
        "--prompts",
        type=Path,
        default=None,
        metavar="FILE",
        help="prompts to use instead of the built-in 20: .json (a list), .jsonl, or one prompt per line",
    )
    parity.add_argument("--max-tokens", type=int, default=64, help="length of each greedy continuation (default: 64)")
    parity.add_argument(
        "--template",
        action="extend",
        nargs="+",
        default=None,
        metavar="NAME",
        help=f"chat templates whose prompt ids are compared (default: {' '.join(TEMPLATES)}); "
        "the continuations use the first one every backend can render",
    )
    parity.add_argument(
        "--min-prompt-ids",
        type=float,
        default=_DEFAULTS.prompt_ids,
        metavar="SHARE",
        help=f"share of prompts with identical ids, for each template (default: {_DEFAULTS.prompt_ids})",
    )
    parity.add_argument(
        "--min-top1",
        type=float,
        default=_DEFAULTS.top1,
        metavar="SHARE",
        help=f"teacher-forced top-1 agreement, for each pair of backends (default: {_DEFAULTS.top1})",
    )
    parity.add_argument(
        "--min-identical",
        type=float,
        default=_DEFAULTS.identical,
        metavar="SHARE",
        help=f"share of prompts whose greedy continuations are identical on every backend "
        f"(default: {_DEFAULTS.identical})",
    )
    parity.add_argument(
        "--score-all",
        action="store_true",
        help="score every teacher-forced position with a forward pass, even where a backend's own "
        "greedy run already had that history (slower; the figures are the same up to float ties)",
    )
    parity.add_argument(
        "--constrained",
        action="store_true",
        help="also answer a built-in constrained prompt set greedily (JSON schemas, a regex, a grammar, a choice, "
        "a forced tool call) and check the answers are identical on every backend and all parse",
    )
    parity.add_argument("--json", action="store_true", help="print the whole report as one JSON object")


def parity_command(args: argparse.Namespace) -> int:
    thresholds = Thresholds(prompt_ids=args.min_prompt_ids, top1=args.min_top1, identical=args.min_identical)
    if args.max_tokens < 1:
        raise UsageError(f"--max-tokens must be at least 1, got {args.max_tokens}")
    wanted = _parse_models(args.model)
    options = _parse_options(args.option, wanted)
    from .. import plugins

    for backend, given in options.items():
        validate = getattr(plugins.get_backend(backend), "validate_options", None)
        if callable(validate):
            validate(given)  # a bad option fails before any model is loaded
    from ..diagnostics import parity

    prompts = parity.read_prompts(args.prompts) if args.prompts is not None else parity.PROMPTS
    templates = tuple(args.template or TEMPLATES)
    from ..templates import get_template

    for name in templates:
        if name != "auto":
            get_template(name)  # an unknown name fails now, not after loading the models

    from ..api import load

    progress = _progress if sys.stderr.isatty() else None
    with contextlib.ExitStack() as stack:
        generators = {}
        for backend, model in wanted.items():
            if progress:
                progress(f"loading {model} on {backend}")
            generators[backend] = stack.enter_context(
                load(model, backend=backend, progress=progress is not None, **options[backend])
            )
        report = parity.run_parity(
            generators,
            prompts,
            templates=templates,
            max_tokens=args.max_tokens,
            progress=progress,
            score_all=args.score_all,
            constrained=parity.CONSTRAINED_PROMPTS if args.constrained else (),
        )
    if progress:
        progress("")
    if args.json:
        print(json.dumps(report.to_dict(thresholds), ensure_ascii=False, indent=2))
    else:
        print(format_report(report, thresholds))
    misses = report.misses(thresholds)
    for miss in misses:
        print(f"phi-backends: parity: missed: {miss}", file=sys.stderr)
    return 1 if misses else 0


def _parse_models(items: list[str]) -> dict[str, str]:
    """``BACKEND=MODEL`` pairs, checked before any model is loaded."""
    from .. import models, plugins

    wanted: dict[str, str] = {}
    for item in items:
        backend, sep, model = item.partition("=")
        backend, model = backend.strip(), model.strip()
        if not sep or not backend or not model:
            raise UsageError(f"--model takes BACKEND=MODEL (e.g. llama-cpp=model.gguf), got {item!r}")
        if backend in wanted:
            raise UsageError(f"backend {backend!r} is named twice (--model {backend}=...); give each backend once")
        wanted[backend] = model
    if len(wanted) < 2:
        raise UsageError(
            f"parity compares two or more backends, got {len(wanted)}: "
            "give --model BACKEND=MODEL once for each (e.g. --model llama-cpp=a.gguf --model onnx=./a-onnx)"
        )
    for backend, model in wanted.items():
        reads = plugins.get_backend(backend).formats  # an unknown backend fails here
        kind, value = models.classify(model)  # a path that does not exist fails here
        if kind != "path":
            continue
        fmt = models.detect_format(Path(value))
        if fmt is not None and fmt not in reads:
            readable = " or ".join(models.describe_format(f) for f in reads)
            raise UsageError(
                f"--model {backend}={model}: {model} is {models.describe_format(fmt)}, but the {backend} backend reads "
                f"{readable}; give each backend the model in its own format"
            )
    return wanted


def _parse_options(items: list[str], backends: dict[str, str]) -> dict[str, dict[str, Any]]:
    """``BACKEND.KEY=VALUE`` items, by backend; a value is JSON when it parses as JSON, else a string."""
    options: dict[str, dict[str, Any]] = {backend: {} for backend in backends}
    for item in items:
        target, _, assignment = item.partition(".")
        key, sep, raw = assignment.partition("=")
        if not sep or not target.strip() or not key.strip():
            raise UsageError(f"--option takes BACKEND.KEY=VALUE (e.g. llama-cpp.n_threads=2), got {item!r}")
        if target.strip() not in options:
            raise UsageError(
                f"--option {item}: {target.strip()!r} is not one of the backends given with --model "
                f"({', '.join(backends)})"
            )
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        options[target.strip()][key.strip().replace("-", "_")] = value
    return options


def _progress(message: str) -> None:
    sys.stderr.write(f"\r\x1b[K{message}")
    sys.stderr.flush()


# -- the text report ----------------------------------------------------------------------------


def format_report(report: ParityReport, thresholds: Thresholds) -> str:
    """The report for people: one section per figure, the misses last."""
    n = len(report.prompts)
    lines = [f"parity of {len(report.backends)} backends on {n} prompts"]
    lines += [f"  {backend:<12} {report.models[backend]}" for backend in report.backends]
    lines += ["", f"prompt ids, identical on every backend (needs {_pct(thresholds.prompt_ids)}):"]
    for fig in report.prompt_ids:
        if fig.unavailable:
            lines.append(f"  {fig.template:<12} not usable on any backend: {fig.unavailable}")
            continue
        line = f"  {fig.template:<12} {fig.identical}/{fig.total}"
        m = fig.first_mismatch
        if m is not None:
            a, b = m.backends
            where = m.error or f"ids from position {m.position}: {a} {list(m.ids[0])}, {b} {list(m.ids[1])}"
            line += f"   first difference: prompt {m.prompt + 1}, {where}"
        lines.append(line)
    lines += [
        "",
        f"greedy continuations (template {report.template}, up to {report.max_tokens} tokens): "
        f"identical on every backend for {report.identical}/{n} (needs {_pct(thresholds.identical)})",
    ]
    for pair in report.pairs:
        diverged = [f"#{i + 1} at token {d}" for i, d in enumerate(pair.divergence) if d is not None]
        detail = f"   diverge: {', '.join(diverged)}" if diverged else ""
        lines.append(f"  {pair.name:<24} {pair.identical}/{n} identical{detail}")
    lines += ["", f"teacher-forced top-1 agreement (needs {_pct(thresholds.top1)} for every pair):"]
    for pair in report.pairs:
        if pair.top1 is None:
            lines.append(f"  {pair.name:<24} not measured: {pair.top1_error}")
            continue
        differ = pair.top1_total - pair.top1_agree
        lines.append(f"  {pair.name:<24} {_pct(pair.top1)} of {pair.top1_total} positions ({differ} differ)")
    if report.forward_passes:
        scored = ", ".join(f"{b} {k}/{n}" for b, k in report.forward_passes.items())
        lines.append(
            f"  prompts scored with a forward pass: {scored} (elsewhere each backend's greedy run had the same history)"
        )
    c = report.constrained
    if c is not None:
        lines += [
            "",
            f"constrained greedy answers (template {c.template}, up to {c.max_tokens} tokens): identical on every "
            f"backend for {c.identical}/{len(c.prompts)} (needs {_pct(thresholds.identical)}), "
            f"{'all parsed' if not c.unparsed else 'not parsed: ' + ', '.join(c.unparsed)}",
        ]
        first = next(iter(c.results.values()))
        for i, (item, result) in enumerate(zip(c.prompts, first, strict=True)):
            same = len({(rs[i].text, rs[i].finish_reason) for rs in c.results.values()}) == 1
            lines.append(f"  #{i + 1} {item.kind:<12} {'same' if same else 'DIFFERS'}  {result.text[:60]!r}")
    misses = report.misses(thresholds)
    lines.append("")
    lines.append("passed" if not misses else f"failed: {len(misses)} figure(s) missed their threshold")
    return "\n".join(lines)


def _pct(share: float) -> str:
    return f"{share * 100:.1f}%"
