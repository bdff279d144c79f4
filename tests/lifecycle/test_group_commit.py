"""Group commit: concurrent callers' items go through one write in batches, and
each caller gets its own item's result or error."""

from __future__ import annotations

import threading
import time

import pytest

from lifecycle.group_commit import GroupCommit


def _wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.005)


class Gated:
    """A write whose first batch waits until released, so the callers after it queue up."""

    def __init__(self, fail_batch: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail_batch = fail_batch

    def __call__(self, items: list[int]) -> list:
        self.batches.append(list(items))
        if len(self.batches) == 1:
            self.entered.set()
            self.release.wait(10)
        if len(self.batches) - 1 == self.fail_batch:
            raise OSError("the transaction failed")
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]


def _run_all(group: GroupCommit, items: list[int]) -> dict[int, object]:
    out: dict[int, object] = {}

    def call(i: int) -> None:
        try:
            out[i] = group.submit(i)
        except Exception as exc:  # collected, and checked by the test
            out[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in items]
    for t in threads:
        t.start()
    return out, threads


def test_callers_that_arrive_during_a_write_share_the_next_batch_and_get_their_own_results():
    write = Gated()
    group = GroupCommit(write, max_batch=4)
    first, first_threads = _run_all(group, [0])
    assert write.entered.wait(10)
    rest, threads = _run_all(group, list(range(2, 12)))
    _wait_for(lambda: len(group._waiting) == 10)
    write.release.set()
    for t in first_threads + threads:
        t.join(10)
    # one batch for the first caller, then the ten waiting in batches of at most four
    assert [len(b) for b in write.batches] == [1, 4, 4, 2]
    assert sorted(i for b in write.batches for i in b) == [0, *range(2, 12)]
    assert first == {0: 0}
    for i in range(2, 12):
        if i % 2:
            assert isinstance(rest[i], ValueError) and str(rest[i]) == f"odd {i}"
        else:
            assert rest[i] == i * 10
    assert not group._writing and group._waiting == []


def test_a_failed_write_fails_its_batch_only_and_the_next_batch_still_runs():
    write = Gated(fail_batch=1)
    group = GroupCommit(write, max_batch=3)
    first, first_threads = _run_all(group, [0])
    assert write.entered.wait(10)
    rest, threads = _run_all(group, [2, 4, 6, 8, 10])
    _wait_for(lambda: len(group._waiting) == 5)
    write.release.set()
    for t in first_threads + threads:
        t.join(10)
    failed = set(write.batches[1])
    assert len(failed) == 3
    for i in (2, 4, 6, 8, 10):
        if i in failed:
            assert isinstance(rest[i], OSError)
        else:
            assert rest[i] == i * 10
    assert group.submit(12) == 120  # nothing is left stuck


def test_a_write_that_returns_the_wrong_number_of_results_is_an_error_not_a_silent_loss():
    group = GroupCommit(lambda items: [])
    with pytest.raises(RuntimeError, match="returned 0 results"):
        group.submit(1)
    with pytest.raises(ValueError):
        GroupCommit(lambda items: items, max_batch=0)
