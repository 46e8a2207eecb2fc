"""Sampling settings and their one meaning across every backend.

:class:`SamplingConfig` is the product's definition of sampling, not any engine's. Backends map
it onto their engine only where the engine does exactly the same thing, and otherwise run
:class:`ReferenceSampler` (below) on the engine's raw logits or refuse the field loudly.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

from .errors import SamplingConfigError, short

__all__ = ["ReferenceSampler", "SamplingConfig", "penalty_window"]


@dataclass(frozen=True, init=False)
class SamplingConfig:
    """How the next token is chosen, and when generation stops.

    The defaults are the original tutorial's: temperature 1.0, no top-p/top-k/min-p, a
    repetition penalty of 1.2 over the last 64 generated tokens, a fresh random seed per call,
    and at most 100 new tokens.

    For each new token, in this order:

    0. **The logits step** (:mod:`phi_backends.logits`), on the model's logits: ``logit_bias`` is
       added (OpenAI's meaning: -100 bans a token), then, with ``logprobs`` or ``top_logprobs``,
       the log-probabilities are read (the log-softmax of the logits as they now are: before the
       penalty, the temperature and the filters below).
    1. **Repetition penalty** (``repeat_penalty``, ``repeat_last_n``). Every *distinct* token among
       the last ``repeat_last_n`` tokens *generated in this call* (the prompt is never counted)
       has its logit divided by ``repeat_penalty`` when positive, multiplied when negative or
       zero. ``repeat_penalty=1.0`` or ``repeat_last_n=0`` turns it off; ``repeat_last_n=-1``
       counts every token generated so far.
    2. **Temperature.** ``temperature=0`` is greedy decoding: the highest logit wins (the lowest
       id on a tie) and steps 3 to 6 do not apply. Otherwise logits are divided by
       ``temperature`` *before* any filter, so the filters below see the tempered distribution.
    3. **top_k**: keep the ``top_k`` highest logits (``None`` or 0: off).
    4. **top_p**: of what is left, keep the smallest set of most likely tokens whose
       probabilities add up to at least ``top_p`` (``None`` or 1.0: off).
    5. **min_p**: of what is left, drop tokens whose probability is below ``min_p`` times the
       most likely token's (``None`` or 0: off).
    6. **Sample** from what is left, renormalized, with a generator seeded by ``seed``. The same
       seed, model, prompt and settings give the same tokens on the same backend; ``seed=None``
       draws a new random seed for each call (reported in ``Completion.seed``).

    Generation stops at the model's end-of-turn tokens (never part of the text), at the first
    occurrence of any ``stop`` string (the stop string and what follows are not part of the
    text), or after ``max_tokens`` new tokens, whichever comes first.
    """

    temperature: float = field(default=1.0, metadata={"help": "divide logits by this before the filters; 0 = greedy"})
    top_p: float | None = field(default=None, metadata={"help": "nucleus filter in (0, 1]; unset or 1 = off"})
    top_k: int | None = field(default=None, metadata={"help": "keep the k most likely tokens; unset or 0 = off"})
    min_p: float | None = field(
        default=None, metadata={"help": "drop tokens below min_p x the top probability; unset or 0 = off"}
    )
    repeat_penalty: float = field(default=1.2, metadata={"help": "penalty for tokens generated recently; 1.0 = off"})
    repeat_last_n: int = field(
        default=64, metadata={"help": "how many generated tokens the penalty looks back; 0 = off, -1 = all"}
    )
    seed: int | None = field(default=None, metadata={"help": "random seed; unset = a new random seed per call"})
    max_tokens: int = field(default=100, metadata={"help": "at most this many new tokens"})
    stop: tuple[str, ...] = field(
        default=(), metadata={"help": "stop at this string (not part of the output); repeatable"}
    )
    logit_bias: tuple[tuple[int, float], ...] = field(
        default=(),
        metadata={"help": "ID=BIAS: add BIAS in [-100, 100] to a token's logit; -100 bans it; repeatable"},
    )
    logprobs: bool = field(default=False, metadata={"help": "report each generated token's log-probability"})
    top_logprobs: int = field(
        default=0, metadata={"help": "also report the N most likely tokens at each step, 0 to 20 (implies logprobs)"}
    )

    def __init__(
        self,
        *,
        temperature: float = 1.0,
        top_p: float | None = None,
        top_k: int | None = None,
        min_p: float | None = None,
        repeat_penalty: float = 1.2,
        repeat_last_n: int = 64,
        seed: int | None = None,
        max_tokens: int = 100,
        stop: str | Iterable[str] | None = (),
        logit_bias: Mapping[int | str, float] | Iterable[Any] = (),
        logprobs: bool = False,
        top_logprobs: int = 0,
        **unknown: Any,
    ) -> None:
        if unknown:
            raise SamplingConfigError(_unknown_field_message(next(iter(unknown))))
        values = {
            "temperature": _number("temperature", temperature),
            "top_p": _optional(_number, "top_p", top_p),
            "top_k": _optional(_integer, "top_k", top_k),
            "min_p": _optional(_number, "min_p", min_p),
            "repeat_penalty": _number("repeat_penalty", repeat_penalty),
            "repeat_last_n": _integer("repeat_last_n", repeat_last_n),
            "seed": _optional(_integer, "seed", seed),
            "max_tokens": _integer("max_tokens", max_tokens),
            "stop": _stop_strings(stop),
            "logit_bias": _logit_bias(logit_bias),
            "logprobs": _boolean("logprobs", logprobs),
            "top_logprobs": _integer("top_logprobs", top_logprobs),
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)
        self._check_ranges()

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> SamplingConfig:
        """Build from a dict (a config file, JSON); unknown keys are errors, not ignored."""
        return cls(**dict(values))

    def replace(self, **changes: Any) -> SamplingConfig:
        """A copy with some fields changed (validated like a new config)."""
        current = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        current.update(changes)
        return type(self)(**current)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def reports_logprobs(self) -> bool:
        """Whether each generated token's log-probability is reported (``logprobs`` or ``top_logprobs``)."""
        return self.logprobs or self.top_logprobs > 0

    @property
    def penalizes(self) -> bool:
        """Whether the repetition penalty changes anything (``repeat_penalty`` 1.0 or an empty window: no)."""
        return self.repeat_penalty != 1.0 and self.repeat_last_n != 0

    def resolved_seed(self) -> int:
        """The seed for one call: the configured one, or a fresh random 32-bit seed."""
        return self.seed if self.seed is not None else secrets.randbits(32)

    def _check_ranges(self) -> None:
        checks: list[tuple[bool, str]] = [
            (self.temperature >= 0, f"temperature must be >= 0 (0 is greedy), got {self.temperature}"),
            (
                self.top_p is None or 0 < self.top_p <= 1,
                f"top_p must be in (0, 1] (1 or None is off), got {self.top_p}",
            ),
            (self.top_k is None or self.top_k >= 0, f"top_k must be >= 0 (0 or None is off), got {self.top_k}"),
            (
                self.min_p is None or 0 <= self.min_p <= 1,
                f"min_p must be in [0, 1] (0 or None is off), got {self.min_p}",
            ),
            (self.repeat_penalty > 0, f"repeat_penalty must be > 0 (1.0 is off), got {self.repeat_penalty}"),
            (
                self.repeat_last_n >= -1,
                f"repeat_last_n must be >= -1 (0 is off, -1 is all generated tokens), got {self.repeat_last_n}",
            ),
            (self.seed is None or 0 <= self.seed < 2**32, f"seed must be in [0, 2**32), got {self.seed}"),
            (self.max_tokens > 0, f"max_tokens must be > 0, got {self.max_tokens}"),
            (0 <= self.top_logprobs <= 20, f"top_logprobs must be in [0, 20], got {self.top_logprobs}"),
        ]
        for ok, message in checks:
            if not ok:
                raise SamplingConfigError(message)


def _unknown_field_message(name: str) -> str:
    known = [f.name for f in dataclasses.fields(SamplingConfig)]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown sampling field {name!r}; {hint}known fields: {', '.join(known)}"


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SamplingConfigError(f"{name} must be a number, got {short(value)}")
    if not math.isfinite(value):
        raise SamplingConfigError(f"{name} must be a finite number, got {short(value)}")
    return float(value)


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise SamplingConfigError(f"{name} must be a whole number, got {short(value)}")
    return value


def _boolean(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise SamplingConfigError(f"{name} must be true or false, got {short(value)}")


#: OpenAI's range: -100 bans a token, 100 all but forces it.
MAX_BIAS = 100.0


def _logit_bias(value: Any) -> tuple[tuple[int, float], ...]:
    """``{id: bias}``, ``[(id, bias)]`` or ``["ID=BIAS"]`` (the CLI's form), as sorted ``(id, bias)`` pairs.

    Ids may be strings of digits (JSON and TOML keys are strings). Whether an id is in the
    model's vocabulary is checked when a call starts (:meth:`LogitsStep.check`).
    """
    if isinstance(value, str):
        value = [value]
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, Iterable):
        items = []
        for item in value:
            if isinstance(item, str):
                key, sep, bias = item.partition("=")
                if not sep:
                    raise SamplingConfigError(f"logit_bias entries are ID=BIAS, got {short(item)}")
                items.append((key.strip(), bias.strip()))
            elif isinstance(item, (tuple, list)) and len(item) == 2:
                items.append((item[0], item[1]))
            else:
                raise SamplingConfigError(
                    f"logit_bias entries are (token_id, bias) pairs or ID=BIAS, got {short(item)}"
                )
    else:
        raise SamplingConfigError(f"logit_bias must map token ids to biases, got {short(value)}")
    biases: dict[int, float] = {}
    for key, bias in items:
        token = _token_id(key)
        if isinstance(bias, str):
            try:
                number = float(bias)
            except ValueError:
                raise SamplingConfigError(f"logit_bias for token {token} must be a number, got {short(bias)}") from None
        number = _number(f"logit_bias for token {token}", number if isinstance(bias, str) else bias)
        if not -MAX_BIAS <= number <= MAX_BIAS:
            raise SamplingConfigError(
                f"logit_bias for token {token} must be in [-100, 100] (-100 bans it), got {number:g}"
            )
        biases[token] = number
    return tuple(sorted(biases.items()))


def _token_id(key: Any) -> int:
    if isinstance(key, str) and key.strip().isdigit():
        return int(key)
    if isinstance(key, int) and not isinstance(key, bool) and key >= 0:
        return key
    raise SamplingConfigError(f"logit_bias keys are token ids (whole numbers >= 0), got {short(key)}")


def _optional(check: Any, name: str, value: Any) -> Any:
    return None if value is None else check(name, value)


def _stop_strings(stop: str | Iterable[str] | None) -> tuple[str, ...]:
    if stop is None:  # as OpenAI's API takes stop: null
        return ()
    if isinstance(stop, str):
        items: tuple[Any, ...] = (stop,)
    elif isinstance(stop, Iterable) and not isinstance(stop, (bytes, Mapping)):
        items = tuple(stop)
    else:
        raise SamplingConfigError(f"stop must be a string or a list of strings, got {short(stop)}")
    for item in items:
        if not isinstance(item, str) or not item:
            raise SamplingConfigError(f"stop strings must be non-empty strings, got {short(item)}")
    return items


def penalty_window(config: SamplingConfig, generated: Sequence[int]) -> Sequence[int]:
    """The generated tokens that the repetition penalty looks at (most recent last)."""
    if not config.penalizes:
        return ()
    if config.repeat_last_n == -1:
        return generated
    return generated[-config.repeat_last_n :]


class ReferenceSampler:
    """The semantics of :class:`SamplingConfig`, written once, in NumPy.

    Backends whose engine cannot honour a field natively run this on the raw logits; backends
    that map to native samplers are tested against it (same logits in, same probabilities out).
    Built once per request; :meth:`sample` is called once per token.
    """

    def __init__(self, config: SamplingConfig, seed: int) -> None:
        import numpy as np

        self.config = config
        self._rng = np.random.Generator(np.random.PCG64(seed))

    def probabilities(self, logits: np.ndarray, generated: Sequence[int]) -> np.ndarray:
        """The distribution the next token is drawn from (zeros for filtered tokens)."""
        import numpy as np

        cfg = self.config
        x = self._penalized(logits, generated)
        if cfg.greedy:
            probs = np.zeros_like(x)
            probs[int(np.argmax(x))] = 1.0
            return probs
        x /= cfg.temperature
        keep = np.ones(x.shape, dtype=bool)
        if cfg.top_k and cfg.top_k < x.size:
            kth = np.partition(x, -cfg.top_k)[-cfg.top_k]
            keep &= x >= kth
        probs = _softmax(x, keep)
        if cfg.top_p is not None and cfg.top_p < 1.0:
            order, cumulative = _top_prefix(probs, cfg.top_p)
            cut = int(np.searchsorted(cumulative, cfg.top_p)) + 1  # include the token crossing top_p
            nucleus = np.zeros(x.shape, dtype=bool)
            nucleus[order[:cut]] = True
            keep &= nucleus
            probs = _softmax(x, keep)
        if cfg.min_p:
            keep &= probs >= cfg.min_p * probs.max()
            probs = _softmax(x, keep)
        return probs

    def sample(self, logits: np.ndarray, generated: Sequence[int]) -> int:
        if self.config.greedy:  # the same choice as probabilities().argmax(), without the distribution
            return int(self._penalized(logits, generated).argmax())
        probs = self.probabilities(logits, generated)
        return int(self._rng.choice(probs.size, p=probs))

    def _penalized(self, logits: np.ndarray, generated: Sequence[int]) -> np.ndarray:
        import numpy as np

        cfg = self.config
        x = np.array(logits, dtype=np.float64, copy=True)
        window = np.unique(np.asarray(penalty_window(cfg, generated), dtype=np.int64))
        if window.size:
            seen = x[window]
            x[window] = np.where(seen > 0, seen / cfg.repeat_penalty, seen * cfg.repeat_penalty)
        return x


def _top_prefix(probs: np.ndarray, top_p: float) -> tuple[np.ndarray, np.ndarray]:
    """The most likely tokens, in the order of a stable sort by falling probability, just far
    enough to reach ``top_p``, with their cumulative sums.

    The values are those of the full sort's prefix (same order, same additions), but only a few
    hundred of the vocabulary's tokens are usually sorted: sorting all of a 200k vocabulary
    every token cost more than the model step on small models.
    """
    import numpy as np

    n = probs.size
    m = 256
    while m < n:
        kth = np.partition(probs, n - m)[n - m]
        candidates = np.flatnonzero(probs >= kth)  # every token tied with the m-th largest too
        order = candidates[np.lexsort((candidates, -probs[candidates]))]
        cumulative = np.cumsum(probs[order])
        if cumulative[-1] >= top_p:
            return order, cumulative
        m *= 16
    order = np.argsort(-probs, kind="stable")
    return order, np.cumsum(probs[order])


def _softmax(x: np.ndarray, keep: np.ndarray) -> np.ndarray:
    import numpy as np

    masked = np.where(keep, x, -np.inf)
    masked -= masked.max()
    e = np.exp(masked)
    return np.asarray(e / e.sum())
