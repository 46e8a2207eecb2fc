"""What the shell and the machine hand the command that is not the user's text: undecodable
bytes, closed or full streams, a terminal that cannot show the text, config files nested past
Python's stack, memory the machine does not have. Each is one line with its exit code (the
table in docs/cli.md), never "internal error". No backend is needed: each fails before one."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from phi_backends import plugins
from phi_backends.diagnostics.memory import MEMORY_ENV, available_memory, check_fits
from phi_backends.errors import ConfigError, RuntimeFailure, UsageError
from phi_backends.generator import Generator
from phi_backends.sampling import SamplingConfig
from phi_backends.templates import get_template
from tests.bad_inputs import expect_api_error, expect_cli_error
from tests.cli import run_cli_io
from tests.test_empty_prompt import ByteEngine

NONE = tuple(plugins.KNOWN_BACKENDS)
DEEP = 5000  # levels: far past Python's default recursion limit of 1000


def cli(*args: str | bytes, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return run_cli_io(*args, block_plugins=NONE, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("what", "args", "needle"),
    [
        ("a prompt argument of bytes that are not UTF-8", [b"run", b"caf\xe9"], "argument 2 ('caf\\\\xe9')"),
        ("a --model argument of bytes that are not UTF-8", [b"run", b"-m", b"\xff\xfe.gguf"], "argument 3"),
        ("a --system argument of bytes that are not UTF-8", [b"run", b"--system", b"\x80"], "byte 0x80"),
    ],
)
def test_arguments_that_are_not_utf8(what: str, args: list[bytes], needle: str) -> None:
    expect_cli_error(cli(*args), 2, "is not UTF-8 text", needle, what=what)


def test_stdin_that_is_not_utf8() -> None:
    result = cli("run", "-", stdin=b"Write about caf\xe9s")
    expect_cli_error(result, 2, "stdin is not UTF-8 text: byte 0xe9 at offset 15", what="stdin (run -) in Latin-1")


def test_stdin_closed() -> None:
    result = cli("run", "-", close=[0])
    expect_cli_error(result, 2, "stdin is closed", what="run - with stdin closed (<&-)")


@pytest.mark.parametrize("command", [["models"], ["config"], ["run", "hi"]])
def test_stdout_closed(command: list[str]) -> None:
    result = cli(*command, close=[1])
    expect_cli_error(result, 2, "stdout is closed", what=f"{command[0]} with stdout closed (>&-)")


@pytest.mark.parametrize("command", [["models"], ["models", "--json"], ["config"], ["config", "--json"]])
def test_stdout_full(command: list[str]) -> None:
    result = cli(*command, stdout="/dev/full")
    what = f"{' '.join(command)} writing to a full device (>/dev/full)"
    expect_cli_error(result, 1, "cannot write the output to stdout: No space left on device", what=what)


def test_a_reader_that_leaves_early_is_not_an_error() -> None:
    """``phi-backends models | head -c1``: the pipe closes under the command; exit 0, stderr silent."""
    env = {**os.environ, "PHI_BACKENDS_BLOCK_PLUGINS": ",".join(NONE)}
    from tests.cli import CLI

    process = subprocess.Popen([CLI, "models"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.read(1)
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 0, stderr
    assert stderr == ""


@pytest.mark.parametrize("json", [False, True])
def test_an_encoding_that_cannot_show_the_text(json: bool) -> None:
    result = cli("config", "--stop", "café", *(["--json"] if json else []), env={"PYTHONIOENCODING": "ascii"})
    what = f"config{' --json' if json else ''} showing 'café' on a stdout encoded as ASCII"
    expect_cli_error(
        result, 1, "stdout's encoding (ascii) cannot show the text", "U+00E9", "PYTHONIOENCODING", what=what
    )


def deep_toml(path: Path, kind: str) -> Path:
    body = "[" * DEEP + "]" * DEEP if kind == "arrays" else "{a = " * DEEP + "1" + "}" * DEEP
    path.write_text(f"x = {body}\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("command", ["config", "run"])
@pytest.mark.parametrize("kind", ["arrays", "inline tables"])
def test_a_user_config_nested_thousands_deep(tmp_path: Path, command: str, kind: str) -> None:
    path = deep_toml(tmp_path / "config.toml", kind)
    result = cli(command, env={"PHI_BACKENDS_CONFIG": str(path)}, cwd=tmp_path)
    what = f"{command} with a user config file of {kind} nested {DEEP:,} deep"
    expect_cli_error(result, 2, f"cannot read config file {path}", "nested too deeply", what=what)


def test_a_project_config_nested_thousands_deep(tmp_path: Path) -> None:
    deep_toml(tmp_path / "phi-backends.toml", "arrays")
    result = cli("config", "--files", cwd=tmp_path, env={"PHI_BACKENDS_CONFIG": os.devnull})
    expect_cli_error(result, 2, "phi-backends.toml", "nested too deeply", what="a phi-backends.toml nested 5,000 deep")


def test_a_model_folder_the_user_may_not_read(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    (folder / "model.gguf").write_bytes(b"GGUF")
    folder.chmod(0)
    try:
        result = run_cli_io("run", "hi", "-m", str(folder), without_root_privileges=True, block_plugins=NONE)
        expect_cli_error(
            result,
            1,
            f"cannot read the model folder {folder}: Permission denied",
            what="--model naming a folder chmod 000",
        )
        result = run_cli_io(
            "run", "hi", "-m", str(folder / "model.gguf"), without_root_privileges=True, block_plugins=NONE
        )
        expect_cli_error(
            result, 1, "Permission denied", "permissions", what="--model naming a file in a folder chmod 000"
        )
    finally:
        folder.chmod(0o755)


# -- the library ---------------------------------------------------------------------------


class ScoringByteEngine(ByteEngine):
    """The byte engine with teacher forcing: uniform logits, and the ids it was asked to score."""

    def __init__(self) -> None:
        super().__init__(add_bos=True)
        self.scored: list[list[int]] = []

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        self.scored.append(list(ids))
        return np.zeros((len(ids), self.info.vocab_size), dtype=np.float32)


@pytest.fixture
def gen() -> Iterator[Generator]:
    with Generator(ScoringByteEngine(), backend="bytes", model="bytes", template=get_template("chatml")) as g:
        yield g


@pytest.mark.parametrize("template", [None, "chatml"], ids=["raw", "templated"])
def test_a_prompt_of_lone_surrogates_is_a_usage_error(gen: Generator, template: str | None) -> None:
    for prompt in ["caf\udce9", [{"role": "user", "content": "\ud83d"}]]:
        if template is None and not isinstance(prompt, str):
            continue
        with pytest.raises(UsageError) as raised:
            gen.generate(prompt, SamplingConfig(max_tokens=2), template=template)
        expect_api_error(
            raised.value,
            UsageError,
            "not valid Unicode text",
            "lone surrogate",
            what=f"a prompt {prompt!r} ({template or 'raw'})",
        )
    assert gen.generate("ok", SamplingConfig(max_tokens=2), template=None).text == "xx"


@pytest.mark.parametrize(
    ("what", "call", "needle"),
    [
        ("generate with a dict as config", lambda g: g.generate("hi", {"temperature": 1}), "config must be a SamplingConfig, got dict"),
        ("generate with a number as the prompt", lambda g: g.generate(123), "not int"),
        ("generate with None as the prompt", lambda g: g.generate(None), "not NoneType"),
        ("generate with bytes as the prompt", lambda g: g.generate(b"hi"), "not bytes"),
        ("generate with one message, not a list", lambda g: g.generate({"role": "user", "content": "hi"}), "single message"),
        ("generate with a message missing its content", lambda g: g.generate([{"role": "user"}]), "no 'content'"),
        ("generate with a message whose content is a list", lambda g: g.generate([{"role": "user", "content": ["a"]}]), "content of type list"),
        ("generate raw with a number as the prompt", lambda g: g.generate(5, template=None), "not int"),
        ("generate with a number as the template", lambda g: g.generate("hi", template=5), "template must be"),
        ("score with a str of ids", lambda g: g.score("abc"), "ids must be a sequence of token ids"),
        ("score with an id past the vocabulary", lambda g: g.score([65, 10**9]), "ids[1] is 1000000000, not a token id"),
        ("score with a negative id", lambda g: g.score([-1]), "ids[0] is -1"),
        ("score with a float id", lambda g: g.score([1.5]), "ids[0] is 1.5"),
    ],
)  # fmt: skip
def test_wrong_types_from_python_are_usage_errors(gen: Generator, what: str, call: object, needle: str) -> None:
    with pytest.raises(UsageError) as raised:
        call(gen)  # type: ignore[operator]
    expect_api_error(raised.value, UsageError, needle, what=what)
    engine = gen._engine
    assert isinstance(engine, ScoringByteEngine) and engine.asked == [] and engine.scored == []
    assert gen.score(np.array([65, 66])).shape == (2, 257), "NumPy ids still score"


@pytest.mark.parametrize(
    ("what", "kwargs", "needle"),
    [
        ("load with a number as the template", {"template": 5}, "argument template"),
        ("load with a str as progress", {"progress": "no"}, "argument progress"),
    ],
)
def test_load_with_arguments_of_the_wrong_type(what: str, kwargs: dict[str, object], needle: str) -> None:
    import phi_backends as pb

    with pytest.raises(UsageError) as raised:
        pb.load("smollm2", **kwargs)  # type: ignore[arg-type]
    expect_api_error(raised.value, UsageError, needle, what=what)


@pytest.mark.parametrize(
    ("what", "model"), [("load with a number as the model", 123), ("load with a list as the model", ["a"])]
)
def test_load_with_a_model_that_is_not_a_name(what: str, model: object) -> None:
    import phi_backends as pb

    with pytest.raises(ConfigError) as raised:
        pb.load(model)  # type: ignore[arg-type]
    expect_api_error(raised.value, ConfigError, "argument model", what=what)


def test_the_memory_check_says_both_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    real = available_memory()
    assert real is not None and real > 2**20, "this platform reports its memory"
    check_fits(2**20, what="a megabyte", hint="-")  # fits
    with pytest.raises(RuntimeFailure):
        check_fits(real * 4, what="four times this machine", hint="ask for less")
    monkeypatch.setenv(MEMORY_ENV, "8G")  # the message's figures, the same on every machine
    with pytest.raises(RuntimeFailure) as raised:
        check_fits(32 * 2**30, what="a 32 GiB cache", hint="ask for less")
    expect_api_error(
        raised.value, RuntimeFailure, "a 32 GiB cache needs about 32.0 GiB of memory", "has 8.0 GiB available",
        "ask for less", what="a cache of 32 GiB with 8 GiB available",
    )  # fmt: skip
    with pytest.raises(RuntimeFailure, match=r"this machine has 8\.0 GiB available"):
        check_fits(int(7.5 * 2**30), what="7.5 GiB", hint="-")  # past the 90% an allocation may take
    monkeypatch.setenv(MEMORY_ENV, "0")
    check_fits(real * 4, what="anything", hint="-")  # the check is off
