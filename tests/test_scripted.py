"""The testing kit's scripted backend itself: its options, its format, its honesty about resources,
and that its two ways of computing logits agree."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from phi_backends import Fit, ModelQuery, ModelSource, SamplingConfig
from phi_backends.backend import Backend, Engine, ScoringEngine
from phi_backends.errors import GenerationError, ModelFormatError, OptionError
from phi_backends.selection.platform import detect
from phi_backends.testing import SCRIPT_FORMAT, ScriptedBackend, ScriptedEngine, run_sequence, write_script_model


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_script_model(tmp_path / "tiny-phi3.json", "tiny_phi3")


def test_it_is_a_backend_and_its_engines_are_scoring_engines(tiny: Path) -> None:
    backend = ScriptedBackend()
    assert isinstance(backend, Backend) and backend.availability().ok
    engine = backend.load(ModelSource(path=tiny, format="script", name="tiny"), {})
    assert isinstance(engine, Engine) and isinstance(engine, ScoringEngine)
    engine.close()


def test_options_are_checked_with_the_kit() -> None:
    backend = ScriptedBackend()
    backend.validate_options({"delay": "0.5"})  # a CLI string is coerced
    with pytest.raises(OptionError, match="has no option 'dealy'; its options are: delay"):
        backend.validate_options({"dealy": 1})
    with pytest.raises(OptionError, match="delay must be"):
        backend.validate_options({"delay": -1})


def test_the_format_is_told_by_its_magic_key(tiny: Path, tmp_path: Path) -> None:
    assert SCRIPT_FORMAT.detect(tiny)
    other = tmp_path / "config.json"
    other.write_text('{"model_type": "phi3"}')
    assert not SCRIPT_FORMAT.detect(other) and not SCRIPT_FORMAT.detect(tmp_path)
    query = ModelQuery(name=str(tiny), kind="path", formats=frozenset({"script"}), path=tiny)
    verdict = ScriptedBackend().assess_model(query, detect())
    assert verdict is not None and verdict.backend == "scripted" and verdict.fit is Fit.GOOD
    assert ScriptedBackend().assess_model(query.__class__("m.gguf", "path", frozenset({"gguf"})), detect()) is None


def test_a_broken_script_model_is_one_format_error(tiny: Path) -> None:
    tiny.write_text('{"phi_backends_script": 1, "vocabulary": {}}')
    with pytest.raises(ModelFormatError, match="not a valid script model"):
        ScriptedEngine(tiny)


def test_logits_are_the_rows_step_samples_from(tiny: Path) -> None:
    engine = ScriptedEngine(tiny)
    prompt = engine.tokenize("<|user|>\nHi<|end|>\n<|assistant|>\n", add_bos=True)
    greedy = SamplingConfig(temperature=0.0, repeat_penalty=1.0)
    tokens = run_sequence(engine, prompt, greedy, seed=0, n=5)
    rows = engine.logits([*prompt, *tokens])
    assert rows.shape == (len(prompt) + 5, engine.info.vocab_size) and rows.dtype == np.float32
    assert [int(row.argmax()) for row in rows[len(prompt) - 1 : -1]] == tokens
    assert b"".join(engine.token_bytes(t) for t in tokens) == b"Ice h"
    engine.close()


def test_close_frees_the_model_and_later_use_fails(tiny: Path) -> None:
    engine = ScriptedEngine(tiny)
    engine.close()
    with pytest.raises(GenerationError, match="closed"):
        engine.tokenize("a", add_bos=False)
    with pytest.raises(GenerationError, match="closed"):
        engine.logits([1, 2])


def test_delay_slows_each_token(tiny: Path) -> None:
    engine = ScriptedBackend().load(ModelSource(path=tiny, format="script", name="tiny"), {"delay": 0.05})
    start = time.perf_counter()
    run_sequence(engine, [1], SamplingConfig(seed=1), seed=1, n=4)
    assert time.perf_counter() - start >= 0.2
    engine.close()
