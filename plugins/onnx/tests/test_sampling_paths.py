"""Each way the onnx backend chooses a token means exactly what SamplingConfig says.

Two paths (see phi_backends_onnx/engine.py):

- the engine's own argmax, for greedy decoding without a repetition penalty on CPU: proven here
  to pick what ReferenceSampler picks from the same logits, ties included;
- emulation: raw logits through ReferenceSampler, the chosen token forced on the engine. Proven
  here to give the tokens of an independent reference loop (ReferenceSampler + ``append_tokens``
  on a fresh og.Generator) for the same seed, whatever the settings.

And the folder's own search settings (genai_config.json "search") never leak into either path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime_genai as og
import pytest
from onnx_drive import drive
from phi_backends_onnx.engine import replace_last_token
from phi_backends_onnx.sampling import sampling_probabilities

import phi_backends as pb
from phi_backends.sampling import ReferenceSampler
from phi_backends.testing import SAMPLING_CONFIGS, SamplingContract
from phi_backends.testing.sampling import SamplingPath

GREEDY = pb.SamplingConfig(temperature=0.0, repeat_penalty=1.0)
STEPS = 24


def reference_tokens(engine: Any, prompt: Sequence[int], config: pb.SamplingConfig, seed: int, n: int) -> list[int]:
    """ReferenceSampler on the engine's raw logits, fed back with append_tokens: no forcing involved."""
    generator = og.Generator(engine._model, _params(engine._model, len(prompt) + n))
    generator.append_tokens(np.asarray(prompt, dtype=np.int32))
    sampler = ReferenceSampler(config, seed)
    out: list[int] = []
    for _ in range(n):
        token = sampler.sample(generator.get_logits().reshape(-1), out)
        out.append(token)
        if token in engine.info.eog_token_ids:
            break
        generator.append_tokens(np.asarray([token], dtype=np.int32))
    return out


def _params(model: Any, max_length: int) -> Any:
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=max_length, do_sample=False, repetition_penalty=1.0)
    return params


def engine_tokens(engine: Any, prompt: Sequence[int], config: pb.SamplingConfig, seed: int, n: int) -> list[int]:
    """The engine's own steps, stopped as the core stops them (after n tokens or an end-of-generation id).

    ``reuse=False``: every call here starts on a fresh generator, as the reference loop does."""
    return drive(engine, prompt, config, seed, n, reuse=False).tokens


# -- the engine's argmax ----------------------------------------------------------------------------


