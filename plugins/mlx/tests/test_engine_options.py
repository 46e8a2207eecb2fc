"""Engine options with mlx-lm's meaning: context window, KV cache, prompt chunks, provider."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

import phi_backends as pb
from phi_backends.errors import ContextLengthError, OptionError, PhiBackendsWarning
from phi_backends.testing import GREEDY, HAIKU, SCRIPT_TEXT
from tests.bad_inputs import expect_api_error

LONG = "The quick brown fox jumps over the lazy dog. " * 12


def test_n_ctx_sets_the_window_the_core_enforces(tiny_phi3_mlx: Path) -> None:
    with pb.load(str(tiny_phi3_mlx), backend="mlx", n_ctx=64) as gen:
        assert gen.info.context_length == 64 and gen.info.metadata["n_ctx_train"] == 4096
        with pytest.raises(ContextLengthError) as caught:
            gen.stream(LONG, GREEDY, template=None)
        what = "a prompt longer than the context window (mlx n_ctx=64)"
        expect_api_error(caught.value, ContextLengthError, "context window is 64", what=what)
        assert gen.generate(HAIKU, GREEDY).text == SCRIPT_TEXT


@pytest.mark.parametrize(
    "options",
    [
        {"prefill_step_size": 7},  # the prompt in several chunks
        {"max_kv_size": 32},  # a rotating cache shorter than the prompt
    ],
    ids=["prefill-chunks", "rotating-cache"],
)
def test_kv_and_prefill_options_still_follow_the_script(tiny_phi3_mlx: Path, options: dict[str, object]) -> None:
    """The scripted answer only depends on the last prompt token, so it survives each of these."""
    with pb.load(str(tiny_phi3_mlx), backend="mlx", **options) as gen:
        prompt = [{"role": "user", "content": LONG}]
        assert len(gen.prompt_ids(prompt)) > 64
        assert gen.generate(prompt, GREEDY).text == SCRIPT_TEXT


def test_provider_is_refused(tiny_phi3_mlx: Path) -> None:
    """`provider` is ONNX Runtime's; MLX used to drop it silently."""
    with pytest.raises(OptionError) as caught:
        pb.load(str(tiny_phi3_mlx), backend="mlx", provider="cpu")
    expect_api_error(
        caught.value, OptionError, "the mlx backend has no option 'provider'", "--backend onnx", what="mlx provider=cpu"
    )


def test_n_ctx_beyond_the_training_context_warns(tiny_phi3_mlx: Path) -> None:
    with pytest.warns(PhiBackendsWarning, match="n_ctx=8192 is beyond the 4096 tokens this model was trained on"):
        gen = pb.load(str(tiny_phi3_mlx), backend="mlx", n_ctx=8192)
    with gen:
        assert gen.generate(HAIKU, GREEDY).text == SCRIPT_TEXT


def test_n_ctx_within_the_training_context_is_quiet(tiny_phi3_mlx: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", PhiBackendsWarning)
        with pb.load(str(tiny_phi3_mlx), backend="mlx", n_ctx=4096) as gen:
            assert gen.info.context_length == 4096


def test_verbose_is_refused(tiny_phi3_mlx: Path) -> None:
    """The CLI's --verbose shows an engine's own log; MLX has none, and says so."""
    with pytest.raises(OptionError) as caught:
        pb.load(str(tiny_phi3_mlx), backend="mlx", verbose=True)
    expect_api_error(caught.value, OptionError, "no engine log", "drop --verbose", what="mlx verbose=True")


def test_kv_bits_needs_a_head_size_the_group_divides(tiny_phi3_mlx: Path) -> None:
    """mx.quantize would fail in the middle of generating; refuse at load instead."""
    with pytest.raises(OptionError) as caught:
        pb.load(str(tiny_phi3_mlx), backend="mlx", kv_bits=8, kv_group_size=32)
    what = "mlx options kv_bits=8, kv_group_size=32 on a model whose head size is 16"
    expect_api_error(caught.value, OptionError, "head size 16", "leave kv_bits unset", what=what)


def test_quantized_kv_cache_on_a_real_model(smollm2_mlx: Path) -> None:
    """An 8-bit KV cache from the first token changes SmolLM2's greedy start by nothing."""
    cfg = pb.SamplingConfig(temperature=0, repeat_penalty=1.0, max_tokens=5)
    prompt = "The capital of France is"
    with pb.load(str(smollm2_mlx), backend="mlx") as plain:
        want = plain.generate(prompt, cfg, template=None).token_ids
    with pb.load(str(smollm2_mlx), backend="mlx", kv_bits=8, quantized_kv_start=0) as quantized:
        assert quantized.info.metadata["kv_bits"] == 8
        assert quantized.generate(prompt, cfg, template=None).token_ids == want
