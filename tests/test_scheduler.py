"""The scheduler on the scripted backend: batching, waiting for a slot or KV room, cancel, close, failures."""

from __future__ import annotations

import _thread
import asyncio
import gc
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import phi_backends as pb
from phi_backends.backend import EngineInfo, ModelSource, SequenceRequest, SerialEngine
from phi_backends.errors import GenerationError, OptionError, SamplingConfigError, UsageError
from phi_backends.generator import Generator
from phi_backends.templates import get_template
from phi_backends.testing import HAIKU, SCRIPT_TEXT, ScriptedBackend, ScriptedEngine, write_script_model
from phi_backends.testing.contract import run_in_threads
from tests.bad_inputs import expect_api_error

GREEDY = pb.SamplingConfig(temperature=0.0, repeat_penalty=1.0, max_tokens=32)
LONG = pb.SamplingConfig(temperature=1.0, seed=5, max_tokens=12)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_script_model(tmp_path_factory.mktemp("scheduler") / "tiny-phi3.json", "tiny_phi3")


def load(path: Path, **options: object) -> Generator:
    """A Generator on the scripted engine (made directly: the plugin manager is not under test here)."""
    engine = ScriptedBackend().load(ModelSource(path=path, format="script", name=path.name), options)
    return Generator(engine, backend="scripted", model=path.name, template=get_template("phi3"))


def engine_of(gen: Generator) -> ScriptedEngine:
    engine = gen._engine
    assert isinstance(engine, ScriptedEngine)
    return engine


def test_concurrent_calls_share_steps_up_to_max_sequences(tiny: Path) -> None:
    with load(tiny, max_sequences=3, delay=0.01) as gen:
        alone = [gen.generate("Tell me", LONG.replace(seed=s), template=None).token_ids for s in range(5)]
        engine_of(gen).batch_sizes.clear()
        together = run_in_threads(
            [lambda s=s: gen.generate("Tell me", LONG.replace(seed=s), template=None).token_ids for s in range(5)]
        )
        sizes = engine_of(gen).batch_sizes
    assert together == alone
    assert max(sizes) == 3, sizes  # three at once, never more; the other two waited for a slot
    assert sum(sizes) == 5 * LONG.max_tokens


def test_one_sequence_at_a_time_when_the_engine_cannot_batch(tiny: Path) -> None:
    with load(tiny, max_sequences=1) as gen:
        together = run_in_threads([lambda s=s: gen.generate(HAIKU, LONG.replace(seed=s)).token_ids for s in (1, 2)])
        assert set(engine_of(gen).batch_sizes) == {1}
        assert together == [gen.generate(HAIKU, LONG.replace(seed=s)).token_ids for s in (1, 2)]


def test_a_call_waits_for_kv_room_then_runs(tiny: Path) -> None:
    with load(tiny, kv_tokens=60, delay=0.005) as gen:
        prompt = "x" * 30  # 30 byte tokens + 12 to generate: two such calls do not fit 60 cells
        results = run_in_threads(
            [lambda s=s: gen.generate(prompt, LONG.replace(seed=s), template=None) for s in (1, 2)]
        )
        assert set(engine_of(gen).batch_sizes) == {1}, "never both at once"
        assert max(r.timings.queued for r in results) > 0
        small = run_in_threads([lambda s=s: gen.generate("hi", LONG.replace(seed=s), template=None) for s in (1, 2, 3)])
        assert all(r.usage.completion_tokens == LONG.max_tokens for r in small)


def test_cancel_while_waiting_ends_with_no_tokens(tiny: Path) -> None:
    with load(tiny, max_sequences=1, delay=0.01) as gen:
        running = gen.stream("Tell me a long story", LONG.replace(max_tokens=40), template=None)
        waiting = gen.stream(HAIKU, GREEDY)
        waiting.cancel()
        chunks = list(waiting)
        assert chunks[-1].finish_reason == "cancelled" and waiting.completion is not None
        assert waiting.completion.usage.completion_tokens == 0
        assert list(running)[-1].finish_reason == "length"


