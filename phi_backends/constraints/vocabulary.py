"""A model's vocabulary as llguidance sees it, built from what every engine already gives the
core (``Engine.token_bytes`` and ``Engine.tokenize``), so no engine needs code of its own.

Why not llguidance's own builders: ``llguidance.hf`` needs transformers and a ``tokenizer.json``
(a GGUF file has none) and ``llguidance.llamacpp`` works on llama.cpp alone; one builder over
the engine interface gives the same vocabulary on every engine.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..errors import ConstraintError

if TYPE_CHECKING:
    from llguidance import LLTokenizer

__all__ = ["Vocabulary"]


class Vocabulary:
    """One model's llguidance tokenizer per set of end-of-generation ids, made on first use and
    kept (about a second for a 100k vocabulary; one per Generator, shared by its calls)."""

    def __init__(
        self,
        token_bytes: Callable[[int], bytes],
        tokenize: Callable[[str], list[int]],
        vocab_size: int,
    ) -> None:
        self._token_bytes = token_bytes
        self._tokenize = tokenize
        self._vocab_size = vocab_size
        self._tokens: list[bytes] | None = None
        self._made: dict[frozenset[int], LLTokenizer] = {}
        self._lock = threading.Lock()

    def tokenizer(self, eog: Iterable[int]) -> LLTokenizer:
        """The tokenizer whose end of sequence is any of ``eog`` (the ids that end this call)."""
        ends = frozenset(eog)
        with self._lock:
            made = self._made.get(ends)
            if made is None:
                made = self._made[ends] = self._make(ends)
            return made

    def _make(self, ends: frozenset[int]) -> LLTokenizer:
        from llguidance import LLTokenizer, TokenizerWrapper

        if not ends:
            raise ConstraintError(
                "this model has no end-of-generation token, so a constrained call could never end; "
                "use a chat template or a model whose vocabulary names one"
            )
        if self._tokens is None:
            self._tokens = [self._entry(i) for i in range(self._vocab_size)]
        wrapper = TokenizerWrapper(_Tokens(self._tokens, min(ends), self._tokenize))
        return LLTokenizer(wrapper, n_vocab=self._vocab_size, eos_token=sorted(ends))

    def _entry(self, token: int) -> bytes:
        # A token with no bytes is a control token (or padding): llguidance marks special tokens
        # with a leading 0xff byte; ``<[id]>`` keeps each one distinct and never matched as text.
        data = self._token_bytes(token)
        return data if data else b"\xff<[%d]>" % token


class _Tokens:
    """The object ``llguidance.TokenizerWrapper`` reads: the byte strings, the end id and a tokenizer."""

    def __init__(self, tokens: list[bytes], eos: int, tokenize: Callable[[str], list[int]]) -> None:
        self.tokens = tokens
        self.eos_token_id = eos
        self.bos_token_id = None
        self.special_token_ids = [i for i, t in enumerate(tokens) if t.startswith(b"\xff")]
        self._tokenize = tokenize
        self._ids: dict[bytes, int] | None = None
        self._longest = 1

    def __call__(self, text: Any) -> list[int]:
        """Ids whose bytes are exactly ``text`` (llguidance forces these when the grammar forces
        the text): the engine's own tokenization where it spells the text, else greedy longest
        matches. A SentencePiece tokenizer puts a space before the text ("{" becomes " {"), which
        a constraint would then refuse."""
        if not isinstance(text, str):  # TokenizerWrapper probes with bytes; we take text
            raise TypeError("text only")
        ids = self._tokenize(text)
        data = text.encode()
        if b"".join(self.tokens[i] for i in ids if 0 <= i < len(self.tokens)) == data:
            return ids
        return self._greedy(data)

    def _greedy(self, data: bytes) -> list[int]:
        if self._ids is None:
            self._ids = {}
            for i, spelt in enumerate(self.tokens):
                if spelt and not spelt.startswith(b"\xff"):
                    self._ids.setdefault(spelt, i)
            self._longest = max(map(len, self._ids), default=1)
        ids: list[int] = []
        at = 0
        while at < len(data):
            for end in range(min(len(data), at + self._longest), at, -1):
                token = self._ids.get(data[at:end])
                if token is not None:
                    ids.append(token)
                    at = end
                    break
            else:
                # No token spells this byte: return what can be spelt (an exception here would be
                # a panic inside llguidance); the mask then allows nothing, which ConstraintMask reports.
                break
        return ids
