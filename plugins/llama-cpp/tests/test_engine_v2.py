"""The llama.cpp engine on the Core v2 contract, driven directly through open/step/release.

Real engine, real fixture models: the tiny Phi-3 and SmolLM2 as float32 GGUF (with a KV cache per
sequence and flash attention a batched sequence's ids are its solo ids; docs/concurrency.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from phi_backends_llama_cpp.backend import LlamaCppBackend
from phi_backends_llama_cpp.engine import LlamaCppEngine

import phi_backends as pb
from phi_backends.backend import Capacity, ModelSource, SequenceRequest
from phi_backends.errors import GenerationError, OptionError
from phi_backends.logits import LogitsStep
from phi_backends.sampling import ReferenceSampler
from phi_backends.testing import SequenceRun, drive_sequence, drive_sequences
from tests.parity.float_gguf import float32_gguf

N_CTX = 1024
N_BATCH = 32  # small, so that one prompt below spans several decodes
OPTIONS = {"n_ctx": N_CTX, "n_batch": N_BATCH, "n_seq_max": 4, "n_threads": 2}
GREEDY = pb.SamplingConfig(temperature=0.0, repeat_penalty=1.0)
SAMPLED = pb.SamplingConfig(temperature=0.9, top_k=50, top_p=0.95, repeat_penalty=1.1)
TEXTS = (
    "<|user|>\nHi<|end|>\n<|assistant|>\n",
    "<|user|>\nTell me about ice hockey on frozen ponds in winter, and why people love it.<|end|>\n<|assistant|>\n",
    "<|user|>\n"
    + "A long question about a hockey team on a frozen lake, every winter. " * 4
    + "<|end|>\n<|assistant|>\n",
    "Once upon a time",
)


def load(path: Path, **options: Any) -> LlamaCppEngine:
    engine = LlamaCppBackend().load(ModelSource(path, "gguf", path.stem), {**OPTIONS, **options})
    assert isinstance(engine, LlamaCppEngine)
    return engine


@pytest.fixture(scope="module", params=["tiny_phi3", "smollm2_f32"])
def engine(request: pytest.FixtureRequest, tiny_phi3: Path, smollm2: Path) -> Iterator[LlamaCppEngine]:
    path = tiny_phi3 if request.param == "tiny_phi3" else float32_gguf(smollm2)
    engine = load(path)
    yield engine
    engine.close()


def prompts(engine: LlamaCppEngine) -> list[tuple[int, ...]]:
    return [tuple(engine.tokenize(text, add_bos=engine.info.add_bos)) for text in TEXTS]


@dataclass
class Call:
    prompt: tuple[int, ...]
    config: pb.SamplingConfig = GREEDY
    seed: int = 0
    tokens: int = 12  # how many to draw before releasing it
    join: int = 0  # the step at which it is opened
    reuse: bool = False
    logits_step: Any = None

    def request(self) -> SequenceRequest:
        return SequenceRequest(self.prompt, self.config, self.seed, self.tokens, self.logits_step, self.reuse)


def drive(
    engine: LlamaCppEngine, calls: Sequence[Call], runs: list[SequenceRun] | None = None
) -> tuple[list[list[int]], list[int]]:
    """Run ``calls`` together, as a scheduler would: open each at its step, release it after its
    tokens; with ``runs``, add each call's run there, with a copy of every logits row it saw."""
    done = drive_sequences(
        engine, [call.request() for call in calls], joins=[call.join for call in calls], keep_rows=runs is not None
    )
    if runs is not None:
        runs.extend(done)
    return [run.tokens for run in done], [run.reused_tokens for run in done]


def alone(engine: LlamaCppEngine, call: Call, runs: list[SequenceRun] | None = None) -> list[int]:
    return drive(engine, [Call(call.prompt, call.config, call.seed, call.tokens)], runs)[0][0]


def assert_same_draws(
    engine: LlamaCppEngine, ids: list[int], rows: SequenceRun, expected: list[int], expected_rows: SequenceRun
) -> None:
    """The same ids, or ids that part only where the logits differed by rounding: llama.cpp's
    batched and one-row CPU kernels sum in different orders (docs/concurrency.md has figures)."""
    if ids == expected:
        return
    assert engine.info.architecture != "phi3", "the tiny Phi-3's margins are wide: its ids never part"
    part = next(i for i, (a, b) in enumerate(zip(ids, expected, strict=True)) if a != b)
    for i in range(part + 1):
        np.testing.assert_allclose(rows.rows[i], expected_rows.rows[i], atol=0.1, rtol=0)
    assert not np.array_equal(rows.rows[part], expected_rows.rows[part]), "equal logits must draw the same id"


