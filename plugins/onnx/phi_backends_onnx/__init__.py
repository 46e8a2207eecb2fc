"""The ONNX Runtime GenAI backend for phi-backends (importing this does not load onnxruntime-genai)."""

from .backend import OnnxBackend

__all__ = ["OnnxBackend"]
