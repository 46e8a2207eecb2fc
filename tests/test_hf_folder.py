"""EngineInfo from a Hugging Face folder: what the folder's files say, the same for every engine
that loads one (ONNX Runtime GenAI, MLX); what only the engine knows is passed in as is."""

from __future__ import annotations

import json
from pathlib import Path

from phi_backends.formats.hf_folder import engine_info_from_folder, folder_bos_token_id
from phi_backends.formats.hf_tokenizer import read_hf_tokenizer
from tests.test_hf_tokenizer import byte_level_folder, spm_folder

TEMPLATE = "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}<|end|>\n{% endfor %}"


def test_a_sentencepiece_folder_with_bos_and_a_template(tmp_path: Path) -> None:
    folder = spm_folder(tmp_path, {"bos_token": "<s>", "eos_token": "</s>", "chat_template": TEMPLATE})
    facts = read_hf_tokenizer(folder)
    bos = folder_bos_token_id(facts, 99)
    info = engine_info_from_folder(
        folder,
        facts,
        bos_token_id=bos,
        eos_token_ids={32007},
        context_length=4096,
        vocab_size=32064,
        architecture="phi3",
        metadata={"engine": "test"},
    )
    assert bos == 1, "the tokenizer files' BOS comes before the engine's"
    assert (info.add_bos, info.bos_token, info.eos_token) == (True, "<s>", "</s>")
    assert info.eog_token_ids == {2, 32007}, "the engine's EOS ids and the files' EOS"
    assert (info.chat_template, info.chat_template_error) == (TEMPLATE, None)
    assert info.strip_leading_space
    assert (info.context_length, info.vocab_size, info.architecture) == (4096, 32064, "phi3")
    assert dict(info.metadata) == {"engine": "test"}


def test_a_byte_level_folder_without_bos(tmp_path: Path) -> None:
    folder = byte_level_folder(tmp_path)
    facts = read_hf_tokenizer(folder)
    assert folder_bos_token_id(facts, None) is None
    assert folder_bos_token_id(facts, 7) == 7, "the engine's config may name the BOS the files do not"
    info = engine_info_from_folder(
        folder,
        facts,
        bos_token_id=None,
        eos_token_ids=(),
        context_length=8192,
        vocab_size=12,
        architecture="llama",
        metadata={},
    )
    assert (info.add_bos, info.bos_token, info.eos_token) == (False, None, "<|im_end|>")
    assert info.eog_token_ids == {2}
    assert (info.chat_template, info.chat_template_error) == (None, None)
    assert not info.strip_leading_space


def test_a_broken_template_file_is_reported_not_fatal(tmp_path: Path) -> None:
    folder = spm_folder(tmp_path)
    (folder / "chat_template.json").write_text(json.dumps(["not", "a", "template"]), encoding="utf-8")
    facts = read_hf_tokenizer(folder)
    info = engine_info_from_folder(
        folder,
        facts,
        bos_token_id=facts.bos_token_id,
        eos_token_ids=(),
        context_length=512,
        vocab_size=facts.vocab_size,
        architecture="",
        metadata={},
    )
    assert info.chat_template is None
    assert info.chat_template_error is not None and "chat_template.json" in info.chat_template_error
