"""Tools that measure phi-backends itself: :mod:`.parity` (do the backends agree on the same weights?)."""
