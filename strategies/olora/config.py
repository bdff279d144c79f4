from __future__ import annotations

import math
from dataclasses import dataclass

from lifecycle.strategies.base import StrategyConfigError
from lifecycle.strategies.config_checks import is_int, is_number, positive_int, positive_number, seed_and_device, widths


@dataclass(frozen=True)
class OloraConfig:
    """Settings of the ``olora`` strategy (after O3, with O-LoRA learning).

    The defaults follow the feasibility prototype (part A of
    olora-s3t-feasibility.md): rank-8 adapters on every linear layer, random
    wrong labels for 8 epochs, a gate calibrated on cross-fitted forget-train
    scores. Two departures, measured with bench/olora_sequence.py: the
    prototype's base was trained on every task, this one is frozen before the
    first task, so its features separate tasks less well; the gate therefore
    also asks the router whether an input belongs to the forgotten task (which
    holds the false activations down without retained data): the odds of the
    detector's weight and of the router's posterior multiply, and with that
    second opinion the detector's own threshold sits lower (2 % quantile
    instead of 5 %) for a higher recall.

    hidden: hidden widths of the frozen base MLP.
    base: "random" (deterministic from ``seed``, no data) or "digits": the base
        is pretrained, deterministically, on scikit-learn's bundled 8x8 digits
        (resampled to the input size, which must then be a square image). That
        data ships inside scikit-learn and nothing is downloaded; it is only
        liability-free when the ledger's own data is not those digits.
    pretrain_epochs: epochs of the "digits" pretraining.
    rank, alpha: LoRA rank and scale numerator; a delta is (alpha/rank) * B A.
    lr, epochs, batch_size: Adam settings of a learning adapter.
    lambda_learn: weight of the O-LoRA penalty sum ||A_i A_k^T||_F^2 between a
        new learning adapter and every earlier one.
    router: "gaussian" weights each task's learning adapters by the task's
        posterior under class-conditional Gaussians of the base features
        (needed for class-incremental prediction without a task id);
        "sum" adds every learning adapter at full weight (plain O-LoRA).
    router_covariance: "pooled" shares one within-class covariance across
        every learned task (a linear discriminant; robust with few samples
        per task) or "task" fits one per task (quadratic; needs many samples).
    router_layers: "all" routes on the concatenated features of every hidden
        layer of the base, "last" on the last hidden layer only.
    router_shrinkage: shrinkage of the router's covariance towards a scaled
        identity.
    forget_lr, forget_epochs, forget_batch_size: Adam settings of an
        unlearning adapter (trained on the forget data with random wrong labels).
    lambda_orth: weight of the orthogonality penalty between a new unlearning
        adapter and the earlier ones (O3's lambda_orth).
    detector: "combined" (per layer Mahalanobis + nearest-neighbour cosine
        against a stored bank of forget-set features) or "mahalanobis" (keeps
        only the forget set's feature mean and covariance; weaker gate).
    gate_quantile: the detector's weight is 0.5 at this quantile of the
        cross-fitted forget-train scores and 0.95 at ``gate_upper_quantile``.
    gate_router: how a forget's gate combines its detector with the
        "gaussian" router's posterior r of the forgotten task: "product"
        (w = detector weight * r: an input that the router gives to a retained
        task, one learned later included, does not open the gate), "odds"
        (the odds multiply: logit w = logit(detector weight) + logit r, so a
        confident router can also open the gate for an input the detector
        half misses), or "off" (the detector's weight alone).
    cv_folds: folds of the cross-fitting that calibrates the detector.
    min_gate_recall: a forgotten task whose probes open the gate (w >= 0.5)
        less often than this is reported as relapsed (a gate miss).
    seed: seeds the base, adapters, shuffling and random labels.
    device: "cpu" or a CUDA device.
    """

    hidden: tuple[int, ...] = (256, 256)
    base: str = "random"
    pretrain_epochs: int = 30
    rank: int = 8
    alpha: float = 8.0
    lr: float = 5e-3
    epochs: int = 20
    batch_size: int = 32
    lambda_learn: float = 10.0
    router: str = "gaussian"
    router_covariance: str = "pooled"
    router_layers: str = "all"
    router_shrinkage: float = 0.01
    forget_lr: float = 5e-3
    forget_epochs: int = 8
    forget_batch_size: int = 32
    lambda_orth: float = 10.0
    detector: str = "combined"
    gate_quantile: float = 0.02
    gate_upper_quantile: float = 0.25
    gate_router: str = "odds"
    cv_folds: int = 5
    min_gate_recall: float = 0.9
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", widths(self.hidden, "hidden", allow_empty=False))
        if self.base not in ("random", "digits"):
            raise StrategyConfigError(f"base must be 'random' or 'digits', not {self.base!r}")
        if self.router not in ("gaussian", "sum"):
            raise StrategyConfigError(f"router must be 'gaussian' or 'sum', not {self.router!r}")
        if self.router_covariance not in ("pooled", "task"):
            raise StrategyConfigError(f"router_covariance must be 'pooled' or 'task', not {self.router_covariance!r}")
        if self.router_layers not in ("all", "last"):
            raise StrategyConfigError(f"router_layers must be 'all' or 'last', not {self.router_layers!r}")
        if self.gate_router not in ("product", "odds", "off"):
            raise StrategyConfigError(f"gate_router must be 'product', 'odds' or 'off', not {self.gate_router!r}")
        if self.detector not in ("combined", "mahalanobis"):
            raise StrategyConfigError(f"detector must be 'combined' or 'mahalanobis', not {self.detector!r}")
        for name in ("pretrain_epochs", "rank", "epochs", "batch_size", "forget_epochs", "forget_batch_size"):
            positive_int(getattr(self, name), name)
        if not is_int(self.cv_folds) or self.cv_folds < 2:
            raise StrategyConfigError(f"cv_folds must be an integer >= 2, not {self.cv_folds!r}")
        for name in ("alpha", "lr", "forget_lr"):
            positive_number(getattr(self, name), name)
        for name in ("lambda_learn", "lambda_orth"):
            value = getattr(self, name)
            if not is_number(value) or not 0 <= value < math.inf:
                raise StrategyConfigError(f"{name} must be a non-negative finite number, not {value!r}")
        if not is_number(self.router_shrinkage) or not 0 < self.router_shrinkage <= 1:
            raise StrategyConfigError(f"router_shrinkage must be in (0, 1], not {self.router_shrinkage!r}")
        for name in ("gate_quantile", "gate_upper_quantile", "min_gate_recall"):
            value = getattr(self, name)
            if not is_number(value) or not 0 < value < 1:
                raise StrategyConfigError(f"{name} must be in (0, 1), not {value!r}")
        if not self.gate_quantile < self.gate_upper_quantile:
            raise StrategyConfigError(
                f"gate_quantile ({self.gate_quantile}) must be below gate_upper_quantile ({self.gate_upper_quantile})"
            )
        seed_and_device(self.seed, self.device)
