"""The ``phi-backends`` command: :mod:`.main` builds the parser and runs each subcommand."""
