"""The ``analytic`` strategy: a ridge head on frozen random ReLU features.

The float64 sufficient statistics ``A = gamma*I + sum(phi^T phi)`` and
``C = sum(phi^T Y)`` are the source of truth. Forgetting subtracts exactly
what learning added, so after any interleaving of learns and forgets the head
equals the ridge solution on the retained samples alone.

The inverse ``R = A^-1`` is kept current by Woodbury updates so that a request
of n samples costs O(n d^2) instead of the O(d^3) of a fresh factorisation.
Round-off in those updates compounds over many requests, so cheap probes
check R and the head against the statistics after every update; R is rebuilt
from A when it drifts, and the head is refined when its residual is off.
Requests larger than a fraction of the width (see ``_woodbury_rows``) update
A and C and refactorise instead, which is cheaper at that size.

Features are built ``chunk_rows`` rows at a time. The statistics are sums over
rows, so a refactorising request adds each chunk's phi^T phi and phi^T Y and
never holds more than one chunk of features; the Woodbury step, which needs
all of a request's rows at once, only takes requests of at most that many.
The same additivity spreads a refactorising request over the strategy's
executor: its rows split into as many blocks (of whole chunks) as the
executor runs jobs at once, each block's sums are built as a job of their
own, and the sums are added in block order before the one factorisation.
With one block (the local executor) that is exactly the serial loop.

A step of n samples costs about 4 n d^2 flops: the product of R with the
feature rows, and the rank-n updates of A and of R. Keeping a Cholesky factor
from the last factorisation plus the pending steps as low-rank factors
("lazy Woodbury") halves the per-step passes, but the pending factors cost
O(k n d) per step at pending rank k and the folds O(d^3 / 3) each; at the
best fold rank the total per step came out no lower, and measured slower on
the two-core bench machine (README, bench/analytic_forget.py), so R stays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import blas, lapack

from lifecycle.strategies.analytic import TAGS
from lifecycle.strategies.analytic.config import AnalyticConfig
from lifecycle.strategies import inputs
from lifecycle.strategies.base import ForgetSet, Strategy, StrategyInputError, TaskData

_STATE_KEYS = ("W_rand", "b", "A", "C", "n_samples")

# A request of more than this fraction of the width refactorises A instead
# of taking the Woodbury step (see _woodbury_rows).
_WOODBURY_FRACTION = 0.4


class AnalyticStrategy(Strategy):
    name = "analytic"
    config_class = AnalyticConfig
    tags = TAGS

    # State is None until the first learn or a load; keeping the defaults on
    # the class lets the base constructor stay the only one, so building an
    # instance allocates nothing.
    _W_rand: np.ndarray | None = None
    _b: np.ndarray | None = None
    _A: np.ndarray | None = None
    _C: np.ndarray | None = None
    _R: np.ndarray | None = None
    _W: np.ndarray | None = None
    _probe: np.ndarray | None = None
    _Av: np.ndarray | None = None  # A @ _probe, kept current by every update
    _n_samples: int = 0
    # Rebuilds of R from A forced by the drift check (not the ones a batch at
    # least as large as the width takes by choice, see _update).
    refreshes: int = 0
    # Steps whose head failed the residual probe and was refined (see _woodbury).
    refinements: int = 0

    # ----------------------------------------------------------------- contract

    @property
    def is_fitted(self) -> bool:
        return self._A is not None

    @property
    def weights(self) -> np.ndarray:
        """The head W = A^-1 C, shape (width, n_classes); a copy."""
        self._require_fitted()
        return self._W.copy()

    @property
    def n_samples(self) -> int:
        """How many samples the statistics currently hold."""
        return self._n_samples

    def learn(self, data: TaskData) -> None:
        X = self._inputs(data.X, "learn")
        Y = self._one_hot(data.y, len(X), "learn")
        if not self.is_fitted:
            self._init_state()
        if len(X) == 0:
            return
        self._update(X, Y, sign=+1.0)
        self._n_samples += len(X)

    def forget(self, forget_set: ForgetSet) -> None:
        n = len(forget_set.sample_ids)
        if n == 0:
            return
        if forget_set.X is None or forget_set.y is None:
            raise StrategyInputError(
                f"analytic forgets by subtracting the samples' features, so the forget set of {n} "
                "samples must carry X and y (the original labels); got "
                f"X={'missing' if forget_set.X is None else 'given'}, "
                f"y={'missing' if forget_set.y is None else 'given'}"
            )
        self._require_fitted()
        X = self._inputs(forget_set.X, "forget")
        if len(X) != n:
            raise StrategyInputError(f"forget set names {n} sample_ids but X has {len(X)} rows")
        Y = self._one_hot(forget_set.y, n, "forget")
        if n > self._n_samples:
            raise ValueError(f"cannot forget {n} samples: only {self._n_samples} are learned")
        self._update(X, Y, sign=-1.0)
        self._n_samples -= n

    def predict(self, X: np.ndarray, task: str | None = None) -> np.ndarray:
        return np.argmax(self.scores(X, task), axis=1).astype(np.int64)

    def scores(self, X: np.ndarray, task: str | None = None) -> np.ndarray:
        # The head is class-incremental over all classes, so ``task`` is not needed.
        self._require_fitted()
        X = self._inputs(X, "predict")
        out = np.empty((len(X), self.n_classes), dtype=np.float64)
        for start, stop in self._chunks(len(X)):
            # scipy's BLAS, like every update (see _phi): numpy's pool would spin against it.
            out[start:stop] = blas.dgemm(1.0, self._phi(X[start:stop]).T, self._W, trans_a=1)
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        # R and W are left out: both follow from A and C, and R alone would
        # double the size of every stored version.
        self._require_fitted()
        return {
            "W_rand": self._W_rand.copy(),
            "b": self._b.copy(),
            "A": _symmetric(self._A),
            "C": self._C.copy(),
            "n_samples": np.array(self._n_samples, dtype=np.int64),
        }

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        missing = [k for k in _STATE_KEYS if k not in state]
        unknown = sorted(set(state) - set(_STATE_KEYS))
        if missing or unknown:
            raise ValueError(
                f"analytic state keys do not match: missing {missing or 'none'}, unknown {unknown or 'none'}"
            )
        width = self.config.width
        expected = {
            "W_rand": (self.n_features, width),
            "b": (width,),
            "A": (width, width),
            "C": (width, self.n_classes),
            "n_samples": (),
        }
        arrays = {key: np.asarray(state[key]) for key in _STATE_KEYS}
        for key, shape in expected.items():
            if arrays[key].shape != shape:
                raise ValueError(
                    f"analytic state {key!r} has shape {arrays[key].shape}, expected {shape} "
                    f"(width={width}, n_features={self.n_features}, n_classes={self.n_classes})"
                )
        n_samples = arrays["n_samples"]
        if not np.issubdtype(n_samples.dtype, np.integer) or int(n_samples) < 0:
            raise ValueError(f"analytic state 'n_samples' must be a non-negative integer, not {n_samples!r}")

        A = np.array(arrays["A"], dtype=np.float64, order="F")
        C = np.array(arrays["C"], dtype=np.float64)
        R = self._inverse(A)  # raises before anything is assigned
        self._W_rand = np.array(arrays["W_rand"], dtype=np.float64)
        self._b = np.array(arrays["b"], dtype=np.float64)
        self._probe = self._probe_vector()
        self._A, self._C, self._R = A, C, R
        self._W = self._head()
        self._Av = blas.dsymv(1.0, A, self._probe, lower=1)
        self._n_samples = int(n_samples)

    # ---------------------------------------------------------------- internals

    def features(self, X: np.ndarray) -> np.ndarray:
        """phi(X) = ReLU(X W_rand + b) in float64, shape (n, width)."""
        self._require_fitted()
        return self._phi(self._inputs(X, "features"))

    def _init_state(self) -> None:
        width = self.config.width
        rng = np.random.default_rng(self.config.seed)
        # 1/sqrt(n_features) keeps pre-activations at unit scale for standardised inputs.
        self._W_rand = rng.standard_normal((self.n_features, width)) / np.sqrt(self.n_features)
        self._b = rng.standard_normal(width)
        self._probe = self._probe_vector()
        self._A = np.asfortranarray(self.config.gamma * np.eye(width))
        self._C = np.zeros((width, self.n_classes))
        self._R = np.asfortranarray(np.eye(width) / self.config.gamma)
        self._W = np.zeros((width, self.n_classes))
        self._Av = self.config.gamma * self._probe
        self._n_samples = 0

    def _probe_vector(self) -> np.ndarray:
        # Its own stream, so a loaded state (which does not store it) gets the same one.
        return np.random.default_rng([self.config.seed, 1]).standard_normal(self.config.width)

    def _phi(self, X: np.ndarray) -> np.ndarray:
        """phi(X), shape (n, width): a row-major view of the column-major phi(X)^T."""
        # Every product of an update goes through scipy's BLAS. numpy's wheel
        # bundles its own OpenBLAS; after a threaded call its threads keep
        # spinning for a while, and interleaving the two pools on two cores
        # made a 100-sample forget take 100 ms instead of 36.
        P = blas.dgemm(1.0, self._W_rand, X, trans_a=1, trans_b=1)
        P += self._b[:, None]
        return np.maximum(P, 0.0, out=P).T

    def _chunks(self, n: int):
        """(start, stop) of consecutive row blocks of at most chunk_rows rows."""
        step = self.config.chunk_rows
        return ((start, min(n, start + step)) for start in range(0, n, step))

    def _blocks(self, n: int) -> list[tuple[int, int]]:
        """(start, stop) of at most executor.workers blocks of whole chunks, together the n > 0 rows."""
        chunks = -(-n // self.config.chunk_rows)
        step = -(-chunks // min(self.executor.workers, chunks)) * self.config.chunk_rows
        return [(start, min(n, start + step)) for start in range(0, n, step)]

    def _woodbury_rows(self) -> int:
        """The largest request the Woodbury step takes; larger ones refactorise.

        Beyond the rank-n update of A that both pay, Woodbury costs about
        3 n d^2 + O(n^2 d) flops and a fresh factorisation and inversion d^3,
        at a lower rate; measured at d = 2048, single-threaded, the two meet
        between n = 683 (367 ms against 403) and n = 1024 (629 against 499).
        The step also needs all n feature rows at once, hence at most
        chunk_rows.
        """
        return min(self.config.chunk_rows, max(1, int(_WOODBURY_FRACTION * self.config.width)))

    def _update(self, X: np.ndarray, Y: np.ndarray, sign: float) -> None:
        """Add (sign=+1) or remove (sign=-1) the samples X with targets Y.

        The positive-definiteness check that refuses a bad forget runs before
        the state changes, so a refused forget leaves the state as it was.
        """
        if len(X) > self._woodbury_rows():
            self._refactorise(X, Y, sign)
            return
        Phi = self._phi(X)
        C = blas.dgemm(sign, Phi.T, Y, beta=1.0, c=self._C)
        self._woodbury(Phi, Y, C, sign)

    def _refactorise(self, X: np.ndarray, Y: np.ndarray, sign: float) -> None:
        """Update A and C block by block, then factorise and invert A afresh.

        The statistics are sums over rows, so building the features
        chunk_rows at a time gives the same A and C (up to the order of
        floating-point additions) while holding one chunk of features at once.
        The first block starts from the current A and C, the others from
        zero; their sums are added in block order. A fresh factorisation is
        also free of accumulated round-off.
        """
        jobs = [StatisticsJob(self.config, self.n_features, self.n_classes, self._W_rand, self._b, X[start:stop],
                              Y[start:stop], sign, self._A if i == 0 else None, self._C if i == 0 else None)
                for i, (start, stop) in enumerate(self._blocks(len(X)))]
        parts = self.executor.map(block_statistics, jobs)
        # what another process sent back may be read-only, and later steps update A in place
        A, C = (np.require(part, requirements=("F", "W")) for part in parts[0])
        for A_part, C_part in parts[1:]:
            A += A_part
            C += C_part
        R = self._inverse(A)  # raises before anything is assigned
        self._A, self._C, self._R = A, C, R
        self._W = self._head()
        self._Av = blas.dsymv(1.0, A, self._probe, lower=1)

    def _woodbury(self, Phi: np.ndarray, Y: np.ndarray, C: np.ndarray, sign: float) -> None:
        """Rank-n update of A, R = A^-1 and W = A^-1 C, for n below the width.

        (A + s Phi^T Phi)^-1 = R - s V V^T with U = R Phi^T, S = I + s Phi U =
        L L^T and V = U L^-T, for s = +/-1; W follows by recursive least
        squares in O(n d c). Beyond that arithmetic, every pass over one of the
        two d x d matrices costs milliseconds at d = 2048, so a step makes
        only the three it cannot avoid: U, and the updates of A and R (symm
        and syrk read and write only the lower triangles, in place, since both
        are Fortran-ordered).

        The checks ride along as Freivalds-style probes: Av = A v is kept
        current in O(n d), so one extra column in the product that gives U
        checks R A v = v, and v^T (C - A W) = v^T C - Av^T W checks the head
        against the exact statistics in O(d c). Only a failed check pays for a
        full pass: a drifted R is rebuilt from A; a head whose residual is off
        gets one step of iterative refinement, which also re-syncs Av.
        """
        n, v = len(Phi), self._probe
        # Phi.T is column-major (see _phi): the layout syrk reads about twice
        # as fast as the row-major n x d one.
        P = Phi.T
        Av = self._Av + sign * blas.dgemv(1.0, P, blas.dgemv(1.0, P, v, trans=1))
        RB = blas.dsymm(1.0, self._R, np.asfortranarray(np.column_stack([P, Av])), lower=1)
        U, RAv = RB[:, :n], RB[:, n]
        S = blas.dgemm(sign, P, U, trans_a=1, beta=1.0, c=np.eye(n), overwrite_c=1)
        L, info = lapack.dpotrf(S, lower=1, clean=1, overwrite_a=1)
        if info != 0:
            # S is positive definite exactly when the updated A is, so a failure
            # here means the forget set held samples that A never contained.
            raise ValueError(self._indefinite_message())
        V = blas.dtrsm(1.0, L, U, side=1, lower=1, trans_a=1)

        def corrected(RB: np.ndarray, B: np.ndarray) -> np.ndarray:
            """R_new B, given R B: R B - s V V^T B."""
            return blas.dgemm(-sign, V, blas.dgemm(1.0, V, B, trans_a=1), beta=1.0, c=RB)

        # W_new = W + s A_new^-1 Phi^T (Y - Phi W), and A_new^-1 Phi^T = U S^-1 = V L^-1.
        E = blas.dgemm(-1.0, P, self._W, trans_a=1, beta=1.0, c=Y)
        W = blas.dgemm(sign, V, blas.dtrsm(1.0, L, E, lower=1), beta=1.0, c=self._W)
        self._A = blas.dsyrk(sign, P, beta=1.0, c=self._A, trans=0, lower=1, overwrite_c=1)
        self._C, self._Av = C, Av

        drift = np.linalg.norm(corrected(RAv[:, None], Av[:, None])[:, 0] - v) / np.linalg.norm(v)
        if drift > self.config.drift_tol:
            # R has accumulated too much round-off: rebuild it (and W) from A.
            self._R = self._inverse(self._A)
            self._W = self._head()
            self._Av = blas.dsymv(1.0, self._A, v, lower=1)
            self.refreshes += 1
            return
        self._R = blas.dsyrk(-sign, V, beta=1.0, c=self._R, trans=0, lower=1, overwrite_c=1)
        vC, vAW = blas.dgemv(1.0, C, v, trans=1), blas.dgemv(1.0, W, Av, trans=1)
        if np.linalg.norm(vC - vAW) > self.config.residual_tol * (np.linalg.norm(vC) + np.linalg.norm(vAW)):
            W = self._refine(W)
            self.refinements += 1
        self._W = W

    def _refine(self, W: np.ndarray) -> np.ndarray:
        """W + R (C - A W): one step of iterative refinement; re-syncs Av on the way."""
        AB = blas.dsymm(1.0, self._A, np.asfortranarray(np.column_stack([W, self._probe])), lower=1)
        self._Av = AB[:, -1].copy()
        return W + blas.dsymm(1.0, self._R, self._C - AB[:, :-1], lower=1)

    def _inverse(self, A: np.ndarray) -> np.ndarray:
        """A^-1 from A's lower triangle, in the lower triangle of a new column-major array.

        Cholesky, then the inverse from the factor (potri: d^3 flops in all,
        where solving against the identity cost 7 d^3 / 3). Only lower
        triangles are ever read (symm, syrk and symv with lower=1).
        """
        L, info = lapack.dpotrf(A, lower=1, clean=0, overwrite_a=0)
        if info != 0:
            raise ValueError(self._indefinite_message())
        R, info = lapack.dpotri(L, lower=1, overwrite_c=1)
        if info != 0:
            raise ValueError(self._indefinite_message())
        return R

    def _head(self) -> np.ndarray:
        """W = A^-1 C, using R only as an approximate inverse.

        R may be off by up to drift_tol, which W = R C would inherit magnified
        by the conditioning of A. One step of iterative refinement against the
        exact statistics removes that error to first order, for two more
        O(d^2 n_classes) products. (BLAS is called directly because numpy's
        matmul first copies the Fortran-ordered d x d operand.)
        """
        W = blas.dsymm(1.0, self._R, self._C, lower=1)
        residual = self._C - blas.dsymm(1.0, self._A, W, lower=1)
        return W + blas.dsymm(1.0, self._R, residual, lower=1)

    @staticmethod
    def _indefinite_message() -> str:
        return (
            "analytic statistics would stop being positive definite: the forget set holds samples "
            "that were never learned or were already forgotten (or the state is corrupt)"
        )

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError("analytic strategy has learned nothing yet")

    def _inputs(self, X: np.ndarray, what: str) -> np.ndarray:
        # kept float32: each chunk is widened to float64 (exactly) as its
        # features are built, so a big request is never copied whole
        return inputs.features(X, self.n_features, what)

    def _one_hot(self, y: np.ndarray, n: int, what: str) -> np.ndarray:
        Y = np.zeros((n, self.n_classes))
        Y[np.arange(n), inputs.labels(y, n, self.n_classes, what)] = 1.0
        return Y


@dataclass(frozen=True)
class StatisticsJob:
    """One block of a refactorising update: its rows X (float32) and targets Y, what
    builds their features (the config and the frozen projection W_rand, b), and the
    statistics to add to (None: start from zero)."""

    config: AnalyticConfig
    n_features: int
    n_classes: int
    W_rand: np.ndarray
    b: np.ndarray
    X: np.ndarray
    Y: np.ndarray
    sign: float
    A: np.ndarray | None
    C: np.ndarray | None


def block_statistics(job: StatisticsJob) -> tuple[np.ndarray, np.ndarray]:
    """(A + sign sum phi^T phi, C + sign sum phi^T Y) over the block's rows, a chunk at a time
    (A's lower triangle only; the job's A and C are copied, never changed)."""
    # a strategy holding only the projection, so the features are built by the strategy's own code
    features = AnalyticStrategy(job.config, job.n_features, job.n_classes)
    features._W_rand, features._b = job.W_rand, job.b
    width = job.config.width
    A = np.zeros((width, width), order="F") if job.A is None else job.A.copy(order="F")
    C = np.zeros((width, job.n_classes), order="F") if job.C is None else job.C.copy(order="F")
    for start, stop in features._chunks(len(job.X)):
        P = features._phi(job.X[start:stop]).T  # column-major width x rows
        A = blas.dsyrk(job.sign, P, beta=1.0, c=A, trans=0, lower=1, overwrite_c=1)
        C = blas.dgemm(job.sign, P, job.Y[start:stop], beta=1.0, c=C, overwrite_c=1)
    return A, C


def _symmetric(lower: np.ndarray) -> np.ndarray:
    """The full symmetric matrix whose lower triangle is ``lower``."""
    return np.tril(lower) + np.tril(lower, -1).T
