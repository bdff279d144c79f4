"""Bring your own encoder: every strategy on a frozen encoder's features, raw inputs at the API,
the encoder stored and checked by digest, declared in certificates; and the gate finding for
false activations on retained tasks.

The encoder is a small CNN trained here, on one half of scikit-learn's digits (nothing is
downloaded); the stream is the other half, so the encoder never sees what the model learns
or forgets.
"""

from __future__ import annotations

import functools
import hashlib
import warnings

import numpy as np
import pytest
import torch
from sqlalchemy import text

import lifecycle
from lifecycle import loading, strategies
from lifecycle.store.records import Role

SHAPE = (1, 8, 8)
CLASSES = ((0, 1), (2, 3), (4, 5))
TRAINED_ON = "scikit-learn digits, the half with even positions after a seed-0 shuffle (not this stream)"
# a factory's output is scaled by this; the test of a changed factory changes it
FACTORY_SCALE = 1.0


class Trunk(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(16, 32, 3, padding=1)
        self.fc = torch.nn.Linear(32 * 4 * 4, 48)
        self.scale = FACTORY_SCALE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv1(x))
        h = torch.nn.functional.max_pool2d(torch.relu(self.conv2(h)), 2)
        return torch.relu(self.fc(h.flatten(1))) * self.scale


def build_trunk() -> torch.nn.Module:
    """The factory the tests register as "tests.lifecycle.test_encoders:build_trunk"."""
    return Trunk()


@functools.cache
def halves():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32).reshape(-1, *SHAPE)
    order = np.random.default_rng(0).permutation(len(y))
    return (X[order[0::2]], y[order[0::2]]), (X[order[1::2]], y[order[1::2]].astype(np.int64))


@functools.cache
def trained_trunk() -> Trunk:
    """The encoder, trained with a throwaway head on the first half only."""
    (X, y), _ = halves()
    torch.manual_seed(0)
    trunk, head = Trunk(), torch.nn.Linear(48, 10)
    opt = torch.optim.Adam([*trunk.parameters(), *head.parameters()], lr=3e-3)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))
    gen = torch.Generator().manual_seed(0)
    for _ in range(15):
        for idx in torch.randperm(len(yt), generator=gen).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(head(trunk(Xt[idx])), yt[idx]).backward()
            opt.step()
    return trunk.eval()


def stream():
    """Three tasks of two classes from the second half: (name, X, y, X_probe, y_probe), raw 1x8x8 images."""
    _, (X, y) = halves()
    out = []
    for a, b in CLASSES:
        idx = np.flatnonzero((y == a) | (y == b))
        out.append((f"{a}-{b}", X[idx[:110]], y[idx[:110]], X[idx[110:]], y[idx[110:]]))
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("encoders")
    trunk = trained_trunk()
    example = torch.zeros(4, *SHAPE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(trunk), d / "trunk.pt")
    torch.save(trunk.state_dict(), d / "trunk-weights.pt")
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    torch.export.save(torch.export.export(trunk, (example,), dynamic_shapes=({0: batch},)), d / "trunk.pt2")
    torch.export.save(torch.export.export(trunk, (example,)), d / "trunk-static.pt2")
    return d


@pytest.fixture
def lc(tmp_path):
    return lifecycle.connect(f"sqlite:///{tmp_path / 'ledger.db'}", artifacts=tmp_path / "artifacts",
                             keys=tmp_path / "keys")


def with_encoder(lc, name, files, strategy="analytic", config=None, **kwargs):
    kwargs.setdefault("encoder", files / "trunk.pt")
    return lc.create_model(name, strategy=strategy, n_classes=10,
                           config=config if config is not None else strategies.get(strategy).test_config,
                           input_shape=SHAPE, encoder_trained_on=TRAINED_ON, **kwargs)


def learn_all(lc, name, tasks=None):
    for task, X, y, Xp, yp in tasks or stream():
        lc.learn(name, task=task, X=X, y=y, sample_ids=[f"{task}/{i}" for i in range(len(y))], probe=(Xp, yp))
    assert {r.status for r in lc.drain(name)} == {"applied"}


