"""Build docs/bad-inputs.md from what the tests saw (records written by tests/bad_inputs.py).

    python scripts/bad_inputs.py RECORDS_DIR docs/bad-inputs.md           # write the table
    python scripts/bad_inputs.py RECORDS_DIR docs/bad-inputs.md --check   # fail if it is stale
    python scripts/bad_inputs.py RECORDS_DIR docs/bad-inputs.md --refresh # write it, say if it changed

The nox test sessions write one ``RECORDS_DIR/<session>.jsonl`` each; once every session's
records are there, the docs session runs ``--refresh`` before building the site, so the published
table is what that run's tests saw. It fails below MIN_CASES cases.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

MIN_CASES = 40
SURFACES = {"cli": "Command line", "api": "Python API", "config": "Configuration"}
HEADER = """# Bad input, catalogued

Every bad input that phi-backends' tests feed it, with the message a user gets and the exit code
(`2`: a usage error, fix the command or the config; `1`: a runtime error, fix the file or the
machine). The CLI prints each message after `phi-backends: error: `; the Python API raises the
error class shown, whose `exit_code` is the same number.

This page is generated from the tests that check these cases (`tests/bad_inputs.py` records what
they saw; `scripts/bad_inputs.py` writes this table); CI regenerates it before building the site. What
differs between machines is shortened: `<tmp>` (a temporary folder), `<fixtures>` (the cached test
models), `<repo>` (the checkout), `<site-packages>`, `~` (the home folder) and `<port>`.
"""


def load_rows(folder: Path) -> list[dict[str, object]]:
    seen: dict[tuple[str, str, str], dict[str, object]] = {}
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                seen.setdefault((row["surface"], row["what"], row["message"]), row)
    order = list(SURFACES)

    def key(row: dict[str, object]) -> tuple[int, str, str, str]:
        # grouped by the test file that checks them, so that related inputs stand together
        test_file = str(row["test"]).partition("::")[0]
        return order.index(str(row["surface"])), test_file, str(row["what"]).lower(), str(row["message"])

    return sorted(seen.values(), key=key)


def cell(text: object) -> str:
    """``text`` shown as is in a table cell, on GitHub and in mkdocs alike (no markup, no HTML)."""
    escaped = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([\\`*_\[\]|])", r"\\\1", escaped)


def checked_by(test: object) -> str:
    """``file::test`` without the parameters: one case's id is long, and the row says which case."""
    path, _, name = str(test).partition("::")
    name = name.split("[", 1)[0]
    return f"`{path}` `{name}`" if name else f"`{path}`"


def render(rows: list[dict[str, object]]) -> str:
    out = [HEADER]
    for surface, title in SURFACES.items():
        group = [r for r in rows if r["surface"] == surface]
        if not group:
            continue
        out.append(f"\n## {title} ({len(group)})\n")
        out.append("| bad input | exit | message | checked by |")
        out.append("|---|---|---|---|")
        for r in group:
            kind = f"`{r['kind']}`: " if r.get("kind") else ""
            out.append(f"| {cell(r['what'])} | {r['code']} | {kind}{cell(r['message'])} | {checked_by(r['test'])} |")
    out.append(f"\n{len(rows)} cases.\n")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("records", type=Path)
    parser.add_argument("page", type=Path)
    parser.add_argument("--check", action="store_true", help="fail if the page differs from what the records give")
    parser.add_argument("--refresh", action="store_true", help="write the page; say so if it changed")
    args = parser.parse_args()
    rows = load_rows(args.records)
    if not rows:
        print(f"no records in {args.records}; run the test sessions first", file=sys.stderr)
        return 1
    if len(rows) < MIN_CASES:
        print(
            f"only {len(rows)} bad-input cases recorded; the catalogue promises at least {MIN_CASES}", file=sys.stderr
        )
        return 1
    text = render(rows)
    if args.refresh:
        current = args.page.read_text(encoding="utf-8") if args.page.exists() else ""
        if current != text:
            print(f"{args.page} changed ({len(rows)} cases): commit the regenerated page", file=sys.stderr)
    if args.check:
        current = args.page.read_text(encoding="utf-8") if args.page.exists() else ""
        if current != text:
            print(
                f"{args.page} is out of date with the tests' records; regenerate it with: "
                f"python scripts/bad_inputs.py {args.records} {args.page}",
                file=sys.stderr,
            )
            return 1
        print(f"{args.page}: {len(rows)} cases, up to date")
        return 0
    args.page.write_text(text, encoding="utf-8")
    print(f"wrote {args.page}: {len(rows)} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
