"""Reading token bytes and special tokens from Hugging Face tokenizer folders.

The folders here are written in the `tokenizers` library's own JSON shapes (byte-level BPE as
GPT-2/SmolLM2 save it, SentencePiece-style BPE as Llama/Phi-3 save it, Unigram). The full
vocabularies of the real test models are compared against the `tokenizers` library itself in
the ONNX and MLX plugin sessions, where it is installed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from phi_backends.errors import ModelFormatError
from phi_backends.formats.hf_tokenizer import read_hf_tokenizer
from phi_backends.streaming import Detokenizer
from tests.bad_inputs import expect_api_error

BYTE_LEVEL_DECODER = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
SPM_DECODER = {
    "type": "Sequence",
    "decoders": [
        {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
        {"type": "ByteFallback"},
        {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0},
    ],
}
BOS_POST = {
    "type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
    "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}},
}


def added(token_id: int, content: str, special: bool = True) -> dict[str, Any]:
    return {"id": token_id, "content": content, "special": special, "lstrip": False, "rstrip": False}


def write(folder: Path, tokenizer: dict[str, Any], config: dict[str, Any] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    if config is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def byte_level_folder(tmp_path: Path) -> Path:
    # GPT-2's printable stand-ins: "Ġ" is a space, "Ċ" a newline, "ðŁ" "ı" "Ĵ" the bytes of 🏒, "Ã" "©" of é
    vocab = {"<|im_end|>": 2, "Ġhockey": 3, "Ċ": 4, "ðŁ": 5, "ı": 6, "Ĵ": 7, "Ice": 8, "©": 9, "Ã": 10}
    tokenizer = {
        "added_tokens": [added(2, "<|im_end|>"), added(11, "[note]", special=False)],
        "decoder": BYTE_LEVEL_DECODER,
        "post_processor": {"type": "ByteLevel"},
        "model": {"type": "BPE", "vocab": vocab, "merges": []},
    }
    return write(tmp_path / "bpe", tokenizer, {"bos_token": None, "eos_token": {"content": "<|im_end|>"}})


def spm_folder(tmp_path: Path, config: dict[str, Any] | None = None) -> Path:
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<0x0A>": 3, "<0xF0>": 4, "<0x9F>": 5, "\u2581Ice": 6, "\u2581hockey": 7}
    tokenizer = {
        "added_tokens": [added(0, "<unk>"), added(1, "<s>"), added(2, "</s>"), added(32007, "<|end|>")],
        "decoder": SPM_DECODER,
        "post_processor": BOS_POST,
        "model": {"type": "BPE", "vocab": vocab, "merges": [], "byte_fallback": True},
    }
    return write(
        tmp_path / "spm", tokenizer, config if config is not None else {"bos_token": "<s>", "eos_token": "</s>"}
    )


def test_byte_level_pieces_map_back_to_bytes(tmp_path: Path) -> None:
    facts = read_hf_tokenizer(byte_level_folder(tmp_path))
    assert facts.token_bytes[3] == b" hockey" and facts.token_bytes[4] == b"\n"
    assert facts.token_bytes[5] + facts.token_bytes[6] + facts.token_bytes[7] == "🏒".encode()
    assert facts.token_bytes[10] + facts.token_bytes[9] == "é".encode()
    assert facts.token_bytes[2] == b"", "a special token stands for no text"
    assert facts.token_bytes[11] == b"[note]", "a non-special added token stands for its content"
    assert facts.eos_token == "<|im_end|>" and facts.eos_token_id == 2
    assert facts.bos_token_id is None and not facts.add_bos and not facts.strip_leading_space
    assert facts.vocab_size == 12 and facts.token_bytes[1] == b"" and facts.special_ids == {2}


def test_split_character_streams_whole(tmp_path: Path) -> None:
    facts = read_hf_tokenizer(byte_level_folder(tmp_path))
    detok = Detokenizer(facts.token_bytes.__getitem__)
    pieces = [detok.add(i) for i in (8, 3, 5, 6, 7)]
    assert pieces == ["Ice", " hockey", "", "", "🏒"]


def test_sentencepiece_spaces_byte_fallback_and_bos(tmp_path: Path) -> None:
    facts = read_hf_tokenizer(spm_folder(tmp_path))
    assert facts.token_bytes[6] == b" Ice" and facts.token_bytes[7] == b" hockey"
    assert facts.token_bytes[3] == b"\n" and facts.token_bytes[4] == b"\xf0"
    assert facts.token_bytes[32007] == b"" and 32007 in facts.special_ids
    assert facts.strip_leading_space, "the Strip decoder drops the first piece's space"
    assert facts.add_bos and facts.bos_token_id == 1, "the post-processor puts <s> first"
    assert facts.eos_token_id == 2 and facts.vocab_size == 32008
    assert facts.token_bytes[100] == b"", "unused ids stand for no text"


def test_tokenizer_config_add_bos_overrides_post_processor(tmp_path: Path) -> None:
    facts = read_hf_tokenizer(spm_folder(tmp_path, {"bos_token": "<s>", "add_bos_token": False}))
    assert not facts.add_bos


def test_metaspace_decoder_and_unigram(tmp_path: Path) -> None:
    tokenizer = {
        "added_tokens": [added(0, "<pad>")],
        "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
        "model": {"type": "Unigram", "unk_id": 1, "vocab": [["<pad>", 0.0], ["<unk>", 0.0], ["\u2581Grüße", -1.5]]},
    }
    facts = read_hf_tokenizer(write(tmp_path / "uni", tokenizer))
    assert facts.token_bytes[2] == " Grüße".encode() and facts.strip_leading_space and facts.model_type == "Unigram"


def test_changed_file_is_read_again(tmp_path: Path) -> None:
    folder = byte_level_folder(tmp_path)
    assert read_hf_tokenizer(folder).eos_token_id == 2
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "Ċ"}), encoding="utf-8")
    data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    data["model"]["vocab"]["extra"] = 12
    (folder / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    facts = read_hf_tokenizer(folder)
    assert facts.eos_token_id == 4 and facts.vocab_size == 13


@pytest.mark.parametrize(
    ("what", "content", "message"),
    [
        ("a model folder without tokenizer.json", None, "has no tokenizer.json"),
        ("an empty tokenizer.json", b"", "not valid JSON"),
        ("a tokenizer.json that is not JSON", b"{not json", "not valid JSON"),
        ("a tokenizer.json holding a JSON list", b"[1, 2]", "should hold a JSON object"),
        ("a tokenizer.json whose model is not a table", b'{"model": 3}', "no 'model' table"),
        ("a tokenizer.json of an unknown tokenizer model", b'{"model": {"type": "WordPieceX", "vocab": {}}}',
         "unsupported tokenizer model"),
        ("a tokenizer.json with a negative token id", b'{"model": {"type": "BPE", "vocab": {"a": -1}}}', "has id -1"),
        ("a tokenizer.json with an added token that has no id",
         b'{"model": {"type": "BPE", "vocab": {}}, "added_tokens": [{"content": "x"}]}', "malformed added token"),
        ("a tokenizer.json that is not UTF-8", b"\xff\xfe garbage", "not valid JSON"),
        ("a tokenizer.json nested 100,000 lists deep", b"[" * 100_000 + b"]" * 100_000, "JSON"),
    ],
)  # fmt: skip
def test_bad_tokenizer_files_are_one_line_errors(
    tmp_path: Path, what: str, content: bytes | None, message: str
) -> None:
    tmp_path.mkdir(exist_ok=True)
    if content is not None:
        (tmp_path / "tokenizer.json").write_bytes(content)
    with pytest.raises(ModelFormatError) as info:
        read_hf_tokenizer(tmp_path)
    expect_api_error(info.value, ModelFormatError, message, str(tmp_path), what=what)
