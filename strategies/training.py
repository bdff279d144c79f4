"""The one Adam training loop of the torch strategies.

``fit`` runs minibatch epochs: each epoch draws a permutation of the rows
from the given generator, then steps through it in batches of
``batch_size``; ``loss_of(rows)`` computes one batch's loss (and may draw
more from the same generator: the draws interleave the same way on every
run). ``run_steps`` is the same optimiser step without data (a loss per
step). Every random draw comes from the caller's generator, never from
torch's global one, so a training run is reproducible bit for bit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch


@contextlib.contextmanager
def trainable(tensors: Sequence[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    """Leaf tensors that need gradients while the block runs, and no longer after it."""
    tensors = [t.requires_grad_(True) for t in tensors]
    try:
        yield tensors
    finally:
        for t in tensors:
            t.requires_grad_(False)


def step(optimiser: torch.optim.Optimizer, loss: torch.Tensor, clip: tuple[Sequence[torch.Tensor], float] | None
         = None) -> None:
    """One optimiser step on ``loss``; ``clip=(params, max_norm)`` clips the gradient norm first."""
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(clip[0], clip[1])
    optimiser.step()


def fit(params: Sequence[torch.Tensor], loss_of: Callable[[torch.Tensor], torch.Tensor], *, n: int, epochs: int,
        batch_size: int, lr: float, generator: torch.Generator, device: torch.device | None = None) -> None:
    """Minibatch Adam over ``n`` rows: ``epochs`` shuffled passes (permutations drawn
    on the generator's device, then moved to ``device``)."""
    optimiser = torch.optim.Adam(params, lr=lr)
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        if device is not None:
            order = order.to(device)
        for start in range(0, n, batch_size):
            step(optimiser, loss_of(order[start:start + batch_size]))


def run_steps(params: Sequence[torch.Tensor], loss: Callable[[], torch.Tensor], *, steps: int, lr: float,
              clip_norm: float | None = None) -> None:
    """``steps`` Adam steps on ``loss()`` (recomputed each step), gradient norm clipped to ``clip_norm``."""
    optimiser = torch.optim.Adam(params, lr=lr)
    clip = None if clip_norm is None else (params, clip_norm)
    for _ in range(steps):
        step(optimiser, loss(), clip)
