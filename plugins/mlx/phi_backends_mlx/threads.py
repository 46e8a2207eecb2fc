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

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["MlxThread", "give_back", "lend"]

T = TypeVar("T")

_idle: list[MlxThread] = []
_lock = threading.Lock()


class MlxThread:
    """One long-lived thread that runs what it is given, one thing at a time."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="phi-backends-mlx")
        self._ident = self._executor.submit(threading.get_ident).result()

    def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` on this thread; its exception, if any, raised here."""
        if threading.get_ident() == self._ident:
            return fn(*args)
        return self._executor.submit(fn, *args).result()


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
