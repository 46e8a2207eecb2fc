"""The same messages give the same prompt ids here as on llama.cpp, for the same tokenizer.

Both backends render through the core's one template layer; each engine then tokenizes the
rendered text with its own tokenizer (llama.cpp's from the GGUF, onnxruntime-genai's from
``tokenizer.json``). This session installs llama.cpp too, so the comparison is on the real
engines. Known divergence, left out on purpose: for SentencePiece-derived BPE vocabularies a
run of several spaces is split differently (``▁▁`` vs ``▁`` ``▁word``), so no message below has
one; issue 5's parity report measures it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import phi_backends as pb

MESSAGES = [
    [{"role": "user", "content": "Write a haiku about ice hockey"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is ice slippery?"}],
    [
        {"role": "user", "content": "Name a hockey team."},
        {"role": "assistant", "content": "The Montreal Canadiens."},
        {"role": "user", "content": "Another one, from 1967?"},
    ],
    [{"role": "user", "content": "Grüße, 世界! नमस्ते Γειά σου 🏒 — done.\nNew line,\ttab."}],
]


@pytest.mark.parametrize("model", ["tiny_phi3", "smollm2"])
def test_prompt_ids_match_llama_cpp(request: pytest.FixtureRequest, model: str) -> None:
    gguf: Path = request.getfixturevalue(model)
    folder: Path = request.getfixturevalue(f"{model}_onnx")
    with pb.load(str(gguf), backend="llama-cpp") as llama, pb.load(str(folder), backend="onnx") as onnx:
        assert onnx.template is not None and llama.template is not None
        assert onnx.template.name == llama.template.name
        for messages in MESSAGES:
            assert onnx.render(messages) == llama.render(messages)
            assert onnx.prompt_ids(messages) == llama.prompt_ids(messages), messages
