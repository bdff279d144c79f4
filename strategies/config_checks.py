"""Validators shared by the strategies' config dataclasses.

Configs arrive from JSON as well as from Python, so each check names the
field and the value it refused, and ``bool`` never passes for a number.
"""

from __future__ import annotations

import math
import re

from lifecycle.strategies.base import StrategyConfigError


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def positive_int(value, name: str) -> None:
    if not is_int(value) or value < 1:
        raise StrategyConfigError(f"{name} must be a positive integer, not {value!r}")


def positive_number(value, name: str) -> None:
    if not is_number(value) or not 0 < value < math.inf:
        raise StrategyConfigError(f"{name} must be a positive finite number, not {value!r}")


def widths(value, name: str, allow_empty: bool) -> tuple[int, ...]:
    """Layer widths as a tuple (JSON hands lists back; frozen configs should compare equal either way)."""
    if not isinstance(value, (list, tuple)) or not all(is_int(w) and 1 <= w <= 100_000 for w in value):
        raise StrategyConfigError(f"{name} must be a list of layer widths in 1..100000, not {value!r}")
    if not value and not allow_empty:
        raise StrategyConfigError(f"{name} needs at least one layer")
    return tuple(value)


def seed_and_device(seed, device) -> None:
    if not is_int(seed) or seed < 0:
        raise StrategyConfigError(f"seed must be a non-negative integer, not {seed!r}")
    if not isinstance(device, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise StrategyConfigError(f"device must be 'cpu', 'cuda' or 'cuda:N', not {device!r}")