def test_close_lets_other_threads_finish_and_refuses_new_calls(tiny: Path) -> None:
    gen = load(tiny, delay=0.01)
    started = threading.Event()
    result: list[pb.Completion] = []

    def other() -> None:
        stream = gen.stream(HAIKU, GREEDY)
        next(stream)
        started.set()
        for _ in stream:
            pass
        assert stream.completion is not None
        result.append(stream.completion)

    thread = threading.Thread(target=other)
    thread.start()
    assert started.wait(30)
    gen.close()
    thread.join(30)
    assert result and result[0].text == SCRIPT_TEXT
    with pytest.raises(UsageError, match="closed"):
        gen.stream(HAIKU, GREEDY)
    with pytest.raises(UsageError, match="closed"):
        gen.astream(HAIKU, GREEDY)


def test_closing_a_stream_frees_its_slot_at_once(tiny: Path) -> None:
    with load(tiny, max_sequences=1, delay=0.01) as gen:
        stream = gen.stream("Tell me a long story", LONG.replace(max_tokens=400), template=None)
        next(stream)
        start = time.perf_counter()
        stream.close()
        assert gen.generate(HAIKU, GREEDY).text == SCRIPT_TEXT
        assert time.perf_counter() - start < 3.0, "the closed call did not run on to its 400 tokens"


class Failing(SerialEngine):
    """Fails on the third token of a prompt that says "fail"; other prompts generate "x" forever."""

    def __init__(self) -> None:
        self._info = EngineInfo(
            context_length=64, vocab_size=256, add_bos=False, bos_token=None, eos_token=None, eog_token_ids=frozenset()
        )

    @property
    def info(self) -> EngineInfo:
        return self._info

    def tokenize(self, text: str, *, add_bos: bool, special: bool = True) -> list[int]:
        return list(text.encode())

    def token_bytes(self, token_id: int) -> bytes:
        return bytes([token_id])

    def tokens(self, request: SequenceRequest) -> Iterator[int]:
        yield from b"xx"
        if bytes(request.prompt_ids) == b"fail":
            raise RuntimeError("device lost")
        while True:
            yield ord("x")

    def close(self) -> None:
        pass


def test_an_engine_failure_is_one_generation_error_and_the_generator_goes_on() -> None:
    with Generator(Failing(), backend="failing", model="m", template=get_template("chatml")) as gen:
        with pytest.raises(GenerationError, match="failing failed while generating: RuntimeError: device lost"):
            gen.generate("fail", GREEDY, template=None)
        assert gen.generate("ok", GREEDY.replace(max_tokens=3), template=None).text == "xxx"


def test_bad_logits_step_inputs_are_one_line_errors(tiny: Path) -> None:
    with load(tiny) as gen:
        with pytest.raises(SamplingConfigError) as raised:
            gen.stream(HAIKU, GREEDY.replace(logit_bias={10**6: 1.0}))
        expect_api_error(
            raised.value, SamplingConfigError, "vocabulary has ids 0 to", what="logit_bias id outside the vocabulary"
        )
        with pytest.raises(UsageError) as raised:
            gen.stream(HAIKU, {"temperature": 0})  # type: ignore[arg-type]
        expect_api_error(
            raised.value, UsageError, "config must be a SamplingConfig", what="a dict where a SamplingConfig goes"
        )
        with pytest.raises(SamplingConfigError) as raised:
            asyncio.run(gen.agenerate(HAIKU, GREEDY.replace(logit_bias={10**6: 1.0})))
        expect_api_error(
            raised.value, SamplingConfigError, "vocabulary", what="logit_bias id outside the vocabulary (async)"
        )
    for bad, needle, what in [
        ({1: float("nan")}, "finite", "logit_bias with a non-finite bias"),
        ({1: 100.5}, "[-100, 100]", "logit_bias outside [-100, 100]"),
        ({-1: 1.0}, "token ids", "logit_bias with a negative id"),
        ({"one": 1.0}, "token ids", "logit_bias with an id that is no number"),
        (["5"], "ID=BIAS", "logit_bias entry without ="),
        ({1: "much"}, "must be a number", "logit_bias with a bias that is no number"),
    ]:
        with pytest.raises(SamplingConfigError) as raised:
            pb.SamplingConfig(logit_bias=bad)
        expect_api_error(raised.value, SamplingConfigError, needle, what=what)
    for top in (-1, 21):
        with pytest.raises(SamplingConfigError) as raised:
            pb.SamplingConfig(top_logprobs=top)
        expect_api_error(
            raised.value, SamplingConfigError, "top_logprobs must be in [0, 20]", what=f"top_logprobs={top}"
        )
    with pytest.raises(OptionError, match="max_sequences"):
        load(tiny, max_sequences=0)


