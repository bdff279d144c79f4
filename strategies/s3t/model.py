"""The ``s3t`` strategy: shards x slices x sequences of adapter blocks, deletion by deactivation.

Learning. The first learn request lays its samples out in m shards x L
slices (keyed hash of the id) and trains, per shard, B sequences of stages;
stage p trains one adapter block and head on the union of the sequence's first
p+1 slices, with earlier blocks frozen. Each later learn request forms
``continual_slices`` new slices per shard, appended to every sequence of the
shard as new stages trained on the sequence's surviving prefix plus the new
slices; nothing already trained is touched.

The frozen base's features of every retained sample are kept in the state so
that later stages (continual learning, retrains) can train on a sequence's
whole prefix without asking for the data again. A forget drops the forgotten
samples' features with the blocks they reached.

Forgetting. Deleting a sample drops, in every sequence of its shard, the
stages from the one that first saw its slice: no gradient step, effective at
once. Shards predict with their longest surviving sequence; serving shards
average logits. A shard whose longest prefix fell below ``retrain_below`` is
named by ``retrain_plan`` for a background retrain (or, with
``retrain_mode="inline"``, retrained by the forget itself) from retained
samples only.

Provenance. Every stage stores the sha256 of the sorted sample ids it trained
on; ``verify_forgotten`` recomputes each active stage's training set from the
current layout, checks the digest and that no tombstoned id is in it.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import numpy as np
import torch

from lifecycle.strategies import inputs
from lifecycle.strategies.base import ForgetSet, RetrainPlan, Strategy, StrategyInputError, TaskData
from lifecycle.strategies.s3t import TAGS
from lifecycle.strategies.s3t.book import Book, ids_digest
from lifecycle.strategies.s3t.config import S3TConfig
from lifecycle.strategies.s3t.net import BLOCK_KEYS, apply_block, head_logits, make_base, stage_seed, train_stage


class S3TStrategy(Strategy):
    name = "s3t"
    config_class = S3TConfig
    tags = TAGS

    _book: Book | None = None
    _base: tuple[np.ndarray, np.ndarray] | None = None
    _feat: np.ndarray | None = None  # (n, hidden) base features of retained samples
    _labels: np.ndarray | None = None
    _row: dict[str, int] | None = None  # sample id -> row of _feat
    _stages: list | None = None  # [shard][sequence] -> list of stage dicts (BLOCK_KEYS, digest, count)
    last_forget_seconds: float = 0.0
    retrains_done: int = 0

    # ----------------------------------------------------------------- contract

    @property
    def is_fitted(self) -> bool:
        return self._book is not None

    @property
    def book(self) -> Book:
        self._require_fitted()
        return self._book

    def learn(self, data: TaskData) -> None:
        X, y = self._inputs(data.X, "learn"), inputs.labels(data.y, len(data.X), self.n_classes, "learn")
        ids = [str(s) for s in data.sample_ids]
        if len(ids) != len(X) or len(set(ids)) != len(ids):
            raise StrategyInputError("learn: sample_ids must be unique and one per row of X")
        if not self.is_fitted:
            self._init_state()
        if not ids:
            return
        known = [s for s in ids if s in self._row]
        if known:
            raise ValueError(f"learn: {len(known)} sample(s) are already learned, e.g. {known[0]!r}")
        self._add_features(ids, self._features(X), y)
        starts = self._book.add_group(ids)
        self._train(sorted(starts.items()))

    def forget(self, forget_set: ForgetSet) -> None:
        if not forget_set.sample_ids:
            return
        self._require_fitted()
        started = time.perf_counter()
        cut, _ = self._book.deactivate(forget_set.sample_ids)
        for (j, k), length in cut.items():
            del self._stages[j][k][length:]
        self._drop_features(forget_set.sample_ids)
        self.last_forget_seconds = time.perf_counter() - started
        if self.config.retrain_mode == "inline":
            self._retrain_shards([plan.unit for plan in self.retrain_plan()])

    def predict(self, X: np.ndarray, task: str | None = None) -> np.ndarray:
        return np.argmax(self.scores(X, task), axis=1).astype(np.int64)

    def scores(self, X: np.ndarray, task: str | None = None) -> np.ndarray:
        """Logits averaged over the serving shards (zeros while no shard serves)."""
        self._require_fitted()
        X = self._inputs(X, "predict")
        total = torch.zeros(len(X), self.n_classes)
        n = 0
        with torch.no_grad():
            h0 = torch.from_numpy(self._features(X))
            for j in range(self.config.n_shards):
                k, length = self._book.best(j)
                if length == 0:
                    continue
                total += self._sequence_logits(self._stages[j][k][:length], h0)
                n += 1
        return (total / max(n, 1)).numpy().astype(np.float64)

    def shard_logits(self, X: np.ndarray, shard: int) -> np.ndarray | None:
        """One shard's logits with its longest sequence, or None when it cannot serve."""
        k, length = self.book.best(shard)
        if length == 0:
            return None
        with torch.no_grad():
            h0 = torch.from_numpy(self._features(self._inputs(X, "predict")))
            return self._sequence_logits(self._stages[shard][k][:length], h0).numpy()

    def retrain_plan(self) -> list[RetrainPlan]:
        if not self.is_fitted:
            return []
        return [RetrainPlan(j, tuple(self._book.live_ids(j))) for j in range(self.config.n_shards)
                if self._book.needs_retrain(j, self.config.retrain_below)]

    def retrain(self, plan: RetrainPlan, data: TaskData) -> None:
        """Retrain shard ``plan.unit`` from scratch on its retained samples.

        ``data`` must hold exactly the shard's retained samples with their
        original labels; they are checked against the kept features (so the
        ledger and the state must agree), and training then runs on the kept
        features, which makes the result bit-identical to a training from
        scratch of the same slices.
        """
        self._require_fitted()
        j = int(plan.unit)
        if not 0 <= j < self.config.n_shards:
            raise ValueError(f"retrain: no shard {j}")
        expected = set(self._book.live_ids(j))
        given = [str(s) for s in data.sample_ids]
        if set(given) != expected or len(given) != len(expected):
            raise ValueError(f"retrain of shard {j}: got {len(given)} samples, the shard retains {len(expected)} "
                             f"({len(set(given) - expected)} unexpected, {len(expected - set(given))} missing)")
        if given:
            rows = np.array([self._row[s] for s in given])
            y = inputs.labels(data.y, len(given), self.n_classes, "retrain")
            if not np.array_equal(self._labels[rows], y):
                raise ValueError(f"retrain of shard {j}: labels differ from those learned")
            feats = self._features(self._inputs(data.X, "retrain"))
            if not np.allclose(feats, self._feat[rows], atol=1e-4, rtol=1e-4):
                raise ValueError(f"retrain of shard {j}: the data differ from the samples learned")
        self._retrain_shards([j])

    def verify_forgotten(self, sample_ids: frozenset[str]) -> dict:
        """Provenance proof: every active stage's recorded training set (digest)
        matches its slices as they stand, and none holds a tombstoned id."""
        self._require_fitted()
        tomb = frozenset(str(s) for s in sample_ids)
        problems: list[str] = []
        digests = hashlib.sha256()
        blocks = 0
        for j in range(self.config.n_shards):
            for k, seq in enumerate(self._book.seqs[j]):
                stages = self._stages[j][k]
                if len(stages) != len(seq):
                    problems.append(f"shard {j} sequence {k}: {len(stages)} stages for {len(seq)} slices")
                    continue
                for p, stage in enumerate(stages):
                    ids = self._book.stage_ids(seq, p)
                    blocks += 1
                    digests.update(stage["digest"].encode())
                    if ids_digest(ids) != stage["digest"] or len(ids) != stage["count"]:
                        problems.append(f"shard {j} sequence {k} stage {p}: trained on other samples than its slices")
                    hit = tomb.intersection(ids)
                    if hit:
                        problems.append(f"shard {j} sequence {k} stage {p}: trained on {len(hit)} forgotten sample(s)")
        kept = tomb.intersection(self._row)
        if kept:
            problems.append(f"{len(kept)} forgotten sample(s) still have features in the state")
        serving = [j for j in range(self.config.n_shards) if self._book.serving(j)]
        return {
            "passed": not problems,
            "check": "every active block's recorded training-set digest matches its slices; "
                     "no active block and no kept feature belongs to a forgotten sample",
            "tombstones_checked": len(tomb),
            "active_blocks": blocks,
            "shards_serving": len(serving),
            "shards": self.config.n_shards,
            "longest_prefix_by_shard": [self._book.best(j)[1] for j in range(self.config.n_shards)],
            "pending_retrain_shards": [p.unit for p in self.retrain_plan()],
            "provenance_digest": digests.hexdigest(),
            "problems": problems[:20],
        }

    def certificate_notes(self) -> list[str]:
        notes = ["s3t forgets by deactivation: every adapter block trained on a forgotten sample's slice, and "
                 "every later block of its sequence, is deleted from the state; serving blocks were never trained "
                 "on it (see provenance)"]
        if self.is_fitted:
            pending = [p.unit for p in self.retrain_plan()]
            if pending:
                notes.append(f"shard(s) {pending} await a background retrain from retained samples; "
                             "until it commits they serve a shorter prefix or not at all")
        return notes

    def state_dict(self) -> dict[str, np.ndarray]:
        self._require_fitted()
        state = self._book.to_arrays()
        order = [self._row[s] for s in state["book/sample_ids"]]
        state["base/W"], state["base/b"] = self._base[0].copy(), self._base[1].copy()
        state["feat/X"] = self._feat[order] if order else np.zeros((0, self.config.hidden), np.float32)
        state["feat/y"] = self._labels[order] if order else np.zeros(0, np.int64)
        for j in range(self.config.n_shards):
            for k in range(self.config.n_sequences):
                stages = self._stages[j][k]
                for key in BLOCK_KEYS:
                    shape = self._block_shape(key)
                    state[f"stage/{j}/{k}/{key}"] = (np.stack([s[key] for s in stages]) if stages
                                                     else np.zeros((0, *shape), np.float32))
                state[f"stage/{j}/{k}/digest"] = np.array([s["digest"] for s in stages], dtype="<U64")
                state[f"stage/{j}/{k}/count"] = np.array([s["count"] for s in stages], dtype=np.int64)
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        cfg = self.config
        expected = set(self._empty_book().to_arrays()) - {f"book/seq/{j}/{k}" for j in range(cfg.n_shards)
                                                          for k in range(cfg.n_sequences)}
        expected |= {f"book/seq/{j}/{k}" for j in range(cfg.n_shards) for k in range(cfg.n_sequences)}
        expected |= {"base/W", "base/b", "feat/X", "feat/y"}
        expected |= {f"stage/{j}/{k}/{key}" for j in range(cfg.n_shards) for k in range(cfg.n_sequences)
                     for key in (*BLOCK_KEYS, "digest", "count")}
        missing, unknown = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unknown:
            raise ValueError(f"s3t state keys do not match this config: missing {missing[:5] or 'none'}, "
                             f"unknown {unknown[:5] or 'none'}")
        if state["base/W"].shape != (self.n_features, cfg.hidden):
            raise ValueError(f"s3t state base has shape {state['base/W'].shape}, expected "
                             f"{(self.n_features, cfg.hidden)}")
        book = self._empty_book()
        book.load_arrays(state)
        stages = []
        for j in range(cfg.n_shards):
            per_shard = []
            for k in range(cfg.n_sequences):
                n = len(book.seqs[j][k])
                arrays = {key: np.asarray(state[f"stage/{j}/{k}/{key}"]) for key in BLOCK_KEYS}
                for key, arr in arrays.items():
                    if arr.shape != (n, *self._block_shape(key)):
                        raise ValueError(f"s3t state stage/{j}/{k}/{key} has shape {arr.shape}, expected "
                                         f"{(n, *self._block_shape(key))}")
                digests, counts = state[f"stage/{j}/{k}/digest"], state[f"stage/{j}/{k}/count"]
                per_shard.append([
                    {**{key: np.array(arrays[key][p], dtype=np.float32) for key in BLOCK_KEYS},
                     "digest": str(digests[p]), "count": int(counts[p])}
                    for p in range(n)
                ])
            stages.append(per_shard)
        ids = [str(s) for s in state["book/sample_ids"]]
        self._base = (np.array(state["base/W"], dtype=np.float32), np.array(state["base/b"], dtype=np.float32))
        self._feat = np.array(state["feat/X"], dtype=np.float32).reshape(len(ids), cfg.hidden)
        self._labels = np.array(state["feat/y"], dtype=np.int64)
        self._row = {s: i for i, s in enumerate(ids)}
        self._book, self._stages = book, stages

    # ---------------------------------------------------------------- internals

    def _empty_book(self) -> Book:
        cfg = self.config
        return Book(cfg.n_shards, cfg.n_sequences, n_slices=cfg.n_slices, continual_slices=cfg.continual_slices,
                    selection=cfg.selection, priors=cfg.deletion_priors, tau=cfg.bms_tau, seed=cfg.seed)

    def _init_state(self) -> None:
        cfg = self.config
        self._base = make_base(cfg.base, self.n_features, cfg.hidden, cfg.seed, cfg.pretrain_epochs)
        self._book = self._empty_book()
        self._feat = np.zeros((0, cfg.hidden), np.float32)
        self._labels = np.zeros(0, np.int64)
        self._row = {}
        self._stages = [[[] for _ in range(cfg.n_sequences)] for _ in range(cfg.n_shards)]

    def _block_shape(self, key: str) -> tuple[int, ...]:
        H, r, C = self.config.hidden, self.config.rank, self.n_classes
        return {"D": (H, r), "bD": (r,), "U": (r, H), "bU": (H,), "Wh": (H, C), "bh": (C,)}[key]

    def _features(self, X: np.ndarray) -> np.ndarray:
        W, b = self._base
        with torch.no_grad():
            return torch.relu(torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)) @ torch.from_numpy(W)
                              + torch.from_numpy(b)).numpy()

    def _add_features(self, ids: list[str], feats: np.ndarray, y: np.ndarray) -> None:
        start = len(self._labels)
        self._feat = np.concatenate([self._feat, feats.astype(np.float32)])
        self._labels = np.concatenate([self._labels, y])
        self._row.update((s, start + i) for i, s in enumerate(ids))

    def _drop_features(self, ids) -> None:
        gone = [self._row[s] for s in ids if s in self._row]
        if not gone:
            return
        keep = np.ones(len(self._labels), bool)
        keep[gone] = False
        kept_ids = sorted((r, s) for s, r in self._row.items() if keep[r])
        self._feat, self._labels = self._feat[keep], self._labels[keep]
        self._row = {s: i for i, (_, s) in enumerate(kept_ids)}

    def _sequence_logits(self, stages: list[dict], h: torch.Tensor) -> torch.Tensor:
        for stage in stages:
            h = apply_block(stage, h)
        return head_logits(stages[-1], h)

    def _train(self, starts: list[tuple[tuple[int, int], int]]) -> None:
        """Train stages start.. of each ((shard, sequence), start), stages before start staying frozen.

        The sequences do not depend on each other, so each is one job for the
        executor; every stage's seed follows from its place, so the stages
        come out the same, bit for bit, wherever their job ran.
        """
        jobs, stage_ids = [], []
        for (j, k), start in starts:
            seq, stages = self._book.seqs[j][k], self._stages[j][k]
            if len(stages) != start:
                raise RuntimeError(f"shard {j} sequence {k}: {len(stages)} stages, expected {start}")
            ids = [self._book.stage_ids(seq, p) for p in range(start, len(seq))]
            stage_ids.append(ids)
            jobs.append(self._sequence_job(j, k, start, ids))
        trained = self.executor.map(train_sequence, jobs)
        for ((j, k), _), ids, blocks in zip(starts, stage_ids, trained, strict=True):
            for block, stage in zip(blocks, ids, strict=True):
                # copies: what another process sent back may be read-only
                self._stages[j][k].append({**{key: np.array(block[key]) for key in BLOCK_KEYS},
                                           "digest": ids_digest(stage), "count": len(stage)})

    def _sequence_job(self, j: int, k: int, start: int, stage_ids: list[list[str]]) -> SequenceJob:
        cfg = self.config
        rows = [np.array([self._row[s] for s in ids], dtype=np.int64) for ids in stage_ids]
        # the rows of all its stages once, each stage as positions into them
        used, positions = np.unique(np.concatenate(rows) if rows else np.zeros(0, np.int64), return_inverse=True)
        bounds = np.cumsum([0, *map(len, rows)])
        return SequenceJob(
            X=self._feat[used], y=self._labels[used],
            stage_rows=tuple(positions[a:b] for a, b in zip(bounds[:-1], bounds[1:])),
            frozen=tuple({key: stage[key] for key in BLOCK_KEYS} for stage in self._stages[j][k][:start]),
            seeds=tuple(stage_seed(cfg.seed, j, k, p) for p in range(start, start + len(stage_ids))),
            n_classes=self.n_classes, rank=cfg.rank, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
        )

    def _retrain_shards(self, shards: list[int]) -> None:
        for j in shards:
            self._book.rebuild(j)
            for k in range(self.config.n_sequences):
                self._stages[j][k] = []
        self._train([((j, k), 0) for j in shards for k in range(self.config.n_sequences)])
        self.retrains_done += len(shards)

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError("s3t strategy has learned nothing yet")

    def _inputs(self, X: np.ndarray, what: str) -> np.ndarray:
        return inputs.features(X, self.n_features, what)


