"""The worker that runs every call of one Generator: continuous batching over the engine's step.

One thread per Generator calls the engine (``open``, ``step``, ``release``); callers only queue
calls and read what the worker hands them. Why one thread: the engines are not thread-safe,
MLX streams are per thread, and llama.cpp's OpenMP build keeps a team of threads per calling
thread (decoding from a second thread ran at half speed here, docs/concurrency.md). Between two
steps the worker lets finished, cancelled and closed calls leave and admits waiting ones, up to
the engine's :class:`~phi_backends.backend.Capacity`, first come first served.

An engine that runs one sequence and may be called from any thread (``Capacity.any_thread``,
onnxruntime-genai) is stepped by the reader instead, while its call runs alone: a sync reader
whose queue is empty runs the next step itself (:meth:`Scheduler.drive`), as the engine's own
loop would, rather than handing every token from the worker to the reader (that hand-off cost
onnxruntime-genai, whose step holds the GIL, 1-3% of its decode speed). The worker still runs
calls nobody reads, and steps a reader's call whenever another call or task waits behind it,
the Generator is closing, or the call was cancelled or closed: nothing waits on a reader.
"""

from __future__ import annotations

import contextlib
import operator
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from ..backend import Engine
from ..errors import GenerationError, PhiBackendsError, UsageError
from .call import Call

__all__ = ["CLOSED_MESSAGE", "Scheduler"]

T = TypeVar("T")
#: A running call's open sequence (a C-level getter: this runs once per token, see drive()).
_SEQUENCE: Callable[[Call], Any] = operator.attrgetter("sequence")
CLOSED_MESSAGE = "this Generator is closed; load the model again"