def test_logit_bias_forms_mean_the_same() -> None:
    forms = [{5: -100, "7": 2.5}, [(7, 2.5), (5, -100.0)], ["5=-100", "7 = 2.5"]]
    assert {pb.SamplingConfig(logit_bias=form).logit_bias for form in forms} == {((5, -100.0), (7, 2.5))}


def test_a_generator_dropped_without_close_frees_its_engine_and_worker(tiny: Path) -> None:
    """Its worker thread holds the engine, so without this the model would stay for good."""
    gen = load(tiny)
    engine = engine_of(gen)
    assert gen.generate(HAIKU, GREEDY).text == SCRIPT_TEXT
    worker = gen._scheduler._thread
    assert worker is not None and worker.is_alive()
    del gen
    gc.collect()
    worker.join(timeout=10)
    assert not worker.is_alive()
    with pytest.raises(GenerationError, match="closed"):
        engine.tokenize("hi", add_bos=False)


# -- an engine a reader steps (Capacity.any_thread, one sequence: onnxruntime-genai) ------------

READER_STEPS = {"max_sequences": 1, "any_thread": True}
STORY = LONG.replace(max_tokens=40)


def alone(tiny: Path, config: pb.SamplingConfig) -> tuple[int, ...]:
    """The ids ``config`` gives on a Generator whose worker runs every step."""
    with load(tiny, max_sequences=1) as gen:
        return gen.generate("Tell me a long story", config, template=None).token_ids


def test_a_lone_reader_steps_its_own_call(tiny: Path) -> None:
    """No hand-off per token: after the first steps (the worker's, before the first read), the
    reader's thread runs them, and the text is the text the worker gives."""
    with load(tiny, delay=0.005, **READER_STEPS) as gen:
        stream = gen.stream("Tell me a long story", STORY, template=None)
        list(stream)
        threads = engine_of(gen).step_threads
        assert stream.completion is not None and stream.completion.token_ids == alone(tiny, STORY)
    mine = threads.count(threading.get_ident())
    assert threads[-1] == threading.get_ident() and mine >= len(threads) - 5, threads


def test_a_reader_sent_back_to_wait_is_served_when_the_first_step_delivers_nothing(tiny: Path) -> None:
    """The reader reads before its call has started (another call holds the one slot), so it waits
    for the worker; the call's first step delivers no chunk (its text may begin a stop string).
    The worker must go on stepping the call: it once stopped there, and the reader waited forever
    (CI's parity session, an emoji prompt on onnxruntime-genai, whose first token is half a character)."""
    expected = text_alone(tiny, STORY)
    with load(tiny, delay=0.002, **READER_STEPS) as gen:
        first = gen.generate("Tell me a long story", STORY.replace(max_tokens=1), template=None).text
        config = STORY.replace(stop=[first + "\x00 never in the text"])
        ahead = gen.stream("Tell me a long story", STORY, template=None)  # not read: the worker runs it
        texts: list[str] = []
        reader = threading.Thread(
            target=lambda: texts.append(gen.generate("Tell me a long story", config, template=None).text), daemon=True
        )
        reader.start()
        reader.join(timeout=20)
        stuck = reader.is_alive()
        ahead.close()
        assert not stuck, "the reader waited for a step nobody took"
    assert texts == [expected]


def test_a_reader_sent_back_to_wait_steps_its_call_again_from_its_first_chunk(tiny: Path) -> None:
    """The worker serves a reader sent back to wait up to its first chunk and no further: while the
    reader holds that chunk the call takes no step, and every later step is the reader's. It once
    ran ahead to the call's end, which made overhead.py's lockstep rounds meaningless."""
    with load(tiny, delay=0.002, **READER_STEPS) as gen:
        ahead = gen.stream("Tell me a long story", STORY.replace(seed=9), template=None)  # not read
        stream = gen.stream("Tell me a long story", STORY, template=None)
        first = next(stream)  # the call waited behind ``ahead``: the worker opened it and stepped it
        threads = engine_of(gen).step_threads
        served = len(threads)
        time.sleep(0.2)  # a hundred steps' time
        assert len(threads) == served, "the worker stepped a call whose reader had its item"
        rest = list(stream)
        ahead.close()
        assert stream.completion is not None and stream.completion.token_ids == alone(tiny, STORY)
    assert first.text and len(rest) == STORY.max_tokens  # 39 more tokens, then the last chunk
    assert set(threads[served:]) == {threading.get_ident()}, threads[served:]


