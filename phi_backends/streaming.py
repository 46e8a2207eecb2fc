"""Turning a stream of token ids into a stream of text, the same way for every backend.

Two small pieces, each O(1) amortized per token (the seed program re-decoded its whole output
after every token):

- :class:`Detokenizer` maps token ids to bytes and decodes them incrementally as UTF-8, so a
  character split across tokens (emoji, CJK, byte-fallback pieces) is never emitted in halves.
- :class:`StopMatcher` holds back text that could still become a stop string, emits it once the
  stop string is ruled out, and never emits a stop string or anything after it.

Both give the same text however the stream is cut into tokens (tests/test_streaming_fuzz.py).
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence

__all__ = ["Detokenizer", "StopMatcher", "TextAssembler"]


class Detokenizer:
    """Incremental token-id → text decoding that never splits a UTF-8 character.

    ``token_bytes`` gives the bytes of one token (``b""`` for control tokens). With
    ``strip_leading_space`` (SentencePiece vocabularies), one space is dropped from the start of
    the text, as Hugging Face's decoders and mlx-lm do for a response.
    """

    def __init__(self, token_bytes: Callable[[int], bytes], *, strip_leading_space: bool = False) -> None:
        self._token_bytes = token_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._strip = strip_leading_space

    def add(self, token_id: int) -> str:
        data = self._token_bytes(token_id)
        if self._strip and data:
            self._strip = False
            if data.startswith(b" "):
                data = data[1:]
        if data.isascii() and not self._decoder.buffer:  # most tokens: no character to hold back
            return data.decode("ascii")
        return self._decoder.decode(data)

    def flush(self) -> str:
        """What is left at the end (an incomplete character becomes U+FFFD)."""
        return self._decoder.decode(b"", final=True)


class StopMatcher:
    """Hold back text while it may still turn into one of ``stops``.

    The text is cut at the first occurrence of any stop string, as if the whole text were
    searched at once, whatever the pieces it arrives in. So when a stop string is complete but
    a longer one that starts earlier may still complete (stops ``"abcd"`` and ``"bc"``, text
    ``"abc"`` so far), the matcher waits for more text before it decides.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(stops)
        self._pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Add ``text``; return what can be emitted now. Sets :attr:`stopped` on a match."""
        if not self._stops:
            return text
        buffer = self._pending + text
        live = len(buffer) - self._longest_partial(buffer)  # where a stop string may still begin
        cut = self._first_match(buffer)
        if cut is not None and cut <= live:
            self.stopped = True
            self._pending = ""
            return buffer[:cut]
        self._pending = buffer[live:]
        return buffer[:live]

    def flush(self) -> str:
        """At the end of generation, held-back text up to a stop string it holds, if any."""
        pending, self._pending = self._pending, ""
        cut = self._first_match(pending)
        if cut is None:
            return pending
        self.stopped = True
        return pending[:cut]

    def _first_match(self, buffer: str) -> int | None:
        return min((i for i in (buffer.find(s) for s in self._stops) if i >= 0), default=None)

    def _longest_partial(self, buffer: str) -> int:
        """Length of the longest suffix of ``buffer`` that is a proper prefix of a stop string."""
        best = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(buffer)), best, -1):
                if buffer.endswith(stop[:n]):
                    best = n
                    break
        return best


class TextAssembler:
    """Detokenizer and stop matcher together: token ids in, safe text out."""

    def __init__(
        self,
        token_bytes: Callable[[int], bytes],
        *,
        stops: Sequence[str] = (),
        strip_leading_space: bool = False,
    ) -> None:
        self._detok = Detokenizer(token_bytes, strip_leading_space=strip_leading_space)
        self._stop = StopMatcher(stops)
        self._stops = bool(stops)
        #: a stop string was found: nothing after it is emitted (an attribute, read once per token)
        self.stopped = False

    @property
    def adder(self) -> Callable[[int], str]:
        """:meth:`add`, or the detokenizer's own when there are no stop strings (one call less per token)."""
        return self.add if self._stops else self._detok.add

    def add(self, token_id: int) -> str:
        text = self._detok.add(token_id)
        if not self._stops:
            return text
        text = self._stop.feed(text)
        self.stopped = self._stop.stopped
        return text

    def finish(self) -> str:
        """Flush at the end of generation (nothing when a stop string ended it)."""
        if self._stop.stopped:
            return ""
        text = self._stop.feed(self._detok.flush())
        text = text if self._stop.stopped else text + self._stop.flush()
        self.stopped = self._stop.stopped
        return text