def accuracies(lc, name) -> dict[str, tuple[str, float]]:
    return {e.task: (e.role, e.accuracy) for e in lc.history(name)[-1].evaluations}


# ---- every strategy, through an encoder file, on raw images --------------------------------------


@pytest.mark.parametrize("strategy", ["analytic", "s3t", "olora", "hypernet"])
def test_each_strategy_learns_forgets_and_predicts_through_an_encoder_file(lc, files, strategy):
    m = with_encoder(lc, "m", files, strategy)
    assert m.input_shape == SHAPE and m.n_features == 64 and m.encoder.out_features == 48
    assert m.encoder.trained_on == TRAINED_ON and m.device == "cpu"
    learn_all(lc, "m")
    before = accuracies(lc, "m")
    assert all(acc >= 0.85 for _, acc in before.values()), before
    forget = lc.forget("m", task="2-3", reason="licence revoked")
    assert {r.status for r in lc.drain("m")} == {"applied"}  # s3t: the forget and its background retrain
    after = accuracies(lc, "m")
    assert after["2-3"][0] == Role.FORGOTTEN
    # hypernet is evaluated with the task id (chance 0.5); the others over all ten classes
    assert after["2-3"][1] <= (0.6 if strategy == "hypernet" else 0.1), after
    assert all(after[t][1] >= 0.8 for t in ("0-1", "4-5")), after

    _, _, _, Xp, yp = stream()[0]
    labels = lc.predict("m", Xp, task="0-1" if strategy == "hypernet" else None)
    assert labels.shape == (len(yp),) and np.mean(labels == yp) >= 0.8

    body = lc.certificate(forget.id)["certificate"]
    declared = body["encoder"]
    assert declared["sha256"] == hashlib.sha256((files / "trunk.pt").read_bytes()).hexdigest()
    assert declared["trained_on"] == TRAINED_ON and declared["input_shape"] == list(SHAPE)
    assert declared["deletion_scope"].startswith("outside")
    assert body["exactness"] == strategies.get(strategy).tags.exactness  # unchanged by the encoder


def test_raw_inputs_are_checked_against_the_encoders_input_shape(lc, files):
    with_encoder(lc, "m", files)
    task, X, y, Xp, yp = stream()[0]
    for bad, match in ((X.reshape(len(X), -1), r"shape \(n, 1, 8, 8\).*got shape \(110, 64\)"),
                       (X[:, :, :4], r"got shape \(110, 1, 4, 8\)"),
                       (np.where(np.arange(X.size).reshape(X.shape) == 7, np.nan, X), "NaN"),
                       (7, r"got shape \(\)")):
        with pytest.raises(lifecycle.InvalidRequest, match=match):
            lc.learn("m", task=task, X=bad, y=y, probe=(Xp, yp))
    with pytest.raises(lifecycle.InvalidRequest, match="probe X must have shape"):
        lc.learn("m", task=task, X=X, y=y, probe=(Xp.reshape(len(Xp), -1), yp))
    assert lc.requests("m") == []
    learn_all(lc, "m", stream()[:1])
    with pytest.raises(lifecycle.InvalidRequest, match=r"shape \(n, 1, 8, 8\)"):
        lc.predict("m", Xp[0])


