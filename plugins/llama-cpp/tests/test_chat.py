"""``phi-backends chat`` as a person uses it: driven through a pseudo-terminal (pexpect) on llama.cpp
with the tiny Phi-3, and with stdin piped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from phi_backends.testing import SCRIPT_TEXT
from tests.bad_inputs import expect_cli_error
from tests.cli import CLI, run_cli


def _chat(tiny_phi3: Path, *flags: str) -> pexpect.spawn:
    args = ["chat", "--model", str(tiny_phi3), "-O", "n_threads=2", *flags]
    child = pexpect.spawn(CLI, args, encoding="utf-8", timeout=120, env={**os.environ, "TERM": "dumb"})
    child.logfile_read = sys.stdout  # shown when a test fails
    child.expect("/help for commands")
    child.expect_exact(">>> ")
    return child


@pytest.fixture
def greedy(tiny_phi3: Path) -> Iterator[pexpect.spawn]:
    child = _chat(tiny_phi3, "--temp", "0")
    yield child
    child.close(force=True)


def _say(child: pexpect.spawn, line: str) -> str:
    """Send ``line``; what the session wrote until the next prompt."""
    child.sendline(line)
    child.expect_exact(">>> ")
    return str(child.before)


def test_turns_keep_their_history_and_reuse_the_previous_turn(greedy: pexpect.spawn, tmp_path: Path) -> None:
    assert SCRIPT_TEXT in _say(greedy, "Write a haiku about ice hockey")
    assert SCRIPT_TEXT in _say(greedy, "And another one")
    stats = _say(greedy, "/stats")
    reused = int(stats.split("(")[1].split(" reused")[0])
    assert reused > 0 and "finish: stop" in stats  # the second turn continued from the first's cache
    saved = tmp_path / "conversation.json"
    assert "saved 4 messages" in _say(greedy, f"/save {saved}")
    messages = json.loads(saved.read_text())
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[1]["content"] == SCRIPT_TEXT and messages[2]["content"] == "And another one"
    assert "a new conversation" in _say(greedy, "/reset")
    assert "saved 0 messages" in _say(greedy, f"/save {tmp_path / 'empty.json'}")
    assert "loaded 4 messages" in _say(greedy, f"/load {saved}")
    assert "saved 4 messages" in _say(greedy, f"/save {tmp_path / 'again.json'}")
    assert json.loads((tmp_path / "again.json").read_text()) == messages
    greedy.sendeof()
    greedy.expect(pexpect.EOF)
    greedy.close()
    assert greedy.exitstatus == 0


def test_multi_line_input_system_help_and_unknown_commands(greedy: pexpect.spawn, tmp_path: Path) -> None:
    greedy.sendline('"""First line')
    greedy.expect_exact("... ")
    greedy.sendline("second line")
    greedy.expect_exact("... ")
    assert SCRIPT_TEXT in _say(greedy, 'third line"""')
    greedy.sendline("joined \\")
    greedy.expect_exact("... ")
    assert SCRIPT_TEXT in _say(greedy, "by a backslash")
    assert "with this system message" in _say(greedy, "/system Answer in French.")
    assert "system: Answer in French." in _say(greedy, "/system")
    assert SCRIPT_TEXT in _say(greedy, "Hi")
    _say(greedy, f"/save {tmp_path / 'c.json'}")
    messages = json.loads((tmp_path / "c.json").read_text())
    assert (
        messages[0] == {"role": "system", "content": "Answer in French."} and len(messages) == 3
    )  # /system started over
    assert "/stats" in _say(greedy, "/help")
    assert "unknown command /nope; /help lists them" in _say(greedy, "/nope")
    bad = tmp_path / "bad.json"
    bad.write_text('{"role": "user"}')
    assert "is not a conversation" in _say(greedy, f"/load {bad}")
    assert "cannot read" in _say(greedy, f"/load {tmp_path / 'missing.json'}")
    long = tmp_path / "long.json"
    long.write_text(json.dumps([{"role": "user", "content": "x " * 5000}, {"role": "assistant", "content": "ok"}]))
    _say(greedy, f"/load {long}")
    said = _say(greedy, "Hi")  # past the context: one line, and the session goes on as it was
    assert "error: the prompt is" in said and "/reset starts a new conversation" in said
    _say(greedy, "/reset")
    assert SCRIPT_TEXT in _say(greedy, "Hi")
    greedy.sendline("/bye")
    greedy.expect(pexpect.EOF)


def test_ctrl_c_stops_the_answer_not_the_session(tiny_phi3: Path, tmp_path: Path) -> None:
    child = _chat(tiny_phi3, "--temp", "1", "--seed", "1", "-n", "4000")
    try:
        child.sendline("Write a long story")
        child.expect(r"\S{20}")  # the answer has begun
        child.sendintr()
        child.expect_exact("[stopped]")
        child.expect_exact(">>> ")
        assert "finish: cancelled" in _say(child, "/stats")
        _say(child, f"/save {tmp_path / 'c.json'}")
        answer = json.loads((tmp_path / "c.json").read_text())[1]["content"]
        assert len(answer) >= 20  # what it wrote stays in the conversation
        child.sendintr()  # at the prompt: a fresh line
        child.expect_exact("Ctrl-D or /bye to leave")
        child.expect_exact(">>> ")
        assert "finish: " in _say(child, "/stats")  # the session goes on
        child.sendeof()
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
    finally:
        child.close(force=True)


def test_piped_stdin_is_one_message_and_its_answer(tiny_phi3: Path) -> None:
    result = subprocess.run(
        [CLI, "chat", "--model", str(tiny_phi3), "-O", "n_threads=2", "--temp", "0"],
        input="Write a haiku\nabout ice hockey\n", capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert (result.returncode, result.stdout, result.stderr) == (0, SCRIPT_TEXT + "\n", "")


@pytest.mark.parametrize(
    ("what", "args", "stdin", "needles"),
    [
        ("chat with piped stdin that is empty", [], "", ["stdin is empty"]),
        ("chat --system with no text", ["--system", " "], "Hi", ["--system needs some text"]),
        ("chat with a model file that does not exist", ["--model", "./missing.gguf"], "Hi", ["no such file"]),
    ],
)
def test_bad_input_is_one_line_exit_2(
    tiny_phi3: Path, what: str, args: list[str], stdin: str, needles: list[str]
) -> None:
    model = [] if "--model" in args else ["--model", str(tiny_phi3)]
    expect_cli_error(run_cli("chat", *model, *args, stdin=stdin), 2, *needles, what=what)
