"""``phi-backends chat``: a conversation with a model in the terminal (docs/chat.md).

Each turn sends the whole conversation; the Generator continues from the previous turn's KV cache
(``reuse_prefix``), so a turn costs its new tokens, not the history. Line editing and history are
the standard library's ``readline`` where the platform has it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ContextLengthError, PhiBackendsError, UsageError
from . import config as cli_config
from . import output

if TYPE_CHECKING:
    from ..generator import Completion, Generator, Stream

__all__ = ["COMMAND", "add_parser", "command"]

COMMAND = "chat"
PROMPT = ">>> "
MORE = "... "
BLOCK = '"""'
HELP = f"""commands:
  /system TEXT   start over with TEXT as the system message (/system alone shows it, /system - drops it)
  /reset         forget the conversation (the system message stays)
  /save FILE     write the conversation to FILE (JSON: OpenAI's list of messages)
  /load FILE     go on with a conversation /save wrote
  /stats         the last answer's tokens, the tokens reused from earlier turns, and its speed
  /help          this list
  /bye           leave (as Ctrl-D)
input: a line ending in \\ goes on with the next line; {BLOCK} opens and closes a block of lines.
Ctrl-C stops the answer being written (what it wrote stays in the conversation); at the prompt it
clears the line."""


def add_parser(commands: Any) -> None:
    chat = commands.add_parser(
        COMMAND,
        help="chat with a model in the terminal",
        description="Chat with a model in the terminal: history, streaming, /help for commands. With stdin "
        "piped (not a terminal), stdin is one message and the answer is printed. See docs/chat.md.",
    )
    cli_config.add_flags(chat)
    chat.add_argument("--system", default=None, metavar="TEXT", help="the system message to start with")


def command(args: argparse.Namespace) -> int:
    flags, options = cli_config.flags(args)
    if args.system is not None and not args.system.strip():
        raise UsageError("--system needs some text; leave it out for no system message")
    interactive = sys.stdin.isatty()
    message = None if interactive else output.read_stdin()  # piped: one message, read before loading
    if message is not None and not message.strip():
        raise UsageError("stdin is empty: pipe the message to send, or run chat in a terminal")
    from ..api import load_with_flags  # imports the plugins (and, on load, an engine) only now

    with load_with_flags(flags, options) as gen:
        chat = Chat(gen, args.system)
        gen.prompt_ids(chat.messages("Hi"))  # a model with no usable chat template fails here, before the prompt
        if message is not None:  # an error here is the command's: one line and its exit code
            result = chat.send(message)
            return 0 if result is not None and result.finish_reason != "cancelled" else 130
        return chat.loop()


