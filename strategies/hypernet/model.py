"""The ``hypernet`` strategy: a hypnettorch hypernetwork, one embedding per task.

The target network owns no weights; the hypernetwork generates all of them
from a task embedding, so every task has its own complete network and
predictions need the task id.

Learning task t trains the hypernetwork and e_t on t's data with an output
regulariser that holds the generated weights of every other active task at
their values after the previous operation (von Oswald et al.). Forgetting f
uses no data: it pulls H(e_f) towards fresh Gaussian noise, whose expected
minimiser is zero weights, so f's network collapses to a constant output,
while the same regulariser holds the remaining tasks (UnCLe).

Embeddings are never reused: a forgotten task keeps its embedding (the ledger
still evaluates it, to watch for relapse), and learning that task again later
starts a new embedding that its name then refers to.

The snapshot the regulariser compares with is the hypernetwork as it stood
after the previous operation. That is exactly the state an operation starts
from, so the targets are computed when an operation starts and are not part of
the stored state: storing them would add a copy of every active task's weights
to every version without adding information.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import torch
from hypnettorch.hnets import HMLP, ChunkedHMLP
from hypnettorch.mnets import MLP, LeNet

from lifecycle.strategies import inputs
from lifecycle.strategies.base import ForgetSet, Strategy, TaskData
from lifecycle.strategies.hypernet import TAGS
from lifecycle.strategies.hypernet.config import HypernetConfig
from lifecycle.strategies.training import fit, run_steps, trainable

# hypnettorch's small LeNet is laid out for 28x28 single-channel images.
_CNN_FEATURES = 28 * 28

_PREDICT_CHUNK = 4096

# Below this ratio of rms generated weights (fresh embedding / active tasks),
# a new embedding starts from an active task's (see _warm_start). On permuted
# MNIST-5k, learns from fresh draws still worked at a ratio of about 0.06 and
# failed outright at about 0.05; the margin covers other seeds and streams.
_DEAD_START_RATIO = 0.2

# Independent random streams, so that e.g. adding a task does not shift the
# noise of a later forget. Each stream is keyed by (seed, stream, counter).
_STREAM_EMBEDDING = 1
_STREAM_LEARN = 2
_STREAM_FORGET = 3


class HypernetStrategy(Strategy):
    name = "hypernet"
    config_class = HypernetConfig
    tags = TAGS

    # State stays None until the first learn or a load, so building an
    # instance allocates nothing (see Strategy).
    _mnet = None
    _hnet = None
    _embeddings: list[torch.Tensor] | None = None
    _task_names: list[str] | None = None
    _active: list[bool] | None = None
    _classes: np.ndarray | None = None  # (n_embeddings, n_classes) bool: the classes each task's head uses
    _n_forgets: int = 0  # drives the annealing of forget steps
    _n_ops: int = 0  # keys the random streams of the next operation

    # ----------------------------------------------------------------- contract

    @property
    def is_fitted(self) -> bool:
        return self._hnet is not None

    def learn(self, data: TaskData) -> None:
        X = self._inputs(data.X, "learn")
        y = inputs.labels(data.y, len(X), self.n_classes, "learn")
        inputs.not_empty(len(X), data.task)
        if not self.is_fitted:
            self._build(initialise=True)
        index = self._index_to_learn(data.task)
        self._classes[index, np.unique(y)] = True
        heads = np.flatnonzero(self._classes[index])
        # Labels as positions among the task's classes: each task has its own head.
        targets_y = torch.as_tensor(np.searchsorted(heads, y), device=self._device)
        heads_t = torch.as_tensor(heads, device=self._device)
        X_t = torch.as_tensor(X, device=self._device)

        protected = [i for i in self._active_indices() if i != index]
        anchors = self._anchors(protected)
        embedding = self._embeddings[index]

        def loss_of(rows: torch.Tensor) -> torch.Tensor:
            logits = self._mnet(X_t[rows], weights=self._hnet(cond_input=embedding[None]))[:, heads_t]
            loss = torch.nn.functional.cross_entropy(logits, targets_y[rows])
            if protected:
                loss = loss + self.config.beta * self._drift(protected, anchors)
            return loss

        with trainable([embedding]):
            fit([*self._hnet.unconditional_params, embedding], loss_of, n=len(X), epochs=self.config.epochs,
                batch_size=self.config.batch_size, lr=self.config.lr,
                generator=self._generator(_STREAM_LEARN, self._n_ops, device="cpu"), device=self._device)
        self._active[index] = True
        self._n_ops += 1

    def forget(self, forget_set: ForgetSet) -> None:
        if forget_set.task is None:
            raise ValueError(
                "hypernet forgets whole tasks only: the forget set must name its task "
                f"(got {len(forget_set.sample_ids)} sample ids and no task)"
            )
        index = self._index_of(forget_set.task)
        if not self._active[index]:
            raise ValueError(f"task {forget_set.task!r} is already forgotten: there is nothing learned to forget")

        # With no other task left the remember term is empty (UnCLe divides by
        # zero here); the forget then only collapses f.
        remaining = [i for i in self._active_indices() if i != index]
        anchors = self._anchors(remaining)
        # e_f moves as well as the shared weights (UnCLe freezes it): part of
        # the collapse then happens in f's own input, and this is the variant
        # whose spill and relapse were measured in the feasibility prototype.
        embedding = self._embeddings[index]
        noise = self._generator(_STREAM_FORGET, self._n_ops, device=self._device)
        shape = (self.config.noise_samples, self._mnet.num_params)

        def loss() -> torch.Tensor:
            generated = self._hnet(cond_input=embedding[None], ret_format="flattened")
            draws = torch.randn(shape, generator=noise, device=self._device)
            value = self.config.gamma * (generated - draws).pow(2).sum(dim=1).mean()
            if remaining:
                value = value + self._drift(remaining, anchors)
            return value

        # The noise term is a sum over every generated weight and dwarfs the
        # remember term; unclipped steps would wreck the other tasks.
        with trainable([embedding]):
            run_steps([*self._hnet.unconditional_params, embedding], loss, steps=self.forget_steps(),
                      lr=self.config.forget_lr, clip_norm=self.config.clip_norm)
        self._active[index] = False
        self._n_forgets += 1
        self._n_ops += 1

    def predict(self, X: np.ndarray, task: str | None = None) -> np.ndarray:
        return np.argmax(self.scores(X, task), axis=1).astype(np.int64)

    def scores(self, X: np.ndarray, task: str | None = None) -> np.ndarray:
        """Logits of the task's generated network; classes outside the task score -inf."""
        if task is None:
            raise ValueError("hypernet generates a network per task: predict needs task= (the task id)")
        index = self._index_of(task)
        X = self._inputs(X, "predict")
        heads = torch.as_tensor(np.flatnonzero(self._classes[index]), device=self._device)
        out = np.full((len(X), self.n_classes), -np.inf, dtype=np.float64)
        with torch.no_grad():
            weights = self._hnet(cond_input=self._embeddings[index][None])
            for start in range(0, len(X), _PREDICT_CHUNK):
                chunk = torch.as_tensor(X[start:start + _PREDICT_CHUNK], device=self._device)
                logits = self._mnet(chunk, weights=weights)[:, heads]
                out[start:start + len(chunk), heads.cpu().numpy()] = logits.double().cpu().numpy()
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        self._require_fitted()
        state = {name: p.detach().cpu().numpy().copy() for name, p in _named_params(self._hnet)}
        state.update(
            embeddings=torch.stack(self._embeddings).cpu().numpy().copy(),
            task_names=np.array(self._task_names, dtype=np.str_),
            active=np.array(self._active, dtype=bool),
            classes=self._classes.copy(),
            n_forgets=np.array(self._n_forgets, dtype=np.int64),
            n_ops=np.array(self._n_ops, dtype=np.int64),
        )
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        # Build into locals and assign only once everything checked out, so a
        # bad state leaves this instance as it was.
        mnet, hnet = self._networks(initialise=False)
        named = _named_params(hnet)
        expected = {name: tuple(p.shape) for name, p in named}
        n = len(np.asarray(state.get("task_names", ())))
        expected.update(
            embeddings=(n, self.config.task_emb_dim),
            task_names=(n,),
            active=(n,),
            classes=(n, self.n_classes),
            n_forgets=(),
            n_ops=(),
        )
        missing = sorted(set(expected) - set(state))
        unknown = sorted(set(state) - set(expected))
        if missing or unknown:
            raise ValueError(
                f"hypernet state keys do not match: missing {missing or 'none'}, unknown {unknown or 'none'}"
            )
        arrays = {key: np.asarray(state[key]) for key in expected}
        for key, shape in expected.items():
            if arrays[key].shape != shape:
                raise ValueError(f"hypernet state {key!r} has shape {arrays[key].shape}, expected {shape}")
        if n == 0:
            raise ValueError("hypernet state holds no task")
        if arrays["task_names"].dtype.kind != "U":
            raise ValueError(f"hypernet state 'task_names' must be a unicode array, not {arrays['task_names'].dtype}")
        if not arrays["classes"].any(axis=1).all():
            raise ValueError("hypernet state has a task without any class")

        device = self._device
        with torch.no_grad():
            for name, p in named:
                p.copy_(torch.as_tensor(arrays[name], dtype=p.dtype))
        self._mnet, self._hnet = mnet.to(device), hnet.to(device)
        self._embeddings = [torch.tensor(e, dtype=torch.float32, device=device) for e in arrays["embeddings"]]
        self._task_names = [str(t) for t in arrays["task_names"]]
        self._active = [bool(a) for a in arrays["active"]]
        self._classes = arrays["classes"].astype(bool)
        self._n_forgets = int(arrays["n_forgets"])
        self._n_ops = int(arrays["n_ops"])

    # ---------------------------------------------------------------- inspection

    def embedding_index(self, task: str) -> int:
        """The embedding that ``task`` currently refers to."""
        return self._index_of(task)

    def generated_weights(self, task: str) -> np.ndarray:
        """The flattened target-net weights ``task``'s embedding generates now."""
        index = self._index_of(task)
        with torch.no_grad():
            return self._generate([index])[0].cpu().numpy()

    @property
    def n_embeddings(self) -> int:
        return 0 if self._task_names is None else len(self._task_names)

    def forget_steps(self) -> int:
        """Steps the next forget will take: annealed per forget, never below the floor."""
        c = self.config
        return max(c.forget_steps_min, int(c.forget_steps * c.forget_anneal ** self._n_forgets))

    # ---------------------------------------------------------------- internals

    @property
    def _device(self) -> torch.device:
        return torch.device(self.config.device)

    def _build(self, initialise: bool) -> None:
        mnet, hnet = self._networks(initialise)
        self._mnet, self._hnet = mnet.to(self._device), hnet.to(self._device)
        self._embeddings, self._task_names, self._active = [], [], []
        self._classes = np.zeros((0, self.n_classes), dtype=bool)
        self._n_forgets = self._n_ops = 0

    def _networks(self, initialise: bool):
        c = self.config
        if c.target_net == "cnn" and self.n_features != _CNN_FEATURES:
            raise ValueError(
                f"target_net 'cnn' takes 28x28 images ({_CNN_FEATURES} features), not {self.n_features} features; "
                "use target_net 'mlp'"
            )
        # Seeded without touching the caller's global generator.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed)
            if c.target_net == "mlp":
                mnet = MLP(n_in=self.n_features, n_out=self.n_classes, hidden_layers=c.hidden, no_weights=True,
                           verbose=False)
            else:
                mnet = LeNet(in_shape=(28, 28, 1), num_classes=self.n_classes, arch="mnist_small",
                             no_weights=True, verbose=False)
            # Embeddings live here rather than inside hypnettorch (no_cond_weights),
            # so tasks can be added without a fixed cap and none is ever reused.
            common = dict(cond_in_size=c.task_emb_dim, layers=c.hnet_layers, num_cond_embs=0,
                          no_cond_weights=True, verbose=False)
            if c.hnet == "chunked":
                hnet = ChunkedHMLP(mnet.param_shapes, chunk_size=c.chunk_size, chunk_emb_size=c.chunk_emb_dim,
                                   **common)
            else:
                hnet = HMLP(mnet.param_shapes, **common)
            if initialise:
                # Hyperfan init sizes the output from the embeddings' variance,
                # which new embeddings are drawn with (_new_embedding).
                with contextlib.redirect_stdout(io.StringIO()):  # the chunked init prints even when not verbose
                    if c.hnet == "chunked":
                        hnet.apply_chunked_hyperfan_init(mnet=mnet, cond_var=c.emb_init_var)
                    else:
                        hnet.apply_hyperfan_init(mnet=mnet, cond_var=c.emb_init_var)
        return mnet, hnet

    def _index_to_learn(self, task: str) -> int:
        """The task's embedding if it is active; otherwise a new one."""
        current = self._find(task)
        if current is not None and self._active[current]:
            return current
        index = len(self._task_names)
        generator = self._generator(_STREAM_EMBEDDING, index, device="cpu")
        embedding = torch.randn(self.config.task_emb_dim, generator=generator) * self.config.emb_init_var ** 0.5
        self._embeddings.append(self._warm_start(embedding.to(self._device)))
        self._task_names.append(task)
        self._active.append(False)
        self._classes = np.vstack([self._classes, np.zeros((1, self.n_classes), dtype=bool)])
        return index

    def _warm_start(self, fresh: torch.Tensor) -> torch.Tensor:
        """``fresh``, or the active tasks' mean embedding plus ``fresh`` when forgets have killed the origin.

        New embeddings are drawn close to the origin, where every forget's
        noise alignment also pulls the shared output towards zero weights.
        After about ten forgets a fresh embedding generates weights some 30x
        smaller than at initialisation, and a ReLU net started there did not
        train at all in a few hundred steps (it stayed at chance). Starting from
        working embeddings instead costs some plasticity, so it is only done
        once a fresh draw generates far smaller weights than the tasks being
        served. The start is the mean of the active embeddings, not one task's:
        a new task started next to a single task's embedding dragged that
        task's generated weights along and cost it about 3 points. Only if the
        mean too generates far too small weights does it start from the latest
        active task's embedding.
        """
        active = self._active_indices()
        if not active:
            return fresh
        with torch.no_grad():
            served = self._generate(active).pow(2).mean().sqrt()
            for start in (fresh, torch.stack([self._embeddings[i] for i in active]).mean(0) + fresh):
                drawn = self._hnet(cond_input=start[None], ret_format="flattened").pow(2).mean().sqrt()
                if drawn >= _DEAD_START_RATIO * served:
                    return start
        return self._embeddings[active[-1]] + fresh

    def _find(self, task: str) -> int | None:
        if self._task_names is None:
            return None
        for index in range(len(self._task_names) - 1, -1, -1):
            if self._task_names[index] == task:
                return index
        return None

    def _index_of(self, task: str) -> int:
        index = self._find(task)
        if index is None:
            known = ", ".join(repr(t) for t in dict.fromkeys(self._task_names or ())) or "none"
            raise ValueError(f"hypernet has not learned task {task!r} (tasks: {known})")
        return index

    def _active_indices(self) -> list[int]:
        return [i for i, a in enumerate(self._active) if a]

    def _generate(self, indices: list[int]) -> torch.Tensor:
        """Generated weights of the given tasks, one flattened row each."""
        embeddings = torch.stack([self._embeddings[i] for i in indices])
        return self._hnet(cond_input=embeddings, ret_format="flattened")

    def _anchors(self, indices: list[int]) -> torch.Tensor | None:
        if not indices:
            return None
        with torch.no_grad():
            return self._generate(indices)

    def _drift(self, indices: list[int], anchors: torch.Tensor) -> torch.Tensor:
        """Mean over tasks of the squared distance of their weights to the anchors."""
        return (self._generate(indices) - anchors).pow(2).sum(dim=1).mean()

    def _generator(self, stream: int, counter: int, device) -> torch.Generator:
        seed = int(np.random.SeedSequence([self.config.seed, stream, counter]).generate_state(1, dtype=np.uint64)[0])
        return torch.Generator(device=device).manual_seed(seed)

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError("hypernet strategy has learned nothing yet")

    def _inputs(self, X: np.ndarray, what: str) -> np.ndarray:
        return np.ascontiguousarray(inputs.features(X, self.n_features, what))


def _named_params(hnet) -> list[tuple[str, torch.Tensor]]:
    # hnet.state_dict() lists some tensors twice under aliases; the
    # unconditional parameters are each weight exactly once, in a fixed order.
    return [(f"hnet.{i:03d}", p) for i, p in enumerate(hnet.unconditional_params)]
