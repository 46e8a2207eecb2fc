"""phi-backends: run Microsoft's Phi models locally through one interface, on any engine.

import phi_backends as pb
with pb.load("phi-3-mini-4k-instruct") as gen:
    for chunk in gen.stream("Write a haiku about ice hockey"):
        print(chunk.text, end="", flush=True)
"""

from .api import explain, load
from .backend import (
    Availability,
    Backend,
    Capacity,
    Engine,
    EngineInfo,
    Fit,
    ModelFormat,
    ModelQuery,
    ModelSource,
    Verdict,
)
from .constraints import Constraint
from .errors import (
    BackendUnavailableError,
    ConfigError,
    ConstraintError,
    ContextLengthError,
    DownloadError,
    GenerationError,
    ModelFormatError,
    ModelNotFoundError,
    OptionError,
    PhiBackendsError,
    RuntimeFailure,
    SamplingConfigError,
    TemplateError,
    ToolError,
    UnknownBackendError,
    UnknownModelError,
    UsageError,
)
from .generator import AsyncStream, Chunk, Completion, Generator, Stream, Timings, Usage
from .hookspecs import hookimpl
from .logits import TokenLogprob
from .sampling import SamplingConfig
from .selection.choice import Explanation
from .selection.platform import Platform
from .tools import ToolCall

__version__ = "0.1.0"

__all__ = [
    "AsyncStream",
    "Availability",
    "Backend",
    "BackendUnavailableError",
    "Capacity",
    "Chunk",
    "Completion",
    "ConfigError",
    "Constraint",
    "ConstraintError",
    "ContextLengthError",
    "DownloadError",
    "Engine",
    "EngineInfo",
    "Explanation",
    "Fit",
    "GenerationError",
    "Generator",
    "ModelFormat",
    "ModelFormatError",
    "ModelNotFoundError",
    "ModelQuery",
    "ModelSource",
    "OptionError",
    "PhiBackendsError",
    "Platform",
    "RuntimeFailure",
    "SamplingConfig",
    "SamplingConfigError",
    "Stream",
    "TemplateError",
    "Timings",
    "TokenLogprob",
    "ToolCall",
    "ToolError",
    "UnknownBackendError",
    "UnknownModelError",
    "Usage",
    "UsageError",
    "Verdict",
    "explain",
    "hookimpl",
    "load",
]