# ---- one sequence's training, a job an executor may run anywhere ------------------------------


@dataclass(frozen=True)
class SequenceJob:
    """Everything the training of some stages of one sequence needs, and nothing of the strategy.

    X, y: the base features and labels of every sample those stages train on;
    stage_rows[i]: the positions in X of stage i's samples, in the order the
    strategy lists them; frozen: the sequence's stages before the first one
    to train (their block arrays); seeds[i]: stage i's seed.
    """

    X: np.ndarray
    y: np.ndarray
    stage_rows: tuple[np.ndarray, ...]
    frozen: tuple[dict[str, np.ndarray], ...]
    seeds: tuple[int, ...]
    n_classes: int
    rank: int
    epochs: int
    batch_size: int
    lr: float


def train_sequence(job: SequenceJob) -> list[dict[str, np.ndarray]]:
    """Train the job's stages one after another, each on the frozen ones before it; their block arrays."""
    # copies: arrays another process sent may be read-only, which torch warns about
    stages, trained = [{key: np.array(arr) for key, arr in stage.items()} for stage in job.frozen], []
    for rows, seed in zip(job.stage_rows, job.seeds, strict=True):
        h = torch.from_numpy(job.X[rows]) if len(rows) else torch.zeros(0, job.X.shape[1])
        with torch.no_grad():
            for stage in stages:
                h = apply_block(stage, h)
        block = train_stage(h.contiguous(), torch.from_numpy(job.y[rows]), seed=seed,
                            head_prev=stages[-1] if stages else None, n_classes=job.n_classes, rank=job.rank,
                            epochs=job.epochs, batch_size=job.batch_size, lr=job.lr)
        stages.append(block)
        trained.append(block)
    return trained
