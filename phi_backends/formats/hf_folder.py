"""The :class:`~phi_backends.backend.EngineInfo` of a Hugging Face model folder, for any engine.

ONNX Runtime GenAI and MLX folders both carry the model's tokenizer files and chat template;
what those say does not depend on the engine that loads the weights, so it is read the same way
here: the BOS and EOS tokens, whether a prompt starts with BOS, SentencePiece's leading space,
and the folder's own (untrusted) template. The engine passes what only it knows: its context
window, its vocabulary size (weights may have padding rows past the tokenizer's ids), its own
end-of-sequence ids, its architecture name and its metadata.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..backend import EngineInfo
from .folder_template import folder_chat_template
from .hf_tokenizer import HFTokenizerFacts

__all__ = ["engine_info_from_folder", "folder_bos_token_id"]


def folder_bos_token_id(facts: HFTokenizerFacts, engine_bos_token_id: int | None) -> int | None:
    """The id a prompt starts with: the tokenizer files' BOS, else the one the engine's own config
    names (a folder may name its BOS only there)."""
    return facts.bos_token_id if facts.bos_token_id is not None else engine_bos_token_id


def engine_info_from_folder(
    folder: Path,
    facts: HFTokenizerFacts,
    *,
    bos_token_id: int | None,
    eos_token_ids: Iterable[int],
    context_length: int,
    vocab_size: int,
    architecture: str,
    metadata: Mapping[str, Any],
) -> EngineInfo:
    """``folder``'s EngineInfo. ``bos_token_id`` is the id the engine's ``tokenize`` puts first
    (:func:`folder_bos_token_id`); ``eos_token_ids`` are the engine's own, to which the tokenizer
    files' EOS is added, so generation stops at whichever of them the model ends with."""
    template, template_error = folder_chat_template(folder)
    eog = set(eos_token_ids)
    if facts.eos_token_id is not None:
        eog.add(facts.eos_token_id)
    return EngineInfo(
        context_length=context_length,
        vocab_size=vocab_size,
        add_bos=facts.add_bos and bos_token_id is not None,
        bos_token=facts.bos_token,
        eos_token=facts.eos_token,
        eog_token_ids=frozenset(eog),
        chat_template=template,
        chat_template_error=template_error,
        strip_leading_space=facts.strip_leading_space,
        architecture=architecture,
        metadata=metadata,
    )
