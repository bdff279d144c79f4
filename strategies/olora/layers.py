"""The layers of ``olora``: a frozen base MLP and the rank-r adapters stacked on its linear layers.

The base is a list of ``(W (d_in, d_out), b (d_out,))`` per linear layer, ReLU
between them. An adapter is a dict holding, per layer, a down-projection
``A`` (r, d_in) and an up-projection ``B`` (d_out, r), zero-initialised so a
new adapter starts as no change; the strategy adds its own keys ("task", and
for unlearning adapters "classes" and "detector"). Layer i's output is
``h W_i + b_i + (alpha / r) * sum over adapters of weight * (h A_i^T) B_i^T``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lifecycle.strategies.training import fit, trainable

Base = list[tuple[torch.Tensor, torch.Tensor]]


def normalised_overlap(A1: np.ndarray, A2: np.ndarray) -> float:
    """||A1 A2^T||_F^2 / (||A1||_F^2 ||A2||_F^2) for down-projections of shape (r, d_in)."""
    A1, A2 = np.asarray(A1, dtype=np.float64), np.asarray(A2, dtype=np.float64)
    denom = float(np.sum(A1 * A1) * np.sum(A2 * A2))
    return float(np.sum((A1 @ A2.T) ** 2) / denom) if denom > 0 else 0.0


def orth_penalty(earlier: list[list[torch.Tensor]], current: list[torch.Tensor]) -> torch.Tensor:
    """The O-LoRA penalty sum over earlier adapters and layers of ||A_old A_new^T||_F^2."""
    total = 0.0
    for A_old in earlier:
        for A_o, A_n in zip(A_old, current):
            total = total + ((A_o @ A_n.T) ** 2).sum()
    return total


def new_adapter(widths: list[int], rank: int, g: torch.Generator, device: torch.device) -> dict:
    A = [(torch.randn(rank, widths[i], generator=g) / math.sqrt(widths[i])).to(device)
         for i in range(len(widths) - 1)]
    B = [torch.zeros(widths[i + 1], rank, device=device) for i in range(len(widths) - 1)]
    return {"A": A, "B": B}


def adapter_state(prefix: str, a: dict) -> dict[str, np.ndarray]:
    out = {}
    for i, (A, B) in enumerate(zip(a["A"], a["B"])):
        out[f"{prefix}A{i}"] = A.detach().cpu().numpy().copy()
        out[f"{prefix}B{i}"] = B.detach().cpu().numpy().copy()
    return out


def load_adapter(state: dict[str, np.ndarray], prefix: str, n_layers: int, device: torch.device) -> dict:
    def tensors(kind: str) -> list[torch.Tensor]:
        return [torch.as_tensor(np.asarray(state[f"{prefix}{kind}{i}"], dtype=np.float32), device=device)
                for i in range(n_layers)]

    return {"A": tensors("A"), "B": tensors("B")}


def base_state(base: Base) -> dict[str, np.ndarray]:
    out = {}
    for i, (W, b) in enumerate(base):
        out[f"base/W{i}"] = W.cpu().numpy().copy()
        out[f"base/b{i}"] = b.cpu().numpy().copy()
    return out


def load_base(state: dict[str, np.ndarray], n_layers: int, device: torch.device) -> Base:
    return [
        (torch.as_tensor(np.asarray(state[f"base/W{i}"], dtype=np.float32), device=device),
         torch.as_tensor(np.asarray(state[f"base/b{i}"], dtype=np.float32), device=device))
        for i in range(n_layers)
    ]


def base_features(base: Base, X_t: torch.Tensor) -> list[torch.Tensor]:
    """Hidden activations of the frozen base alone (the router's and detectors' features)."""
    feats, h = [], X_t
    for W, b in base[:-1]:
        h = torch.relu(h @ W + b)
        feats.append(h)
    return feats


def forward(base: Base, X_t: torch.Tensor, learn_terms, forget_adapters, gate, scale: float) -> torch.Tensor:
    """Logits. learn_terms: [(adapter, weight (n,) or None = 1)]; forget adapters scaled by gate (None = 1)."""
    h = X_t
    last = len(base) - 1
    for i, (W, b) in enumerate(base):
        out = h @ W + b
        for a, w in learn_terms:
            delta = (h @ a["A"][i].T) @ a["B"][i].T
            out = out + scale * (delta if w is None else w[:, None] * delta)
        if forget_adapters:
            delta = sum((h @ f["A"][i].T) @ f["B"][i].T for f in forget_adapters)
            out = out + scale * (delta if gate is None else gate[:, None] * delta)
        h = out if i == last else torch.relu(out)
    return h


def random_base(widths: list[int], g: torch.Generator) -> Base:
    """He-initialised hidden layers and a unit-gain output layer, never trained."""
    layers = []
    for i in range(len(widths) - 1):
        gain = 2.0 if i < len(widths) - 2 else 1.0
        W = torch.randn(widths[i], widths[i + 1], generator=g) * math.sqrt(gain / widths[i])
        layers.append((W, torch.zeros(widths[i + 1])))
    return layers


def pretrain_on_digits(widths: list[int], epochs: int, g: torch.Generator) -> Base:
    """A base MLP trained on scikit-learn's bundled 8x8 digits, resampled to the input size.

    Deterministic given the generator. 64 features are used as they are; a
    square input of side s gets the digit scaled into the central 5/7 of the
    image (MNIST's 20-in-28 layout), with random shifts of up to 2 pixels.
    """
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = torch.as_tensor((X / 16.0).astype(np.float32))
    d = widths[0]
    side = int(round(math.sqrt(d)))
    if d != 64:
        if side * side != d or side < 8:
            raise ValueError(f"base 'digits' needs a square image input of side >= 8, not {d} features")
        inner = max(8, int(round(side * 20 / 28)))
        img = torch.nn.functional.interpolate(X.reshape(-1, 1, 8, 8), size=(inner, inner), mode="bilinear",
                                              align_corners=False)
        lo = (side - inner) // 2
        img = torch.nn.functional.pad(img, (lo, side - inner - lo, lo, side - inner - lo)).clamp(0, 1)
        X = img.reshape(-1, d)
    y_t = torch.as_tensor(y, dtype=torch.long)
    layers = []
    for i in range(len(widths) - 1):
        bound = 1 / math.sqrt(widths[i])
        W = (torch.rand(widths[i], widths[i + 1], generator=g) * 2 - 1) * bound * math.sqrt(3)
        layers.append((W, torch.zeros(widths[i + 1])))
    n_out = widths[-1]
    params = [p for pair in layers for p in pair]
    shift = side > 8 and d != 64

    def loss_of(rows: torch.Tensor) -> torch.Tensor:
        xb = X[rows]
        if shift:
            dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=g))
            xb = torch.roll(xb.reshape(-1, side, side), (dx, dy), (1, 2)).reshape(-1, d)
        h = xb
        for i, (W, b) in enumerate(layers):
            h = h @ W + b
            if i < len(layers) - 1:
                h = torch.relu(h)
        target = y_t[rows] if n_out >= 10 else y_t[rows] % n_out
        return torch.nn.functional.cross_entropy(h, target)

    with trainable(params):
        fit(params, loss_of, n=len(X), epochs=epochs, batch_size=64, lr=1e-3, generator=g)
    return [(W.detach(), b.detach()) for W, b in layers]