class Scheduler:
    def __init__(self, engine: Engine, *, backend: str) -> None:
        self._engine = engine
        self._backend = backend
        capacity = engine.capacity
        self._max_sequences = max(1, capacity.max_sequences)
        self._kv_tokens = capacity.kv_tokens
        self._cond = threading.Condition()
        self._waiting: deque[Call] = deque()
        self._running: list[Call] = []
        self._tasks: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        self._closing = False
        self._thread: threading.Thread | None = None
        # whoever steps (the worker, or a reader in drive()) holds this: one step at a time
        self._stepping = threading.Lock()
        self._readers_step = capacity.any_thread and self._max_sequences == 1

    @property
    def max_sequences(self) -> int:
        return self._max_sequences

    @property
    def load(self) -> tuple[int, int]:
        """How many calls hold an engine sequence now, and how many wait for one."""
        with self._cond:
            return len(self._running), len(self._waiting)

    def submit(self, call: Call) -> None:
        """Queue ``call``; it starts as soon as a slot (and KV room) is free."""
        with self._cond:
            if self._closing:
                raise UsageError(CLOSED_MESSAGE)
            self._waiting.append(call)
            self._start_worker()
            self._cond.notify_all()

    def wake(self) -> None:
        """A call was cancelled or closed: let the worker see it now rather than after its next step."""
        with self._cond:
            self._cond.notify_all()

    def exclusive(self, work: Callable[[], T]) -> T:
        """Run ``work`` on the worker thread when no call is running (e.g. teacher forcing)."""
        future: Future[T] = Future()
        with self._cond:
            if self._closing:
                raise UsageError(CLOSED_MESSAGE)
            self._tasks.append((work, future))
            self._start_worker()
            self._cond.notify_all()
        return future.result()

    def close(self, *, drop: Callable[[Call], bool]) -> None:
        """Refuse new calls, end the calls ``drop`` selects at once, let the others finish, stop the worker."""
        with self._cond:
            self._closing = True
            for call in [*self._waiting, *self._running]:
                if drop(call):
                    call.close()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    # -- the worker thread ---------------------------------------------------------------------

    def _start_worker(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=f"phi-backends {self._backend}", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._for_worker():
                    self._cond.wait()
            with self._stepping:
                if self._iterate():
                    return

    def _for_worker(self) -> bool:
        """Whether the worker has something to do that no reader is doing."""
        if self._waiting or self._tasks or self._closing:
            return True
        return any(not call.driven or call.awaited or call.closed or call.cancelled for call in self._running)

    def _iterate(self) -> bool:
        """One turn of the worker: closed calls leave, then a task runs or calls join and the
        running ones take a step. True when the worker is to stop."""
        with self._cond:
            self._leave_closed()
            if self._tasks and not self._running:
                task = self._tasks.popleft()
            else:
                task = None
                if self._closing and not self._waiting and not self._running:
                    self._fail_tasks()
                    return True
                admitted = self._admit() if not self._tasks else []
        if task is not None:
            self._run_task(*task)
            return False
        for call in admitted:
            self._open(call)
        self._step([call for call in self._running if call.sequence is not None])
        return False

    # -- a reader's thread -----------------------------------------------------------------------

    def drive(self, call: Call) -> bool:
        """Run ``call``'s next step on the calling thread (its reader, with nothing to read yet).

        False when the reader should wait for the worker instead: the engine is not one a reader
        steps, or the call has not started or was closed, or a task or the Generator's close
        comes first. The checks are made holding the step lock, so nothing changes between them
        and the step. This path runs once per token and does no more than the step needs: on
        onnxruntime-genai every line run between two ``generate_next_token`` calls costs several
        times what it costs warm (the step evicts the caches), and the engine's own loop runs none.
        """
        if not self._readers_step:
            return False
        # Marked before waiting for the lock, so that the worker stops stepping this call after
        # its current step rather than racing the reader for the lock.
        call.driven = True
        with self._stepping:
            # Without the condition lock: only the holder of the step lock changes the running
            # calls and their sequences, and a task or a close that comes after these reads is
            # seen before the next step, as it would be had they been made under the lock.
            sent_back = (
                self._tasks or self._closing or call.sequence is None or call.closed or call not in self._running
            )
            if not sent_back:
                self._step([call])
                return True
            # The reader waits for the worker, which steps the call until it delivers an item
            # (Call.advance clears the mark; a first step may deliver none: text held back) and
            # no further: the reader steps it again from there. Unmarking the call as driven
            # instead would let the worker run ahead of a reader that keeps up.
            call.awaited = True
        with self._cond:
            self._cond.notify_all()
        return False

    def _leave_closed(self) -> None:
        """Closed calls leave without a result; cancelled ones that have not started finish empty."""
        for call in [c for c in self._waiting if c.closed or c.cancelled]:
            self._waiting.remove(call)
            if call.closed:
                call.drop()
            else:
                call.finish("cancelled")
        for call in [c for c in self._running if c.closed]:
            self._running.remove(call)
            self._release(call)
            call.drop()

    def _admit(self) -> list[Call]:
        admitted: list[Call] = []
        while self._waiting and len(self._running) < self._max_sequences and self._fits(self._waiting[0]):
            call = self._waiting.popleft()
            call.admitted()
            self._running.append(call)
            admitted.append(call)
        return admitted

    def _fits(self, call: Call) -> bool:
        if self._kv_tokens is None or not self._running:
            return True  # alone, a call always fits: the Generator checked its prompt and budget
        used = sum(running.reservation for running in self._running)
        return used + call.reservation <= self._kv_tokens

    def _open(self, call: Call) -> None:
        try:
            call.sequence = self._engine.open(call.request)
        except BaseException as exc:
            with self._cond:
                self._running.remove(call)
            call.fail(self._engine_error(exc))

    def _step(self, running: list[Call]) -> None:
        """One engine step of ``running`` (calls whose sequence is open), each call then advanced."""
        if not running:
            return
        try:
            tokens = self._engine.step(list(map(_SEQUENCE, running)))
        except BaseException as exc:
            for call in running:
                self._end(call)
            self._fail(running, exc)
            return
        for call, token in zip(running, tokens, strict=True):
            try:
                finished = call.advance(token) or call.closed
            except BaseException as exc:  # a bug in the text layer: fail this call, not the worker
                self._end(call)
                self._fail([call], exc)
                continue
            if finished:
                self._end(call)
                if call.closed and not call.done:
                    call.drop()

    def _fail(self, calls: list[Call], exc: BaseException) -> None:
        """The engine or the text layer raised while stepping ``calls`` (already ended)."""
        if not isinstance(exc, Exception) and threading.current_thread() is not self._thread:
            # a reader stepping its own call was interrupted (KeyboardInterrupt): the call is over,
            # with no result, as when a reader waiting for the worker is interrupted; the reader
            # gets the interrupt, not an engine error
            for call in calls:
                call.close()
                call.drop()
            raise exc
        error = self._engine_error(exc)
        for call in calls:
            call.fail(error)

    def _end(self, call: Call) -> None:
        with self._cond:
            if call in self._running:
                self._running.remove(call)
        self._release(call)
        call.released()  # its last chunk now: a caller that has read the end may load, close or reuse at once

    def _release(self, call: Call) -> None:
        sequence, call.sequence = call.sequence, None
        if sequence is not None:
            with contextlib.suppress(Exception):  # a slot the engine could not free is its own to recover
                sequence.release()

    def _run_task(self, work: Callable[[], Any], future: Future[Any]) -> None:
        try:
            future.set_result(work())
        except BaseException as exc:
            future.set_exception(exc)

    def _fail_tasks(self) -> None:
        while self._tasks:
            _, future = self._tasks.popleft()
            future.set_exception(UsageError(CLOSED_MESSAGE))

    def _engine_error(self, exc: BaseException) -> BaseException:
        if isinstance(exc, PhiBackendsError):
            return exc
        if isinstance(exc, MemoryError):
            return GenerationError(
                f"{self._backend} ran out of memory while generating; use a smaller n_ctx or fewer sequences"
            )
        return GenerationError(f"{self._backend} failed while generating: {type(exc).__name__}: {exc}")
