"""The one check for "bad input gives one clear line", shared by every test that feeds bad input.

Each check asserts the outcome (one line, no traceback, the exit code, the words that must be in
it) and, when ``$PHI_BACKENDS_BAD_INPUTS`` names a file, appends what it saw there as one JSON
line. The nox test sessions set it; ``scripts/bad_inputs.py`` turns the records of every session
into ``docs/bad-inputs.md``, so that table lists exactly what the tests check, with the messages
users really get.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Literal

from phi_backends.errors import PhiBackendsError

__all__ = ["RECORD_ENV", "Surface", "expect_api_error", "expect_cli_error", "normalize"]

RECORD_ENV = "PHI_BACKENDS_BAD_INPUTS"
Surface = Literal["cli", "api", "config"]
#: How every CLI error line starts; argparse's own errors name the sub-command (``phi-backends run: error: ``).
PREFIX = re.compile(r"^phi-backends(?: [\w-]+)?: error: ")
_REPO = str(Path(__file__).resolve().parent.parent)
# the temporary folder as named and as resolved (macOS: /var/folders/... is /private/var/folders/...)
_TMPS = sorted({tempfile.gettempdir(), os.path.realpath(tempfile.gettempdir())})
_TMP = "(?:" + "|".join(re.escape(p) for p in _TMPS) + ")"
_END = r"[^/\s'\";:,()]+"  # one path component, up to the punctuation a message puts after a path


def expect_cli_error(
    result: subprocess.CompletedProcess[str], code: int, *needles: str, what: str, surface: Surface = "cli"
) -> str:
    """``result`` (a ``phi-backends`` process) failed with ``code`` and one line holding every needle."""
    assert result.returncode == code, f"exit {result.returncode}, wanted {code}: {result.stderr!r}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {result.stderr!r}"
    assert "Traceback" not in result.stderr
    line = lines[0]
    assert PREFIX.match(line), f"not a phi-backends error line: {line!r}"
    for needle in needles:
        assert needle in line, (needle, line)
    _record(surface, what, code, PREFIX.sub("", line))
    return line


def expect_api_error(
    error: BaseException, kind: type[PhiBackendsError], *needles: str, what: str, surface: Surface = "api"
) -> str:
    """``error`` (raised by the library) is a one-line ``kind`` holding every needle."""
    assert isinstance(error, kind), f"{type(error).__name__}: {error}"
    message = str(error)
    assert "\n" not in message.strip(), f"expected one line, got: {message!r}"
    for needle in needles:
        assert needle in message, (needle, message)
    _record(surface, what, error.exit_code, message, kind=type(error).__name__)
    return message


def normalize(message: str) -> str:
    """Drop what differs between runs and machines: temporary folders, the test-model cache, the
    checkout's and the environment's location, the home folder, ports, addresses."""
    text = message
    fixtures = os.environ.get("PHI_BACKENDS_FIXTURES")
    if fixtures:
        text = text.replace(str(Path(fixtures).resolve()), "<fixtures>").replace(fixtures, "<fixtures>")
    text = re.sub(r"[^\s'\"(]*/site-packages/", "<site-packages>/", text)
    text = text.replace(_REPO + "/.fixtures", "<fixtures>").replace(_REPO, "<repo>")
    # a cached test model's folder is named for the hash of what built it: keep only its name
    text = re.sub(r"<fixtures>/(?:([\w.-]+)-)?[0-9a-f]{16}\b", lambda m: f"<fixtures>/{m.group(1) or 'model'}", text)
    text = re.sub(_TMP + r"/pytest-of-[^/\s]+/pytest-\d+/(?:popen-gw\d+/)?" + _END, "<tmp>", text)
    text = re.sub(_TMP + r"/tmp[a-z0-9_]{8}\b", "<tmp>", text)  # tempfile.mkdtemp()
    home = str(Path.home())
    if len(home) > 1:
        text = re.sub(re.escape(home) + r"(?=/|\b)", "~", text)
    text = re.sub(r"(127\.0\.0\.1|localhost|\[::1\]):\d+", r"\1:<port>", text)
    text = re.sub(r"\bport=\d+", "port=<port>", text)
    text = re.sub(r"0x[0-9a-f]{6,}", "0x…", text)
    return text


def _record(surface: Surface, what: str, code: int, message: str, kind: str = "") -> None:
    path = os.environ.get(RECORD_ENV)
    if not path:
        return
    test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]
    row = {"surface": surface, "what": what, "code": code, "message": normalize(message), "kind": kind, "test": test}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
