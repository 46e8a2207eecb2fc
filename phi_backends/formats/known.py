"""The model formats this project's own backends read, declared once for every plugin and the core.

A backend names the formats it reads in ``Backend.formats``; the core learns what each name means
(how to recognise a path in it, how to say it) from these declarations and from any
``Backend.model_formats`` a plugin adds. The core itself names no format.
"""

from __future__ import annotations

from pathlib import Path

from ..backend import ModelFormat

__all__ = ["GGUF", "KNOWN_FORMATS", "MLX", "ONNX"]


def _is_gguf(path: Path) -> bool:
    """A file with the GGUF magic, or named ``.gguf`` (its reader then says what is wrong with it)."""
    if path.is_dir():
        return _single_gguf(path) is not None
    if path.suffix.lower() == ".gguf":
        return True
    try:
        with path.open("rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


def _single_gguf(folder: Path) -> Path | None:
    found = sorted(p for p in folder.glob("*.gguf") if _is_gguf(p))
    return found[0] if len(found) == 1 else None


def _gguf_file(path: Path) -> Path:
    """A folder that holds one GGUF file stands for that file."""
    return (_single_gguf(path) or path) if path.is_dir() else path


GGUF = ModelFormat(
    name="gguf",
    description="a GGUF file",
    plural="GGUF files",
    key="ending in .gguf",
    detect=_is_gguf,
    locate=_gguf_file,
    hub_suffix=".gguf",
    reader="llama-cpp",
)
ONNX = ModelFormat(
    name="onnx",
    description="an ONNX Runtime GenAI folder",
    plural="ONNX Runtime GenAI folders",
    key="with genai_config.json",
    detect=lambda path: (path / "genai_config.json").is_file(),
    priority=2,  # such folders often hold a config.json too
    reader="onnx",
)
MLX = ModelFormat(
    name="mlx",
    description="an MLX/safetensors folder",
    plural="MLX/safetensors folders",
    key="with config.json",
    detect=lambda path: (path / "config.json").is_file(),
    priority=1,
    reader="mlx",
)
#: In the order the core lists them in messages.
KNOWN_FORMATS: tuple[ModelFormat, ...] = (GGUF, ONNX, MLX)