def logits_cases(vocab: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(0)
    for _ in range(12):
        yield (rng.standard_normal(vocab) * 4).astype(np.float32)
    tied = (rng.standard_normal(vocab)).astype(np.float32)
    tied[[900, 17, 30000]] = 9.5  # a three-way tie at the top: the lowest id wins
    yield tied
    yield np.zeros(vocab, dtype=np.float32)  # every token tied
    negative = -np.abs(rng.standard_normal(vocab)).astype(np.float32) - 100
    negative[vocab - 1] = -99.0  # the best is the last id
    yield negative
    close = np.full(vocab, -5.0, dtype=np.float32)
    close[[5, 6]] = np.float32(1.0), np.nextafter(np.float32(1.0), np.float32(2.0))  # one ulp apart
    yield close


def test_engine_argmax_is_reference_greedy(phi3: pb.Generator) -> None:
    engine: Any = phi3._engine
    assert engine.info.metadata["native_greedy"] is True, "this test covers the CPU provider"
    cases = list(logits_cases(engine.info.vocab_size))
    generator = engine._new_generator(len(cases) + 2)
    generator.append_tokens(np.asarray([1], dtype=np.int32))
    for logits in cases:
        generator.get_logits()  # the engine accepts new logits only once it has computed its own
        generator.set_logits(logits.reshape(1, -1))
        generator.generate_next_token()
        chosen = int(generator.get_next_tokens()[0])
        assert chosen == ReferenceSampler(GREEDY, seed=0).sample(logits, [])


def test_engine_greedy_loop_equals_reference(smol: pb.Generator) -> None:
    engine: Any = smol._engine
    prompt = smol.prompt_ids("Write a long story about a hockey team that plays on a frozen lake.")
    got = engine_tokens(engine, prompt, GREEDY, 0, 48)
    assert got == reference_tokens(engine, prompt, GREEDY, 0, 48)


class TestOnnxSamplingContract(SamplingContract):
    """The kit's cases on the path a call without a logits step takes: the engine's argmax on rows of a loaded model's
    vocabulary size (plain greedy decoding), the emulation everywhere else."""

    @pytest.fixture(scope="class")
    @classmethod
    def sampling_probabilities(cls, phi3: pb.Generator, smol: pb.Generator) -> SamplingPath:
        engines: dict[int, Any] = {gen.info.vocab_size: gen._engine for gen in (phi3, smol)}

        def path(config: pb.SamplingConfig, logits: np.ndarray, history: Sequence[int]) -> np.ndarray:
            return sampling_probabilities(config, logits, history, engine=engines.get(logits.size))[0]

        return path


# -- emulation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", SAMPLING_CONFIGS, ids=repr)
def test_smollm2_tokens_equal_reference_loop(smol: pb.Generator, config: pb.SamplingConfig) -> None:
    engine: Any = smol._engine
    prompt = smol.prompt_ids("Tell me about frozen ponds.")
    got = engine_tokens(engine, prompt, config, 2024, STEPS)
    assert got == reference_tokens(engine, prompt, config, 2024, STEPS)


@pytest.mark.parametrize("config", SAMPLING_CONFIGS, ids=repr)
def test_tiny_phi3_tokens_equal_reference_loop(phi3: pb.Generator, config: pb.SamplingConfig) -> None:
    engine: Any = phi3._engine
    prompt = phi3.prompt_ids("Write a haiku about ice hockey")
    got = engine_tokens(engine, prompt, config, 7, STEPS)
    assert got == reference_tokens(engine, prompt, config, 7, STEPS)


def test_same_seed_same_tokens_across_loads(tiny_phi3_onnx: Path, phi3: pb.Generator) -> None:
    """A seed is the whole random state of a call: nothing global, nothing per model object."""
    cfg = pb.SamplingConfig(temperature=1.0, top_p=0.95, seed=31, max_tokens=30)
    first = phi3.generate("Once upon a time", cfg, template=None)
    phi3.generate("Something else", cfg.replace(seed=8), template=None)
    with pb.load(str(tiny_phi3_onnx), backend="onnx") as other:
        again = other.generate("Once upon a time", cfg, template=None)
    assert again.token_ids == first.token_ids and len(first.token_ids) == 30


# -- the folder's own search settings never apply -------------------------------------------------------


@pytest.fixture(scope="module")
def noisy_folder(smollm2_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """smollm2 with a genai_config.json "search" section that would change every token."""
    folder = tmp_path_factory.mktemp("noisy-search")
    for item in smollm2_onnx.iterdir():
        os.symlink(item, folder / item.name)
    config = json.loads((smollm2_onnx / "genai_config.json").read_text())
    config["search"].update(
        do_sample=True, top_k=3, top_p=0.5, temperature=0.1, repetition_penalty=3.0, min_length=60, random_seed=5
    )
    (folder / "genai_config.json").unlink()
    (folder / "genai_config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("config", [GREEDY, SAMPLING_CONFIGS[0]], ids=["greedy", "sampled"])
def test_genai_config_search_section_is_ignored(
    smol: pb.Generator, noisy_folder: Path, config: pb.SamplingConfig
) -> None:
    cfg = config.replace(seed=3, max_tokens=40)
    with pb.load(str(noisy_folder), backend="onnx") as noisy:
        assert noisy.generate("Say something.", cfg).token_ids == smol.generate("Say something.", cfg).token_ids


def test_a_token_the_engine_did_not_take_is_put_in_place(smol: pb.Generator) -> None:
    """The recovery for a forced step the engine overrode (Phi-3 at 4097 tokens): the sequence and
    the next logits are those of a generator that was given our token in the first place."""
    engine: Any = smol._engine
    prompt = smol.prompt_ids("Tell me about frozen ponds.")
    generator = engine._new_generator(len(prompt) + 4)
    generator.append_tokens(np.asarray(prompt, dtype=np.int32))
    logits = generator.get_logits().reshape(-1)
    theirs, ours = int(np.argmax(logits)), int(np.argmin(logits))
    generator.generate_next_token()
    assert int(generator.get_next_tokens()[0]) == theirs
    replace_last_token(generator, ours)
    assert generator.get_sequence(0).tolist() == [*prompt, ours]
    reference = og.Generator(engine._model, _params(engine._model, len(prompt) + 4))
    reference.append_tokens(np.asarray(prompt, dtype=np.int32))
    reference.append_tokens(np.asarray([ours], dtype=np.int32))
    np.testing.assert_array_equal(generator.get_logits(), reference.get_logits())
