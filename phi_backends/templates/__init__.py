"""Chat templates: messages in, prompt text out, the same on every backend.

- :mod:`.messages`: the message shape every template renders, checked once;
- :mod:`.builtin`: the built-in templates (phi3, phi3.5, phi4, phi4-mini, chatml), lookup by name,
  and recognising a model's own template as one of them;
- :mod:`.sandbox`: a model file's own Jinja template (untrusted input), rendered in a bounded sandbox.
"""

from .builtin import BUILTIN_TEMPLATES, BuiltinTemplate, ChatTemplate, detect_template, get_template
from .messages import KNOWN_END_OF_TURN, Message, normalize_messages
from .sandbox import JinjaChatTemplate, jinja_template

__all__ = [
    "BUILTIN_TEMPLATES",
    "KNOWN_END_OF_TURN",
    "BuiltinTemplate",
    "ChatTemplate",
    "JinjaChatTemplate",
    "Message",
    "detect_template",
    "get_template",
    "jinja_template",
    "normalize_messages",
]
