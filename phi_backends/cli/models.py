"""``phi-backends pull``, ``models`` and ``rm``: downloading, listing and removing models.

Each command reads only the Hugging Face cache and the catalogue, except ``pull``, which
downloads through the same resolution ``run`` uses (see :mod:`phi_backends.models.manage`).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import UsageError

__all__ = ["COMMANDS", "add_parsers", "command"]

COMMANDS = ("pull", "models", "rm")
EXIT_INTERRUPTED = 130


def add_parsers(commands: Any) -> None:
    """Add the three sub-commands to ``phi-backends``'s sub-parsers."""
    pull = commands.add_parser(
        "pull",
        help="download a model as `run` would use it",
        description="Download what `phi-backends run --model NAME` would load, with a progress bar on a terminal, "
        "into the Hugging Face cache (HF_HOME / HF_HUB_CACHE); after an interruption the files it finished stay, "
        "and the next pull fetches the rest. "
        "Prints where it went.",
    )
    pull.add_argument("name", metavar="NAME", help="a catalogue name (see `phi-backends models`) or a hub repo id")
    pull.add_argument(
        "-b", "--backend", default=None, help="download for this backend (default: the one `run` would choose here)"
    )
    pull.add_argument(
        "--provider", default=None, help="ONNX Runtime execution provider whose folder to download: cpu, cuda, dml"
    )
    pull.add_argument("--json", action="store_true", help="print one JSON object: name, backend, path, size")

    models = commands.add_parser(
        "models",
        help="list catalogue models, their artifacts per backend and what is cached",
        description="List the catalogue (built-in and your own entries): each model's artifact per backend, "
        "whether it is in the Hugging Face cache, its size there, and the cache folder. Reads no network.",
    )
    models.add_argument("--json", action="store_true", help="print the list as JSON")

    rm = commands.add_parser(
        "rm",
        help="remove a model's downloads from the Hugging Face cache",
        description="Delete what `pull` or `run` downloaded for a catalogue model (every backend's, or one "
        "backend's with --backend), with any interrupted downloads of it. Asks first; --yes does not.",
    )
    rm.add_argument("name", metavar="NAME", help="a catalogue name (see `phi-backends models`)")
    rm.add_argument("-b", "--backend", default=None, help="remove only this backend's artifact")
    rm.add_argument("-y", "--yes", action="store_true", help="do not ask")
    rm.add_argument("--json", action="store_true", help="print what was removed as JSON")


def command(args: argparse.Namespace) -> int:
    if args.command == "pull":
        return _pull(args)
    if args.command == "models":
        return _models(args)
    return _rm(args)


# -- pull ------------------------------------------------------------------------------------------


def _pull(args: argparse.Namespace) -> int:
    from ..models import manage

    try:
        # huggingface_hub's bars on a terminal only: elsewhere they would bury an error's one line.
        progress = sys.stderr.isatty()
        pulled = manage.pull(args.name, backend=args.backend, provider=args.provider, progress=progress)
    except KeyboardInterrupt:
        # what was downloaded stays in the cache (models/resumable.py), a file cut short included
        print(
            f"\nphi-backends: error: the download was interrupted; run `phi-backends pull {args.name}` again: "
            "it continues where it stopped",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if args.json:
        print(json.dumps(pulled.as_dict(), indent=2))
    else:
        provider = f", provider {pulled.provider}" if pulled.provider else ""
        print(f"{pulled.source.name} for {pulled.backend}{provider} ({_size(pulled.size)}): {pulled.source.path}")
    return 0


# -- models ----------------------------------------------------------------------------------------


def _models(args: argparse.Namespace) -> int:
    from ..models import hub, manage

    index = manage.scan()
    rows = manage.listing(index)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        total = f"  [{_size(row['cached_size'])} cached]" if row["cached_size"] else ""
        print(f"{row['name']}  {row['description']}{total}")
        for artifact in row["artifacts"]:
            backend = artifact["backend"] or artifact["format"]
            providers = f" ({', '.join(artifact['providers'])})" if artifact["providers"] else ""
            if artifact["missing_files"]:
                state = f"{artifact['missing_files']} files missing: `pull` fetches them"
            elif artifact["cached"]:
                state = f"{_size(artifact['size'])}" + (" installed" if artifact["kind"] == "package" else " cached")
            elif artifact["partial_bytes"]:
                state = f"partial, {_size(artifact['partial_bytes'])}: `pull` resumes"
            else:
                state = "-"
            print(f"  {backend + providers:<22} {state:<16} {artifact['where']}")
    offline = " (HF_HUB_OFFLINE: downloads are off)" if hub.is_offline() else ""
    print(f"cache: {index.folder}{offline}")
    return 0


# -- rm --------------------------------------------------------------------------------------------


def _rm(args: argparse.Namespace) -> int:
    from ..models import manage

    removal = manage.plan_removal(args.name, backend=args.backend)
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("rm asks before deleting, and stdin is not a terminal; add --yes to delete without asking")
        what = ", ".join(f"{r.repo_id} ({_size(r.size_on_disk)})" for r in removal.repos)
        if removal.partial:
            partial = f"{len(removal.partial)} partial download(s)"
            what = f"{what} and {partial}" if what else partial
        sys.stderr.write(f"Remove {what} from {removal.index.folder}, {_size(removal.size)} in all? [y/N] ")
        sys.stderr.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            print("nothing removed", file=sys.stderr)
            return 1
    removal.execute()
    if args.json:
        print(json.dumps({**removal.as_dict(), "removed": True}, indent=2))
    else:
        print(f"removed {removal.name}: {_size(removal.size)} freed in {removal.index.folder}")
    return 0


def _size(count: int | None) -> str:
    if count is None:
        return "?"
    size = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"  # pragma: no cover
