"""``phi-backends serve``: one or more models over the OpenAI HTTP API (docs/serving.md)."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BackendUnavailableError, PhiBackendsError, UsageError
from ..server.limits import MAX_BODY_BYTES, MAX_CHOICES, MAX_MESSAGES, MAX_QUEUE, REQUEST_TIMEOUT_S, Limits
from . import config as cli_config

if TYPE_CHECKING:
    from ..generator import Generator

__all__ = ["COMMAND", "add_parser", "command"]

COMMAND = "serve"
#: API keys from the environment, separated by commas (a flag's keys are added to them).
KEYS_ENV = "PHI_BACKENDS_API_KEYS"
#: A model's name in requests, when ``--model`` gives one (``NAME=MODEL``).
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def add_parser(commands: Any) -> None:
    serve = commands.add_parser(
        COMMAND,
        help="serve models over the OpenAI HTTP API",
        description="Serve one or more models over the OpenAI HTTP API (/v1/chat/completions, /v1/completions, "
        "/v1/models, /health, /metrics; OpenAPI docs at /docs). Binds 127.0.0.1 unless told otherwise. "
        "See docs/serving.md.",
    )
    cli_config.add_flags(serve, several_models=True)
    net = serve.add_argument_group("server")
    net.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    net.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    net.add_argument(
        "--name", default=None, help="the model's name in requests, for one model (default: --model as given)"
    )
    net.add_argument(
        "--api-key",
        action="append",
        default=[],
        metavar="KEY",
        help=f"a key clients must send as 'Authorization: Bearer KEY' (repeatable; also {KEYS_ENV}, comma-separated)",
    )
    net.add_argument(
        "--api-key-file", type=Path, default=None, metavar="FILE", help="keys, one per line ('#' starts a comment)"
    )
    net.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a browser origin allowed to call, e.g. http://localhost:3000, or * for any (repeatable; default: none)",
    )
    limits = serve.add_argument_group("limits")
    limits.add_argument(
        "--max-queue",
        type=int,
        default=MAX_QUEUE,
        help=f"requests a model takes at once, running or waiting; one more gets 503 and Retry-After (default: {MAX_QUEUE})",
    )
    limits.add_argument(
        "--max-body",
        type=int,
        default=MAX_BODY_BYTES,
        metavar="BYTES",
        help=f"the largest request body; a larger one gets 413 (default: {MAX_BODY_BYTES})",
    )
    limits.add_argument(
        "--max-messages", type=int, default=MAX_MESSAGES, help=f"messages per chat request (default: {MAX_MESSAGES})"
    )
    limits.add_argument(
        "--max-n", type=int, default=MAX_CHOICES, help=f"choices per request, n (default: {MAX_CHOICES})"
    )
    limits.add_argument(
        "--max-tokens-cap",
        type=int,
        default=None,
        metavar="N",
        help="the most tokens a request may ask for per choice; more is a 400 (default: the context length)",
    )
    limits.add_argument(
        "--timeout",
        type=float,
        default=REQUEST_TIMEOUT_S,
        metavar="SECONDS",
        help=f"how long a request may run before it is ended with 504; 0 for no limit (default: {REQUEST_TIMEOUT_S:g})",
    )


def command(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..server import create_app
    except ImportError as exc:
        raise BackendUnavailableError(
            f"serve needs FastAPI and uvicorn ({exc.name} is missing); install them with: pip install 'phi-backends[server]'"
        ) from None
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0 to 65535, got {args.port}")
    for flag in ("max_queue", "max_body", "max_messages", "max_n", "max_tokens_cap"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    if args.timeout < 0:
        raise UsageError(f"--timeout must be 0 (no limit) or more seconds, got {args.timeout:g}")
    limits = Limits(
        max_queue=args.max_queue,
        max_body_bytes=args.max_body,
        max_messages=args.max_messages,
        max_choices=args.max_n,
        max_tokens=args.max_tokens_cap,
        request_timeout_s=args.timeout or None,
    )
    keys = _keys(args)
    loaders = _loaders(args)  # a wrong path, backend or option is refused here, before the server starts
    failures: list[PhiBackendsError] = []
    server: uvicorn.Server | None = None

    def loaded(name: str, outcome: Generator | PhiBackendsError) -> None:
        if isinstance(outcome, PhiBackendsError):
            failures.append(outcome)
            if server is not None:
                server.should_exit = True  # the one-line error is the command's, below
        else:
            print(f"{name}: ready ({outcome.backend}, {outcome.model})", file=sys.stderr, flush=True)

    app = create_app(loaders, api_keys=keys, limits=limits, cors_origins=args.cors_origin, on_load=loaded)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="info", access_log=False))
    server.run()
    if failures:
        raise failures[0]
    return 0


def _keys(args: argparse.Namespace) -> list[str]:
    keys = [*filter(None, (k.strip() for k in os.environ.get(KEYS_ENV, "").split(","))), *args.api_key]
    if args.api_key_file is not None:
        try:
            lines = args.api_key_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--api-key-file {args.api_key_file}: cannot read it ({exc.__class__.__name__})") from None
        keys += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if any(not key for key in keys):
        raise UsageError("--api-key must not be empty")
    return keys


def _loaders(args: argparse.Namespace) -> dict[str, Callable[[], Generator]]:
    """Each served name and what loads its model, checked as far as it can be without loading."""
    from ..api import loader_with_flags  # imports the plugins only now

    given: list[str] = args.model or [""]  # "": the config's model
    if args.name is not None and len(given) > 1:
        raise UsageError("--name names one model; give several as --model NAME=MODEL")
    flags, options = cli_config.flags(argparse.Namespace(**{**vars(args), "model": None}))
    loaders: dict[str, Callable[[], Generator]] = {}
    for item in given:
        name, model = _split(item)
        model_flags = {**flags, "model": ("--model", model or None)}
        configured, loader = loader_with_flags(model_flags, options)
        name = name or args.name or model or configured
        if name in loaders:
            raise UsageError(f"two models are served as {name!r}; give each its own name: --model NAME=MODEL")
        loaders[name] = loader
    return loaders


def _split(item: str) -> tuple[str, str]:
    """``NAME=MODEL`` as its name and model; ``MODEL`` (a path may hold "=") as no name and itself."""
    name, sep, model = item.partition("=")
    if sep and NAME.fullmatch(name) and not Path(item).exists():
        if not model:
            raise UsageError(f"--model {item}: the model after {name}= is missing")
        return name, model
    return "", item
