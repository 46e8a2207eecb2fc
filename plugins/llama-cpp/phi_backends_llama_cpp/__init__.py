"""The llama.cpp backend for phi-backends (imported lazily: importing this does not load llama.cpp)."""

from .backend import LlamaCppBackend

__all__ = ["LlamaCppBackend"]
