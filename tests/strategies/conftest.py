"""Shared settings of the strategy tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="package")
def one_thread_per_op():
    """Run torch and BLAS on one thread here: the models are tiny, and on a shared
    two-core machine a second spinning thread per op made these tests many times slower."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)
