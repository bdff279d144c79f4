"""The ``olora`` strategy: orthogonal LoRA stacks with OOD-gated unlearning adapters (after O3).

A frozen base MLP carries two stacks of rank-r adapters on every linear layer.

- Learning: each learn request trains a new LoRA adapter for its task, with
  the O-LoRA penalty ``lambda_learn * sum ||A_i A_k^T||_F^2`` keeping its
  down-projections orthogonal to every earlier learning adapter. Without a
  task id, a class-incremental stack of adapters predicts the newest task's
  classes for everything, so (router "gaussian") each task's adapters are
  weighted per input by the task's posterior under class-conditional
  Gaussians of the frozen base's hidden features (every hidden layer,
  concatenated; one within-class covariance pooled over the tasks by
  default; running sums, so a task learned over several requests is one
  router entry).
- Forgetting (O3): each forget request trains an unlearning adapter on the
  forget data with random wrong labels (no retained data), orthogonal to the
  earlier unlearning adapters (``lambda_orth``), and fits a detector on the
  forget data's base features (``detector.py``). A forget's gate combines its
  detector's weight with the router's posterior of the forgotten task
  (``gate_router``; by default their odds multiply): the detector is
  one-class (no retained data), the router knows every learned task, later
  ones included, so an input the router gives to a retained task keeps the
  gate shut and one it firmly gives to the forgotten task opens it. At inference the strongest gate over all forgets,
  ``w*(x)``, scales the unlearning adapters' delta in every layer:
  ``W0 h + sum_t route_t(x) dW_t h + w*(x) sum_k dU_k h``.

The forgotten task's knowledge stays in the base and its learning adapters:
this is suppression, not removal (the certificate notes say so). The forget
request's raw inputs are not kept; the detector keeps features derived from
them (or, in "mahalanobis" mode, only their per-layer mean and covariance).

Laid out as a PEFT method: ``layers.py`` holds the base and the adapters,
``router.py`` the task router and the gate, ``detector.py`` the forget
detectors, and this module the strategy that trains and stores them.
"""

from __future__ import annotations

import numpy as np
import torch

from lifecycle.strategies import inputs
from lifecycle.strategies.base import ForgetSet, Strategy, TaskData
from lifecycle.strategies.olora import TAGS, layers
from lifecycle.strategies.olora.config import OloraConfig
from lifecycle.strategies.olora.detector import Detector, fit_detector
from lifecycle.strategies.olora.layers import normalised_overlap
from lifecycle.strategies.olora.router import TaskRouter, strongest_gate
from lifecycle.strategies.training import fit, trainable

_PREDICT_CHUNK = 4096

# Independent random streams keyed by (seed, stream, operation counter).
_STREAM_BASE = 1
_STREAM_LEARN = 2
_STREAM_FORGET = 3
_STREAM_DETECTOR = 4

__all__ = ["OloraStrategy", "normalised_overlap"]


