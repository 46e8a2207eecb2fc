"""The engine options the onnx backend accepts, validated, with onnxruntime-genai's meaning."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from phi_backends.errors import OptionError
from phi_backends.formats.engine_options import check_threads, option_values

from .providers import canonical_provider

#: ONNX Runtime's session log levels: 0 verbose ... 3 error, 4 fatal. Quiet by default, because
#: onnxruntime prints its own (multi-line, coloured) error log on stderr next to the exception
#: we turn into a one-line message.
QUIET_LOG_LEVEL = 4
VERBOSE_LOG_LEVEL = 1


@dataclass(frozen=True)
class EngineOptions:
    """onnxruntime-genai settings. ``None`` means "our default", documented per field."""

    provider: str | None = None  # execution provider; default: genai_config.json's, else cpu
    provider_options: tuple[tuple[str, str], ...] = ()  # passed to the provider (e.g. device_id)
    max_length: int | None = None  # the longest prompt + generated sequence; default the model's context_length
    threads: int | None = None  # onnxruntime intra-op threads; default onnxruntime's (the physical cores)
    verbose: bool = False  # onnxruntime's own log on stderr

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> EngineOptions:
        converters = {"provider": lambda _name, value: canonical_provider(value), "provider_options": _provider_options}
        parsed = cls(**option_values(cls, options, backend="onnx", converters=converters))
        if parsed.max_length is not None and parsed.max_length < 2:
            raise OptionError(f"max_length must be at least 2, got {parsed.max_length}")
        check_threads("threads", parsed.threads)
        return parsed

    @property
    def log_level(self) -> int:
        return VERBOSE_LOG_LEVEL if self.verbose else QUIET_LOG_LEVEL


def _provider_options(_name: str, value: Any) -> tuple[tuple[str, str], ...]:
    """A mapping, or its JSON text (``-O 'provider_options={"device_id": "1"}'``), of strings."""
    parsed = value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = None
    if not isinstance(parsed, Mapping):
        raise OptionError(
            'provider_options must be a mapping of option names to values, e.g. {"device_id": "0"}, '
            f"got {value!r:.80}"
        )
    value = parsed
    pairs = []
    for key, item in value.items():
        if isinstance(item, bool):
            text = "1" if item else "0"
        elif isinstance(item, (str, int, float)):
            text = str(item)
        else:
            raise OptionError(f"provider option {key!r} must be a string or a number, got {item!r:.80}")
        pairs.append((str(key), text))
    return tuple(pairs)
