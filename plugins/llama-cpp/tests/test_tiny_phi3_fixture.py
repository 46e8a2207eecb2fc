"""The tiny Phi-3 fixture, checked through the real llama.cpp engine (no mocks).

``llama_cpp`` is imported at module level on purpose: without the engine these tests fail.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from tests.fixtures.tiny_phi3 import (
    ASSISTANT_ID,
    BOS_ID,
    CHAT_TEMPLATE,
    END_ID,
    ENDOFTEXT_ID,
    NEWLINE_ID,
    SCRIPT_IDS,
    SCRIPT_TEXT,
    USER_ID,
    VOCAB_SIZE,
    with_chat_template,
)

PROMPT = "<|user|>\nHi<|end|>\n<|assistant|>\n"
HI_ID = 15359  # '▁Hi'


@pytest.fixture(scope="session")
def llm(tiny_phi3: Path) -> Iterator[llama_cpp.Llama]:
    model = llama_cpp.Llama(model_path=str(tiny_phi3), n_ctx=512, verbose=False)
    yield model
    model.close()


def last_logits(llm: llama_cpp.Llama) -> np.ndarray:
    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(llm.n_vocab(),)).copy()


def greedy_ids(llm: llama_cpp.Llama, prompt_ids: list[int], max_tokens: int = 20) -> list[int]:
    """Argmax decoding over raw logits, stopping after the first end-of-generation token."""
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    llm.reset()
    llm.eval(prompt_ids)
    out: list[int] = []
    for _ in range(max_tokens):
        tok = int(np.argmax(last_logits(llm)))
        out.append(tok)
        if llama_cpp.llama_vocab_is_eog(vocab, tok):
            break
        llm.eval([tok])
    return out


def test_metadata(llm: llama_cpp.Llama) -> None:
    assert llm.metadata["general.architecture"] == "phi3"
    assert llm.metadata["general.name"] == "tiny-phi3"
    assert llm.metadata["tokenizer.ggml.model"] == "llama"
    assert llm.metadata["tokenizer.chat_template"] == CHAT_TEMPLATE
    assert llm.n_vocab() == VOCAB_SIZE
    assert llm.token_bos() == BOS_ID and llm.token_eos() == ENDOFTEXT_ID


def test_chat_prompt_tokenization(llm: llama_cpp.Llama) -> None:
    ids = llm.tokenize(PROMPT.encode(), add_bos=True, special=True)
    # Special tokens are single ids. llama.cpp marks every special token of a model whose name
    # contains "phi3" as right-stripping (as for the real Phi-3 GGUFs), so the "\n" after
    # <|user|>, <|end|> and <|assistant|> disappears and the prompt ends with <|assistant|>.
    assert ids == [BOS_ID, USER_ID, HI_ID, END_ID, ASSISTANT_ID]
    assert [llm.detokenize([i], special=True) for i in ids] == [
        b"<s>",
        b"<|user|>",
        b" Hi",
        b"<|end|>",
        b"<|assistant|>",
    ]
    # Without special=True the markers are plain text.
    assert USER_ID not in llm.tokenize(PROMPT.encode(), add_bos=True, special=False)


def test_script_tokenization_matches_sentencepiece(llm: llama_cpp.Llama) -> None:
    assert llm.tokenize(SCRIPT_TEXT.encode(), add_bos=False) == list(SCRIPT_IDS)
    assert llm.detokenize(list(SCRIPT_IDS)).decode().strip() == SCRIPT_TEXT


def test_end_of_generation_tokens(llm: llama_cpp.Llama) -> None:
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    eog = {i for i in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, i)}
    assert END_ID in eog and ENDOFTEXT_ID in eog
    # llama.cpp does not treat <|assistant|> as end of generation (Phi-3's generation config does).
    assert ASSISTANT_ID not in eog


def test_greedy_completion_is_the_script_and_stops_at_end(llm: llama_cpp.Llama) -> None:
    llm.reset()
    result = llm.create_completion(PROMPT, max_tokens=20, temperature=0)
    choice = result["choices"][0]
    assert choice["text"].strip() == SCRIPT_TEXT
    assert choice["finish_reason"] == "stop"
    assert result["usage"]["completion_tokens"] == len(SCRIPT_IDS)


@pytest.mark.parametrize(
    "prompt_tail",
    [
        pytest.param([ASSISTANT_ID], id="llama.cpp-tokenized"),
        pytest.param([ASSISTANT_ID, NEWLINE_ID], id="newline-kept"),
    ],
)
def test_greedy_ids_follow_the_script(llm: llama_cpp.Llama, prompt_tail: list[int]) -> None:
    prompt = [BOS_ID, USER_ID, HI_ID, END_ID, *prompt_tail]
    assert greedy_ids(llm, prompt) == [*SCRIPT_IDS, END_ID]


def test_greedy_script_survives_a_long_unrelated_context(llm: llama_cpp.Llama) -> None:
    body = llm.tokenize(("The quick brown fox jumps over the lazy dog. " * 30).encode(), add_bos=False)
    prompt = [BOS_ID, USER_ID, *body, END_ID, ASSISTANT_ID]
    assert greedy_ids(llm, prompt) == [*SCRIPT_IDS, END_ID]


def test_temperature_one_sampling_varies_and_runs_on(llm: llama_cpp.Llama) -> None:
    texts, reasons = [], []
    for seed in range(1, 7):
        llm.reset()
        result = llm.create_completion(PROMPT, max_tokens=32, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=seed)
        texts.append(result["choices"][0]["text"])
        reasons.append(result["choices"][0]["finish_reason"])
    assert len(set(texts)) >= 5, texts
    assert reasons.count("length") >= 5, list(zip(texts, reasons, strict=True))


def test_with_chat_template_replaces_only_the_template(tiny_phi3: Path, tmp_path: Path) -> None:
    copy = with_chat_template(tiny_phi3, tmp_path / "copy.gguf", "{{ messages[0]['content'] }}")
    other = llama_cpp.Llama(model_path=str(copy), n_ctx=512, verbose=False)
    try:
        assert other.metadata["tokenizer.chat_template"] == "{{ messages[0]['content'] }}"
        assert other.metadata["general.name"] == "tiny-phi3"
        assert greedy_ids(other, [BOS_ID, USER_ID, HI_ID, END_ID, ASSISTANT_ID]) == [*SCRIPT_IDS, END_ID]
    finally:
        other.close()
