"""The core's token-bytes table agrees with the Hugging Face tokenizer mlx-lm loads, on every id.

``phi_backends.formats.hf_tokenizer`` reads ``tokenizer.json`` itself (neither engine gives one token's
raw bytes); here every id of both test vocabularies is checked against transformers' own decode.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from phi_backends.formats.hf_tokenizer import read_hf_tokenizer


@pytest.mark.parametrize("model", ["smollm2_mlx", "tiny_phi3_mlx"])
def test_every_token_decodes_as_transformers_decodes_it(request: pytest.FixtureRequest, model: str) -> None:
    from transformers import AutoTokenizer

    folder: Path = request.getfixturevalue(model)
    facts = read_hf_tokenizer(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    assert facts.vocab_size >= len(tokenizer)
    mismatches = []
    for token_id in range(len(tokenizer)):
        if token_id in facts.special_ids:
            assert facts.token_bytes[token_id] == b""
            continue
        ours = facts.token_bytes[token_id]
        theirs = tokenizer.decode([token_id])
        if len(ours) == 1 and ours[0] >= 0x80:  # a lone byte of a multi-byte character
            continue
        text = ours.decode("utf-8", "replace")
        if facts.strip_leading_space:  # transformers drops a SentencePiece decode's first space
            text, theirs = text.lstrip(" "), theirs.lstrip(" ")
        if text != theirs:
            mismatches.append((token_id, ours, theirs))
    assert mismatches == []
    probe = "Grüße, 世界! नमस्ते Γειά σου 🏒 a\u0301 ice hockey"
    ids = tokenizer.encode(probe, add_special_tokens=False)
    assert b"".join(facts.token_bytes[i] for i in ids).decode().lstrip(" ") == probe
