"""What the engine reads from a model folder: EngineInfo, end-of-turn ids, RoPE settings."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import mlx.core as mx
import numpy as np

import phi_backends as pb
from phi_backends.formats.hf_tokenizer import read_hf_tokenizer
from phi_backends.testing import PHI3_SPECIALS


def test_engine_info_from_the_folder(tiny_phi3_mlx: Path) -> None:
    config = json.loads((tiny_phi3_mlx / "config.json").read_text())
    generation = json.loads((tiny_phi3_mlx / "generation_config.json").read_text())
    with pb.load(str(tiny_phi3_mlx), backend="mlx") as gen:
        info = gen.info
        assert info.context_length == config["max_position_embeddings"]
        assert info.vocab_size == config["vocab_size"] == 32064
        assert info.architecture == "phi3" and info.add_bos and info.bos_token == "<s>"
        # what mlx-lm stops at: generation_config.json's eos_token_id, and the tokenizer's EOS
        assert set(generation["eos_token_id"]) | {32000} == info.eog_token_ids
        assert info.chat_template and "<|assistant|>" in info.chat_template
        assert info.strip_leading_space
        engine = gen._engine
        for text, token_id in PHI3_SPECIALS.items():
            assert engine.tokenize(text, add_bos=False) == [token_id]
            assert engine.token_bytes(token_id) == b""  # control tokens stand for no text
        facts = read_hf_tokenizer(tiny_phi3_mlx)
        assert engine.token_bytes(13) == facts.token_bytes[13] == b"\n"
        assert engine.token_bytes(32063) == b"", "a padding row past the tokenizer's ids"
        assert engine.tokenize("Hi", add_bos=True)[0] == 1 and engine.tokenize("Hi", add_bos=False)[0] != 1


def rope_variant(source: Path, target: Path, **config_changes: object) -> Path:
    target.mkdir()
    for item in source.iterdir():
        if item.suffix == ".safetensors":
            os.symlink(item, target / item.name)
        else:
            shutil.copyfile(item, target / item.name)
    config = json.loads((source / "config.json").read_text())
    config.pop("rope_theta", None)
    config.pop("rope_parameters", None)
    config.update(config_changes)
    (target / "config.json").write_text(json.dumps(config))
    return target


def last_logits(folder: Path, ids: list[int]) -> np.ndarray:
    with pb.load(str(folder), backend="mlx") as gen:
        model = gen._engine._model  # type: ignore[attr-defined]
        return np.array(model(mx.array([ids]))[0, -1])


def test_rope_theta_written_by_transformers_5_is_used(tiny_phi3_mlx: Path, tmp_path: Path) -> None:
    """transformers 5 nests rope_theta in rope_parameters; mlx-lm 0.32 alone would use 10000."""
    ids = list(range(100, 160))
    nested = rope_variant(
        tiny_phi3_mlx, tmp_path / "nested", rope_parameters={"rope_theta": 500.0, "rope_type": "default"}
    )
    top_level = rope_variant(tiny_phi3_mlx, tmp_path / "top", rope_theta=500.0)
    default = rope_variant(tiny_phi3_mlx, tmp_path / "default")
    want = last_logits(top_level, ids)
    np.testing.assert_array_equal(last_logits(nested, ids), want)
    assert np.abs(last_logits(default, ids) - want).max() > 1e-3, "rope_theta matters for these ids"