def run_together(engine: LlamaCppEngine, calls: Sequence[Call]) -> None:
    """Each call draws what it draws alone, up to rounding."""
    batched: list[SequenceRun] = []
    together, _ = drive(engine, calls, batched)
    for ids, rows, call in zip(together, batched, calls, strict=True):
        theirs: list[SequenceRun] = []
        assert_same_draws(engine, ids, rows, alone(engine, call, theirs), theirs[0])


def test_capacity_is_the_option_and_a_cache_per_sequence(tiny_phi3: Path) -> None:
    engine = load(tiny_phi3, n_seq_max=3)
    try:
        assert engine.capacity == Capacity(
            max_sequences=3, kv_tokens=None, reuses_prefix=True, exact_reuse=False, exact_batching=False
        )  # the tiny model's weights are float32
        assert engine.info.context_length == N_CTX  # each sequence has the whole context
    finally:
        engine.close()
    engine = load(tiny_phi3)  # the tiny model's four caches fit any machine: the default 4
    try:
        assert engine.capacity.max_sequences == 4
    finally:
        engine.close()


@pytest.mark.parametrize("n", [1, 2, 4])
@pytest.mark.parametrize("config", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_a_batch_gives_each_sequence_the_ids_it_gets_alone(
    engine: LlamaCppEngine, n: int, config: pb.SamplingConfig
) -> None:
    all_prompts = prompts(engine)
    assert len(all_prompts[2]) > N_BATCH  # one prompt needs several decodes
    calls = [Call(all_prompts[(i + 2) % 4], config, seed=11 + i) for i in range(n)]
    run_together(engine, calls)


def test_sequences_joining_and_leaving_mid_flight_change_nothing(engine: LlamaCppEngine) -> None:
    p = prompts(engine)
    calls = [
        Call(p[1], SAMPLED, seed=3, tokens=16),
        Call(p[0], GREEDY, tokens=3),  # leaves after its third token
        Call(p[2], SAMPLED, seed=4, tokens=8, join=5),  # a long prompt joins while the others generate
        Call(p[3], GREEDY, tokens=6, join=9),
    ]
    run_together(engine, calls)


def test_a_second_turn_reuses_the_first_turns_cache_and_draws_the_same_ids(engine: LlamaCppEngine) -> None:
    first = prompts(engine)[1]
    (reply,), _ = drive(engine, [Call(first, reuse=True, tokens=8)])
    follow_up = tuple(engine.tokenize("<|end|>\n<|user|>\nAnd in summer?<|end|>\n<|assistant|>\n", add_bos=False))
    second = first + tuple(reply) + follow_up
    ours: list[SequenceRun] = []
    theirs: list[SequenceRun] = []
    (again,), (reused,) = drive(engine, [Call(second, SAMPLED, seed=5, reuse=True)], ours)
    fresh = alone(engine, Call(second, SAMPLED, seed=5), theirs)
    # the slot holds the prompt and every fed token: all of the reply but its last, never fed
    assert reused == len(first) + len(reply) - 1
    assert_same_draws(engine, again, ours[0], fresh, theirs[0])


def test_reuse_prefix_false_computes_the_whole_prompt(engine: LlamaCppEngine) -> None:
    p = prompts(engine)[1]
    drive(engine, [Call(p, reuse=True)])
    ours: list[SequenceRun] = []
    theirs: list[SequenceRun] = []
    (ids,), (reused,) = drive(engine, [Call(p, reuse=False)], theirs)
    assert reused == 0
    (ids_reused,), (reused_again,) = drive(engine, [Call(p, reuse=True)], ours)
    assert reused_again == len(p) - 1  # a token is always computed: its logits draw the first id
    assert_same_draws(engine, ids_reused, ours[0], ids, theirs[0])


def test_a_new_conversation_takes_the_least_recently_used_slot(tiny_phi3: Path) -> None:
    engine = load(tiny_phi3, n_seq_max=2, n_batch=64)
    try:
        p = tuple(engine.tokenize(TEXTS[2] * 2, add_bos=engine.info.add_bos))
        assert len(p) >= 100
        conversations = [(*p[:1], 100 + i, *p[1:59]) for i in range(3)]  # part after the first id
        for c in conversations:  # the third takes the slot of the first, used longest ago
            drive(engine, [Call(c, reuse=True, tokens=4)])
        _, (newest,) = drive(engine, [Call(conversations[2], reuse=True, tokens=1)])
        _, (middle,) = drive(engine, [Call(conversations[1], reuse=True, tokens=1)])
        _, (oldest,) = drive(engine, [Call(conversations[0], reuse=True, tokens=1)])
        assert newest == len(conversations[2]) - 1 and middle == len(conversations[1]) - 1
        assert oldest <= 1  # at most the BOS every prompt starts with
    finally:
        engine.close()


def test_scoring_forgets_the_kept_caches(engine: LlamaCppEngine) -> None:
    p = prompts(engine)[1]
    (ids,), _ = drive(engine, [Call(p, reuse=True)])
    engine.logits(list(p))
    (again,), (reused,) = drive(engine, [Call(p, reuse=True)])
    assert reused == 0
    assert again == ids  # the same prompt computed afresh, in the same batch shape: the same numbers


def test_logit_bias_bans_the_greedy_token_and_the_run_follows_the_biased_logits(engine: LlamaCppEngine) -> None:
    p = prompts(engine)[1]
    plain = alone(engine, Call(p))
    config = GREEDY.replace(logit_bias={plain[0]: -100, plain[1]: 3.0})
    step = LogitsStep.for_call(config, engine.info.vocab_size)
    (biased,), _ = drive(engine, [Call(p, config, logits_step=step)])
    assert biased[0] != plain[0]
    rows = engine.logits(list(p) + biased[:-1])[len(p) - 1 :]
    reference = ReferenceSampler(config, seed=0)
    for i, row in enumerate(rows):
        row[plain[0]] = -np.inf
        row[plain[1]] += 3.0
        assert int(np.argmax(reference.probabilities(row, biased[:i]))) == biased[i]


def test_logprobs_are_the_log_softmax_of_the_models_logits(engine: LlamaCppEngine) -> None:
    p = prompts(engine)[1]
    config = SAMPLED.replace(logprobs=True, top_logprobs=5)
    step = LogitsStep.for_call(config, engine.info.vocab_size)
    assert step is not None
    run = drive_sequence(
        engine, SequenceRequest(p, config, seed=9, budget=6, logits_step=step, reuse_prefix=False), keep_rows=True
    )
    raw = run.rows  # each row as the model gave it, before the step
    got = list(zip(run.tokens, run.logprobs, strict=True))
    scored = engine.logits(list(p) + [token for token, _ in got[:-1]])[len(p) - 1 :]
    gaps: list[float] = []
    for (token, logprob), row, model_row in zip(got, raw, scored, strict=True):
        assert logprob is not None and logprob.token == token
        expected = row - np.logaddexp.reduce(row.astype(np.float64))
        assert logprob.logprob == pytest.approx(float(expected[token]), abs=1e-5)
        top = np.argsort(-expected, kind="stable")[:5]
        assert [t for t, _ in logprob.top] == list(top)
        np.testing.assert_allclose([v for _, v in logprob.top], expected[top], atol=1e-5)
        scored_logprobs = model_row - np.logaddexp.reduce(model_row.astype(np.float64))
        gaps.append(abs(logprob.logprob - float(scored_logprobs[token])))
    # The first row comes from the prompt's decode, as teacher forcing computes every row. The
    # later ones from one-row decodes: in SmolLM2 float32 those differ from the batched rows by
    # rounding that reaches ~1e-3 in a log-probability (the tiny Phi-3: ~1e-7).
    assert gaps[0] < 1e-4
    assert max(gaps) < (1e-4 if engine.info.architecture == "phi3" else 5e-3)


def test_a_decode_without_room_is_a_one_line_generation_error(tiny_phi3: Path) -> None:
    engine = load(tiny_phi3, n_ctx=256, n_batch=128)
    try:
        p = (1,) + (500,) * 299
        seqs = [engine.open(SequenceRequest(p, GREEDY, 0, 1, reuse_prefix=False))]
        with pytest.raises(GenerationError) as caught:
            engine.step(seqs)  # 300 prompt tokens, 256 cells: the core would have refused the prompt
        message = str(caught.value)
        assert "\n" not in message and "n_ctx" in message
        for seq in seqs:
            seq.release()
        (ids,), _ = drive(engine, [Call(p[:40], tokens=4)])  # the engine works on
        assert len(ids) == 4
    finally:
        engine.close()


@pytest.mark.parametrize("value", [0, 300, -1])
def test_n_seq_max_out_of_range_is_a_one_line_option_error(value: int) -> None:
    with pytest.raises(OptionError) as caught:
        LlamaCppBackend().validate_options({"n_seq_max": value})
    assert "n_seq_max" in str(caught.value) and "\n" not in str(caught.value)