class OloraStrategy(Strategy):
    name = "olora"
    config_class = OloraConfig
    tags = TAGS

    # State stays None until the first learn or a load (see Strategy).
    _base: layers.Base | None = None
    _learn: list[dict] | None = None  # {"task": str, "A": [r x d_in], "B": [d_out x r]}
    _forgets: list[dict] | None = None  # {"task", "classes", "A", "B", "detector"}
    _router: TaskRouter | None = None
    _n_ops: int = 0

    # ----------------------------------------------------------------- contract

    @property
    def is_fitted(self) -> bool:
        return self._base is not None

    @property
    def gate_recall_floor(self) -> float:
        return float(self.config.min_gate_recall)

    def learn(self, data: TaskData) -> None:
        X = self._inputs(data.X, "learn")
        y = inputs.labels(data.y, len(X), self.n_classes, "learn")
        inputs.not_empty(len(X), data.task)
        if not self.is_fitted:
            self._build()
        task = data.task
        if any(f["task"] == task for f in self._forgets):
            self._retire(task)  # learned again after a forget: start that task afresh
        X_t = torch.as_tensor(X, device=self._device)
        with torch.no_grad():
            self._router.add(task, self._base_features_t(X_t), y)
        adapter = self._new_adapter(self._generator(_STREAM_LEARN, self._n_ops))
        earlier = [a["A"] for a in self._learn]
        y_t = torch.as_tensor(y, dtype=torch.long, device=self._device)
        if self.config.router == "gaussian":
            terms = [(a, None) for a in self._learn if a["task"] == task]  # the task's expert: its own adapters only
        else:
            terms = [(a, None) for a in self._learn]

        def loss_of(rows: torch.Tensor) -> torch.Tensor:
            logits = self._forward(X_t[rows], terms + [(adapter, None)], [])
            loss = torch.nn.functional.cross_entropy(logits, y_t[rows])
            if earlier and self.config.lambda_learn > 0:
                loss = loss + self.config.lambda_learn * layers.orth_penalty(earlier, adapter["A"])
            return loss

        with trainable(adapter["A"] + adapter["B"]) as params:
            fit(params, loss_of, n=len(X), epochs=self.config.epochs, batch_size=self.config.batch_size,
                lr=self.config.lr, generator=self._generator(_STREAM_LEARN, self._n_ops, offset=1),
                device=self._device)
        adapter["task"] = task
        self._learn.append(adapter)
        self._n_ops += 1

    def forget(self, forget_set: ForgetSet) -> None:
        if forget_set.task is None:
            raise ValueError("olora forgets whole tasks only (a distribution); sample-level forgets are refused")
        if not self.is_fitted:
            raise ValueError("nothing learned yet")
        task = forget_set.task
        if task not in self._router:
            raise ValueError(f"task {task!r} is not learned")
        if any(f["task"] == task for f in self._forgets):
            raise ValueError(f"task {task!r} is already forgotten")
        if forget_set.X is None or forget_set.y is None:
            raise ValueError("olora needs the forget data (its unlearning adapter and detector are fitted on it)")
        X = self._inputs(forget_set.X, "forget")
        if len(X) < 4:
            raise ValueError(f"olora needs at least 4 forget samples, got {len(X)}")
        classes = self._router.classes(task)
        wrong = self._wrong_labels(classes)

        adapter = self._new_adapter(self._generator(_STREAM_FORGET, self._n_ops))
        earlier = [f["A"] for f in self._forgets]
        X_t = torch.as_tensor(X, device=self._device)
        learn_terms = self._learn_terms(self._route_weights(self._base_features_t(X_t)))
        gen = self._generator(_STREAM_FORGET, self._n_ops, offset=1)
        wrong_t = torch.as_tensor(wrong, device=self._device)

        def loss_of(rows: torch.Tensor) -> torch.Tensor:
            labels = wrong_t[torch.randint(len(wrong), (len(rows),), generator=gen).to(self._device)]
            terms = [(a, None if c is None else c[rows]) for a, c in learn_terms]
            logits = self._forward(X_t[rows], terms, [f for f in self._forgets] + [adapter], gate=None)
            loss = torch.nn.functional.cross_entropy(logits, labels)
            if earlier and self.config.lambda_orth > 0:
                loss = loss + self.config.lambda_orth * layers.orth_penalty(earlier, adapter["A"])
            return loss

        with trainable(adapter["A"] + adapter["B"]) as params:
            fit(params, loss_of, n=len(X), epochs=self.config.forget_epochs, batch_size=self.config.forget_batch_size,
                lr=self.config.forget_lr, generator=gen, device=self._device)

        feats = [F.cpu().numpy() for F in self._base_features_t(X_t)]
        rng = np.random.default_rng([self.config.seed, _STREAM_DETECTOR, self._n_ops])
        adapter["detector"] = fit_detector(
            feats, mode=self.config.detector, quantile=self.config.gate_quantile,
            upper_quantile=self.config.gate_upper_quantile, folds=self.config.cv_folds, rng=rng,
        )
        adapter["task"] = task
        adapter["classes"] = classes
        self._forgets.append(adapter)
        self._n_ops += 1

    def predict(self, X: np.ndarray, task: str | None = None) -> np.ndarray:
        return np.argmax(self.scores(X, task), axis=1).astype(np.int64)

    def scores(self, X: np.ndarray, task: str | None = None) -> np.ndarray:
        self._require_fitted()
        X = self._inputs(X, "predict")
        out = np.empty((len(X), self.n_classes), dtype=np.float32)
        with torch.no_grad():
            for start in range(0, len(X), _PREDICT_CHUNK):
                out[start:start + _PREDICT_CHUNK] = self._logits(X[start:start + _PREDICT_CHUNK]).cpu().numpy()
        return out

    def gate(self, X: np.ndarray) -> np.ndarray:
        """The gate weight w*(x) in [0, 1] per input: the strongest over every forget's gate."""
        self._require_fitted()
        X = self._inputs(X, "gate")
        out = np.zeros(len(X))
        if not self._forgets:
            return out
        with torch.no_grad():
            for start in range(0, len(X), _PREDICT_CHUNK):
                X_t = torch.as_tensor(X[start:start + _PREDICT_CHUNK], device=self._device)
                feats = self._base_features_t(X_t)
                out[start:start + len(X_t)] = self._gate_np(feats, self._route_weights(feats))
        return out

    def gate_weights(self, X: np.ndarray) -> np.ndarray | None:
        return self.gate(X)

    def gate_scores(self, X: np.ndarray, which: int = -1) -> np.ndarray:
        """One forget detector's calibrated score (higher = more like its forget set), for AUROC.

        The detector alone: the router's factor in the gate is not part of it."""
        self._require_fitted()
        X = self._inputs(X, "gate")
        with torch.no_grad():
            feats = [F.cpu().numpy() for F in self._base_features_t(torch.as_tensor(X, device=self._device))]
        return self._forgets[which]["detector"].score(feats)

    def adapter_overlaps(self, kind: str = "learn") -> list[float]:
        """Largest normalised overlap ||A_i A_j^T||^2 / (||A_i||^2 ||A_j||^2) per layer over pairs of adapters."""
        self._require_fitted()
        adapters = self._learn if kind == "learn" else self._forgets
        worst = [0.0] * len(self._base)
        for j in range(len(adapters)):
            for i in range(j):
                for layer in range(len(self._base)):
                    worst[layer] = max(worst[layer], normalised_overlap(adapters[i]["A"][layer].cpu().numpy(),
                                                                        adapters[j]["A"][layer].cpu().numpy()))
        return worst

    def certificate_notes(self) -> list[str]:
        if not self.is_fitted or not self._forgets:
            return []
        notes = [
            "olora forgets by suppression, not removal: the forgotten task's knowledge stays in the frozen base "
            "and in its learning adapters; an unlearning adapter is applied only to inputs that the forget "
            "detector recognises. Anyone holding the weights can drop the adapter and get the task back, and a "
            "few fine-tuning steps on forgotten samples restore it faster than for a model retrained without it.",
        ]
        combined = [f for f in self._forgets if f["detector"].banks is not None]
        if combined:
            rows = sum(f["detector"].n_bank_rows() for f in combined)
            notes.append(
                "The forget detectors keep features derived from the forgotten data: per hidden layer of the "
                "base, the forget set's feature mean and covariance and a bank of "
                f"{rows} per-sample feature vectors (the nearest-neighbour term). The raw inputs are not kept."
            )
        if len(combined) < len(self._forgets):
            notes.append(
                "Detectors in Mahalanobis-only mode keep only the forget set's per-layer feature mean and "
                "covariance, no per-sample features."
            )
        if self.config.router == "gaussian":
            notes.append(
                "The task router keeps per-class feature means and within-class feature scatter of every learned "
                "task, the forgotten ones included (the gate uses the forgotten task's router posterior)."
            )
        return notes

    # -------------------------------------------------------------------- state

    def state_dict(self) -> dict[str, np.ndarray]:
        self._require_fitted()
        s: dict[str, np.ndarray] = {"n_ops": np.array(self._n_ops, dtype=np.int64)}
        s.update(layers.base_state(self._base))
        s["learn/tasks"] = np.array([a["task"] for a in self._learn], dtype=str)
        for j, a in enumerate(self._learn):
            s.update(layers.adapter_state(f"learn/{j}/", a))
        s["forget/tasks"] = np.array([f["task"] for f in self._forgets], dtype=str)
        for k, f in enumerate(self._forgets):
            prefix = f"forget/{k}/"
            s.update(layers.adapter_state(prefix, f))
            s[prefix + "classes"] = np.asarray(f["classes"], dtype=np.int64)
            s.update(f["detector"].to_state(prefix + "det/"))
        s.update(self._router.to_state())
        return s

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        state = dict(state)
        n_layers = len(self.config.hidden) + 1
        dev = self._device
        self._base = layers.load_base(state, n_layers, dev)
        self._learn = []
        for j, task in enumerate(state["learn/tasks"].tolist()):
            a = layers.load_adapter(state, f"learn/{j}/", n_layers, dev)
            a["task"] = str(task)
            self._learn.append(a)
        self._forgets = []
        for k, task in enumerate(state["forget/tasks"].tolist()):
            prefix = f"forget/{k}/"
            f = layers.load_adapter(state, prefix, n_layers, dev)
            f["task"] = str(task)
            f["classes"] = np.asarray(state[prefix + "classes"], dtype=np.int64)
            f["detector"] = Detector.from_state(state, prefix + "det/", n_layers - 1)
            self._forgets.append(f)
        self._router = TaskRouter(self.config, self.n_classes, dev)
        self._router.load_state(state)
        self._n_ops = int(state["n_ops"])

    # ---------------------------------------------------------------- internals

    @property
    def _device(self) -> torch.device:
        return torch.device(self.config.device)

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError("olora holds no state yet: learn something or load a state first")

    def _inputs(self, X, what: str) -> np.ndarray:
        return inputs.features(X, self.n_features, what)

    def _generator(self, stream: int, counter: int, offset: int = 0) -> torch.Generator:
        g = torch.Generator(device="cpu")
        g.manual_seed(((self.config.seed * 1_000_003 + stream) * 1_000_033 + counter) * 7 + offset)
        return g

    def _widths(self) -> list[int]:
        return [self.n_features, *self.config.hidden, self.n_classes]

    def _build(self) -> None:
        widths, g = self._widths(), self._generator(_STREAM_BASE, 0)
        if self.config.base == "digits":
            base = layers.pretrain_on_digits(widths, self.config.pretrain_epochs, g)
        else:
            base = layers.random_base(widths, g)
        self._base = [(W.to(self._device), b.to(self._device)) for W, b in base]
        self._learn, self._forgets = [], []
        self._router = TaskRouter(self.config, self.n_classes, self._device)
        self._n_ops = 0

    def _new_adapter(self, g: torch.Generator) -> dict:
        return layers.new_adapter(self._widths(), self.config.rank, g, self._device)

    def _retire(self, task: str) -> None:
        """A forgotten task is learned again: drop its old adapters, router entry and forget detectors."""
        self._learn = [a for a in self._learn if a["task"] != task]
        self._forgets = [f for f in self._forgets if f["task"] != task]
        self._router.retire(task)

    def _wrong_labels(self, classes: np.ndarray) -> np.ndarray:
        """Random-label targets: learned classes that are neither this task's nor already forgotten."""
        banned = set(classes.tolist())
        for f in self._forgets:
            banned.update(f["classes"].tolist())
        wrong = sorted(self._router.learned_classes() - banned)
        if not wrong:
            wrong = sorted(set(range(self.n_classes)) - set(classes.tolist()))
        if not wrong:
            raise ValueError("olora cannot forget a task that holds every class: no wrong label is left")
        return np.asarray(wrong, dtype=np.int64)

    # --- forward (the layers and router do the work; these names are what callers such as the bench use)

    def _base_features_t(self, X_t: torch.Tensor) -> list[torch.Tensor]:
        return layers.base_features(self._base, X_t)

    def _forward(self, X_t, learn_terms, forget_adapters, gate=None) -> torch.Tensor:
        return layers.forward(self._base, X_t, learn_terms, forget_adapters, gate, self.config.alpha / self.config.rank)

    def _route_weights(self, feats: list[torch.Tensor]) -> dict[str, torch.Tensor] | None:
        return self._router.weights(feats)

    def _gate_np(self, feats: list[torch.Tensor], route: dict[str, torch.Tensor] | None) -> np.ndarray:
        return strongest_gate(self._forgets, feats, route, self.config.gate_router)

    def _learn_terms(self, route: dict[str, torch.Tensor] | None):
        if route is None:
            return [(a, None) for a in self._learn]
        return [(a, route[a["task"]]) for a in self._learn]

    def _logits(self, X: np.ndarray) -> torch.Tensor:
        X_t = torch.as_tensor(X, device=self._device)
        feats = self._base_features_t(X_t)
        route = self._route_weights(feats)
        weights = None
        if self._forgets:
            weights = torch.as_tensor(self._gate_np(feats, route), dtype=torch.float32, device=self._device)
        return self._forward(X_t, self._learn_terms(route), self._forgets, gate=weights)

    def routing(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """The router's weight of every learned task per input (diagnostic)."""
        self._require_fitted()
        with torch.no_grad():
            X_t = torch.as_tensor(self._inputs(X, "routing"), device=self._device)
            route = self._route_weights(self._base_features_t(X_t))
        if route is None:
            return {t: np.ones(len(X)) for t in self._router.tasks()}
        return {t: w.cpu().numpy() for t, w in route.items()}
