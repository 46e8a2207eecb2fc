"""Reading a model folder's JSON files (configs, tokenizers): untrusted, so bounded and checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ModelFormatError

__all__ = ["read_json_object"]


def read_json_object(path: Path, *, max_bytes: int, fix: str) -> dict[str, Any]:
    """The JSON object in ``path``; anything else is one :class:`ModelFormatError` line ending in ``fix``."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ModelFormatError(f"{path} is {size} bytes, too large for {path.name}; {fix}")
        data = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ModelFormatError(f"{path} is not valid JSON ({reason}); {fix}") from None
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path} should hold a JSON object; {fix}")
    return data
