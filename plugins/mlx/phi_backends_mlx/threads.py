"""The threads MLX work runs on: a few long-lived ones, lent to engines and given back.

MLX streams belong to the thread that made them (MLX 0.32: a stream used on another thread
raises "There is no Stream(cpu, 0) in current thread"), so every thread that computes gets
streams of its own, and MLX never ends the native thread each one holds. The core runs each
Generator's calls on a worker thread of its own; computing on it directly left two OS threads
behind every load/close cycle (the contract's 100 cycles: 24 -> 222). So an engine does all its
MLX work (loading, every step, teacher forcing) on one thread lent from here, and gives it back
on close: the process keeps as many as there were engines open at once, not one per load.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["MlxThread", "give_back", "lend"]

T = TypeVar("T")

_idle: list[MlxThread] = []
_lock = threading.Lock()


class MlxThread:
    """One long-lived daemon thread that runs what it is given, one thing at a time.

    A daemon thread, never joined: when a thread that computed with MLX ends, its thread-local
    streams are destroyed with their native threads still joinable, and C++ calls
    ``std::terminate`` ("terminate called without an active exception", SIGABRT). A
    ``ThreadPoolExecutor``'s threads are joined at interpreter exit, which aborted
    ``phi-backends run`` after it had printed its answer.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        thread = threading.Thread(target=self._serve, name="phi-backends-mlx", daemon=True)
        thread.start()
        self._ident = thread.ident

    def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` on this thread; its exception, if any, raised here."""
        if threading.get_ident() == self._ident:
            return fn(*args)
        future: Future[T] = Future()
        self._jobs.put((lambda: fn(*args), future))
        return future.result()

    def _serve(self) -> None:
        while True:
            work, future = self._jobs.get()
            try:
                future.set_result(work())
            except BaseException as exc:
                future.set_exception(exc)


def lend() -> MlxThread:
    """An idle thread, or a new one when every one is lent."""
    with _lock:
        if _idle:
            return _idle.pop()
    return MlxThread()


def give_back(thread: MlxThread) -> None:
    with _lock:
        if thread not in _idle:
            _idle.append(thread)
