"""One call's matcher: the mask it puts on each row of logits, and the tokens it is fed."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from ..errors import ConstraintError, GenerationError, PhiBackendsError
from .spec import Constraint

if TYPE_CHECKING:
    import numpy as np
    from llguidance import LLTokenizer

__all__ = ["ConstraintMask"]


class ConstraintMask:
    """The tokens ``constraint`` allows next, for one call (a new one per call: it keeps the
    matcher's state). :meth:`apply` bans the others on a row of logits; :meth:`accept` feeds the
    matcher the token the sampler chose. End-of-generation ids are allowed exactly when the
    constraint is satisfied, so the text ends where it parses."""

    def __init__(self, constraint: Constraint, tokenizer: LLTokenizer, vocab_size: int, eog: frozenset[int]) -> None:
        import numpy as np
        from llguidance import LLMatcher

        self._kind = constraint.kind.replace("_", " ")
        self._matcher = matcher = LLMatcher(tokenizer, constraint.grammar_text, log_level=0)
        if matcher.is_error():
            raise ConstraintError(
                f"the {self._kind} constraint cannot be used with this model's vocabulary: {self._reason()}"
            )
        self._bits: Any = np.zeros((vocab_size + 31) // 32, dtype=np.int32)
        # The first mask now, so that a constraint no token of this vocabulary can begin is refused
        # before the call starts; apply() uses it for the first row.
        self._fill(ConstraintError)
        self._ready = True
        self._eog = eog
        self._ahead: deque[int] = deque()  # tokens an engine fed early (feed), not yet taken by the core
        self._ended = False

    def apply(self, logits: np.ndarray) -> None:
        """Ban every token the constraint does not allow next (logit -inf), in place."""
        import numpy as np

        if self._ended:  # an engine running ahead asks for the row after the end: nothing is sampled from it
            return
        if self._ready:
            self._ready = False
        else:
            self._fill(GenerationError)
        bits = self._bits
        allowed = np.unpackbits(bits.view(np.uint8), bitorder="little", count=logits.shape[-1]).view(np.bool_)
        np.putmask(logits, ~allowed, -np.inf)

    def _fill(self, error: type[PhiBackendsError]) -> None:
        """Compute the mask of the tokens allowed next into ``_bits``; ``error`` if there are none."""
        bits = self._bits
        self._matcher.unsafe_compute_mask_ptr(bits.ctypes.data, bits.nbytes)
        if self._matcher.is_error():
            reason = self._reason()
            if not reason.startswith("NoExtension"):
                raise error(f"the {self._kind} constraint failed in llguidance: {reason}")
        if self._matcher.is_error() or not bits.any():
            raise error(
                f"no token of this model's vocabulary can continue the text the {self._kind} constraint asks for; "
                "check that every character it needs can be written with this model"
            )

    def _reason(self) -> str:
        """llguidance's error, one line, without the state and backtrace dumps it appends."""
        return " ".join(self._matcher.get_error().split("<")[0].split())[:300]

    def accept(self, token: int) -> None:
        """The token the sampler chose from the masked row (the core calls this for every token
        it takes, end-of-generation ids aside)."""
        if self._ahead:
            if self._ahead.popleft() != token:
                raise GenerationError(
                    "the engine fed the constraint a token other than the one it returned; please report it"
                )
            return
        self._consume(token)

    def feed(self, token: int) -> None:
        """For an engine that computes the next row before it returns ``token`` (mlx-lm's
        ``generate_step`` runs one token ahead): the matcher takes ``token`` now, and
        :meth:`accept` skips it when the core takes it."""
        if token in self._eog:
            self._ended = True
            return
        self._consume(token)
        self._ahead.append(token)

    def _consume(self, token: int) -> None:
        if not self._matcher.consume_token(token):
            raise GenerationError(
                f"the engine generated token {token}, which the constraint did not allow; this is a bug in the engine's "
                "sampler, please report it"
            )
