"""Group commit: many threads' writes of one kind, batched into one transaction.

A thread that finds no batch being written writes the items waiting (its
own first) in one call and hands the next batch to the first thread still
waiting; the others wait for their results. Under one caller this is a plain
call; under many, the work a transaction does once (taking locks, reading
what every item needs, committing) is shared by every item of the batch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class _Slot(Generic[Item, Result]):
    def __init__(self, item: Item) -> None:
        self.item = item
        self.ready = threading.Event()
        self.lead = False  # this thread writes the next batch
        self.result: Result | None = None
        self.error: BaseException | None = None


class GroupCommit(Generic[Item, Result]):
    """``write(items)`` returns one result per item, in order; an item's result may be an
    exception instance, which its caller gets raised. An exception from ``write`` itself
    (the transaction failed) is raised to every caller of that batch."""

    def __init__(self, write: Callable[[list[Item]], list[Result | BaseException]], max_batch: int = 64) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self.write = write
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._waiting: list[_Slot] = []
        self._writing = False

    def submit(self, item: Item) -> Result:
        slot = _Slot(item)
        with self._lock:
            self._waiting.append(slot)
            if not self._writing:
                self._writing = slot.lead = True
        if not slot.lead:
            slot.ready.wait()
        if slot.lead:  # first of the queue: write a batch that starts with this item
            self._write_batch()
        if slot.error is not None:
            raise slot.error
        return slot.result

    def _write_batch(self) -> None:
        with self._lock:
            batch, self._waiting = self._waiting[:self.max_batch], self._waiting[self.max_batch:]
        try:
            results = self.write([s.item for s in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"a group commit wrote {len(batch)} items and returned {len(results)} results")
            for s, r in zip(batch, results):
                if isinstance(r, BaseException):
                    s.error = r
                else:
                    s.result = r
        except BaseException as exc:
            for s in batch:
                s.error = exc
        finally:
            with self._lock:
                if self._waiting:
                    self._waiting[0].lead = True
                    self._waiting[0].ready.set()
                else:
                    self._writing = False
            for s in batch[1:]:
                s.ready.set()
