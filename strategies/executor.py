"""Where a strategy runs the independent jobs inside one request.

Some requests hold work that splits into jobs which do not depend on each
other: the (shard, sequence) trainings of ``s3t``, the blocks of rows whose
statistics ``analytic`` sums. A strategy hands them to its ``executor``:
``executor.map(fn, items)`` returns ``[fn(item) for item in items]``, in the
order of ``items``, whichever job finished first. ``LocalExecutor`` (every
strategy's default) runs them one after another in this process, exactly as
if the strategy had looped itself; the worker may give a strategy another
executor (``lifecycle.ray_executor.RayExecutor`` spreads them over a Ray
cluster).

What a job function must be, for any executor to run it: a module-level
function (another process imports it by name) that is pure (its result
depends on its item alone, so a job run twice, after its process died, gives
the same result) and takes and returns plain data (numpy arrays, numbers,
frozen dataclasses of them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class ExecutorLost(RuntimeError):
    """The executor lost the processes or machines a map ran on, or cannot reach them.

    Nothing of the map is returned. A strategy whose map raised this may be
    left half-changed, so its caller must drop it (the worker does, and hands
    the request back to the queue to run again later).
    """


class Executor(Protocol):
    """Runs a strategy's independent jobs (see the module's docstring)."""

    @property
    def workers(self) -> int:
        """How many jobs it runs at once (at least 1): strategies split work into about this many."""

    def map(self, fn: Callable[[Item], Result], items: Sequence[Item]) -> list[Result]:
        """``[fn(item) for item in items]``, in that order; raises ``ExecutorLost`` when it loses its workers."""

    def ready(self) -> bool:
        """Whether a map can run now (a worker claims nothing while its executor is not ready)."""


class LocalExecutor:
    """Runs the jobs one after another in this process."""

    @property
    def workers(self) -> int:
        return 1

    def map(self, fn: Callable[[Item], Result], items: Sequence[Item]) -> list[Result]:
        return [fn(item) for item in items]

    def ready(self) -> bool:
        return True

    def __repr__(self) -> str:
        return "LocalExecutor()"


LOCAL = LocalExecutor()
