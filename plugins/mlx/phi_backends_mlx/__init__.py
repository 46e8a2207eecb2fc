"""The MLX backend for phi-backends (imported lazily: importing this does not load MLX)."""

from .backend import MlxBackend

__all__ = ["MlxBackend"]