def test_forgetting_samples_through_the_encoder_leaves_a_joint_ridge_on_the_retained_features(lc, files):
    """``analytic`` is the ACU setting: its head on the encoder's features must be the ridge
    solution on the retained samples' features, with the samples' features recomputed from
    their stored raw rows at the forget."""
    with_encoder(lc, "m", files, config={"width": 96, "gamma": 0.1})
    tasks = stream()
    learn_all(lc, "m", tasks)
    gone = [f"{t}/{i}" for t, *_ in tasks for i in range(0, 110, 3)]
    lc.forget("m", samples=gone)
    assert {r.status for r in lc.drain("m")} == {"applied"}
    m = lc.model("m")
    model = loading.load_strategy(lc.vault, m, lc.ledger.latest_version(m.id))
    assert isinstance(model, loading.Encoded)

    kept_X = np.concatenate([X[[i for i in range(110) if i % 3]] for _, X, *_ in tasks])
    kept_y = np.concatenate([y[[i for i in range(110) if i % 3]] for _, _, y, *_ in tasks])
    state = model.state_dict()
    feats = trained_trunk()(torch.from_numpy(kept_X)).detach().numpy().astype(np.float64)
    phi = np.maximum(feats @ state["W_rand"] + state["b"], 0.0)
    Y = np.eye(10)[kept_y]
    ridge = np.linalg.solve(0.1 * np.eye(phi.shape[1]) + phi.T @ phi, phi.T @ Y)
    assert np.abs(model.inner.weights - ridge).max() <= 1e-6 * np.abs(ridge).max()
    assert int(state["n_samples"]) == len(kept_y)


def test_torchscript_export_and_factory_encoders_give_the_same_model(lc, files):
    with_encoder(lc, "script", files)
    with_encoder(lc, "export", files, encoder=files / "trunk.pt2")
    with_encoder(lc, "static", files, encoder=files / "trunk-static.pt2")
    with_encoder(lc, "factory", files, encoder="tests.lifecycle.test_encoders:build_trunk",
                 encoder_weights=files / "trunk-weights.pt")
    kinds = {n: lc.model(n).encoder for n in ("script", "export", "static", "factory")}
    assert {n: e.kind for n, e in kinds.items()} == {"script": "torchscript", "export": "export",
                                                     "static": "export", "factory": "factory"}
    assert kinds["static"].batch_size == 4  # a static batch dimension: fed batches of exactly that size
    assert kinds["factory"].digest == hashlib.sha256((files / "trunk-weights.pt").read_bytes()).hexdigest()
    _, _, _, Xp, _ = stream()[1]
    predictions = []
    for name in kinds:
        learn_all(lc, name, stream()[:2])
        predictions.append(lc.predict(name, Xp))
    for p in predictions[1:]:
        assert np.array_equal(p, predictions[0])


# ---- the encoder's file: stored by digest, checked on every load --------------------------------


def test_the_encoder_is_stored_in_clear_under_its_files_sha256_and_the_sweep_keeps_it(lc, files):
    m = with_encoder(lc, "m", files)
    data = (files / "trunk.pt").read_bytes()
    assert m.encoder.digest == hashlib.sha256(data).hexdigest()
    assert lc.vault.artifacts.get(m.encoder.digest) == data and not lc.vault.keys.exists(m.encoder.digest)
    assert m.encoder.digest not in lc.sweep(grace_seconds=0)
    learn_all(lc, "m", stream()[:1])
    created = [e for e in lc.events("m") if e.kind == "model_created"][0]
    assert created.detail["encoder"]["digest"] == m.encoder.digest  # in the audit chain
    assert lc.ledger.audit_problems()[1] == []


def test_a_changed_encoder_file_is_refused_by_digest(lc, files, tmp_path):
    m = with_encoder(lc, "m", files)
    learn_all(lc, "m", stream()[:1])
    path = lc.vault.artifacts.root / m.encoder.digest[:2] / m.encoder.digest[2:]
    original = path.read_bytes()
    path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    _, X, y, Xp, yp = stream()[1]
    with pytest.raises(lifecycle.EncoderMismatch, match="changed"):
        lc.predict("m", Xp)
    # a worker that finds it changed quarantines the model; nothing queued fails
    req = lc.learn("m", task="2-3", X=X, y=y, probe=(Xp, yp))
    lc.drain("m")
    assert lc.status(req.id).status == "queued" and "changed" in lc.model("m").quarantine
    path.write_bytes(original)
    assert lc.predict("m", Xp).shape == (len(yp),)

    # a file that is not the one the caller declared is refused before anything is written
    with pytest.raises(lifecycle.InvalidEncoder, match="not the 0{64} declared"):
        with_encoder(lc, "other", files, encoder_sha256="0" * 64)
    assert lc.ledger.model("other") is None


