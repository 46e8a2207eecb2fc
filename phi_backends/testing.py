"""The contract every backend passes, as a pytest test class other packages import.

A backend package subclasses :class:`BackendContract` in its tests and provides one fixture,
``contract_models``, returning :class:`ContractModels`: the backend's name and the two offline
test models in the backend's format. Nothing here may be specialised for one backend: if a
backend needs the suite changed, the suite was wrong for all of them.

The models (built by ``tests/fixtures`` in the phi-backends repository):

- ``tiny_phi3``: a random-weight Phi-3-architecture model with Phi-3's tokenizer and template
  whose weights carry one scripted greedy path: after the generation prompt it says
  :data:`SCRIPT_TEXT` and then ``<|end|>``.
- ``smollm2``: SmolLM2-135M-Instruct, a small real instruct model with a ChatML template.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from . import load
from .errors import ContextLengthError, UsageError
from .generator import Generator
from .sampling import SamplingConfig
from .streaming import Detokenizer

__all__ = ["SCRIPT_TEXT", "BackendContract", "ContractModels"]

SCRIPT_TEXT = "Ice hockey on frozen ponds."
GREEDY = SamplingConfig(temperature=0.0, repeat_penalty=1.0, max_tokens=32)
HAIKU = [{"role": "user", "content": "Write a haiku about ice hockey"}]
PHI3_SPECIALS = {"<|user|>": 32010, "<|end|>": 32007, "<|assistant|>": 32001, "<|system|>": 32006}


@dataclass(frozen=True)
class ContractModels:
    backend: str
    tiny_phi3: Path
    smollm2: Path
    options: dict[str, Any] = field(default_factory=dict)


class BackendContract:
    """Subclass in a backend package's tests and define the ``contract_models`` fixture."""

    @pytest.fixture(scope="class")
    @classmethod
    def phi3(cls, contract_models: ContractModels) -> Iterator[Generator]:
        with load(str(contract_models.tiny_phi3), backend=contract_models.backend, **contract_models.options) as gen:
            yield gen

    @pytest.fixture(scope="class")
    @classmethod
    def smol(cls, contract_models: ContractModels) -> Iterator[Generator]:
        with load(str(contract_models.smollm2), backend=contract_models.backend, **contract_models.options) as gen:
            yield gen

    # -- prompt and template ------------------------------------------------------------------

    def test_phi3_prompt_ids_use_single_special_tokens(self, phi3: Generator) -> None:
        ids = phi3.prompt_ids([{"role": "system", "content": "Be brief."}, *HAIKU])
        assert ids[0] == 1, "Phi-3 prompts start with BOS"
        assert ids.count(1) == 1, "BOS appears once (the template adds none of its own)"
        for text, token_id in PHI3_SPECIALS.items():
            assert token_id in ids, f"{text} must be one token ({token_id})"
        # the generation prompt ends the ids (engines may drop the newline after a special token)
        assert PHI3_SPECIALS["<|assistant|>"] in ids[-2:]

    def test_phi3_template_chosen_for_phi3_model(self, phi3: Generator) -> None:
        assert phi3.template is not None and phi3.template.name == "phi3"
        assert phi3.render(HAIKU) == "<|user|>\nWrite a haiku about ice hockey<|end|>\n<|assistant|>\n"

    # -- end of turn, stop strings, length --------------------------------------------------

    def test_greedy_follows_script_and_stops_at_end_of_turn(self, phi3: Generator) -> None:
        out = phi3.generate(HAIKU, GREEDY)
        assert out.text == SCRIPT_TEXT
        assert out.finish_reason == "stop"
        assert "<|end|>" not in out.text and 32007 not in out.token_ids
        assert out.usage.completion_tokens == len(out.token_ids) > 0

    def test_stream_equals_generate_and_ends_with_one_final_chunk(self, phi3: Generator) -> None:
        chunks = list(phi3.stream(HAIKU, GREEDY))
        assert "".join(c.text for c in chunks) == SCRIPT_TEXT
        assert [c.finish_reason for c in chunks[:-1]] == [None] * (len(chunks) - 1)
        last = chunks[-1]
        assert last.finish_reason == "stop" and last.usage is not None and last.timings is not None
        assert last.timings.time_to_first_token > 0 and last.timings.total >= last.timings.time_to_first_token
        assert last.usage.prompt_tokens == len(phi3.prompt_ids(HAIKU))

    @pytest.mark.parametrize("stop", ["frozen", "y on fr", "ponds."])
    def test_stop_string_cut_and_never_emitted(self, phi3: Generator, stop: str) -> None:
        chunks = list(phi3.stream(HAIKU, GREEDY.replace(stop=["never-there", stop])))
        text = "".join(c.text for c in chunks)
        assert text == SCRIPT_TEXT[: SCRIPT_TEXT.index(stop)]
        assert chunks[-1].finish_reason == "stop"
        assert all(stop not in c.text for c in chunks)

    def test_stop_string_that_never_matches_loses_nothing(self, phi3: Generator) -> None:
        out = phi3.generate(HAIKU, GREEDY.replace(stop=["ponds!"]))
        assert out.text == SCRIPT_TEXT

    @pytest.mark.parametrize("max_tokens", [1, 7, 40])
    def test_max_tokens_is_exact(self, phi3: Generator, max_tokens: int) -> None:
        cfg = SamplingConfig(temperature=1.0, seed=7, max_tokens=max_tokens)
        out = phi3.generate("Tell me a long story about the sea", cfg, template=None)
        assert out.finish_reason == "length"
        assert out.usage.completion_tokens == max_tokens

    def test_prompt_longer_than_context_is_refused(self, phi3: Generator) -> None:
        too_long = "hockey " * (phi3.info.context_length + 10)
        with pytest.raises(ContextLengthError, match=str(phi3.info.context_length)):
            phi3.stream(too_long, GREEDY, template=None)  # refused before any iteration
        assert phi3.generate(HAIKU, GREEDY).text == SCRIPT_TEXT

    # -- seeds and sampling ------------------------------------------------------------------

    def test_same_seed_same_text_and_seeds_differ(self, phi3: Generator) -> None:
        cfg = SamplingConfig(temperature=1.0, seed=1234, max_tokens=24)
        first, second = phi3.generate(HAIKU, cfg), phi3.generate(HAIKU, cfg)
        assert first.text == second.text and first.seed == 1234
        others = {phi3.generate(HAIKU, cfg.replace(seed=s)).text for s in (1, 2, 3, 4)}
        assert len(others | {first.text}) > 1

    def test_no_seed_draws_a_reported_seed_that_reproduces(self, phi3: Generator) -> None:
        cfg = SamplingConfig(temperature=1.0, max_tokens=16)
        out = phi3.generate(HAIKU, cfg)
        again = phi3.generate(HAIKU, cfg.replace(seed=out.seed))
        assert again.text == out.text

    def test_state_does_not_leak_between_calls(self, phi3: Generator) -> None:
        cfg = SamplingConfig(temperature=0.8, top_p=0.9, seed=99, max_tokens=20)
        first = phi3.generate(HAIKU, cfg).text
        phi3.generate("Something else entirely, to fill the cache", cfg.replace(seed=5), template=None)
        assert phi3.generate(HAIKU, cfg).text == first

    # -- lifecycle -----------------------------------------------------------------------------

    def test_closing_a_stream_midway_leaves_the_generator_reusable(self, phi3: Generator) -> None:
        stream = phi3.stream(HAIKU, GREEDY)
        next(stream)
        stream.close()
        assert phi3.generate(HAIKU, GREEDY).text == SCRIPT_TEXT

    def test_abandoned_stream_in_same_thread_is_closed_by_the_next_call(self, phi3: Generator) -> None:
        stream = phi3.stream(HAIKU, GREEDY)
        next(stream)
        assert phi3.generate(HAIKU, GREEDY).text == SCRIPT_TEXT
        assert list(stream) == []

    def test_close_with_a_stream_open_in_this_thread_does_not_hang(self, contract_models: ContractModels) -> None:
        gen = load(str(contract_models.tiny_phi3), backend=contract_models.backend, **contract_models.options)
        stream = gen.stream(HAIKU, GREEDY)
        next(stream)
        gen.close()
        assert list(stream) == []
        with pytest.raises(UsageError, match="closed"):
            gen.generate(HAIKU, GREEDY)

    def test_cancel_finishes_with_cancelled(self, phi3: Generator) -> None:
        stream = phi3.stream("Tell me a long story", SamplingConfig(seed=3, max_tokens=50), template=None)
        next(stream)
        stream.cancel()
        chunks = list(stream)
        assert chunks[-1].finish_reason == "cancelled"
        assert stream.completion is not None and stream.completion.usage.completion_tokens < 50

    def test_threads_are_serialized(self, phi3: Generator) -> None:
        cfg = SamplingConfig(temperature=1.0, seed=11, max_tokens=20)
        expected = phi3.generate(HAIKU, cfg).text
        results: list[str] = []

        def work() -> None:
            results.append(phi3.generate(HAIKU, cfg).text)

        threads = [threading.Thread(target=work) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [expected] * 3

    def test_raw_mode_takes_a_string_only(self, phi3: Generator) -> None:
        with pytest.raises(UsageError):
            phi3.generate(HAIKU, GREEDY, template=None)

    # -- detokenization through the engine's own vocabulary -----------------------------------

    @pytest.mark.parametrize("text", ["Ice hockey 🏒 on ponds", "Grüße, 世界! नमस्ते Γειά σου", "a\u0301 combining"])
    def test_incremental_detokenization_matches_text(self, smol: Generator, text: str) -> None:
        engine = smol._engine
        ids = engine.tokenize(text, add_bos=False)
        detok = Detokenizer(engine.token_bytes)
        pieces = [detok.add(i) for i in ids] + [detok.flush()]
        assert "".join(pieces) == text
        assert all("\ufffd" not in p for p in pieces), "no half characters were emitted"

    # -- a real instruct model --------------------------------------------------------------

    def test_smollm2_answers_and_stops_at_im_end(self, smol: Generator) -> None:
        assert smol.template is not None and smol.render(HAIKU).endswith("<|im_start|>assistant\n")
        out = smol.generate(HAIKU, SamplingConfig(temperature=0.0, max_tokens=64))
        assert out.finish_reason == "stop", out
        assert out.text.strip() and "<|im_end|>" not in out.text and "<|im_start|>" not in out.text
