"""The command line as users of llm, ollama, llama.cpp and mlx_lm type it.

The prompt comes as words (``run Hello world`` is one prompt), ``-p TEXT``, ``-f FILE`` or piped
stdin; a misspelt flag or command gets a "did you mean"; engine warnings are one line each.
Python 3.14's argparse suggests on its own (``suggest_on_error``); the project runs on 3.10+, so
the parser here does it on every version.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import warnings
from pathlib import Path
from typing import Any, NoReturn, TextIO

from ..errors import PhiBackendsWarning, UsageError

__all__ = ["SEED_PROMPT", "Parser", "add_prompt_arguments", "read_prompt", "show_warnings_as_lines"]

SEED_PROMPT = "Write a haiku about ice hockey"
_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)'")
_RUN = "run"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, with a suggestion for a misspelt name, and
    whose ``run`` takes prompt words wherever they stand among its flags."""

    def error(self, message: str) -> NoReturn:
        hint = self._suggestion(message)
        self.exit(2, f"{self.prog}: error: {message}{hint} (see {self.prog} --help)\n")

    def parse_known_args(  # type: ignore[override]
        self, args: Any = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if getattr(parsed, "command", None) == _RUN and isinstance(getattr(parsed, "prompt", None), list):
            # `run Hello --temperature 0 world`: argparse fills a positional once; the words after
            # a flag come back unrecognized, and they are the rest of the prompt.
            words = [w for w in extras if not w.startswith("-") or w == "-"]
            parsed.prompt += words
            extras = [w for w in extras if w not in words]
        if extras and getattr(parsed, "command", None) is not None:
            sub = self._subparser(parsed.command)
            if sub is not None:  # name the sub-command, and suggest among its flags
                sub.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras

    def _subparser(self, name: str) -> Parser | None:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                found = action.choices.get(name)
                return found if isinstance(found, Parser) else None
        return None

    def _suggestion(self, message: str) -> str:
        if "did you mean" in message or "maybe you meant" in message:  # argparse >= 3.14 said it
            return ""
        choice = _INVALID_CHOICE.search(message)
        if choice:
            names = [str(c) for a in self._actions if a.choices for c in a.choices]
            return _did_you_mean(choice.group(1), names)
        if message.startswith("unrecognized arguments:"):
            flags = [s for a in self._actions for s in a.option_strings if s not in ("-h", "--help")]
            for word in message.split(":", 1)[1].split():
                if word.startswith("-"):
                    hint = _did_you_mean(word.split("=", 1)[0], flags)
                    if hint:
                        return hint
        return ""


def _did_you_mean(word: str, names: list[str]) -> str:
    close = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def add_prompt_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "prompt",
        nargs="*",
        metavar="PROMPT",
        help=f"the prompt; several words are one prompt, '-' reads stdin (default: piped stdin, else {SEED_PROMPT!r})",
    )
    run.add_argument("-p", "--prompt", dest="prompt_text", metavar="TEXT", default=None, help="the prompt, as a flag")
    run.add_argument(
        "-f", "--file", dest="prompt_file", metavar="FILE", default=None, help="read the prompt from FILE ('-': stdin)"
    )


def read_prompt(args: argparse.Namespace) -> str:
    """The prompt from the words, ``-p``, ``-f`` or stdin: exactly one of them, or none (then piped
    stdin, else the seed's prompt). An explicit source that is empty stays empty (the core refuses
    an empty prompt with its own message); only the implicit stdin falls back to the default."""
    words: list[str] = list(args.prompt or [])
    given = [
        name
        for name, present in (
            ("words", bool(words)),
            ("-p/--prompt", args.prompt_text is not None),
            ("-f/--file", args.prompt_file is not None),
        )
        if present
    ]
    if len(given) > 1:
        raise UsageError(f"the prompt is given twice ({' and '.join(given)}); give it one way")
    if args.prompt_text is not None:
        return str(args.prompt_text)
    if args.prompt_file is not None:
        return _stdin_text() if args.prompt_file == "-" else _file_text(args.prompt_file)
    if words == ["-"]:
        return _stdin_text()
    if words:
        return " ".join(words)
    if sys.stdin is not None and not _is_terminal(sys.stdin):
        piped = _stdin_text()
        if piped.strip():
            return piped
    return SEED_PROMPT


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (ValueError, OSError):  # closed
        return True


def _stdin_text() -> str:
    from .output import read_stdin  # one reading of stdin: closed, unreadable or not UTF-8 is one line

    return read_stdin()


def _file_text(name: str) -> str:
    return read_text_file(name, "prompt file")


def read_text_file(name: str, what: str) -> str:
    """The UTF-8 text of file ``name``; a missing, unreadable or non-UTF-8 file is one UsageError
    naming ``what`` it was for."""
    path = Path(name)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{what} {name}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{what} {name} is a folder; give a text file") from None
    except PermissionError:
        raise UsageError(f"{what} {name}: permission denied") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what} {name} is not UTF-8 text (byte {exc.start}); convert it to UTF-8") from None
    except OSError as exc:
        raise UsageError(f"{what} {name}: {exc.strerror or exc}") from None


def show_warnings_as_lines() -> None:
    """Print phi-backends' warnings as one ``phi-backends: warning: ...`` line each on stderr
    (Python's own format takes two lines and names a source file)."""
    original = warnings.showwarning

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if issubclass(category, PhiBackendsWarning):
            print(f"phi-backends: warning: {message}", file=sys.stderr)
        else:
            original(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    warnings.simplefilter("always", PhiBackendsWarning)