def test_a_damaged_state_is_rebuilt_behind_the_encoder(lc, files):
    """``lifecycle repair`` rebuilds an exact strategy from the stored raw rows, through the encoder."""
    with_encoder(lc, "m", files)
    learn_all(lc, "m", stream()[:2])
    _, _, _, Xp, _ = stream()[1]
    before = lc.predict("m", Xp)
    m = lc.model("m")
    path = lc.vault.artifacts.root / lc.ledger.latest_version(m.id).artifact_digest[:2] / \
        lc.ledger.latest_version(m.id).artifact_digest[2:]
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(lifecycle.StorageFault):
        lc.predict("m", Xp)
    repair = lc.repair("m")
    lc.drain("m")
    assert lc.status(repair.id).status == "applied", lc.status(repair.id).error
    assert np.array_equal(lc.predict("m", Xp), before)


def test_a_factory_whose_code_changed_is_refused(lc, files, monkeypatch):
    with_encoder(lc, "m", files, encoder="tests.lifecycle.test_encoders:build_trunk",
                 encoder_weights=files / "trunk-weights.pt")
    learn_all(lc, "m", stream()[:1])
    _, _, _, Xp, _ = stream()[0]
    monkeypatch.setattr(loading, "_ENCODERS", type(loading._ENCODERS)())  # a fresh process: nothing loaded
    monkeypatch.setattr(__import__(__name__, fromlist=["_"]), "FACTORY_SCALE", 2.0)
    with pytest.raises(lifecycle.EncoderMismatch, match="no longer computes"):
        lc.predict("m", Xp)


