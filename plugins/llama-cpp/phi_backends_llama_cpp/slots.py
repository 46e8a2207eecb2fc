"""Which llama.cpp sequence id a call runs in, and what each one's KV cache still holds.

Each sequence has a KV cache of its own (the engine turns llama.cpp's ``kv_unified`` off). A
released slot keeps its cells (the prompt and the tokens fed after it) so that the next prompt
starting the same way, typically the next turn of a chat, computes only what is new. The table
can also evict idle caches, least recently used first, when the cells all slots may use are
fewer than they need (a shared cache); the engine gives it room for every slot, so it never has to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from phi_backends.errors import GenerationError

__all__ = ["Slot", "SlotTable", "common_prefix"]

#: ``trim(seq_id, keep)``: drop the sequence's cells from position ``keep`` on; False when the
#: cache cannot cut a sequence there (then only dropping all of it works).
Trim = Callable[[int, int], bool]


@dataclass(eq=False)
class Slot:
    seq_id: int
    ids: list[int] = field(default_factory=list)  # the tokens whose KV the cache holds, from position 0
    busy: bool = False
    reserved: int = 0  # while busy: the most cells the call can reach (its prompt and budget)
    used_at: int = 0  # when it was last taken or released (a counter; 0: never)

    @property
    def cells(self) -> int:
        return max(self.reserved, len(self.ids)) if self.busy else len(self.ids)


def common_prefix(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    """How many leading ids ``a`` and ``b`` share, at most ``limit``."""
    n = min(len(a), len(b), limit)
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class SlotTable:
    def __init__(self, n_slots: int, n_cells: int, trim: Trim) -> None:
        self.slots = [Slot(seq_id) for seq_id in range(n_slots)]
        self._n_cells = n_cells
        self._trim = trim
        self._clock = 0

    def take(self, prompt: Sequence[int], budget: int, *, reuse: bool) -> tuple[Slot, int]:
        """A free slot for ``prompt`` and how many of its first ids the slot's cache already holds."""
        free = [slot for slot in self.slots if not slot.busy]
        if not free:
            raise GenerationError(
                f"all {len(self.slots)} llama.cpp sequences are in use; "
                "finish a call first or load the model with a larger n_seq_max"
            )
        chosen, keep = None, 0
        if reuse:
            limit = len(prompt) - 1  # at least one token is computed: its logits sample the first token
            for slot in free:
                shared = common_prefix(slot.ids, prompt, limit)
                if shared > keep:
                    chosen, keep = slot, shared
            empty = [slot for slot in free if not slot.ids]
            if chosen is not None and 2 * keep < len(chosen.ids) and empty:
                # It would throw away most of another conversation's cache for a little of its
                # start (a BOS, a system prompt): an empty slot costs nothing.
                chosen, keep = empty[0], 0
        if chosen is None:
            chosen = min(free, key=lambda slot: slot.used_at)
        keep = self._cut(chosen, keep)
        self._clock += 1
        chosen.busy, chosen.used_at, chosen.reserved = True, self._clock, len(prompt) + budget
        self._make_room(chosen)
        return chosen, keep

    def release(self, slot: Slot) -> None:
        self._clock += 1
        slot.busy, slot.used_at, slot.reserved = False, self._clock, 0

    def forget(self, slot: Slot) -> None:
        """The slot's cache is gone (cleared, or left unknown by a failed decode)."""
        self._trim(slot.seq_id, 0)
        slot.ids.clear()

    def forget_all(self) -> None:
        """The whole cache was cleared outside the table (teacher forcing): trust nothing."""
        for slot in self.slots:
            slot.ids.clear()

    def _cut(self, slot: Slot, keep: int) -> int:
        if keep < len(slot.ids):
            if not self._trim(slot.seq_id, keep):  # e.g. a sliding-window cache that dropped old cells
                keep = 0
                self._trim(slot.seq_id, 0)
            del slot.ids[keep:]
        return keep

    def _make_room(self, chosen: Slot) -> None:
        """Evict idle caches, least recently used first, until the running calls' reservations fit."""
        in_use = sum(slot.cells for slot in self.slots)
        if in_use <= self._n_cells:
            return
        for slot in sorted((s for s in self.slots if not s.busy and s.ids), key=lambda s: s.used_at):
            in_use -= len(slot.ids)
            self.forget(slot)
            if in_use <= self._n_cells:
                return