class Chat:
    """One conversation: the system message, the turns so far, the last answer's figures."""

    def __init__(self, gen: Generator, system: str | None) -> None:
        self.gen = gen
        self.system = system
        self.history: list[dict[str, str]] = []
        self.last: Completion | None = None
        self._midline = False  # the answer being written has no newline yet

    def messages(self, user: str | None = None) -> list[dict[str, str]]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        tail = [{"role": "user", "content": user}] if user is not None else []
        return [*head, *self.history, *tail]

    # -- a turn -----------------------------------------------------------------------------

    def turn(self, text: str) -> Completion | None:
        """:meth:`send`, with what goes wrong said in one line and the session going on (the
        conversation is as it was before)."""
        try:
            return self.send(text)
        except PhiBackendsError as exc:
            sys.stdout.write("\n" if self._midline else "")
            hint = " (/reset starts a new conversation)" if isinstance(exc, ContextLengthError) and self.history else ""
            print(f"error: {exc}{hint}", file=sys.stderr)
            return None

    def send(self, text: str) -> Completion | None:
        """Send ``text`` and stream the answer to stdout; the answer (kept in the conversation,
        also when Ctrl-C stopped it), or None when a second Ctrl-C ended it at once."""
        self._midline = False
        result = self._show(self.gen.stream(self.messages(text)))
        if result is None:
            return None
        self.history += [{"role": "user", "content": text}, {"role": "assistant", "content": result.text}]
        self.last = result
        return result

    def _show(self, stream: Stream) -> Completion | None:
        """Write the stream's text as it comes. Ctrl-C: end it after the current token (a second
        Ctrl-C ends it at once)."""

        def interrupt(*_: Any) -> None:
            if stream.cancelled:
                raise KeyboardInterrupt
            stream.cancel()

        previous = signal.signal(signal.SIGINT, interrupt)
        try:
            for chunk in stream:
                if chunk.text:
                    sys.stdout.write(chunk.text)
                    sys.stdout.flush()
                    self._midline = True
        except KeyboardInterrupt:
            stream.close()
        finally:
            signal.signal(signal.SIGINT, previous)
        result = stream.completion
        sys.stdout.write("\n")
        if result is None or result.finish_reason == "cancelled":
            print("[stopped]", file=sys.stderr)
        if result is None:  # closed at once: nothing to keep
            return None
        return result

    # -- the terminal -------------------------------------------------------------------------

    def loop(self) -> int:
        with contextlib.suppress(ImportError):  # Windows has none: plain input()
            import readline  # noqa: F401  (line editing and history for input())
        print(f"{self.gen.model} on {self.gen.backend}; /help for commands, Ctrl-D or /bye to leave", file=sys.stderr)
        while True:
            try:
                text = self._read()
            except EOFError:
                print(file=sys.stderr)
                return 0
            except KeyboardInterrupt:  # at the prompt: a fresh line, as a shell does
                print("\n(Ctrl-D or /bye to leave)", file=sys.stderr)
                continue
            if text is None:
                continue
            if text.startswith("/"):
                if self._command(text) == "bye":
                    return 0
                continue
            self.turn(text)

    def _read(self) -> str | None:
        """One message from the terminal: a line, lines joined by a trailing backslash, or a
        block between two triple quotes; None for a blank line."""
        line = input(PROMPT)
        if line.lstrip().startswith(BLOCK):
            body = line.lstrip()[len(BLOCK) :]
            lines = []
            while not body.rstrip().endswith(BLOCK):
                lines.append(body)
                body = input(MORE)
            lines.append(body.rstrip()[: -len(BLOCK)])
            text = "\n".join(lines).strip("\n")
            return text or None
        lines = []
        while line.endswith("\\"):
            lines.append(line[:-1])
            line = input(MORE)
        lines.append(line)
        text = "\n".join(lines)
        return text if text.strip() else None

    def _command(self, text: str) -> str | None:
        name, _, rest = text.partition(" ")
        rest = rest.strip()
        if name in ("/bye", "/exit", "/quit"):
            return "bye"
        if name == "/help":
            print(HELP, file=sys.stderr)
        elif name == "/reset":
            self.history = []
            print("(a new conversation)", file=sys.stderr)
        elif name == "/system":
            self._set_system(rest)
        elif name == "/stats":
            self._stats()
        elif name == "/save":
            self._save(rest)
        elif name == "/load":
            self._load(rest)
        else:
            print(f"unknown command {name}; /help lists them", file=sys.stderr)
        return None

    def _set_system(self, rest: str) -> None:
        if not rest:
            print(f"system: {self.system}" if self.system else "(no system message)", file=sys.stderr)
            return
        self.system = None if rest == "-" else rest
        self.history = []
        print(
            "(a new conversation with this system message)" if self.system else "(no system message)", file=sys.stderr
        )

    def _stats(self) -> None:
        result = self.last
        if result is None:
            print("(no answer yet)", file=sys.stderr)
            return
        u, t = result.usage, result.timings
        print(
            f"prompt {u.prompt_tokens} tokens ({u.cached_tokens} reused from earlier turns, "
            f"{u.prompt_tokens - u.cached_tokens} computed); answer {u.completion_tokens} tokens, "
            f"finish: {result.finish_reason}; first token after {t.time_to_first_token:.3f} s; "
            f"decode {t.decode_tokens_per_second:.1f} tok/s",
            file=sys.stderr,
        )

    def _save(self, name: str) -> None:
        if not name:
            print("/save needs a file name: /save FILE", file=sys.stderr)
            return
        try:
            Path(name).write_text(json.dumps(self.messages(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            print(f"error: cannot write {name}: {exc.strerror or exc}", file=sys.stderr)
            return
        print(f"(saved {len(self.messages())} messages to {name})", file=sys.stderr)

    def _load(self, name: str) -> None:
        if not name:
            print("/load needs a file name: /load FILE", file=sys.stderr)
            return
        try:
            messages = json.loads(Path(name).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            print(f"error: cannot read {name} as a conversation ({why}); /save writes one", file=sys.stderr)
            return
        if not _is_conversation(messages):
            print(f"error: {name} is not a conversation: a JSON list of {{role, content}} messages", file=sys.stderr)
            return
        system = [m["content"] for m in messages if m["role"] == "system"]
        self.system = system[0] if system else None
        self.history = [{"role": m["role"], "content": m["content"]} for m in messages if m["role"] != "system"]
        print(f"(loaded {len(messages)} messages from {name})", file=sys.stderr)


def _is_conversation(value: Any) -> bool:
    """A list of ``{role, content}`` messages: at most one system message, first; then user and
    assistant turns."""
    if not isinstance(value, list):
        return False
    for index, message in enumerate(value):
        if not (isinstance(message, dict) and isinstance(message.get("content"), str)):
            return False
        role = message.get("role")
        if role not in ("system", "user", "assistant") or (role == "system" and index != 0):
            return False
    return True