class TrainModeNorm(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = torch.nn.BatchNorm2d(1)

    def forward(self, x):
        return self.norm(x).flatten(1)


def test_bad_encoders_are_typed_errors_and_write_nothing(lc, files, tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "wrong-weights.pt")
    # a program exported in training mode keeps batch statistics (TorchScript modules are put in eval mode)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    torch.export.save(torch.export.export(TrainModeNorm().train(), (torch.rand(4, *SHAPE),),
                                          dynamic_shapes=({0: batch},)), tmp_path / "train-mode.pt2")
    cases = [
        (dict(encoder=tmp_path / "missing.pt"), lifecycle.InvalidEncoder, "no file"),
        (dict(encoder=tmp_path / "notes.txt"), lifecycle.InvalidEncoder, "neither a TorchScript file"),
        (dict(encoder=files / "trunk.pt", input_shape=(3, 8, 8)), lifecycle.InvalidEncoder, "failed on inputs"),
        (dict(encoder=tmp_path / "train-mode.pt2"), lifecycle.InvalidEncoder, "depends on the other inputs"),
        (dict(encoder="no_such_package.nets:build", encoder_weights=files / "trunk-weights.pt"),
         lifecycle.InvalidEncoder, "cannot be imported"),
        (dict(encoder="tests.lifecycle.test_encoders:build_trunk"), lifecycle.InvalidEncoder, "encoder_weights"),
        (dict(encoder="tests.lifecycle.test_encoders:build_trunk", encoder_weights=tmp_path / "wrong-weights.pt"),
         lifecycle.InvalidEncoder, "do not fit"),
        (dict(encoder=files / "trunk.pt", encoder_weights=files / "trunk-weights.pt"), lifecycle.InvalidEncoder,
         "goes with a factory"),
        (dict(encoder=files / "trunk-static.pt2", encoder_batch=8), lifecycle.InvalidEncoder, "exactly 4"),
        (dict(encoder=files / "trunk.pt", encoder_trained_on=None), lifecycle.InvalidRequest, "encoder_trained_on"),
        (dict(encoder=files / "trunk.pt", n_features=48), lifecycle.InvalidRequest, "left out with an encoder"),
        (dict(encoder=files / "trunk.pt", input_shape=(1, 0, 8)), lifecycle.InvalidRequest, "positive integers"),
        (dict(encoder=files / "trunk.pt", input_dtype="float16"), lifecycle.InvalidRequest, "input_dtype"),
        (dict(encoder=files / "trunk.pt", device="tpu"), lifecycle.InvalidRequest, "device"),
        (dict(encoder=files / "trunk.pt", max_false_activation=1.5), lifecycle.InvalidRequest, "max_false"),
        (dict(encoder=files / "trunk.pt", strategy="s3t", config={"base": "digits"}), lifecycle.InvalidConfig,
         "base must be 'random'"),
        (dict(encoder=files / "trunk.pt", strategy="hypernet", config={"target_net": "cnn"}),
         lifecycle.InvalidConfig, "target_net must be 'mlp'"),
    ]
    if not torch.cuda.is_available():
        cases.append((dict(encoder=files / "trunk.pt", device="cuda"), lifecycle.InvalidRequest, "no CUDA"))
    for kwargs, error, match in cases:
        args = dict(strategy="analytic", config={"width": 32}, input_shape=SHAPE, encoder_trained_on=TRAINED_ON)
        args.update(kwargs)
        if args["encoder_trained_on"] is None:
            del args["encoder_trained_on"]
        with pytest.raises(error, match=match):
            lc.create_model("bad", n_classes=10, **args)
    if torch.cuda.is_available():
        assert lc.create_model("bad", n_classes=10, strategy="analytic", config={"width": 32}, input_shape=SHAPE,
                               encoder=files / "trunk.pt", encoder_trained_on=TRAINED_ON, device="cuda").device == "cuda"
        return
    assert lc.models() == [] and lc.vault.artifacts.digests() == []
    # encoder settings without an encoder
    with pytest.raises(lifecycle.InvalidRequest, match="describe an encoder"):
        lc.create_model("bad", strategy="analytic", n_features=64, n_classes=10, input_shape=SHAPE)
    with pytest.raises(lifecycle.InvalidRequest, match="n_features is required"):
        lc.create_model("bad", strategy="analytic", n_classes=10)


class TokenMean(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(32, 12)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed(ids).mean(1)


def test_token_id_inputs_through_an_embedding_encoder(lc, tmp_path):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(TokenMean().eval()), tmp_path / "tokens.pt")
    lc.create_model("t", strategy="analytic", n_classes=2, config={"width": 64}, encoder=tmp_path / "tokens.pt",
                    input_shape=(6,), input_dtype="int64", encoder_trained_on="a random embedding (no data)")
    rng = np.random.default_rng(0)
    # class 0 uses tokens 0..15, class 1 tokens 16..31
    y = rng.integers(0, 2, 200)
    X = rng.integers(0, 16, (200, 6)) + 16 * y[:, None]
    lc.learn("t", task="a", X=X[:150], y=y[:150], probe=(X[150:], y[150:]))
    assert {r.status for r in lc.drain("t")} == {"applied"}
    assert np.mean(lc.predict("t", X[150:]) == y[150:]) >= 0.95
    with pytest.raises(lifecycle.InvalidRequest, match="integer token ids"):
        lc.predict("t", X.astype(np.float32))
    with pytest.raises(lifecycle.InvalidRequest, match="token ids outside"):
        lc.predict("t", -X)


# ---- the gate: false activations on retained tasks ----------------------------------------------


