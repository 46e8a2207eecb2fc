"""The Hugging Face test-model folders (tests/fixtures/hf_models.py), checked without any engine.

The folders are built by ``nox -s fixtures`` (torch, transformers), whose builds verify what
needs an engine (the tiny Phi-3 says its script under torch, onnxruntime-genai and mlx-lm). Here,
in the core session: the files, the configs, the tokenizers' special ids and templates, that the
safetensors hold exactly the GGUFs' weights (read with numpy and gguf, llama.cpp's own reader),
and the cache (keys, atomic builds, the one-line error when a build is impossible).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import sentencepiece as spm

from phi_backends.formats.folder_template import read_folder_template
from phi_backends.formats.gguf import read_gguf
from tests.fixtures import hf_models
from tests.fixtures import tiny_phi3 as tiny

HF_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
)


def _json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _safetensors(path: Path) -> dict[str, np.ndarray]:
    """The float32 tensors of a safetensors file, read by hand (no torch, no safetensors)."""
    with path.open("rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    header.pop("__metadata__", None)
    raw = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_len)
    tensors = {}
    for name, entry in header.items():
        assert entry["dtype"] == "F32", f"{name} is {entry['dtype']}, not float32"
        begin, end = entry["data_offsets"]
        tensors[name] = raw[begin:end].view("<f4").reshape(entry["shape"])
    return tensors


def _gguf_tensors(path: Path, names: set[str]) -> dict[str, np.ndarray]:
    """Tensors of a GGUF as float32, dequantized by gguf's numpy code (what transformers uses)."""
    info = read_gguf(path)
    tensors = {}
    for t in info.tensors:
        if t.name not in names:
            continue
        rows = t.n_elements // t.shape[0]
        raw = np.memmap(path, dtype=np.uint8, mode="r", offset=info.data_offset + t.offset, shape=(t.nbytes,))
        data = gguf.quants.dequantize(raw.reshape(rows, -1), gguf.GGMLQuantizationType(t.ggml_type))
        tensors[t.name] = data.reshape(tuple(reversed(t.shape)))
    return tensors


def _added_tokens(folder: Path) -> dict[int, dict[str, Any]]:
    return {entry["id"]: entry for entry in _json(folder / "tokenizer.json")["added_tokens"]}


# -- the folders ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["smollm2_hf", "tiny_phi3_hf"])
def test_folder_has_the_files_and_no_gguf_leftovers(fixture: str, request: pytest.FixtureRequest) -> None:
    folder: Path = request.getfixturevalue(fixture)
    for name in HF_FILES:
        assert (folder / name).is_file(), f"{folder} has no {name}"
    config = _json(folder / "config.json")
    assert "quantization_config" not in config
    assert config["dtype"] == "float32"


def test_smollm2_config_and_tokenizer(smollm2_hf: Path, smollm2: Path) -> None:
    config = _json(smollm2_hf / "config.json")
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["vocab_size"], config["hidden_size"], config["num_hidden_layers"]) == (49152, 576, 30)
    assert config["tie_word_embeddings"] is True
    assert config["eos_token_id"] == 2
    assert _json(smollm2_hf / "generation_config.json")["eos_token_id"] == 2

    added = _added_tokens(smollm2_hf)
    assert added[2]["content"] == "<|im_end|>" and added[2]["special"]
    assert added[1]["content"] == "<|im_start|>" and added[1]["special"]
    tokenizer_config = _json(smollm2_hf / "tokenizer_config.json")
    assert tokenizer_config["eos_token"] == "<|im_end|>"
    assert tokenizer_config["add_bos_token"] is False

    template = read_folder_template(smollm2_hf)
    assert template.source == read_gguf(smollm2).chat_template == tokenizer_config["chat_template"]
    assert template.eos_token == "<|im_end|>"


def test_smollm2_weights_are_the_gguf_dequantized(smollm2_hf: Path, smollm2: Path) -> None:
    # q/k are stored permuted in a llama GGUF; the others map one to one.
    pairs = {
        "token_embd.weight": "model.embed_tokens.weight",
        "output_norm.weight": "model.norm.weight",
        "blk.0.attn_norm.weight": "model.layers.0.input_layernorm.weight",
        "blk.0.attn_v.weight": "model.layers.0.self_attn.v_proj.weight",
        "blk.0.attn_output.weight": "model.layers.0.self_attn.o_proj.weight",
        "blk.29.ffn_gate.weight": "model.layers.29.mlp.gate_proj.weight",
        "blk.29.ffn_up.weight": "model.layers.29.mlp.up_proj.weight",
        "blk.29.ffn_down.weight": "model.layers.29.mlp.down_proj.weight",
    }
    saved = _safetensors(smollm2_hf / "model.safetensors")
    assert "lm_head.weight" not in saved  # tied to the embeddings, as in SmolLM2
    assert len(saved) == 2 + 30 * 9
    source = _gguf_tensors(smollm2, set(pairs))
    for gguf_name, hf_name in pairs.items():
        np.testing.assert_array_equal(saved[hf_name], source[gguf_name], err_msg=hf_name)


