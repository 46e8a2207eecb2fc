"""What a caller holds while its call runs on the worker: a :class:`Stream` or an :class:`AsyncStream`.

Both read what the worker delivers (chunks, then the final chunk; or an error) from a queue of
their own: a thread blocks on a :class:`queue.SimpleQueue`; a coroutine awaits an
:class:`asyncio.Queue` that the worker fills through ``loop.call_soon_threadsafe``, so the
event loop never waits on the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from .call import CLOSED, Call, Chunk, Completion

__all__ = ["AsyncStream", "Starter", "Stream"]

#: Queues a prepared call whose chunks go to the given function, and returns it.
Starter = Callable[[Callable[[Any], None]], Call]


class _Reader:
    """What both streams share: the call, its end, and closing it."""

    def __init__(self, on_close: Callable[[Call], None]) -> None:
        self._call: Call | None = None
        self._on_close = on_close
        self._finished = False

    @property
    def completion(self) -> Completion | None:
        """The whole result, once the last chunk has been read."""
        return self._call.completion if self._call is not None and self._finished else None

    @property
    def cancelled(self) -> bool:
        return self._call is not None and self._call.cancelled

    def cancel(self) -> None:
        """End the stream after the current token, with ``finish_reason="cancelled"`` (any thread)."""
        if self._call is not None:
            self._call.cancel()
            self._on_close(self._call)

    def _ended_by_generator(self) -> bool:
        """The Generator was closed under this call: what it had buffered is not read any more."""
        if self._call is not None and self._call.closed:
            self._finished = True
        return self._finished

    def _take(self, item: Any) -> Chunk:
        if item is CLOSED:
            self._finished = True
            raise StopIteration
        if isinstance(item, BaseException):
            self._finished = True
            raise item
        assert isinstance(item, Chunk)
        if item.finish_reason is not None:
            self._finished = True
        return item

    def _close(self) -> None:
        if self._call is not None and not self._finished:
            self._finished = True
            self._call.close()
            self._on_close(self._call)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._close()  # an abandoned stream frees its slot


class Stream(_Reader, Iterator[Chunk]):
    """An iterator of :class:`Chunk` s for one call.

    The call runs as soon as the stream exists, on the Generator's worker, whether or not it is
    read (on an engine a reader may step, see :mod:`~phi_backends.scheduling.scheduler`, a call
    running alone that has been read from goes on as it is read). ``close()`` (or dropping the stream) ends it at once and frees its slot; ``cancel()``
    (safe from any thread or a signal handler) ends it after the current token with
    ``finish_reason="cancelled"``. After the last chunk, :attr:`completion` holds the whole result.
    """

    def __init__(
        self, start: Starter, on_close: Callable[[Call], None], drive: Callable[[Call], bool] | None = None
    ) -> None:
        super().__init__(on_close)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._drive = drive
        self._call = start(self._queue.put)

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> Chunk:
        if self._finished or (self._call is not None and self._call.closed and self._ended_by_generator()):
            raise StopIteration
        try:
            # While the scheduler lets this reader step its call (drive() returns True), the next
            # item is made here, on this thread; else the worker delivers it. Inline: once per token.
            items, drive, call = self._queue, self._drive, self._call
            if drive is not None and call is not None:
                while items.empty() and drive(call):
                    pass
            item = items.get()
            if type(item) is Chunk and item.finish_reason is None:  # every chunk but the last
                return item
            return self._take(item)
        except StopIteration:
            raise
        except BaseException:
            if not self._finished:  # interrupted while waiting (KeyboardInterrupt): end the call
                self._close()
            raise

    def close(self) -> None:
        self._close()


class AsyncStream(_Reader, AsyncIterator[Chunk]):
    """An async iterator of :class:`Chunk` s for one call (``async for chunk in gen.astream(...)``).

    The prompt is prepared (template, tokens, checks) in a thread when iteration starts, so its
    errors are raised by the first ``async for`` step. Cancelling the task that reads it, or
    ``await stream.aclose()``, ends the call and frees its slot.
    """

    def __init__(self, prepare: Callable[[], Starter], on_close: Callable[[Call], None]) -> None:
        super().__init__(on_close)
        self._prepare = prepare
        self._queue: asyncio.Queue[Any] | None = None

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> Chunk:
        if self._finished or self._ended_by_generator():
            raise StopAsyncIteration
        try:
            if self._queue is None:
                await self._begin()
            assert self._queue is not None
            item = await self._queue.get()
            try:
                return self._take(item)
            except StopIteration:
                raise StopAsyncIteration from None
        except (StopAsyncIteration, Exception):
            raise
        except BaseException:  # asyncio.CancelledError: the reader is gone; so is its call
            self._close()
            raise

    async def aclose(self) -> None:
        self._close()

    def close(self) -> None:
        self._close()

    async def _begin(self) -> None:
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[Any] = asyncio.Queue()
        self._queue = items

        def deliver(item: Any) -> None:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is reading any more
                loop.call_soon_threadsafe(items.put_nowait, item)

        try:
            start = await asyncio.to_thread(self._prepare)  # rendering and tokenizing: off the loop
        except BaseException:
            self._finished = True
            raise
        self._call = start(deliver)  # queued on the loop's thread: a cancel cannot lose it