@pytest.mark.parametrize("target, expected", [(0.05, ["0-1"]), (0.6, [])])
def test_gate_false_activations_above_the_models_target_are_findings(lc, target, expected):
    """``leaky_gate`` opens its gate on half of any inputs: on retained tasks' probes that is a 50 %
    false-activation rate, a finding under the default target (5 %)."""
    import tests.slow_strategy  # noqa: F401 (registers leaky_gate)
    from tests.data import digits_tasks, learn_task

    lc.create_model("gated", strategy="leaky_gate", n_features=64, n_classes=10, config={"width": 128},
                    max_false_activation=target)
    t0, t1, _ = digits_tasks()
    learn_task(lc, "gated", t0)
    learn_task(lc, "gated", t1)
    lc.drain()
    assert lc.relapse("gated") == []  # no gate before a forget
    req = lc.forget("gated", task="2-3")
    lc.drain()
    over = [f for f in lc.relapse("gated") if f.task != "2-3"]
    assert [f.task for f in over] == expected
    verification = lc.certificate(req.id)["certificate"]["verification"]
    assert verification["gate"]["false_activation_target"] == target
    assert verification["gate"]["false_activation_over_target"] == expected
    assert [f["task"] for f in verification["gate_false_activation_findings"]] == expected
    assert [f["task"] for f in verification["relapse_findings"]] == ["2-3"]  # the gate miss, as before
    if expected:
        f = over[0]
        assert f.relapse == pytest.approx(0.5, abs=0.02) and f.threshold == target
        assert f.forgotten_at_version == 3  # the forget whose gate fires
    assert lc.ledger.audit_problems()[1] == []


# ---- the migration ---------------------------------------------------------------------------------


def test_models_from_before_encoders_upgrade_with_no_encoder_and_the_defaults(tmp_path):
    from lifecycle.migrations import migrate
    from lifecycle.store.engine import make_engine

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine, "0008")
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO models (name, strategy, config, n_features, n_classes, relapse_threshold, forget_due_days, "
            "keep_states, forgotten_probes, created_at, audit_seq) VALUES ('old', 'analytic', '{}', 64, 10, 0.05, "
            "30, 3, 'keep', '2026-11-01 00:00:00', 0)"))
    migrate.upgrade(engine)
    old = lifecycle.connect(url, artifacts=tmp_path / "a", keys=tmp_path / "k").model("old")
    assert old.encoder is None and old.device == "cpu" and old.max_false_activation == 0.05
    assert old.input_shape == (64,)


def noisy_signals(rng, c: int, n: int) -> np.ndarray:
    """1-D signals: a large drifting baseline carrying a faint tone of 2 + c cycles per window."""
    t = np.arange(64) / 64
    walk = np.cumsum(rng.standard_normal((n, 64)), 1) / 4
    return (walk + 0.3 * np.sin(2 * np.pi * (2 + c) * t) + 0.5 * rng.standard_normal((n, 64))).astype(np.float32)


def test_olora_on_a_random_base_that_cannot_separate_tasks_raises_gate_findings(lc):
    """The issue's case: 1-D signals, no encoder, the default random base. Its features do not
    separate the tasks, so the forget gate fires on most retained probes; each such task is a finding."""
    rng = np.random.default_rng(0)
    lc.create_model("signals", strategy="olora", n_features=64, n_classes=10, config={"hidden": [64], "epochs": 10})
    for a, b in CLASSES:
        X = np.concatenate([noisy_signals(rng, a, 150), noisy_signals(rng, b, 150)])
        Xp = np.concatenate([noisy_signals(rng, a, 60), noisy_signals(rng, b, 60)])
        lc.learn("signals", task=f"{a}-{b}", X=X, y=np.repeat([a, b], 150), probe=(Xp, np.repeat([a, b], 60)))
    lc.drain()
    req = lc.forget("signals", task="2-3")
    lc.drain()
    verification = lc.certificate(req.id)["certificate"]["verification"]
    gate = verification["gate"]
    assert min(gate["false_activation"].values()) > 0.3, gate  # measured 59-75 %, far above the 5 % target
    assert gate["false_activation_over_target"] == ["0-1", "4-5"]
    assert [f["task"] for f in verification["gate_false_activation_findings"]] == ["0-1", "4-5"]
    assert sorted(f.task for f in lc.relapse("signals") if f.task != "2-3") == ["0-1", "4-5"]
