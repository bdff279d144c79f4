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
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lifecycle.strategies.base import ForgetSet, Strategy, TaskData
from lifecycle.strategies.olora import TAGS
from lifecycle.strategies.olora.config import OloraConfig
from lifecycle.strategies.olora.detector import Detector, _sigmoid, fit_detector

_PREDICT_CHUNK = 4096

# Independent random streams keyed by (seed, stream, operation counter).
_STREAM_BASE = 1
_STREAM_LEARN = 2
_STREAM_FORGET = 3
_STREAM_DETECTOR = 4


def normalised_overlap(A1: np.ndarray, A2: np.ndarray) -> float:
    """||A1 A2^T||_F^2 / (||A1||_F^2 ||A2||_F^2) for down-projections of shape (r, d_in)."""
    A1, A2 = np.asarray(A1, dtype=np.float64), np.asarray(A2, dtype=np.float64)
    denom = float(np.sum(A1 * A1) * np.sum(A2 * A2))
    return float(np.sum((A1 @ A2.T) ** 2) / denom) if denom > 0 else 0.0


class OloraStrategy(Strategy):
    name = "olora"
    config_class = OloraConfig
    tags = TAGS

    # State stays None until the first learn or a load (see Strategy).
    _base: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    _learn: list[dict] | None = None  # {"task": str, "A": [r x d_in], "B": [d_out x r]}
    _forgets: list[dict] | None = None  # {"task", "classes", "A", "B", "detector"}
    _router: dict[str, dict] | None = None  # task -> {"count": (C,), "sum": (C, D), "outer": (D, D)}
    _router_cache: dict | None = None
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
        y = np.asarray(data.y)
        if len(X) == 0:
            raise ValueError(f"learn of task {data.task!r} holds no samples")
        if y.shape != (len(X),) or y.min() < 0 or y.max() >= self.n_classes:
            raise ValueError(f"labels must be (n,) integers in [0, {self.n_classes})")
        if not self.is_fitted:
            self._build()
        task = data.task
        if any(f["task"] == task for f in self._forgets):
            self._retire(task)  # learned again after a forget: start that task afresh
        self._router_add(task, X, y.astype(np.int64))
        adapter = self._new_adapter(self._generator(_STREAM_LEARN, self._n_ops))
        params = [p.requires_grad_(True) for p in adapter["A"] + adapter["B"]]
        earlier = [a["A"] for a in self._learn]
        X_t = torch.as_tensor(X, device=self._device)
        y_t = torch.as_tensor(y, dtype=torch.long, device=self._device)
        if self.config.router == "gaussian":
            same = [a for a in self._learn if a["task"] == task]
            terms = [(a, None) for a in same]  # the task's expert: its own adapters only
        else:
            terms = [(a, None) for a in self._learn]
        optimiser = torch.optim.Adam(params, lr=self.config.lr)
        shuffle = self._generator(_STREAM_LEARN, self._n_ops, offset=1)
        batch = self.config.batch_size
        for _ in range(self.config.epochs):
            order = torch.randperm(len(X), generator=shuffle).to(self._device)
            for start in range(0, len(X), batch):
                rows = order[start:start + batch]
                logits = self._forward(X_t[rows], terms + [(adapter, None)], [])
                loss = torch.nn.functional.cross_entropy(logits, y_t[rows])
                if earlier and self.config.lambda_learn > 0:
                    loss = loss + self.config.lambda_learn * _orth_penalty(earlier, adapter["A"])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
        for p in params:
            p.requires_grad_(False)
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
        classes = np.flatnonzero(self._router[task]["count"] > 0)
        wrong = self._wrong_labels(classes)

        adapter = self._new_adapter(self._generator(_STREAM_FORGET, self._n_ops))
        params = [p.requires_grad_(True) for p in adapter["A"] + adapter["B"]]
        earlier = [f["A"] for f in self._forgets]
        X_t = torch.as_tensor(X, device=self._device)
        route = self._route_weights(self._base_features_t(X_t))
        learn_terms = self._learn_terms(route)
        gen = self._generator(_STREAM_FORGET, self._n_ops, offset=1)
        wrong_t = torch.as_tensor(wrong, device=self._device)
        optimiser = torch.optim.Adam(params, lr=self.config.forget_lr)
        batch = self.config.forget_batch_size
        for _ in range(self.config.forget_epochs):
            order = torch.randperm(len(X), generator=gen).to(self._device)
            for start in range(0, len(X), batch):
                rows = order[start:start + batch]
                labels = wrong_t[torch.randint(len(wrong), (len(rows),), generator=gen).to(self._device)]
                terms = [(a, None if c is None else c[rows]) for a, c in learn_terms]
                logits = self._forward(X_t[rows], terms, [f for f in self._forgets] + [adapter], gate=None)
                loss = torch.nn.functional.cross_entropy(logits, labels)
                if earlier and self.config.lambda_orth > 0:
                    loss = loss + self.config.lambda_orth * _orth_penalty(earlier, adapter["A"])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
        for p in params:
            p.requires_grad_(False)

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
        for i, (W, b) in enumerate(self._base):
            s[f"base/W{i}"] = W.cpu().numpy().copy()
            s[f"base/b{i}"] = b.cpu().numpy().copy()
        s["learn/tasks"] = np.array([a["task"] for a in self._learn], dtype=str)
        for j, a in enumerate(self._learn):
            s.update(self._adapter_state(f"learn/{j}/", a))
        s["forget/tasks"] = np.array([f["task"] for f in self._forgets], dtype=str)
        for k, f in enumerate(self._forgets):
            prefix = f"forget/{k}/"
            s.update(self._adapter_state(prefix, f))
            s[prefix + "classes"] = np.asarray(f["classes"], dtype=np.int64)
            s.update(f["detector"].to_state(prefix + "det/"))
        s["router/tasks"] = np.array(list(self._router), dtype=str)
        for t, (name, r) in enumerate(self._router.items()):
            for key in ("count", "sum", "outer"):
                s[f"router/{t}/{key}"] = r[key].copy()
        return s

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        state = dict(state)
        n_layers = len(self.config.hidden) + 1
        dev = self._device
        self._base = [
            (torch.as_tensor(np.asarray(state[f"base/W{i}"], dtype=np.float32), device=dev),
             torch.as_tensor(np.asarray(state[f"base/b{i}"], dtype=np.float32), device=dev))
            for i in range(n_layers)
        ]
        self._learn = []
        for j, task in enumerate(state["learn/tasks"].tolist()):
            a = self._load_adapter(state, f"learn/{j}/", n_layers)
            a["task"] = str(task)
            self._learn.append(a)
        self._forgets = []
        for k, task in enumerate(state["forget/tasks"].tolist()):
            prefix = f"forget/{k}/"
            f = self._load_adapter(state, prefix, n_layers)
            f["task"] = str(task)
            f["classes"] = np.asarray(state[prefix + "classes"], dtype=np.int64)
            f["detector"] = Detector.from_state(state, prefix + "det/", n_layers - 1)
            self._forgets.append(f)
        self._router = {}
        for t, name in enumerate(state["router/tasks"].tolist()):
            self._router[str(name)] = {key: np.asarray(state[f"router/{t}/{key}"], dtype=np.float64)
                                       for key in ("count", "sum", "outer")}
        self._router_cache = None
        self._n_ops = int(state["n_ops"])

    # ---------------------------------------------------------------- internals

    @property
    def _device(self) -> torch.device:
        return torch.device(self.config.device)

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError("olora holds no state yet: learn something or load a state first")

    def _inputs(self, X, what: str) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"{what}: X must have shape (n, {self.n_features}), not {X.shape}")
        return X

    def _generator(self, stream: int, counter: int, offset: int = 0) -> torch.Generator:
        g = torch.Generator(device="cpu")
        g.manual_seed(((self.config.seed * 1_000_003 + stream) * 1_000_033 + counter) * 7 + offset)
        return g

    def _widths(self) -> list[int]:
        return [self.n_features, *self.config.hidden, self.n_classes]

    def _build(self) -> None:
        widths = self._widths()
        if self.config.base == "digits":
            layers = _pretrain_on_digits(widths, self.config, self._generator(_STREAM_BASE, 0))
        else:
            g = self._generator(_STREAM_BASE, 0)
            layers = []
            for i in range(len(widths) - 1):
                gain = 2.0 if i < len(widths) - 2 else 1.0
                W = torch.randn(widths[i], widths[i + 1], generator=g) * math.sqrt(gain / widths[i])
                layers.append((W, torch.zeros(widths[i + 1])))
        self._base = [(W.to(self._device), b.to(self._device)) for W, b in layers]
        self._learn, self._forgets, self._router = [], [], {}
        self._router_cache = None
        self._n_ops = 0

    def _new_adapter(self, g: torch.Generator) -> dict:
        widths, r = self._widths(), self.config.rank
        A = [(torch.randn(r, widths[i], generator=g) / math.sqrt(widths[i])).to(self._device)
             for i in range(len(widths) - 1)]
        B = [torch.zeros(widths[i + 1], r, device=self._device) for i in range(len(widths) - 1)]
        return {"A": A, "B": B}

    def _adapter_state(self, prefix: str, a: dict) -> dict[str, np.ndarray]:
        out = {}
        for i, (A, B) in enumerate(zip(a["A"], a["B"])):
            out[f"{prefix}A{i}"] = A.detach().cpu().numpy().copy()
            out[f"{prefix}B{i}"] = B.detach().cpu().numpy().copy()
        return out

    def _load_adapter(self, state, prefix: str, n_layers: int) -> dict:
        dev = self._device
        return {
            "A": [torch.as_tensor(np.asarray(state[f"{prefix}A{i}"], dtype=np.float32), device=dev)
                  for i in range(n_layers)],
            "B": [torch.as_tensor(np.asarray(state[f"{prefix}B{i}"], dtype=np.float32), device=dev)
                  for i in range(n_layers)],
        }

    def _retire(self, task: str) -> None:
        """A forgotten task is learned again: drop its old adapters, router entry and forget detectors."""
        self._learn = [a for a in self._learn if a["task"] != task]
        self._forgets = [f for f in self._forgets if f["task"] != task]
        self._router.pop(task, None)
        self._router_cache = None

    def _wrong_labels(self, classes: np.ndarray) -> np.ndarray:
        """Random-label targets: learned classes that are neither this task's nor already forgotten."""
        banned = set(classes.tolist())
        for f in self._forgets:
            banned.update(f["classes"].tolist())
        learned = set()
        for r in self._router.values():
            learned.update(np.flatnonzero(r["count"] > 0).tolist())
        wrong = sorted(learned - banned)
        if not wrong:
            wrong = sorted(set(range(self.n_classes)) - set(classes.tolist()))
        if not wrong:
            raise ValueError("olora cannot forget a task that holds every class: no wrong label is left")
        return np.asarray(wrong, dtype=np.int64)

    # --- forward

    def _base_features_t(self, X_t: torch.Tensor) -> list[torch.Tensor]:
        """Hidden activations of the frozen base alone (the router's and detectors' features)."""
        feats, h = [], X_t
        for W, b in self._base[:-1]:
            h = torch.relu(h @ W + b)
            feats.append(h)
        return feats

    def _forward(self, X_t, learn_terms, forget_adapters, gate=None) -> torch.Tensor:
        """Logits. learn_terms: [(adapter, weight (n,) or None = 1)]; forget adapters scaled by gate (None = 1)."""
        scale = self.config.alpha / self.config.rank
        h = X_t
        last = len(self._base) - 1
        for i, (W, b) in enumerate(self._base):
            out = h @ W + b
            for a, w in learn_terms:
                delta = (h @ a["A"][i].T) @ a["B"][i].T
                out = out + scale * (delta if w is None else w[:, None] * delta)
            if forget_adapters:
                delta = sum((h @ f["A"][i].T) @ f["B"][i].T for f in forget_adapters)
                out = out + scale * (delta if gate is None else gate[:, None] * delta)
            h = out if i == last else torch.relu(out)
        return h

    def _logits(self, X: np.ndarray) -> torch.Tensor:
        X_t = torch.as_tensor(X, device=self._device)
        feats = self._base_features_t(X_t)
        route = self._route_weights(feats)
        terms = self._learn_terms(route)
        gate = None
        if self._forgets:
            gate = torch.as_tensor(self._gate_np(feats, route), dtype=torch.float32, device=self._device)
        return self._forward(X_t, terms, self._forgets, gate=gate)

    def _gate_np(self, feats: list[torch.Tensor], route: dict[str, torch.Tensor] | None) -> np.ndarray:
        """w*(x): the strongest forget gate. Each is its detector's weight, combined with the router's
        posterior r of the forgotten task (Gaussian router): "product" w * r, "odds" sigmoid(logit w +
        logit r), "off" w alone."""
        F = [f.cpu().numpy() for f in feats]
        mode = self.config.gate_router
        gates = []
        for f in self._forgets:
            if mode == "off" or route is None or f["task"] not in route:
                gates.append(f["detector"].weight(F))
                continue
            r = route[f["task"]].cpu().numpy().astype(np.float64)
            if mode == "product":
                gates.append(f["detector"].weight(F) * r)
            else:
                r = np.clip(r, 1e-7, 1 - 1e-7)
                gates.append(_sigmoid(f["detector"].logit(F) + np.log(r) - np.log1p(-r)))
        return np.max(np.stack(gates), axis=0)

    def _learn_terms(self, route: dict[str, torch.Tensor] | None):
        if route is None:
            return [(a, None) for a in self._learn]
        return [(a, route[a["task"]]) for a in self._learn]

    # --- router

    def _router_features(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(feats, dim=1) if self.config.router_layers == "all" else feats[-1]

    def _router_add(self, task: str, X: np.ndarray, y: np.ndarray) -> None:
        with torch.no_grad():
            feats = self._base_features_t(torch.as_tensor(X, device=self._device))
            Z = self._router_features(feats).cpu().numpy().astype(np.float64)
        D = Z.shape[1]
        r = self._router.setdefault(task, {"count": np.zeros(self.n_classes), "sum": np.zeros((self.n_classes, D)),
                                           "outer": np.zeros((D, D))})
        np.add.at(r["count"], y, 1.0)
        np.add.at(r["sum"], y, Z)
        r["outer"] += Z.T @ Z
        self._router_cache = None

    def _router_params(self) -> dict:
        """Class means, log priors and whitening of the router, cached until the router changes.

        "pooled": one within-class covariance over every task's classes, class priors over all samples
        (a linear discriminant; the log-determinant is common and drops out). "task": one covariance
        per task, class priors within the task, each task's log-determinant in its score."""
        if self._router_cache is None:
            lam = self.config.router_shrinkage
            stats = {}
            for task, r in self._router.items():
                present = np.flatnonzero(r["count"] > 0)
                n_c = r["count"][present]
                means = r["sum"][present] / n_c[:, None]
                within = r["outer"] - (means * n_c[:, None]).T @ means
                stats[task] = (n_c, means, within, max(n_c.sum() - len(present), 1.0))
            pooled = self.config.router_covariance == "pooled"
            n_all = sum(float(v[0].sum()) for v in stats.values())

            def whitening(within, dof):
                cov = within / dof
                D = cov.shape[0]
                cov = (1 - lam) * cov + lam * (np.trace(cov) / D + 1e-6) * np.eye(D)
                vals, vecs = np.linalg.eigh(cov)
                vals = np.maximum(vals, 1e-9)
                return vecs / np.sqrt(vals), float(0.5 * np.sum(np.log(vals)))

            if pooled:
                shared, _ = whitening(sum(v[2] for v in stats.values()), max(sum(v[3] for v in stats.values()), 1.0))
            cache = {}
            for task, (n_c, means, within, dof) in stats.items():
                if pooled:
                    whiten, half_logdet, log_prior = shared, 0.0, np.log(n_c / n_all)
                else:
                    (whiten, half_logdet), log_prior = whitening(within, dof), np.log(n_c / n_c.sum())
                cache[task] = {
                    "means": torch.as_tensor(means, dtype=torch.float64, device=self._device),
                    "log_prior": torch.as_tensor(log_prior, dtype=torch.float64, device=self._device),
                    "whiten": torch.as_tensor(whiten, dtype=torch.float64, device=self._device),
                    "half_logdet": half_logdet,
                }
            self._router_cache = cache
        return self._router_cache

    def _route_weights(self, feats: list[torch.Tensor]) -> dict[str, torch.Tensor] | None:
        """Each learned task's posterior per input, from the base's hidden features (one tensor per layer)."""
        if self.config.router == "sum" or not self._router:
            return None
        params = self._router_params()
        names = list(params)
        Z64 = self._router_features(feats).to(torch.float64)
        scores, whitened = [], {}
        for name in names:
            p = params[name]
            key = id(p["whiten"]) if self.config.router_covariance == "pooled" else name
            if key not in whitened:  # the pooled whitening is shared: apply it once
                whitened[key] = Z64 @ p["whiten"]
            diff = whitened[key][:, None, :] - (p["means"] @ p["whiten"])[None]  # (n, classes, D)
            log_lik = -0.5 * (diff * diff).sum(-1) + p["log_prior"][None]
            scores.append(torch.logsumexp(log_lik, dim=1) - p["half_logdet"])
        weights = torch.softmax(torch.stack(scores, dim=1), dim=1).to(torch.float32)
        return {name: weights[:, j] for j, name in enumerate(names)}

    def routing(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """The router's weight of every learned task per input (diagnostic)."""
        self._require_fitted()
        with torch.no_grad():
            X_t = torch.as_tensor(self._inputs(X, "routing"), device=self._device)
            route = self._route_weights(self._base_features_t(X_t))
        if route is None:
            return {t: np.ones(len(X)) for t in self._router}
        return {t: w.cpu().numpy() for t, w in route.items()}


def _orth_penalty(earlier: list[list[torch.Tensor]], current: list[torch.Tensor]) -> torch.Tensor:
    total = 0.0
    for A_old in earlier:
        for A_o, A_n in zip(A_old, current):
            total = total + ((A_o @ A_n.T) ** 2).sum()
    return total


def _pretrain_on_digits(widths: list[int], config: OloraConfig, g: torch.Generator):
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
        layers.append((W.requires_grad_(True), torch.zeros(widths[i + 1], requires_grad=True)))
    n_out = widths[-1]
    params = [p for pair in layers for p in pair]
    optimiser = torch.optim.Adam(params, lr=1e-3)
    shift = side > 8 and d != 64
    for _ in range(config.pretrain_epochs):
        order = torch.randperm(len(X), generator=g)
        for start in range(0, len(X), 64):
            rows = order[start:start + 64]
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
            loss = torch.nn.functional.cross_entropy(h, target)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    return [(W.detach(), b.detach()) for W, b in layers]
