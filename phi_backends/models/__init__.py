"""Models: the catalogue of known names, resolving what a user typed to files, and the Hub.

- :mod:`.catalogue`: the built-in entries (name → artifacts per format, template, context);
- :mod:`.resolve`: a local path, a catalogue name or a hub repo id → a :class:`ModelSource`;
- :mod:`.hub`: downloads through huggingface-hub, with one-line errors;
- :mod:`.manage`: what ``pull`` downloads, what the cache holds (``models``), freeing it (``rm``).
"""

from .resolve import (
    catalogue,
    classify,
    config_entries,
    config_path,
    describe_format,
    detect_format,
    find_entry,
    offline_hint,
    package_file,
    query,
    resolve,
)

__all__ = [
    "catalogue",
    "classify",
    "config_entries",
    "config_path",
    "describe_format",
    "detect_format",
    "find_entry",
    "offline_hint",
    "package_file",
    "query",
    "resolve",
]