def test_tiny_phi3_config(tiny_phi3_hf: Path) -> None:
    config = _json(tiny_phi3_hf / "config.json")
    assert config["architectures"] == ["Phi3ForCausalLM"]
    assert config["vocab_size"] == tiny.VOCAB_SIZE
    assert (config["hidden_size"], config["num_hidden_layers"]) == (tiny.N_EMBD, tiny.N_LAYER)
    assert (config["num_attention_heads"], config["intermediate_size"]) == (tiny.N_HEAD, tiny.N_FF)
    assert config["tie_word_embeddings"] is False
    assert (config["bos_token_id"], config["eos_token_id"]) == (tiny.BOS_ID, tiny.EOS_ID)
    assert _json(tiny_phi3_hf / "generation_config.json")["eos_token_id"] == list(tiny.EOT_IDS)


def test_tiny_phi3_weights_are_the_gguf(tiny_phi3_hf: Path, tiny_phi3: Path) -> None:
    pairs = {
        "token_embd.weight": "model.embed_tokens.weight",
        "output_norm.weight": "model.norm.weight",
        "output.weight": "lm_head.weight",
    }
    for i in range(tiny.N_LAYER):
        prefix = f"model.layers.{i}."
        pairs |= {
            f"blk.{i}.attn_norm.weight": prefix + "input_layernorm.weight",
            f"blk.{i}.attn_qkv.weight": prefix + "self_attn.qkv_proj.weight",
            f"blk.{i}.attn_output.weight": prefix + "self_attn.o_proj.weight",
            f"blk.{i}.ffn_norm.weight": prefix + "post_attention_layernorm.weight",
            f"blk.{i}.ffn_up.weight": prefix + "mlp.gate_up_proj.weight",
            f"blk.{i}.ffn_down.weight": prefix + "mlp.down_proj.weight",
        }
    saved = _safetensors(tiny_phi3_hf / "model.safetensors")
    source = _gguf_tensors(tiny_phi3, set(pairs))
    assert set(saved) == set(pairs.values())
    for gguf_name, hf_name in pairs.items():
        np.testing.assert_array_equal(saved[hf_name], source[gguf_name], err_msg=hf_name)


def test_tiny_phi3_tokenizer_has_phi3_shape(tiny_phi3_hf: Path) -> None:
    data = _json(tiny_phi3_hf / "tokenizer.json")
    vocab = data["model"]["vocab"]
    sp = spm.SentencePieceProcessor(model_file=str(tiny.tokenizer_model_path()))
    assert vocab == {sp.id_to_piece(i): i for i in range(tiny.SP_VOCAB_SIZE)}
    assert data["model"]["byte_fallback"] is True

    added = _added_tokens(tiny_phi3_hf)
    assert sorted(added) == [0, 1, 2, *(i for i, _ in tiny.ADDED_TOKENS)]
    for token_id, content in tiny.ADDED_TOKENS:
        entry = added[token_id]
        assert (entry["content"], entry["special"], entry["normalized"]) == (content, True, False)
        # Phi-3-mini: all but <|endoftext|> swallow the whitespace after them
        assert entry["rstrip"] is (token_id != tiny.ENDOFTEXT_ID)

    config = _json(tiny_phi3_hf / "tokenizer_config.json")
    assert (config["bos_token"], config["eos_token"], config["add_bos_token"]) == ("<s>", "<|endoftext|>", True)
    assert {int(k): v["content"] for k, v in config["added_tokens_decoder"].items()} == {
        i: entry["content"] for i, entry in added.items()
    }
    template = read_folder_template(tiny_phi3_hf)
    assert template.source == tiny.CHAT_TEMPLATE == config["chat_template"]
    assert (template.bos_token, template.eos_token) == ("<s>", "<|endoftext|>")


# -- the cache ------------------------------------------------------------------------------------


