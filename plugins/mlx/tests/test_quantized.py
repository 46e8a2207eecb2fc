"""mlx-lm's 4-bit conversions load and answer (the same tokenizer facts as the float folders)."""

from __future__ import annotations

from pathlib import Path

import phi_backends as pb
from phi_backends.testing import GREEDY, HAIKU, SCRIPT_TEXT


def test_tiny_phi3_4bit_still_follows_the_script(tiny_phi3_mlx_4bit: Path, tiny_phi3_mlx: Path) -> None:
    """The script's margins survive 4-bit weights; everything but the weights matches the float folder."""
    with pb.load(str(tiny_phi3_mlx_4bit), backend="mlx") as q, pb.load(str(tiny_phi3_mlx), backend="mlx") as f:
        assert q.info.metadata["quantization"]["bits"] == 4 and f.info.metadata["quantization"] is None
        assert q.template is not None and q.template.name == "phi3"
        assert q.prompt_ids(HAIKU) == f.prompt_ids(HAIKU)
        assert q.info.eog_token_ids == f.info.eog_token_ids
        out = q.generate(HAIKU, GREEDY)
        assert out.text == SCRIPT_TEXT and out.finish_reason == "stop"


def test_smollm2_4bit_answers_briefly(smollm2_mlx_4bit: Path) -> None:
    with pb.load(str(smollm2_mlx_4bit), backend="mlx") as gen:
        assert gen.info.metadata["quantization"]["bits"] == 4 and gen.info.architecture == "llama"
        assert 2 in gen.info.eog_token_ids  # <|im_end|>
        out = gen.generate("What is 2 + 2?", pb.SamplingConfig(temperature=0, repeat_penalty=1.0, max_tokens=8))
        assert out.text.strip() and "<|im" not in out.text
        assert out.usage.completion_tokens == len(out.token_ids) > 0
