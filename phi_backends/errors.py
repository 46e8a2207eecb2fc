"""The errors phi-backends raises on purpose.

Every error meant for a user derives from :class:`PhiBackendsError`, carries a one-line message
that says what is wrong and what to do, and knows the CLI exit code it maps to::

    PhiBackendsError                  anything phi-backends reports to the user
    ├── UsageError                    exit 2: the call or command line was wrong; fix it
    │   ├── SamplingConfigError       an impossible or unknown sampling value
    │   ├── UnknownModelError         a model name that is neither a path, a catalogue name nor a hub id
    │   ├── ModelNotFoundError        a local path that does not exist
    │   ├── UnknownBackendError       a backend name no plugin provides
    │   ├── OptionError               an engine option the backend does not know
    │   ├── ConstraintError           a schema, regex, grammar or choice list that is wrong, or that the model cannot express
    │   ├── ToolError                 tools that are not function definitions, a tool_choice naming no tool, bad tool calls
    │   └── ConfigError               a config file or PHI_BACKENDS_* variable that is wrong (names the file and key)
    └── RuntimeFailure                exit 1: the call was fine but something failed
        ├── BackendUnavailableError   the backend is not installed, or cannot run on this machine
        ├── ModelFormatError          a model file that is empty, truncated, corrupt or of another format
        ├── DownloadError             the hub is unreachable, or lacks the file asked for
        ├── TemplateError             a chat template that cannot be rendered
        ├── ContextLengthError        the prompt does not fit the context window
        └── GenerationError           the engine failed while generating
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailableError",
    "ConfigError",
    "ConstraintError",
    "ContextLengthError",
    "DownloadError",
    "GenerationError",
    "ModelFormatError",
    "ModelNotFoundError",
    "OptionError",
    "PhiBackendsError",
    "PhiBackendsWarning",
    "RuntimeFailure",
    "SamplingConfigError",
    "TemplateError",
    "ToolError",
    "UnknownBackendError",
    "UnknownModelError",
    "UsageError",
]


class PhiBackendsError(Exception):
    """Base of every error phi-backends reports to the user."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        # One line, always: the CLI prints it as is.
        super().__init__(" ".join(message.split()))

    @property
    def message(self) -> str:
        return str(self)


class UsageError(PhiBackendsError):
    """The request itself was wrong (a bad value, name or path)."""

    exit_code = 2


class SamplingConfigError(UsageError):
    """An impossible or unknown sampling value."""


class ConstraintError(UsageError):
    """A structured-output constraint that is not valid, or that this model's vocabulary cannot express."""


class ToolError(UsageError):
    """Tool definitions, a ``tool_choice`` or a message's tool calls that cannot be used as given."""


class UnknownModelError(UsageError):
    """A model name that is neither a local path, a catalogue name nor a hub repo id."""


class ModelNotFoundError(UsageError):
    """A local model path that does not exist."""


class UnknownBackendError(UsageError):
    """A backend name that no installed or known plugin provides."""


class OptionError(UsageError):
    """An engine option that the chosen backend does not accept."""


class ConfigError(UsageError):
    """A config file (or ``PHI_BACKENDS_*`` environment variable) that cannot be used as written.

    The message names the file and the key (or the variable) and says how to fix it.
    """


class RuntimeFailure(PhiBackendsError):
    """The request was fine, but something failed while serving it."""

    exit_code = 1


class BackendUnavailableError(RuntimeFailure):
    """The backend is not installed, or is installed but cannot run on this machine."""


class ModelFormatError(RuntimeFailure):
    """A model file that is empty, truncated, corrupt, or not of the format expected."""


class DownloadError(RuntimeFailure):
    """The model hub is unreachable, or does not have the file asked for."""


class TemplateError(RuntimeFailure):
    """A chat template that cannot be rendered (or is unsafe to render)."""


class ContextLengthError(RuntimeFailure):
    """The prompt (plus at least one new token) does not fit the model's context window."""


class GenerationError(RuntimeFailure):
    """The engine failed while generating."""


class PhiBackendsWarning(UserWarning):
    """A value phi-backends accepts that is probably not what the user wants (an ``n_ctx`` beyond
    the model's training context, a chat template of another model family). Issued with
    :func:`warnings.warn`; the CLI prints each as one ``phi-backends: warning: ...`` line."""


def short(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters: a message is one line, and a bad value can be
    a file's worth (``-O n_ctx=[[[[...`` printed 5,000 brackets)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
