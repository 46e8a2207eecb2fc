"""The ``phi-backends`` command. Engines are imported only by commands that need them."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from ..errors import PhiBackendsError, UsageError
from ..models.catalogue import DEFAULT_MODEL
from . import args as cli_args
from . import bench as cli_bench
from . import chat as cli_chat
from . import config as cli_config
from . import constraint as cli_constraint
from . import models as cli_models
from . import output
from . import parity as cli_parity
from . import serve as cli_serve
from .args import SEED_PROMPT, Parser

__all__ = ["SEED_PROMPT", "build_parser", "main"]

EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="phi-backends", description="Run Phi models locally on llama.cpp, MLX or ONNX Runtime GenAI.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    run = commands.add_parser(
        "run", help="generate text from a prompt", description="Generate text from a prompt, streamed to stdout."
    )
    cli_args.add_prompt_arguments(run)
    run.add_argument("--system", default=None, help="a system message")
    run.add_argument("--raw", action="store_true", help="send the prompt as is, without a chat template")
    run.add_argument(
        "--special-tokens-in-content",
        action="store_true",
        help="let the prompt and --system hold control tokens such as <|end|> (by default they are "
        "text, so a message cannot forge a turn: docs/security.md)",
    )
    cli_config.add_flags(run)  # the same flags as `config`'s, read into the configuration the same way
    cli_constraint.add_constraint_arguments(run)
    out = run.add_argument_group("output")
    out.add_argument(
        "--verbose", action="store_true", help="show the engine's own log on stderr (same as -O verbose=true)"
    )
    out.add_argument("--stats", action="store_true", help="print usage and timings to stderr")
    out.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object with the text, finish reason, usage, timings and backend",
    )

    backends = commands.add_parser(
        "backends",
        help="list installed backends and whether each can run here; --explain MODEL: which one would be chosen",
        description="List the backends; with --explain, rank them for a model and say which one would be chosen, "
        "and why (docs/choice.md).",
    )
    backends.add_argument("--json", action="store_true", help="print the list, or the explanation, as JSON")
    backends.add_argument(
        "--explain",
        nargs="?",
        const="",
        default=None,
        metavar="MODEL",
        help=f"rank every backend for MODEL on the platform (default model: the config's, else {DEFAULT_MODEL})",
    )
    backends.add_argument(
        "--platform",
        default=None,
        metavar="SPEC",
        help="explain for another machine: a preset (apple-silicon, windows-directml, linux-cuda, linux-cpu, ...) "
        "or items such as os=darwin,arch=arm64,metal,llama-cpp=cpu+metal (default: the config's platform or "
        "$PHI_BACKENDS_PLATFORM, else this machine)",
    )
    backends.add_argument(
        "--prefer",
        default=None,
        metavar="NAMES",
        help="backend preference order for ties in fit, comma-separated, e.g. onnx,llama-cpp (default: the config's)",
    )
    cli_config.add_parser(commands)
    cli_models.add_parsers(commands)  # pull, models, rm
    cli_bench.add_parser(commands)
    cli_parity.add_parity_parser(commands)
    cli_chat.add_parser(commands)
    cli_serve.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        output.check_arguments(sys.argv[1:] if argv is None else argv)
        with output.checked_stdout():
            parser = build_parser()
            args = parser.parse_args(argv)
            return _command(parser, args)
    except PhiBackendsError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader left (`| head`): not an error
        output.silence_stdout()
        return 0
    except OSError as exc:  # the machine's answer about a file (permissions, a failing disk): not our bug
        _fail(_os_error(exc), 1)
    except Exception as exc:
        if os.environ.get("PHI_BACKENDS_DEBUG"):
            raise
        _fail(
            f"internal error: {type(exc).__name__}: {exc} (set PHI_BACKENDS_DEBUG=1 for the traceback and please report it)",
            1,
        )
    return 0


def _command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "run":
        return _run(args)
    if args.command == "backends":
        return _backends(args)
    if args.command in cli_models.COMMANDS:
        return cli_models.command(args)
    if args.command == cli_bench.COMMAND:
        return cli_bench.command(args)
    if args.command == "config":
        return cli_config.command(args)
    if args.command == cli_serve.COMMAND:
        return cli_serve.command(args)
    if args.command == cli_chat.COMMAND:
        return cli_chat.command(args)
    if args.command == "parity":
        return cli_parity.parity_command(args)
    parser.print_help()
    return 2


def _os_error(exc: OSError) -> str:
    what = f"cannot read {exc.filename}" if exc.filename else "a file operation failed"
    fix = (
        "check its permissions (ls -l) or run as a user who may read it"
        if isinstance(exc, PermissionError)
        else ("check the file and the disk")
    )
    return f"{what}: {exc.strerror or exc}; {fix}"


def _fail(message: str, code: int) -> NoReturn:
    print(f"phi-backends: error: {message}", file=sys.stderr)
    raise SystemExit(code)


# -- run -----------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    cli_args.show_warnings_as_lines()
    flags, options = cli_config.flags(args)
    if args.verbose:  # an explicit -O verbose= wins, as over the config
        options = {"verbose": ("--verbose", True), **options}
    prompt = cli_args.read_prompt(args)
    if args.raw and args.system:
        raise UsageError("--system needs a chat template; drop --raw or put the system text in the prompt")
    if args.raw and args.template:
        raise UsageError("--raw and --template exclude each other")
    if args.raw and args.special_tokens_in_content:
        raise UsageError(
            "--special-tokens-in-content is for templated prompts; a --raw prompt's control tokens are always read"
        )
    if (args.logprobs or args.top_logprobs) and not args.json:
        raise UsageError("log-probabilities are printed only in the --json output; add --json")
    messages: Any = prompt if args.raw else _messages(prompt, args.system)
    constraint = cli_constraint.read_constraint(args)  # a wrong schema or pattern is refused before loading
    tools, tool_choice = cli_constraint.read_tools(args)

    from ..api import load_with_flags  # imports plugins (and, on load, an engine) only now

    template = None if args.raw else "auto"  # "auto": the configuration's, which --template sets
    with load_with_flags(flags, options, template=template) as gen:
        gen.special_tokens_in_content = args.special_tokens_in_content
        # The configuration's sampling: its [sampling] under the flags, field by field.
        stream = gen.stream(
            messages, gen.sampling, template=template, constraint=constraint, tools=tools, tool_choice=tool_choice
        )
        previous = signal.signal(signal.SIGINT, lambda *_: _second_interrupt(stream, previous))
        try:
            written = ""  # the last text written: a tool call goes on a line of its own
            for chunk in stream:
                if args.json:
                    continue
                if chunk.text:
                    written = chunk.text
                    sys.stdout.write(chunk.text)
                for call in chunk.tool_calls or ():
                    line = f"tool call: {call.name}({call.arguments})"
                    sys.stdout.write(line if not written or written.endswith("\n") else "\n" + line)
                    written = line
                sys.stdout.flush()
        finally:
            signal.signal(signal.SIGINT, previous)
        result = stream.completion
        assert result is not None
        if args.json:
            text = json.dumps(_completion_json(result), ensure_ascii=False)
            print(text if output.stdout_can_encode(text) else json.dumps(_completion_json(result)))
        else:
            sys.stdout.write("\n")
        if args.stats:
            _print_stats(result)
    return EXIT_INTERRUPTED if result.finish_reason == "cancelled" else 0


def _second_interrupt(stream: Any, previous: Any) -> None:
    """First Ctrl-C: end the stream cleanly after the current token. Second: interrupt at once."""
    if stream.cancelled:
        raise KeyboardInterrupt
    stream.cancel()


def _messages(prompt: str, system: str | None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}] if system else []
    return [*messages, {"role": "user", "content": prompt}]


def _completion_json(result: Any) -> dict[str, Any]:
    return {
        "text": result.text,
        "finish_reason": result.finish_reason,
        "usage": {**dataclasses.asdict(result.usage), "total_tokens": result.usage.total_tokens},
        "timings": dataclasses.asdict(result.timings),
        "backend": result.backend,
        "model": result.model,
        "seed": result.seed,
        **({"value": _jsonable(result.value)} if result.value is not None else {}),
        **({"tool_calls": [call.openai() for call in result.tool_calls]} if result.tool_calls else {}),
        **({"logprobs": [_logprob_json(entry) for entry in result.logprobs]} if result.logprobs is not None else {}),
    }


def _jsonable(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)  # a pydantic instance (from the library; the CLI gives schemas)
    return dump(mode="json") if callable(dump) else value


def _logprob_json(entry: Any) -> dict[str, Any]:
    """One token's log-probability, in the shape of OpenAI's ``logprobs.content`` items (ids, not text)."""
    return {
        "token_id": entry.token,
        "logprob": entry.logprob,
        "top_logprobs": [{"token_id": token, "logprob": logprob} for token, logprob in entry.top],
    }


def _print_stats(result: Any) -> None:
    t, u = result.timings, result.usage
    print(
        f"[{result.backend}] {u.prompt_tokens} prompt + {u.completion_tokens} generated tokens, "
        f"finish: {result.finish_reason}; first token after {t.time_to_first_token:.3f} s; "
        f"prompt {t.prompt_tokens_per_second:.1f} tok/s, decode {t.decode_tokens_per_second:.1f} tok/s; "
        f"total {t.total:.2f} s; seed {result.seed}",
        file=sys.stderr,
    )


# -- backends and models ---------------------------------------------------------------------


def _backends(args: argparse.Namespace) -> int:
    from .. import plugins

    if args.explain is not None:
        return _explain(args)
    if args.platform is not None or args.prefer is not None:
        raise UsageError("--platform and --prefer go with --explain MODEL; add --explain")

    rows: list[dict[str, Any]] = []
    for name, backend in plugins.backends().items():
        availability = backend.availability()
        rows.append(
            {
                "name": name,
                "installed": True,
                "available": availability.ok,
                "devices": list(availability.devices),
                "formats": list(backend.formats),
                "reason": availability.reason,
            }
        )
    for name in plugins.KNOWN_BACKENDS:
        if not any(r["name"] == name for r in rows):
            blocked = name in plugins.blocked_plugins()
            reason = f"blocked by {plugins.BLOCK_ENV}" if blocked else f"not installed: {plugins.install_command(name)}"
            if name in plugins.broken:
                reason = f"installed but failed to load: {plugins.broken[name]}"
            rows.append(
                {"name": name, "installed": False, "available": False, "devices": [], "formats": [], "reason": reason}
            )
    for name, reason in plugins.broken.items():
        if not any(r["name"] == name for r in rows):
            rows.append(
                {
                    "name": name,
                    "installed": True,
                    "available": False,
                    "devices": [],
                    "formats": [],
                    "reason": f"failed to load: {reason}",
                }
            )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        state = "available" if r["available"] else ("unavailable" if r["installed"] else "missing")
        devices = f" [{', '.join(r['devices'])}]" if r["devices"] else ""
        print(f"{r['name']:<10} {state:<12}{devices} {r['reason']}")
    return 0


def _explain(args: argparse.Namespace) -> int:
    """Exit 0 when a backend would be chosen, 1 when none can run the model here."""
    from ..api import explain_with_flags

    preference = [name for name in (args.prefer or "").split(",") if name.strip()] if args.prefer else None
    flags = {"model": ("--explain", args.explain or None), "platform": ("--platform", args.platform)}
    explanation = explain_with_flags({**flags, "backends": ("--prefer", preference)})
    if args.json:
        print(json.dumps(explanation.as_dict(), indent=2))
    else:
        print("\n".join(explanation.lines()))
    return 0 if explanation.chosen else 1


def _version() -> str:
    from .. import __version__

    return __version__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
