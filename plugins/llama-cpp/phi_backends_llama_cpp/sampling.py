""":class:`~phi_backends.SamplingConfig` as llama.cpp's native sampler chain.

The chain is built in the order the config documents (penalty, temperature, top-k, top-p,
min-p, then a seeded draw); each native sampler is used only where its meaning is the
documented one. :func:`sampling_probabilities` runs the very chain the engine samples with on
given logits, so that tests can compare it with :class:`~phi_backends.sampling.ReferenceSampler`
and with the other backends.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

import llama_cpp
import numpy as np

from phi_backends import SamplingConfig

from .options import DEFAULT_MAX_CTX

__all__ = ["sampler_chain", "sampling_probabilities"]


def sampler_chain(config: SamplingConfig, seed: int, *, vocab_size: int, context_length: int) -> Any:
    """A new native chain (free it with ``llama_sampler_free``) meaning exactly ``config``."""
    params = llama_cpp.llama_sampler_chain_default_params()
    params.no_perf = True
    chain = llama_cpp.llama_sampler_chain_init(params)
    add = llama_cpp.llama_sampler_chain_add
    window = context_length if config.repeat_last_n == -1 else config.repeat_last_n
    if config.penalizes:
        # Only sampled tokens are ever passed to accept(), so the window never sees the prompt.
        add(chain, llama_cpp.llama_sampler_init_penalties(vocab_size, window, config.repeat_penalty, 0.0, 0.0))
    if config.greedy:
        add(chain, llama_cpp.llama_sampler_init_greedy())
        return chain
    add(chain, llama_cpp.llama_sampler_init_temp(config.temperature))
    if config.top_k:
        add(chain, llama_cpp.llama_sampler_init_top_k(config.top_k))
    if config.top_p is not None and config.top_p < 1.0:
        add(chain, llama_cpp.llama_sampler_init_top_p(config.top_p, 1))
    if config.min_p:
        add(chain, llama_cpp.llama_sampler_init_min_p(config.min_p, 1))
    add(chain, llama_cpp.llama_sampler_init_dist(seed))
    return chain


def sampling_probabilities(
    config: SamplingConfig,
    logits: np.ndarray,
    history: Sequence[int],
    *,
    seed: int = 0,
    context_length: int = DEFAULT_MAX_CTX,
) -> tuple[np.ndarray, int]:
    """What the engine's chain does with ``logits`` after generating ``history``.

    Returns the distribution the next token is drawn from (float64, zeros for the tokens the
    filters drop; one-hot for greedy decoding) and the token the chain draws with ``seed``.
    """
    n = int(logits.size)
    chain = sampler_chain(config, seed, vocab_size=n, context_length=context_length)
    try:
        for token in history:
            llama_cpp.llama_sampler_accept(chain, int(token))
        data = (llama_cpp.llama_token_data * n)()
        view = np.ctypeslib.as_array(data)
        view["id"] = np.arange(n)
        view["logit"] = np.asarray(logits, dtype=np.float32).reshape(-1)
        view["p"] = 0.0
        array = llama_cpp.llama_token_data_array(data=data, size=n, selected=-1, sorted=False)
        llama_cpp.llama_sampler_apply(chain, ctypes.byref(array))
        kept = view[: array.size]
        token = int(view["id"][array.selected])
    finally:
        llama_cpp.llama_sampler_free(chain)
    probs = np.zeros(n)
    if config.greedy:
        probs[token] = 1.0
        return probs, token
    values = kept["logit"].astype(np.float64)  # the tempered logits of the tokens left
    e = np.exp(values - values.max())
    probs[kept["id"]] = e / e.sum()
    return probs, token