@pytest.fixture
def fake_smollm2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in input file for the "smollm2" key, and a copy of the module source to edit."""
    gguf_file = tmp_path / "input.gguf"
    gguf_file.write_bytes(b"GGUF one")
    source = tmp_path / "hf_models.py"
    source.write_bytes(Path(hf_models.__file__).read_bytes())
    monkeypatch.setattr(hf_models, "smollm2_gguf", lambda: gguf_file)
    monkeypatch.setattr(hf_models, "_HERE", source)
    return gguf_file


def test_keys_are_stable_and_follow_their_inputs(fake_smollm2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = {
        "hf": hf_models.hf_key("smollm2"),
        "onnx": hf_models.onnx_key("smollm2", "fp32"),
        "int4": hf_models.onnx_key("smollm2", "int4"),
        "mlx": hf_models.mlx_key("smollm2"),
    }
    assert len(set(keys.values())) == 4
    assert keys["hf"] == hf_models.hf_key("smollm2") != hf_models.hf_key("tiny_phi3")

    fake_smollm2.write_bytes(b"GGUF two, longer")  # another size: the memo of the digest is keyed on it
    assert hf_models.hf_key("smollm2") != keys["hf"]
    assert hf_models.onnx_key("smollm2", "fp32") != keys["onnx"]
    fake_smollm2.write_bytes(b"GGUF one")
    assert hf_models.hf_key("smollm2") == keys["hf"]

    source: Path = hf_models._HERE
    source.write_text(source.read_text(encoding="utf-8") + "# an edit\n", encoding="utf-8")
    assert hf_models.hf_key("smollm2") != keys["hf"]


def test_engine_version_is_in_onnx_and_mlx_keys(fake_smollm2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hf, onnx, mlx = hf_models.hf_key("smollm2"), hf_models.onnx_key("smollm2", "fp32"), hf_models.mlx_key("smollm2")
    monkeypatch.setattr(hf_models, "_version", lambda dist: "9.9.9")
    assert hf_models.hf_key("smollm2") == hf
    assert hf_models.onnx_key("smollm2", "fp32") != onnx
    assert hf_models.mlx_key("smollm2") != mlx


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown test model"):
        hf_models.hf_key("llama")
    with pytest.raises(ValueError, match="unknown ONNX precision"):
        hf_models.onnx_model("smollm2", "fp16")


def test_missing_build_deps_give_one_line(fake_smollm2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hf_models, "_importable", lambda module: module != "torch")
    cache = tmp_path / "cache"
    for build in (
        lambda: hf_models.smollm2_hf(cache),
        lambda: hf_models.onnx_model("smollm2", "int4", cache),
        lambda: hf_models.mlx_model("smollm2", quantized=True, cache_dir=cache),
    ):
        with pytest.raises(hf_models.FixtureUnavailable) as info:
            build()
        message = str(info.value)
        assert "\n" not in message
        assert "run `nox -s fixtures` first" in message and "torch" in message
    assert not cache.exists() or not any(cache.iterdir())


def test_builds_are_atomic_and_cached(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "model-0123"
    calls: list[Path] = []

    def failing(tmp: Path) -> None:
        calls.append(tmp)
        (tmp / "half.bin").write_bytes(b"x")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        hf_models._cached(target, {}, failing)
    assert not target.exists() and list(target.parent.iterdir()) == []

    def working(tmp: Path) -> None:
        calls.append(tmp)
        (tmp / "weights.bin").write_bytes(b"ok")

    assert hf_models._cached(target, {}, working) == target
    assert (target / "weights.bin").read_bytes() == b"ok"
    assert hf_models._cached(target, {}, working) == target
    assert len(calls) == 2 and all(call.parent == target.parent for call in calls)
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_cli_usage() -> None:
    assert hf_models.main(["gguf"]) == 2
    assert hf_models.main(["hf", "onnx"]) == 2


def test_prune_removes_only_folders_no_current_key_names(fake_smollm2: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    current = sorted(hf_models.current_folders(cache))
    stale = [cache / "smollm2-hf-0123456789abcdef", cache / "tiny_phi3-onnx-int4-fedcba9876543210"]
    others = [cache / "443d753862e9f8a2", cache / ".smollm2-hf-0123456789abcdef.x1.tmp", cache / "notes"]
    for folder in (*current, *stale, *others):
        folder.mkdir(parents=True)
    assert sorted(hf_models.prune(cache)) == sorted(stale)
    assert sorted(p for p in cache.iterdir()) == sorted([*current, *others])
