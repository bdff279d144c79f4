"""Big learns: a learn from a .npy file or from an iterator of batches is the
same learn as from an array; data is checked, digested and sealed a chunk at
a time; a bad chunk anywhere leaves nothing behind; the limits per request
raise a typed error; the worker's caches are bounded in bytes."""

from __future__ import annotations

import numpy as np
import pytest

import lifecycle
from lifecycle import api, validation
from lifecycle.loading import load_strategy
from lifecycle.store import ledger as ledger_module
from lifecycle.store import row_digests
from lifecycle.store.errors import ArtifactCorrupt
from lifecycle.vault import Erased
from lifecycle.worker import LruBytes, footprint
from tests.helpers import at_once, snapshot

D, C = 12, 4


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 7 rows, ledger checks and inserts of 5: a request of a few dozen rows spans many of each."""
    monkeypatch.setattr(validation, "CHUNK_BYTES", 7 * D * 4)
    monkeypatch.setattr(api, "_CHECK_ROWS", 5)
    monkeypatch.setattr(ledger_module, "_INSERT_CHUNK", 5)


def data(n: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, D)), rng.integers(0, C, n)


def probe():
    rng = np.random.default_rng(99)
    return rng.standard_normal((20, D)).astype(np.float32), rng.integers(0, C, 20)


def new_model(lc, name: str):
    return lc.create_model(name, strategy="analytic", n_features=D, n_classes=C, config={"width": 64})


def batches(X, y, sizes, ids=None, subjects=None):
    start = 0
    for size in sizes:
        part = slice(start, start + size)
        item = (X[part], y[part])
        if ids is not None:
            item += (ids[part],)
        if subjects is not None:
            item += (subjects[part],)
        yield item
        start += size


def state(lc, name):
    m = lc.model(name)
    return load_strategy(lc.vault, m, lc.ledger.latest_version(m.id)).state_dict()


def test_npy_file_and_batches_learn_what_the_array_learns(db_url, tmp_path, small_chunks):
    lc = lifecycle.connect(db_url, artifacts=tmp_path / "artifacts", keys=tmp_path / "keys")
    X, y = data()
    path = tmp_path / "X.npy"
    np.save(path, X)
    ids = [f"s{i}" for i in range(len(y))]
    subjects = ["alice" if i % 3 else None for i in range(len(y))]
    for name in ("array", "file", "batches", "batches-ids"):
        new_model(lc, name)
    lc.learn("array", task="t", X=X, y=y, probe=probe(), idempotency_key="k")
    lc.learn("file", task="t", X=str(path), y=y, probe=probe(), idempotency_key="k")
    lc.learn("batches", task="t", X=batches(X, y, [1, 20, 0, 39]), probe=probe(), idempotency_key="k")
    lc.learn("batches-ids", task="t", X=batches(X, y, [25, 35], ids, subjects), probe=probe())
    lc.drain()
    reference = state(lc, "array")
    for name in ("file", "batches", "batches-ids"):
        got = state(lc, name)
        for key in ("A", "C"):
            np.testing.assert_allclose(got[key], reference[key], rtol=1e-8, atol=1e-8)
        assert int(got["n_samples"]) == len(y)
    # a file is the same request as the array it holds: same digest, same generated sample ids
    shas = {n: lc.ledger.request_by_key(lc.model(n).id, "k")[1] for n in ("array", "file", "batches")}
    assert shas["array"] == shas["file"] != shas["batches"]
    auto = [lc.ids.sample(f"t/{shas['array'][:16]}/{i}") for i in range(len(y))]
    assert set(lc.ledger.samples(lc.model("file").id, auto)) == set(auto)
    # the ids and subjects that batches carry are the ledger's, keyed
    alice = lc.subject_digest("batches-ids", "alice")
    found = lc.ledger.samples(lc.model("batches-ids").id, [lc.sample_digest(i) for i in ids])
    assert len(found) == len(ids) and sum(s.subject_hash == alice for s in found.values()) == 40
    new_model(lc, "mixed")  # subjects in the first batch only
    lc.learn("mixed", task="t", X=iter([(X[:10], y[:10], ids[:10], ["bob"] * 10), (X[10:], y[10:], ids[10:])]),
             probe=probe())
    found = lc.ledger.samples(lc.model("mixed").id, [lc.sample_digest(i) for i in ids])
    assert [s.subject_hash is not None for s in sorted(found.values(), key=lambda s: s.data_row)] == \
        [True] * 10 + [False] * 50
    total, problems = lc.ledger.audit_problems()
    assert problems == [] and total > 0


def test_idempotent_retries_of_a_file_and_of_batches(tmp_path, small_chunks):
    lc = lifecycle.connect(f"sqlite:///{tmp_path / 'l.db'}")
    new_model(lc, "m")
    X, y = data()
    path = tmp_path / "X.npy"
    np.save(path, X.astype(np.float32))
    first = lc.learn("m", task="t", X=X, y=y, probe=probe(), idempotency_key="a")
    before = snapshot(lc)
    assert lc.learn("m", task="t", X=path, y=y, probe=probe(), idempotency_key="a").id == first.id
    streamed = lc.learn("m", task="u", X=batches(X + 1, y, [30, 30]), probe=probe(), idempotency_key="b")
    after = snapshot(lc)
    # the digest of batches does not depend on where they split
    again = lc.learn("m", task="u", X=batches(X + 1, y, [7, 50, 3]), probe=probe(), idempotency_key="b")
    assert again.id == streamed.id and snapshot(lc) == after != before
    with pytest.raises(lifecycle.IdempotencyConflict):
        lc.learn("m", task="u", X=batches(X + 2, y, [60]), probe=probe(), idempotency_key="b")
    # the same rows again without a key: their generated ids are taken already
    with pytest.raises(lifecycle.DuplicateSampleIds):
        lc.learn("m", task="u", X=batches(X + 1, y, [60]), probe=probe())
    with pytest.raises(lifecycle.DuplicateSampleIds):
        lc.learn("m", task="t", X=path, y=y, probe=probe())
    assert snapshot(lc) == after


def bad_learns(tmp_path):
    X, y = data()
    late_nan = X.copy()
    late_nan[55, 3] = np.nan
    path = tmp_path / "bad.npy"
    np.save(path, late_nan)
    ids = [f"b{i}" for i in range(60)]
    return {
        "nan in a late chunk of a file": dict(X=str(path), y=y),
        "nan in a late chunk of an array": dict(X=late_nan, y=y),
        "nan in a late batch": dict(X=batches(late_nan, y, [30, 30])),
        "bad labels in a late batch": dict(X=iter([(X[:30], y[:30]), (X[30:], y[30:] + C)])),
        "batches with and without ids": dict(X=iter([(X[:30], y[:30], ids[:30]), (X[30:], y[30:])])),
        "ids repeated across batches": dict(X=iter([(X[:30], y[:30], ids[:30]), (X[30:], y[30:], ids[:30])])),
        "an id the model holds, late": dict(X=batches(X, y, [40, 20], ids[:59] + ["s0"])),
        "a batch that is not a pair": dict(X=iter([(X[:30], y[:30]), X[30:]])),
        "y beside batches": dict(X=batches(X, y, [60]), y=y),
        "no file": dict(X=str(tmp_path / "missing.npy"), y=y),
        "not a .npy file": dict(X=str(tmp_path / "l.db"), y=y),
        "no rows in any batch": dict(X=iter([(X[:0], y[:0])])),
    }


BAD = ("nan in a late chunk of a file", "nan in a late chunk of an array", "nan in a late batch",
       "bad labels in a late batch", "batches with and without ids", "ids repeated across batches",
       "an id the model holds, late", "a batch that is not a pair", "y beside batches", "no file",
       "not a .npy file", "no rows in any batch")


@pytest.mark.parametrize("case", BAD)
def test_a_bad_chunk_anywhere_leaves_nothing_behind(tmp_path, small_chunks, case):
    lc = lifecycle.connect(f"sqlite:///{tmp_path / 'l.db'}")
    new_model(lc, "m")
    X, y = data(10, seed=5)
    lc.learn("m", task="t", X=X, y=y, sample_ids=["s0"] + [f"o{i}" for i in range(9)], probe=probe())
    before = snapshot(lc)
    with pytest.raises(lifecycle.LifecycleError) as info:
        lc.learn("m", task="t", **bad_learns(tmp_path)[case])
    assert str(info.value).strip()
    assert snapshot(lc) == before
    assert not list((tmp_path / "l.db.artifacts").glob(".tmp-*"))


@pytest.mark.parametrize("streamed", [True, False])
def test_one_learn_sent_twice_at_once_with_one_key_is_learned_once(db_url, tmp_path, streamed):
    """Two processes' handles send the same learn with the same idempotency key at the same
    moment (a client retrying against two API processes): both get the one request, and
    the ledger and the files hold it once."""
    def connect():
        return lifecycle.connect(db_url, artifacts=tmp_path / "artifacts", keys=tmp_path / "keys")

    new_model(connect(), "m")
    X, y = data()

    def learn(handle):
        rows = dict(X=batches(X, y, [25, 35])) if streamed else dict(X=X, y=y)
        return handle.learn("m", task="t", probe=probe(), idempotency_key="once", **rows)

    results, errors = at_once(*(lambda h=h: learn(h) for h in (connect(), connect())))
    lc = connect()
    assert errors == [] and len(results) == 2 and results[0].id == results[1].id
    assert [r.id for r in lc.requests("m")] == [results[0].id]
    lc.drain()
    assert lc.status(results[0].id).status == "applied"
    assert lc.sweep(0) == []  # the loser took its own files with it, and not the winner's
    _, problems = lc.ledger.audit_problems()
    assert problems == []


def test_forgotten_rows_are_refused_chunk_by_chunk(db_url, tmp_path, small_chunks):
    lc = lifecycle.connect(db_url, artifacts=tmp_path / "artifacts", keys=tmp_path / "keys")
    new_model(lc, "m")
    X, y = data()
    subjects = ["bob" if i >= 50 else None for i in range(60)]
    lc.learn("m", task="t", X=batches(X, y, [60], [f"s{i}" for i in range(60)], subjects), probe=probe())
    lc.drain()
    lc.forget("m", subject="bob")
    lc.drain()
    before = snapshot(lc)
    # the same rows under new ids: refused by content, in whichever chunk they are (batches are
    # refused at the first chunk that holds some; rows given whole, after all their chunks were checked)
    with pytest.raises(lifecycle.TombstonedSample, match=r"4 row\(s\).*rows \[50, 51, 52\]"):
        lc.learn("m", task="t", X=batches(X, y, [33, 27]))
    with pytest.raises(lifecycle.TombstonedSample, match=r"10 row\(s\).*rows \[50, 51, 52\]"):
        lc.learn("m", task="t", X=X, y=y, sample_ids=[f"n{i}" for i in range(60)])
    with pytest.raises(lifecycle.TombstonedSample, match=r"1 sample\(s\).*rows \[0\]"):
        lc.learn("m", task="t", X=X[55:56] + 1, y=y[55:56], sample_ids=["s55"])
    assert snapshot(lc) == before


def test_limits_per_request_raise_a_typed_error(tmp_path, monkeypatch):
    lc = lifecycle.connect(f"sqlite:///{tmp_path / 'l.db'}")
    new_model(lc, "m")
    X, y = data()
    before = snapshot(lc)
    monkeypatch.setattr(validation, "MAX_BATCH", 50)
    for call in (lambda: lc.learn("m", task="t", X=X, y=y, probe=probe()),
                 lambda: lc.learn("m", task="t", X=batches(X, y, [30, 30]), probe=probe())):
        with pytest.raises(lifecycle.RequestTooLarge, match="at most 50"):
            call()
    monkeypatch.setattr(validation, "MAX_BATCH", 1000)
    monkeypatch.setattr(validation, "MAX_REQUEST_BYTES", 40 * D * 4)
    with pytest.raises(lifecycle.RequestTooLarge, match="at most 1,920 bytes"):
        lc.learn("m", task="t", X=batches(X, y, [30, 30]), probe=probe())
    assert issubclass(lifecycle.RequestTooLarge, lifecycle.InvalidRequest)
    assert snapshot(lc) == before
    assert not list((tmp_path / "l.db.artifacts").glob(".tmp-*"))


def test_fortran_ordered_and_float64_files(tmp_path, small_chunks):
    lc = lifecycle.connect(f"sqlite:///{tmp_path / 'l.db'}")
    new_model(lc, "a")
    new_model(lc, "f")
    X, y = data()
    np.save(tmp_path / "f.npy", np.asfortranarray(X))
    np.save(tmp_path / "y.npy", y)
    lc.learn("a", task="t", X=X, y=y, probe=probe(), idempotency_key="k")
    lc.learn("f", task="t", X=tmp_path / "f.npy", y=tmp_path / "y.npy", probe=probe(), idempotency_key="k")
    assert lc.ledger.request_by_key(lc.model("a").id, "k")[1] == lc.ledger.request_by_key(lc.model("f").id, "k")[1]


def test_samples_event_digest_is_row_digests_samples():
    rng = np.random.default_rng(3)
    n = 23
    ids = np.array([rng.bytes(32).hex() for _ in range(n)], "S64")
    contents = np.array([rng.bytes(32).hex() for _ in range(n)], "S64")
    subjects = np.array([rng.bytes(32).hex() if i % 2 else "" for i in range(n)], "S64")
    labels = rng.integers(0, 5, n)
    rows = [{"sample_id": ids[i].decode(), "subject_hash": subjects[i].decode() or None,
             "content_digest": contents[i].decode(), "label": int(labels[i]), "data_row": i, "task_id": 7}
            for i in range(n)]
    expected = row_digests.samples(rows)
    order = ledger_module._sample_order(ids)
    for fast in (True, False):
        assert ledger_module._samples_digest(ids, subjects, contents, labels, 7, order, fast) == expected
    raw_ids = np.frombuffer(bytes.fromhex(b"".join(ids.tolist()).decode()), np.uint8).reshape(n, 32)
    raw_contents = np.frombuffer(bytes.fromhex(b"".join(contents.tolist()).decode()), np.uint8).reshape(n, 32)
    raw_order = ledger_module._sample_order(raw_ids)
    assert raw_order.tolist() == order.tolist()
    assert ledger_module._samples_digest(raw_ids, subjects, raw_contents, labels, 7, raw_order, True) == expected
    as_lists = ([r["sample_id"] for r in rows], [r["subject_hash"] for r in rows], [r["content_digest"] for r in rows])
    got = ledger_module._samples_digest(as_lists[0], as_lists[1], as_lists[2], list(labels), 7,
                                        ledger_module._sample_order(as_lists[0]), False)
    assert got == expected


# ---- the vault, streamed ---------------------------------------------------------


def test_row_writer_and_streamed_reads(tmp_path, monkeypatch):
    from lifecycle import vault as vault_module

    lc = lifecycle.connect(f"sqlite:///{tmp_path / 'l.db'}")
    vault = lc.vault
    monkeypatch.setattr(vault_module, "_READ_BLOCK", 3 * (D * 4 + 8 + 16))  # blocks of 3 rows
    X, y = data(40)
    X = X.astype(np.float32)
    aad = [f"{i:064x}" for i in range(40)]
    whole = vault.put_rows(X, y, aad)
    for rows in (40, None):
        with vault.row_writer(rows) as writer:
            for start in range(0, 40, 9):
                writer.write(X[start:start + 9], y[start:start + 9], aad[start:start + 9])
            streamed = writer.finish()
        assert vault.row_shape(streamed) == (40, D) and vault.artifacts.size(streamed) == vault.artifacts.size(whole)
        got = vault.rows(streamed, range(40), aad)
        np.testing.assert_array_equal(got[0], X)
        np.testing.assert_array_equal(got[1], y)
    positions = [31, 2, 17, 2, 39]
    Xo, yo = np.zeros((7, D), np.float32), np.zeros(7, np.int64)
    vault.rows_into(whole, positions, [aad[i] for i in positions], Xo, yo, [6, 0, 3, 1, 2])
    np.testing.assert_array_equal(Xo[[6, 0, 3, 1, 2]], X[positions])
    with pytest.raises(ArtifactCorrupt, match="does not belong"):
        vault.rows(whole, [5], [aad[6]])
    vault.shred_rows(whole, [17])
    with pytest.raises(Erased):
        vault.rows(whole, [17], [aad[17]])
    # damage in a row is reported as a damaged file, as a whole-file read reports it
    path = vault.artifacts._path(streamed)
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(ArtifactCorrupt, match="does not match its digest"):
        vault.rows(streamed, range(40), aad)
    # an aborted writer leaves no file, and no key
    files = sorted(p for p in (tmp_path / "l.db.artifacts").rglob("*") if p.is_file())
    with pytest.raises(RuntimeError):
        with vault.row_writer(None) as writer:
            writer.write(X[:5], y[:5], aad[:5])
            raise RuntimeError("the caller failed")
    assert sorted(p for p in (tmp_path / "l.db.artifacts").rglob("*") if p.is_file()) == files


# ---- the worker's caches -----------------------------------------------------------


def test_lru_bytes_drops_the_least_recently_used():
    cache = LruBytes(100)
    cache.put("a", 1, 40)
    cache.put("b", 2, 40)
    assert cache.get("a") == 1  # b is now the oldest
    cache.put("c", 3, 40)
    assert "b" not in cache and cache.get("a") == 1 and cache.get("c") == 3 and cache.bytes == 80
    cache.put("huge", 4, 101)
    assert "huge" not in cache and cache.bytes == 80
    assert cache.pop("a") == 1 and cache.bytes == 40
    cache.keep(lambda key: key != "c")
    assert len(cache) == 0 and cache.bytes == 0


def test_worker_caches_are_bounded_by_a_setting(tmp_path, monkeypatch):
    lc = lifecycle.connect(f"sqlite:///{tmp_path / 'l.db'}")
    for name in ("m1", "m2"):
        new_model(lc, name)
        X, y = data()
        lc.learn(name, task="t", X=X, y=y, probe=probe())
    worker = lc.worker(state_cache_bytes=0, probe_cache_bytes=0)
    worker.drain()
    assert len(worker._cache) == 0 and len(worker._probes) == 0
    worker = lc.worker()
    assert worker._cache.limit == 1 << 30 and worker._probes.limit == 256 << 20
    monkeypatch.setenv("LIFECYCLE_STATE_CACHE_BYTES", "1000")
    assert lc.worker()._cache.limit == 1000
    monkeypatch.setenv("LIFECYCLE_STATE_CACHE_BYTES", "lots")
    with pytest.raises(lifecycle.InvalidConfig, match="LIFECYCLE_STATE_CACHE_BYTES"):
        lc.worker()
    with pytest.raises(lifecycle.InvalidConfig):
        lc.worker(state_cache_bytes=-1)
    monkeypatch.delenv("LIFECYCLE_STATE_CACHE_BYTES")
    one = state(lc, "m1")
    size = sum(a.nbytes for a in one.values())
    for name in ("m1", "m2"):
        lc.learn(name, task="u", X=data(seed=7)[0], y=data(seed=7)[1], probe=probe())
    worker = lc.worker(state_cache_bytes=int(size * 2.5))  # room for one loaded strategy (R and W come on top)
    worker.drain()
    assert len(worker._cache) == 1 and worker._cache.bytes <= worker._cache.limit
    strategy = next(iter(worker._cache._items.values()))[0][1]
    assert footprint(strategy) >= size
