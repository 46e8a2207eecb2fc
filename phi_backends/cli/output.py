"""The command's own input and output, checked: what the shell hands it can be wrong too.

Arguments and stdin may hold bytes that are not UTF-8, stdin or stdout may be closed (``<&-``,
``>&-``), stdout may be full (``/dev/full``) or a terminal whose encoding cannot show the text.
Each is one line naming the stream and what to do, never an "internal error": the wrong
invocation is a usage error (exit 2); a stream that fails while writing is a runtime error (1).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from ..errors import RuntimeFailure, UsageError

__all__ = ["check_arguments", "checked_stdout", "read_stdin", "silence_stdout"]

_FIX_ENCODING = "set PYTHONIOENCODING=utf-8 (or a UTF-8 locale such as LANG=C.UTF-8)"


def check_arguments(argv: Sequence[str]) -> None:
    """Refuse an argument that is not UTF-8. Python decodes such bytes to lone surrogates
    (surrogateescape), which every tokenizer later fails to encode."""
    for index, argument in enumerate(argv, start=1):
        bad = _first_surrogate(argument)
        if bad is not None:
            byte = ord(argument[bad]) - 0xDC00
            raise UsageError(
                f"argument {index} ({_shown(argument)}) is not UTF-8 text: byte 0x{byte:02x} at position {bad}; "
                "pass text encoded as UTF-8"
            )


def read_stdin() -> str:
    """All of stdin, decoded as UTF-8, for a prompt given as ``-``."""
    stream = sys.stdin
    if stream is None:
        raise UsageError(
            "stdin is closed, so the prompt '-' cannot be read; pipe the prompt in or pass it as an argument"
        )
    buffer = getattr(stream, "buffer", None)
    try:
        data = buffer.read() if buffer is not None else stream.read().encode("utf-8", "surrogateescape")
    except OSError as exc:  # EBADF: a descriptor closed under an open stream
        raise UsageError(f"cannot read the prompt from stdin: {exc.strerror or exc}; pipe the prompt in") from None
    try:
        return data.decode("utf-8")  # type: ignore[no-any-return]
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"stdin is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} ({exc.reason}); "
            "convert it to UTF-8 (e.g. iconv -t UTF-8) and pipe it again"
        ) from None


@contextlib.contextmanager
def checked_stdout() -> Iterator[None]:
    """Run a command with ``sys.stdout`` checked: a closed stdout fails before any work; a
    write that fails (a full disk, an encoding that cannot show the text) fails as one line.
    Everything written is flushed before the command counts as done."""
    stream = sys.stdout
    if stream is None:
        raise UsageError(
            "stdout is closed, so the output has nowhere to go; run the command with stdout open "
            "(redirect it to a file, or to /dev/null to discard it)"
        )
    checked = _CheckedStream(stream)
    sys.stdout = checked  # type: ignore[assignment]
    try:
        yield
        checked.flush()
    finally:
        sys.stdout = stream


def silence_stdout() -> None:
    """After stdout failed (a closed pipe, a full disk): send what is still buffered to
    /dev/null, so that Python's flush at exit does not print a second error."""
    stream = sys.stdout
    with contextlib.suppress(AttributeError, OSError, ValueError):
        fd = stream.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)


def stdout_can_encode(text: str) -> bool:
    """Whether stdout's encoding can show ``text`` (``--json`` escapes what it cannot)."""
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


class _CheckedStream:
    """``sys.stdout`` with its write errors turned into one-line errors."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except UnicodeEncodeError as exc:
            char = exc.object[exc.start]
            raise RuntimeFailure(
                f"stdout's encoding ({exc.encoding}) cannot show the text ({char!r}, U+{ord(char):04X}); "
                f"{_FIX_ENCODING}"
            ) from None
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise _write_failed(exc) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise _write_failed(exc) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _write_failed(exc: OSError) -> RuntimeFailure:
    silence_stdout()
    return RuntimeFailure(
        f"cannot write the output to stdout: {exc.strerror or exc}; free some space or write elsewhere"
    )


def _first_surrogate(text: str) -> int | None:
    return next((i for i, char in enumerate(text) if "\udc80" <= char <= "\udcff"), None)


def _shown(argument: str) -> str:
    shown = argument.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return repr(shown if len(shown) <= 40 else shown[:37] + "...")
