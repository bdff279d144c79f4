from __future__ import annotations

from dataclasses import dataclass

from lifecycle.strategies.base import StrategyConfigError
from lifecycle.strategies.config_checks import is_int, is_number, positive_int, positive_number, seed_and_device, widths

# Adam at lr 1e-3 needs 35-40 steps to collapse a task on a full hypernetwork
# and 50-70 on a chunked one (hypernet-feasibility.md, section 5); with fewer,
# a forget leaves the task well above chance and nothing reports it.
MIN_FORGET_STEPS = 60


@dataclass(frozen=True)
class HypernetConfig:
    """Settings of the ``hypernet`` strategy (after UnCLe).

    The defaults are the small CPU configuration that met every target of the
    feasibility prototype on permuted MNIST-5k over three seeds.

    target_net: "mlp" (any input size) or "cnn" (hypnettorch's small LeNet,
        for 28x28 single-channel inputs, i.e. 784 features).
    hidden: hidden layer widths of the "mlp" target net.
    hnet: "chunked" (ChunkedHMLP, the default) or "hmlp" (a full HMLP whose
        output layer emits every target weight; far larger and slower).
    hnet_layers: hidden layer widths of the hypernetwork.
    task_emb_dim: size of each task embedding.
    emb_init_var: variance of new task embeddings. The hyperfan init is told
        this variance; with unit variance a chunked net generates weights far
        too large and training quietly fails.
    chunk_size, chunk_emb_dim: target weights per chunk and the size of each
        chunk's embedding ("chunked" only).
    beta: weight of the output regulariser that holds active tasks' generated
        weights at their values after the previous operation.
    gamma: weight of the noise-alignment term at forget time.
    lr, epochs, batch_size: Adam learning rate, passes over a learn request's
        samples, and minibatch size.
    forget_lr: Adam learning rate of the data-free forget steps.
    forget_steps: forget steps of the first forget; each later forget runs
        forget_steps * forget_anneal ** (forgets so far) steps, but never fewer
        than forget_steps_min.
    noise_samples: fresh Gaussian draws the forgotten task is aligned to per step.
    clip_norm: gradient-norm clip of the forget steps, where the noise term
        outweighs the remember term by orders of magnitude.
    seed: seeds initialisation, embeddings, shuffling and noise.
    device: "cpu" or a CUDA device such as "cuda" or "cuda:0".
    """

    target_net: str = "mlp"
    hidden: tuple[int, ...] = (100, 100)
    hnet: str = "chunked"
    hnet_layers: tuple[int, ...] = (200, 200)
    task_emb_dim: int = 32
    emb_init_var: float = 1e-4
    chunk_size: int = 4000
    chunk_emb_dim: int = 16
    beta: float = 0.1
    gamma: float = 0.1
    lr: float = 1e-3
    epochs: int = 10
    batch_size: int = 128
    forget_lr: float = 1e-3
    forget_steps: int = 100
    forget_anneal: float = 0.9
    forget_steps_min: int = MIN_FORGET_STEPS
    noise_samples: int = 10
    clip_norm: float = 1.0
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.target_net not in ("mlp", "cnn"):
            raise StrategyConfigError(f"target_net must be 'mlp' or 'cnn', not {self.target_net!r}")
        if self.hnet not in ("chunked", "hmlp"):
            raise StrategyConfigError(f"hnet must be 'chunked' or 'hmlp', not {self.hnet!r}")
        # JSON hands lists back; the frozen dataclass should compare equal either way.
        object.__setattr__(self, "hidden", widths(self.hidden, "hidden", allow_empty=True))
        object.__setattr__(self, "hnet_layers", widths(self.hnet_layers, "hnet_layers", allow_empty=False))
        for name in ("task_emb_dim", "chunk_size", "chunk_emb_dim", "epochs", "batch_size", "forget_steps",
                     "noise_samples"):
            positive_int(getattr(self, name), name)
        for name in ("emb_init_var", "lr", "forget_lr", "clip_norm"):
            positive_number(getattr(self, name), name)
        for name in ("beta", "gamma"):
            value = getattr(self, name)
            if not is_number(value) or value < 0:
                raise StrategyConfigError(f"{name} must be a non-negative number, not {value!r}")
        if self.gamma == 0:
            raise StrategyConfigError("gamma must be positive: with gamma = 0 a forget changes nothing")
        if not is_number(self.forget_anneal) or not 0 < self.forget_anneal <= 1:
            raise StrategyConfigError(f"forget_anneal must be in (0, 1], not {self.forget_anneal!r}")
        if not is_int(self.forget_steps_min) or self.forget_steps_min < MIN_FORGET_STEPS:
            raise StrategyConfigError(
                f"forget_steps_min must be an integer >= {MIN_FORGET_STEPS}, not {self.forget_steps_min!r}: "
                "fewer data-free steps leave a forgotten task well above chance"
            )
        if self.forget_steps < self.forget_steps_min:
            raise StrategyConfigError(
                f"forget_steps ({self.forget_steps}) must be at least forget_steps_min ({self.forget_steps_min})"
            )
        seed_and_device(self.seed, self.device)
