"""Reading tool calls out of a call's text as it streams: :class:`ToolCallReader`."""

from __future__ import annotations

from .calls import ToolCall, parse_calls
from .markup import ToolMarkup

__all__ = ["ToolCallReader"]


class ToolCallReader:
    """Splits a call's text into what it says (content) and the tool calls it makes.

    Text between the family's call markers is held back; when the closing marker comes, the block
    is parsed and its calls are handed out at once (a block that does not parse goes to the
    content, markers and all, so nothing the model wrote is lost). A block the model never closes
    is parsed at the end (Phi-4-mini often leaves out ``<|/tool_call|>``). Control-token markers
    reach the reader as their text (:meth:`phi_backends.tools.plan.ToolPlan.token_bytes`).
    """

    def __init__(self, markup: ToolMarkup, *, max_calls: int | None = None) -> None:
        self._open = markup.call_open
        self._close = markup.call_close
        #: with ``max_calls`` (``parallel_tool_calls=False``: 1), the calls past it are not read,
        #: and :attr:`full` tells the call to end its turn
        self._max_calls = max_calls
        self._read = 0
        self._held = ""  # text that may be the start of the next marker
        self._body: str | None = None  # the block being read, None outside one

    def feed(self, text: str) -> tuple[str, tuple[ToolCall, ...]]:
        """Take the next ``text``; return the content that can be shown now and the calls completed."""
        buffer = self._held + text
        self._held = ""
        content: list[str] = []
        calls: list[ToolCall] = []
        while buffer:
            marker = self._open if self._body is None else self._close
            at = buffer.find(marker)
            if at < 0:
                keep = _partial(buffer, marker)
                cut = len(buffer) - keep
                if self._body is None:
                    content.append(buffer[:cut])
                else:
                    self._body += buffer[:cut]
                self._held = buffer[cut:]
                break
            if self._body is None:
                content.append(buffer[:at])
                self._body = ""
            else:
                body, self._body = self._body + buffer[:at], None
                self._end_block(body, self._close, content, calls)
            buffer = buffer[at + len(marker) :]
        return "".join(content), tuple(calls)

    def flush(self, text: str = "") -> tuple[str, tuple[ToolCall, ...]]:
        """Take the last ``text`` and end: a block left open is read as if it were closed."""
        content, calls = self.feed(text)
        pieces, found = [content], list(calls)
        if self._body is not None:
            body, self._body = self._body + self._held, None
            self._end_block(body, "", pieces, found)
        else:
            pieces.append(self._held)
        self._held = ""
        return "".join(pieces), tuple(found)

    @property
    def full(self) -> bool:
        """Whether the calls allowed have all been read (the turn should end)."""
        return self._max_calls is not None and self._read >= self._max_calls

    def _end_block(self, body: str, close: str, content: list[str], calls: list[ToolCall]) -> None:
        parsed = parse_calls(body)
        if parsed is None:
            content.append(self._open + body + close)
            return
        if self._max_calls is not None:
            parsed = parsed[: max(0, self._max_calls - self._read)]
        self._read += len(parsed)
        calls.extend(parsed)


def _partial(text: str, marker: str) -> int:
    """The length of the longest end of ``text`` that is a proper start of ``marker``."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:n]):
            return n
    return 0
