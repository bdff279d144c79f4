"""A model's strategy, built from its config and loaded from a stored state.

A model with an encoder gets its strategy built on the encoder's output size,
wrapped in ``Encoded``: an adapter that encodes raw inputs before every verb
that takes them and hands everything else to the strategy. Strategies know
nothing of encoders.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from lifecycle import arrays, strategies
from lifecycle.errors import EncoderMismatch
from lifecycle.store.errors import ArtifactCorrupt
from lifecycle.store.records import Model, ModelVersion, Task
from lifecycle.strategies import inputs
from lifecycle.strategies.base import ForgetSet, RetrainPlan, Strategy, TaskData
from lifecycle.strategies.executor import Executor
from lifecycle.vault import Vault

# loaded encoders by (digest, device): the bytes are read and checked on every load, the module built once
_ENCODERS: OrderedDict[tuple[str, str], Any] = OrderedDict()
_ENCODERS_KEPT = 4
_ENCODERS_LOCK = threading.Lock()


def build_strategy(vault: Vault, model: Model) -> strategies.Strategy:
    """The model's strategy with no state yet, behind its encoder if it has one."""
    spec = strategies.get(model.strategy)
    config = spec.make_config(model.config)
    if model.encoder is None:
        return spec.build(config, model.n_features, model.n_classes)
    encoder = open_encoder(vault, model)
    return Encoded(spec.build(config, model.encoder.out_features, model.n_classes), encoder, model)


def load_strategy(vault: Vault, model: Model, version: ModelVersion | None) -> strategies.Strategy:
    strategy = build_strategy(vault, model)
    if version is not None:
        strategy.load_state_dict(arrays.unpack(vault.blob(version.artifact_digest)))
    return strategy


def open_encoder(vault: Vault, model: Model):
    """The model's encoder, from the artifact store; ``EncoderMismatch`` when its file is not the one recorded."""
    from lifecycle import encoders

    record = model.encoder
    try:
        data = vault.artifacts.get(record.digest)  # checks the file's sha256 against the recorded digest
    except ArtifactCorrupt as exc:
        raise EncoderMismatch(f"model {model.name!r}'s encoder was changed and is refused: {exc}") from None
    if hashlib.sha256(data).hexdigest() != record.digest:
        raise EncoderMismatch(f"model {model.name!r}'s encoder file does not match its recorded digest; refused")
    key = (record.digest, model.device)
    with _ENCODERS_LOCK:
        cached = _ENCODERS.get(key)
        if cached is not None and cached.record == record:
            _ENCODERS.move_to_end(key)
            return cached
    loaded = encoders.load(record, data, model.device, model.name)
    with _ENCODERS_LOCK:
        _ENCODERS[key] = loaded
        while len(_ENCODERS) > _ENCODERS_KEPT:
            _ENCODERS.popitem(last=False)
    return loaded


def chance(model: Model, task: Task, tags: strategies.Tags) -> float:
    """Accuracy of guessing: among the task's classes when the task id is given, else among all."""
    return 1.0 / (len(task.classes) if tags.needs_task_id else model.n_classes)


class Encoded(Strategy):
    """A strategy behind a frozen encoder: ``learn``, ``forget``, ``predict``,
    ``scores``, ``gate_weights`` and ``retrain`` take raw input rows (flattened,
    or of the encoder's input shape) and hand the strategy their features;
    everything else (tags, state, provenance, notes, gate floor) is the
    strategy's own. The encoder is not part of the state.

    Features of evaluation inputs (probe sets, which the worker reads again
    after every step) are kept by content, within a memory budget: the
    encoder is frozen, so an input's features never change.
    """

    MEMO_BYTES = 64 << 20

    def __init__(self, inner: Strategy, encoder, model: Model) -> None:
        self.inner = inner
        self.encoder = encoder
        self.name = inner.name
        self.config_class = type(inner).config_class
        self.tags = inner.tags
        self.config = inner.config
        self.n_features = model.n_features  # raw row width
        self.n_classes = inner.n_classes
        self.input_shape = tuple(encoder.record.input_shape)
        self._memo: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._memo_bytes = 0

    def __getattr__(self, name: str) -> Any:
        # only reached for attributes the adapter lacks; "inner" itself is never delegated (copy, pickle)
        if name == "inner" or "inner" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def executor(self) -> Executor:
        return self.inner.executor

    @executor.setter
    def executor(self, executor: Executor) -> None:
        # the strategy behind the encoder is the one that runs jobs
        self.inner.executor = executor

    # ---- encoding -------------------------------------------------------------

    def encode(self, X: np.ndarray, what: str, memo: bool = False) -> np.ndarray:
        """Features of raw inputs: (n, raw width) rows, or (n, *input_shape) arrays."""
        X = np.asarray(X)
        if X.ndim == 1 + len(self.input_shape) and tuple(X.shape[1:]) == self.input_shape and X.ndim != 2:
            X = X.reshape(len(X), -1)
        X = inputs.features(X, self.n_features, what)
        if not memo:
            return self.encoder.features(X)
        key = hashlib.blake2b(X.tobytes(), digest_size=20, person=b"lc-enc").digest() + str(X.shape).encode()
        found = self._memo.get(key)
        if found is not None:
            self._memo.move_to_end(key)
            return found.copy()  # the strategy may write into what it is handed
        feats = self.encoder.features(X)
        if feats.nbytes <= self.MEMO_BYTES:
            self._memo[key] = feats.copy()
            self._memo_bytes += feats.nbytes
            while self._memo_bytes > self.MEMO_BYTES:
                _, dropped = self._memo.popitem(last=False)
                self._memo_bytes -= dropped.nbytes
        return feats

    # ---- verbs that take inputs ----------------------------------------------------

    def learn(self, data: TaskData) -> None:
        self.inner.learn(TaskData(data.task, self.encode(data.X, "learn"), data.y, data.sample_ids))

    def forget(self, forget_set: ForgetSet) -> None:
        if forget_set.X is not None:
            forget_set = ForgetSet(forget_set.sample_ids, task=forget_set.task, y=forget_set.y,
                                   X=self.encode(forget_set.X, "forget"), tasks=forget_set.tasks)
        self.inner.forget(forget_set)

    def predict(self, X: np.ndarray, task: str | None = None) -> np.ndarray:
        return self.inner.predict(self.encode(X, "predict", memo=True), task=task)

    def scores(self, X: np.ndarray, task: str | None = None) -> np.ndarray:
        return self.inner.scores(self.encode(X, "scores", memo=True), task=task)

    def gate_weights(self, X: np.ndarray) -> np.ndarray | None:
        if not self.tags.gated:
            return None
        return self.inner.gate_weights(self.encode(X, "gate_weights", memo=True))

    def retrain(self, plan: RetrainPlan, data: TaskData) -> None:
        self.inner.retrain(plan, TaskData(data.task, self.encode(data.X, "retrain"), data.y, data.sample_ids))

    # ---- the strategy's own ---------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.inner.load_state_dict(state)

    def verify_forgotten(self, sample_ids: frozenset[str]) -> dict[str, Any] | None:
        return self.inner.verify_forgotten(sample_ids)

    def retrain_plan(self) -> list[RetrainPlan]:
        return self.inner.retrain_plan()

    def certificate_notes(self) -> list[str]:
        return self.inner.certificate_notes()

    @property
    def gate_recall_floor(self) -> float:
        return self.inner.gate_recall_floor

    @property
    def is_fitted(self) -> bool:
        return self.inner.is_fitted
