"""The request-sequence language of the benchmarks: ``"L0 L1 U0 L0"`` learns (L) or unlearns (U) task k.

One parser for the comparative bench (``bench.harness``) and the per-strategy
sequence scripts, so a sequence means the same thing everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Op:
    kind: str  # "learn" or "forget"
    task: int

    @property
    def learns(self) -> bool:
        return self.kind == "learn"

    def __str__(self) -> str:
        return f"{'L' if self.learns else 'U'}{self.task}"


def parse_sequence(text: str, n_tasks: int) -> tuple[Op, ...]:
    """``"L0 L1 U0 L0"``: learn (L) or unlearn (U) task k. A task is learned again only after a forget."""
    ops, learned = [], set()
    for token in text.split():
        match = re.fullmatch(r"([LU])(\d+)", token.upper())
        if match is None:
            raise ValueError(f"bad step {token!r} in {text!r}: write L<k> to learn task k, U<k> to forget it")
        op = Op("learn" if match[1] == "L" else "forget", int(match[2]))
        if op.task >= n_tasks:
            raise ValueError(f"step {token}: the stream has tasks 0..{n_tasks - 1}")
        if op.learns and op.task in learned:
            raise ValueError(f"step {token}: task {op.task} is already learned")
        if not op.learns and op.task not in learned:
            raise ValueError(f"step {token}: task {op.task} is not learned, there is nothing to forget")
        (learned.add if op.learns else learned.discard)(op.task)
        ops.append(op)
    if not ops:
        raise ValueError("the sequence is empty")
    return tuple(ops)


def role_masks(ops: Sequence[Op]) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
    """Columns (task indices in first-learn order) and the retained, forgotten and learned masks."""
    columns = list(dict.fromkeys(op.task for op in ops))
    shape = (len(ops), len(columns))
    retained, forgotten, learned = (np.zeros(shape, dtype=bool) for _ in range(3))
    state: dict[int, str] = {}
    for i, op in enumerate(ops):
        state[op.task] = "retained" if op.learns else "forgotten"
        for k, task in enumerate(columns):
            retained[i, k] = state.get(task) == "retained"
            forgotten[i, k] = state.get(task) == "forgotten"
        if op.learns:
            learned[i, columns.index(op.task)] = True
    return columns, retained, forgotten, learned
