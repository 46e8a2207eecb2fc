"""``phi-backends bench``: prompt and decode speed per model, backend and length, like llama-bench.

The measuring is :mod:`phi_backends.diagnostics.bench`; this module reads the flags, prints the
table (or JSON, or CSV) and draws the optional chart with matplotlib, imported only for ``--plot``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..models.catalogue import DEFAULT_MODEL

if TYPE_CHECKING:
    from ..diagnostics.bench import BenchRow, Stat

__all__ = ["COMMAND", "add_parser", "command"]

COMMAND = "bench"
PLOT_FORMATS = (".png", ".svg")
PLOT_INSTALL = "pip install 'phi-backends[plot]'"
CSV_FIELDS = (
    "model",
    "backend",
    "p",
    "n",
    "repetitions",
    "generated_min",
    "pp_tps_mean",
    "pp_tps_sd",
    "tg_tps_mean",
    "tg_tps_sd",
    "ttft_ms_mean",
    "ttft_ms_sd",
    "peak_rss_mib",
)


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        COMMAND,
        help="measure prompt and decode tokens/s, time to first token and peak memory",
        description="Measure prompt processing and decode speed (tokens/s), time to first token and peak resident "
        "memory, for every model × backend × prompt length × output length, loaded as `run` loads them. "
        "Each row: one warm-up, then REPS repetitions (mean ± sd). See docs/benchmarking.md.",
    )
    parser.add_argument(
        "models",
        nargs="*",
        metavar="MODEL",
        help=f"catalogue names, local paths or hub repo ids (default: the config's model, else {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "-b",
        "--backend",
        action="append",
        default=None,
        dest="backends",
        metavar="BACKEND",
        help="llama-cpp, onnx or mlx; repeatable, or comma-separated (default: the config's, else chosen per model)",
    )
    parser.add_argument(
        "-p",
        "--prompt-tokens",
        action="append",
        default=None,
        metavar="P[,P...]",
        help="prompt lengths in tokens, comma-separated, repeatable (default: 512)",
    )
    parser.add_argument(
        "-n",
        "--output-tokens",
        action="append",
        default=None,
        metavar="N[,N...]",
        help="tokens to generate, comma-separated, repeatable (default: 128)",
    )
    parser.add_argument(
        "-r", "--repetitions", default="3", metavar="REPS", help="measured runs per row, after a warm-up (default: 3)"
    )
    parser.add_argument(
        "-O",
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="engine option as `run` takes it, e.g. n_ctx=4096, for every backend; BACKEND.KEY=VALUE for one "
        "backend, e.g. llama-cpp.n_threads=2 or onnx.threads=2; repeatable",
    )
    formats = parser.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true", help="print the rows as JSON, with every repetition's figures")
    formats.add_argument("--csv", action="store_true", help="print the rows as CSV, with a header")
    parser.add_argument(
        "--plot",
        default=None,
        metavar="FILE",
        help=f"also draw the tokens/s as a bar chart in FILE (.png or .svg; needs {PLOT_INSTALL})",
    )


def command(args: argparse.Namespace) -> int:
    from ..diagnostics import bench

    prompt_lengths = _lengths(args.prompt_tokens or ["512"], "-p")
    output_lengths = _lengths(args.output_tokens or ["128"], "-n")
    repetitions = _count(args.repetitions, "-r")
    bench.check_lengths(prompt_lengths, output_lengths, repetitions)
    plot = _plot_path(args.plot) if args.plot is not None else None
    models: list[str | None] = list(args.models) or [None]
    backends: list[str | None] = [b for item in args.backends or [] for b in _names(item, "-b")] or [None]
    options = _options(args.option, backends)

    progress = _progress if sys.stderr.isatty() else None
    rows: list[BenchRow] = []
    try:
        for row in bench.bench(
            models, backends, prompt_lengths, output_lengths, repetitions, options=options, progress=progress
        ):
            rows.append(row)
    finally:  # a later model's error (or Ctrl-C) does not throw away the rows already measured
        if rows:
            _print(rows, args)
    if plot is not None:
        _draw(rows, plot)
    return 0


def _print(rows: Sequence[BenchRow], args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps([row.as_dict() for row in rows], indent=2))
    elif args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(CSV_FIELDS)
        writer.writerows(_csv_row(row) for row in rows)
    else:
        print("\n".join(_table(rows)))


# -- flags ----------------------------------------------------------------------------------------


def _lengths(items: Sequence[str], flag: str) -> list[int]:
    """``-p 512,1024 -p 2048`` as [512, 1024, 2048], in the order given, once each."""
    values: list[int] = []
    for item in items:
        for part in _names(item, flag):
            value = _count(part, flag)
            if value not in values:
                values.append(value)
    return values


def _names(item: str, flag: str) -> list[str]:
    parts = [part.strip() for part in item.split(",")]
    if not all(parts):
        raise UsageError(f"{flag} takes a comma-separated list with no empty items, got {item!r}")
    return parts


def _count(text: str, flag: str) -> int:
    try:
        return int(text)
    except ValueError:
        example = "3" if flag == "-r" else "512,1024"
        raise UsageError(f"{flag} takes whole numbers such as {example}, got {text!r}") from None


def _options(items: Sequence[str], backends: Sequence[str | None]) -> dict[str | None, dict[str, tuple[str, Any]]]:
    """``-O KEY=VALUE`` for every backend, read exactly as ``run`` reads it (JSON values, else
    text; dashes in keys as underscores), and ``-O BACKEND.KEY=VALUE`` for one backend, as
    ``parity`` takes it: several backends in one run need their own options (llama.cpp's
    ``n_threads`` is ONNX Runtime's ``threads``). Keyed by backend, None for every one."""
    grouped: dict[str | None, list[str]] = {}
    for item in items:
        key = item.partition("=")[0]
        target, dot, _ = key.partition(".")
        if not dot:
            grouped.setdefault(None, []).append(item)
            continue
        if target.strip() not in _allowed(backends):
            given = ", ".join(b for b in backends if b)
            raise UsageError(
                f"-O {item}: {target.strip()!r} is not a backend given with -b (given: {given}); "
                "name it with -b, or drop the prefix to set the option for every backend"
                if given
                else f"-O {item}: {target.strip()!r} is not a backend; use one of {', '.join(sorted(_allowed(backends)))}"
            )
        grouped.setdefault(target.strip(), []).append(item[len(target) + 1 :])
    return {backend: _parsed(given) for backend, given in grouped.items()}


def _allowed(backends: Sequence[str | None]) -> set[str]:
    """The backends a ``BACKEND.`` prefix may name: those given with -b, else any (the choice is per model)."""
    given = {b for b in backends if b}
    if given:
        return given
    from .. import plugins

    return set(plugins.KNOWN_BACKENDS) | set(plugins.backends())


def _parsed(items: Sequence[str]) -> dict[str, tuple[str, Any]]:
    from . import config as cli_config

    fields = {name: None for name in cli_config.SAMPLING_FIELDS}
    namespace = argparse.Namespace(
        model=None, backend=None, platform=None, template=None, provider=None, option=list(items), **fields
    )
    return dict(cli_config.flags(namespace)[1])


def _plot_path(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() not in PLOT_FORMATS:
        raise UsageError(f"--plot writes .png or .svg files, got {text!r}; name the file FILE.png or FILE.svg")
    try:  # before measuring, so that a missing library does not cost the run
        import matplotlib.figure  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        raise UsageError(f"--plot needs matplotlib, which is not installed: {PLOT_INSTALL}") from None
    return path


def _progress(line: str) -> None:
    print(f"bench: {line}", file=sys.stderr, flush=True)


# -- output ---------------------------------------------------------------------------------------


def _table(rows: Sequence[BenchRow]) -> list[str]:
    header = ("model", "backend", "p", "n", "pp t/s", "tg t/s", "ttft ms", "peak RSS MiB")
    cells = [header]
    for row in rows:
        got = min(row.generated)
        n = str(row.max_tokens) if got == row.max_tokens else f"{got}/{row.max_tokens}"  # the model stopped early
        ttft = row.ttft.mean
        cells.append(
            (
                row.model,
                row.backend,
                str(row.prompt_tokens),
                n,
                _mean_sd(row.prompt_tps),
                _mean_sd(row.decode_tps),
                "-" if ttft is None else f"{ttft * 1000:.1f}",
                "-" if row.peak_rss is None else f"{row.peak_rss / 2**20:.0f}",
            )
        )
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    left = {0, 1}  # names to the left, figures to the right
    return [
        "  ".join(
            cell.ljust(w) if i in left else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in cells
    ]


def _mean_sd(stat: Stat) -> str:
    mean, sd = stat.mean, stat.sd
    return "-" if mean is None or sd is None else f"{mean:.2f} ± {sd:.2f}"


def _csv_row(row: BenchRow) -> list[Any]:
    data = row.as_dict()
    pp, tg, ttft = (
        data[key] for key in ("prompt_tokens_per_second", "decode_tokens_per_second", "time_to_first_token_ms")
    )
    return [
        row.model,
        row.backend,
        row.prompt_tokens,
        row.max_tokens,
        row.repetitions,
        min(row.generated),
        pp["mean"],
        pp["sd"],
        tg["mean"],
        tg["sd"],
        ttft["mean"],
        ttft["sd"],
        data["peak_rss_mib"],
    ]


def _draw(rows: Sequence[BenchRow], path: Path) -> None:
    """Prompt and decode tokens/s per row, side by side (their scales differ tenfold), sd as error bars.
    What every row shares (the model, the backend) goes in the title; each bar is named by the rest."""
    # the object API: no pyplot, no display, no global state (matplotlib is an extra: not in the typecheck venv)
    from matplotlib.figure import Figure  # type: ignore[import-not-found]

    models = {row.model for row in rows}
    backends = {row.backend for row in rows}
    shared = [*(models if len(models) == 1 else ()), *(backends if len(backends) == 1 else ())]
    labels = []
    for row in rows:
        own = [*([row.model] if len(models) > 1 else []), *([row.backend] if len(backends) > 1 else [])]
        labels.append(" ".join([*own, f"p={row.prompt_tokens} n={row.max_tokens}"]))
    figure = Figure(figsize=(8.0, 1.4 + 0.45 * len(rows)), layout="constrained")
    axes = figure.subplots(1, 2, sharey=True)
    positions = list(range(len(rows)))[::-1]  # the first row at the top, as in the table
    for ax, (title, stats, color) in zip(
        axes,
        (
            ("prompt processing, tokens/s", [row.prompt_tps for row in rows], "#4c72b0"),
            ("decode, tokens/s", [row.decode_tps for row in rows], "#dd8452"),
        ),
        strict=True,
    ):
        ax.barh(positions, [s.mean or 0.0 for s in stats], xerr=[s.sd or 0.0 for s in stats], capsize=3, color=color)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(positions, labels, fontsize=8)
    reps = ", ".join(str(r) for r in sorted({row.repetitions for row in rows}))
    figure.suptitle(f"{' on '.join(shared) or 'phi-backends bench'}: mean ± sd over {reps} repetitions", fontsize=10)
    figure.savefig(path, dpi=100)