def text_alone(tiny: Path, config: pb.SamplingConfig) -> str:
    with load(tiny, max_sequences=1) as gen:
        return gen.generate("Tell me a long story", config, template=None).text


def test_without_any_thread_the_worker_steps_every_call(tiny: Path) -> None:
    with load(tiny, max_sequences=1, delay=0.005) as gen:
        list(gen.stream("Tell me a long story", STORY, template=None))
        assert threading.get_ident() not in engine_of(gen).step_threads


def test_a_paused_reader_holds_up_no_other_thread(tiny: Path) -> None:
    """A call read once and then left waits for its reader; a call from another thread does not:
    the worker runs the paused call on to its end, and the reader then reads what it missed."""
    with load(tiny, delay=0.002, **READER_STEPS) as gen:
        paused = gen.stream("Tell me a long story", STORY, template=None)
        next(paused), next(paused)
        other = STORY.replace(seed=9)
        [ids] = run_in_threads([lambda: gen.generate("Tell me a long story", other, template=None).token_ids])
        list(paused)
        assert paused.completion is not None and paused.completion.token_ids == alone(tiny, STORY)
        assert ids == alone(tiny, other)


def test_a_paused_call_and_a_new_one_on_the_same_thread(tiny: Path) -> None:
    """The second call from the reader's own thread does not wait for the first one's reader (itself)."""

    def both() -> tuple[tuple[int, ...], tuple[int, ...]]:
        with load(tiny, delay=0.002, **READER_STEPS) as gen:
            first = gen.stream("Tell me a long story", STORY, template=None)
            next(first), next(first)
            second = gen.generate("Tell me a long story", STORY.replace(seed=9), template=None).token_ids
            list(first)
            assert first.completion is not None
            return first.completion.token_ids, second

    [(first, second)] = run_in_threads([both])
    assert (first, second) == (alone(tiny, STORY), alone(tiny, STORY.replace(seed=9)))


def test_cancelling_a_paused_call_from_another_thread_ends_it(tiny: Path) -> None:
    with load(tiny, delay=0.002, **READER_STEPS) as gen:
        paused = gen.stream("Tell me a long story", LONG.replace(max_tokens=400), template=None)
        next(paused), next(paused)
        run_in_threads([paused.cancel])
        chunks = list(paused)
        assert chunks[-1].finish_reason == "cancelled"
        assert paused.completion is not None and paused.completion.usage.completion_tokens < 400


def test_closing_the_generator_under_a_paused_call_of_another_thread_lets_it_finish(tiny: Path) -> None:
    gen = load(tiny, delay=0.002, **READER_STEPS)
    paused = gen.stream("Tell me a long story", STORY, template=None)
    next(paused), next(paused)
    run_in_threads([gen.close])  # another thread closes: this thread's call runs to its end
    list(paused)
    assert paused.completion is not None and paused.completion.token_ids == alone(tiny, STORY)


def test_an_interrupt_while_the_reader_steps_ends_its_call_and_nothing_else(tiny: Path) -> None:
    """Ctrl-C lands in the engine's step on the reader's thread: the reader gets KeyboardInterrupt
    (not an engine error), its call is over, and the Generator serves the next call exactly."""
    with load(tiny, delay=0.005, **READER_STEPS) as gen:
        stream = gen.stream("Tell me a long story", LONG.replace(max_tokens=400), template=None)
        next(stream), next(stream)
        timer = threading.Timer(0.05, _thread.interrupt_main)
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            for _ in stream:
                pass
        timer.join()
        assert list(stream) == [] and stream.completion is None
        assert gen.generate("Tell me a long story", STORY, template=None).token_ids == alone(tiny, STORY)


class SlowRelease(Failing):
    """Generates "xxx…"; closing its token stream (the sequence's release) takes a while."""

    released = False

    def tokens(self, request: SequenceRequest) -> Iterator[int]:
        try:
            while True:
                yield ord("x")
        finally:
            time.sleep(0.05)
            self.released = True


def test_the_last_chunk_comes_after_the_engine_released_the_sequence() -> None:
    """A caller that has read the end may reuse, close or unload at once: the slot is free by then."""
    engine = SlowRelease()
    with Generator(engine, backend="slow", model="m", template=get_template("chatml")) as gen:
        chunks = list(gen.stream("go", GREEDY.replace(max_tokens=3), template=None))
        assert chunks[-1].finish_reason == "length" and engine.released
