"""``phi-backends serve``: one model over the OpenAI HTTP API (docs/serving.md)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from ..errors import BackendUnavailableError, UsageError
from ..server.limits import MAX_BODY_BYTES, MAX_QUEUE
from . import config as cli_config

__all__ = ["COMMAND", "add_parser", "command"]

COMMAND = "serve"
#: API keys from the environment, separated by commas (a flag's keys are added to them).
KEYS_ENV = "PHI_BACKENDS_API_KEYS"


def add_parser(commands: Any) -> None:
    serve = commands.add_parser(
        COMMAND,
        help="serve a model over the OpenAI HTTP API",
        description="Serve a model over the OpenAI HTTP API (/v1/chat/completions, /v1/models, /health; "
        "OpenAPI docs at /docs). Binds 127.0.0.1 unless told otherwise. See docs/serving.md.",
    )
    cli_config.add_flags(serve)
    net = serve.add_argument_group("server")
    net.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    net.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    net.add_argument("--name", default=None, help="the model's name in requests (default: --model as given)")
    net.add_argument(
        "--max-queue",
        type=int,
        default=MAX_QUEUE,
        help=f"requests taken at once, running or waiting; one more gets 503 and Retry-After (default: {MAX_QUEUE})",
    )
    net.add_argument(
        "--max-body",
        type=int,
        default=MAX_BODY_BYTES,
        metavar="BYTES",
        help=f"the largest request body; a larger one gets 413 (default: {MAX_BODY_BYTES})",
    )
    net.add_argument(
        "--api-key",
        action="append",
        default=[],
        metavar="KEY",
        help=f"a key clients must send as 'Authorization: Bearer KEY' (repeatable; also {KEYS_ENV}, comma-separated)",
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
    if args.max_queue < 1 or args.max_body < 1:
        raise UsageError("--max-queue and --max-body must be at least 1")
    keys = [*filter(None, (k.strip() for k in os.environ.get(KEYS_ENV, "").split(","))), *args.api_key]
    if any(not key for key in keys):
        raise UsageError("--api-key must not be empty")
    flags, options = cli_config.flags(args)
    from ..api import load_with_flags

    with load_with_flags(flags, options) as gen:
        name = args.name or args.model or gen.model
        app = create_app({name: gen}, api_keys=keys, max_queue=args.max_queue, max_body_bytes=args.max_body)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
