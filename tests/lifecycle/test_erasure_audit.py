"""An auditor's test: after erasures, nothing erased remains anywhere the system keeps data.

One model learns four tasks from identified samples of several subjects; one
more learn is cancelled and another fails. Then a subject, a second subject
(typed in another Unicode form than some of its samples were), a list of
samples and a whole task are forgotten: the first by a worker process that
is killed inside its purge, the others by purges racing each other and the
sweep. Before the forgets the test keeps, in its own memory only, what it
will look for afterwards: the erased rows' bytes, their ids and subjects, the
keys that opened them, and a copy of the artifact store (a backup).

Afterwards none of it may be found: not in any file of the artifact store,
the key store or the database (SQLite's file, WAL and shared memory;
PostgreSQL's data directory after a checkpoint, and its log), not in what the
artifacts at hand still decrypt to with the keys at hand, not in the logs;
and the backup no longer opens for what was erased. Each search is shown to
find what is legitimately there (retained rows and keys, a request's reason),
so finding nothing means absence, not a blind search.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import struct
import subprocess
import sys
import threading
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from numpy.lib.stride_tricks import sliding_window_view
from sqlalchemy import select

import lifecycle
from lifecycle import purge
from lifecycle.vault import Erased, Vault
from lifecycle.worker import Worker
from lifecycle.store.artifacts import FolderArtifactStore
from lifecycle.store.errors import ArtifactMissing
from lifecycle.store.records import Request
from lifecycle.store.schema import ModelRow
from lifecycle.strategies.analytic.model import AnalyticStrategy
from tests.data import digits_tasks, make_model
from tests.helpers import REPO, ManualClock

MODEL = "audited"
KEY_BYTES = 32
ZERO_KEY = bytes(KEY_BYTES)

# ---- a search for many needles in many files, each file read once ----------

BLOCK = 16  # bytes hashed together; any needle of LONG bytes or more spans two aligned blocks
LONG = 32
TABLE_BITS = 24
_K1, _K2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F)
_SHIFT = np.uint64(64 - TABLE_BITS)
COMMON = 4  # a 16-byte piece shared by more needles than this narrows nothing down


def _mix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (a * _K1) ^ (b * _K2)


class Scanner:
    """Finds which of thousands of needles occur in a byte string.

    bytes.find per needle would read every file thousands of times. Instead,
    long needles (rows, keys) are indexed by every 16-byte piece at every
    offset, and the haystack is cut into 16-byte blocks at every multiple of
    8: wherever a needle of 32 bytes or more lies, at least one such block
    falls inside it at an offset that was indexed (checked per needle and per
    alignment when the index is built), and the candidate is then compared
    byte for byte. Short needles (identifiers) are grouped under an anchor
    they all contain; only a haystack that holds the anchor is searched for
    them one by one.
    """

    def __init__(self, long: Iterable[bytes], short: dict[bytes, Iterable[bytes]]) -> None:
        self.long = sorted(set(long))
        self.short = {anchor: sorted(set(group)) for anchor, group in short.items()}
        for anchor, group in self.short.items():
            bad = [n for n in group if anchor not in n]
            assert not bad, f"short needles without their anchor {anchor!r}: {bad[:3]}"
        assert all(len(n) >= LONG for n in self.long), "long needles must be at least 32 bytes"
        hashes, owners, offsets = [], [], []
        for length in sorted({len(n) for n in self.long}):
            group = np.array([i for i, n in enumerate(self.long) if len(n) == length])
            raw = np.frombuffer(b"".join(self.long[i] for i in group), np.uint8).reshape(len(group), length)
            words = np.ascontiguousarray(sliding_window_view(raw, BLOCK, axis=1)).view("<u8")
            h = _mix(words[..., 0], words[..., 1])
            usable = (words != 0).any(axis=2)  # runs of zeros are in every file
            values, counts = np.unique(h[usable], return_counts=True)
            keep = usable & ~np.isin(h, values[counts > COMMON])
            for r in range(8):
                cols = np.arange(r, keep.shape[1], 8)
                # a needle whose every piece at this alignment is common keeps them: slower, never blind
                thin = np.flatnonzero(~keep[:, cols].any(axis=1))
                keep[np.ix_(thin, cols)] = usable[np.ix_(thin, cols)]
                blind = ~keep[:, cols].any(axis=1)
                assert not blind.any(), (f"{int(blind.sum())} needle(s) of {length} bytes have nothing but "
                                         f"zeros at alignment {r}; the search could miss them")
            g, o = np.nonzero(keep)
            hashes.append(h[g, o])
            owners.append(group[g])
            offsets.append(o)
        if self.long:
            h, owner, offset = np.concatenate(hashes), np.concatenate(owners), np.concatenate(offsets)
        else:
            h = owner = offset = np.zeros(0, np.uint64)
        order = np.argsort(h, kind="stable")
        self._h, self._owner, self._offset = h[order], owner[order].tolist(), offset[order].tolist()
        self._table = np.zeros(1 << TABLE_BITS, bool)
        self._table[self._h >> _SHIFT] = True

    def find(self, data: bytes) -> set[bytes]:
        found: set[bytes] = set()
        for anchor, group in self.short.items():
            if anchor in data:
                found.add(anchor)
                found.update(n for n in group if n in data)
        if not self.long or len(data) < LONG:
            return found
        words = np.frombuffer(data, "<u8", count=len(data) // 8)
        h = _mix(words[:-1], words[1:])
        cand = np.flatnonzero(self._table[h >> _SHIFT])
        if cand.size == 0:
            return found
        hc = h[cand]
        pos = np.minimum(np.searchsorted(self._h, hc), len(self._h) - 1)
        hit = self._h[pos] == hc
        n = len(self._h)
        for j, p in zip(cand[hit].tolist(), pos[hit].tolist()):
            value = self._h[p]
            while p < n and self._h[p] == value:
                needle = self.long[self._owner[p]]
                start = 8 * j - self._offset[p]
                if needle not in found and start >= 0 and data[start:start + len(needle)] == needle:
                    found.add(needle)
                p += 1
        return found


def files_under(root: Path, skip: Iterable[Path] = ()) -> Iterator[Path]:
    skip = [p.resolve() for p in skip]
    for dirpath, _, names in os.walk(root):
        here = Path(dirpath).resolve()
        if any(here == s or s in here.parents for s in skip):
            continue
        for name in names:
            yield Path(dirpath, name)


def scan_files(scanner: Scanner, paths: Iterable[Path]) -> tuple[dict[bytes, list[str]], int]:
    """Which needles occur in which files; and how many bytes were read."""
    where: dict[bytes, list[str]] = defaultdict(list)
    total = 0
    for path in paths:
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # PostgreSQL's temporary statistics files come and go
            continue
        total += len(data)
        for needle in scanner.find(data):
            where[needle].append(str(path))
    return where, total


# ---- reading artifacts the way anyone holding files and keys could ----------

ROW_HEAD = struct.Struct("<4sQQ")  # magic, rows, features (lifecycle.vault)
TAG = 16


def keystream_open(key: bytes, sealed: bytes) -> bytes:
    """AES-GCM plaintext without the tag check (counter 2 of the fixed zero
    nonce): whoever holds a key reads with it, associated data or not."""
    dec = Cipher(algorithms.AES(key), modes.CTR(bytes(12) + (2).to_bytes(4, "big"))).decryptor()
    return dec.update(sealed[:-TAG]) + dec.finalize()


def readable(artifacts: Path, key_of) -> dict[str, bytes]:
    """Every plaintext the artifact files open with the keys ``key_of(digest)`` gives (None: no keys)."""
    out = {}
    for path in sorted(artifacts.glob("??/*")):
        digest = path.parent.name + path.name
        keys = key_of(digest)
        if keys is None:
            continue
        data = path.read_bytes()
        if data[:4] == b"LCR1":
            _, n, d = ROW_HEAD.unpack_from(data)
            size = d * 4 + 8 + TAG
            rows = []
            for i in range(n):
                key = keys[i * KEY_BYTES:(i + 1) * KEY_BYTES]
                if len(key) == KEY_BYTES and key != ZERO_KEY:
                    start = ROW_HEAD.size + i * size
                    rows.append(keystream_open(key, data[start:start + size]))
            out[digest] = b"\xff" * 8 + (b"\xff" * 8).join(rows)  # separators: no needle spans two rows
        elif data[:4] == b"LCB1":
            if keys[:KEY_BYTES] != ZERO_KEY:
                out[digest] = keystream_open(keys[:KEY_BYTES], data[4:])
        else:
            raise AssertionError(f"{path} is in no sealed format the auditor knows; it could hold anything")
    return out


def key_files(root: Path) -> dict[str, bytes]:
    return {p.parent.name + p.name: p.read_bytes() for p in root.glob("??/*")}


# ---- the scenario ---------------------------------------------------------


@dataclass(frozen=True)
class Row:
    id: str
    task: str
    x: bytes  # the row's float32 bytes, as the vault seals them
    label: int
    subject: str | None


@dataclass
class Scene:
    """The system under audit, and the auditor's memory of what went into it."""

    lc: lifecycle.Lifecycle
    url: str
    root: Path
    artifacts: Path
    keys: Path
    token: str
    marker: str  # a forget's reason: text that is legitimately in the database
    names: dict[str, str]
    cafe_nfd: str
    rows: dict[str, Row] = field(default_factory=dict)  # every sample ever submitted
    probes: dict[str, list[bytes]] = field(default_factory=dict)
    requests: dict[str, Request] = field(default_factory=dict)
    pointers: dict[str, tuple[str, int]] = field(default_factory=dict)  # sample id -> (data file, row)
    keys_seen: dict[str, bytes] = field(default_factory=dict)  # every key file, as read before any erasure
    cancelled: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    dropped_files: set[str] = field(default_factory=set)  # files of the learns that never applied
    erased_samples: set[str] = field(default_factory=set)  # forgotten by id
    backup: Path | None = None
    logs: list[str] = field(default_factory=list)

    @property
    def model_id(self) -> int:
        return self.lc.model(MODEL).id

    def remember_keys(self) -> None:
        for digest, blob in key_files(self.keys).items():
            self.keys_seen.setdefault(digest, blob)

    def learned(self) -> set[str]:
        return set(self.rows) - self.cancelled - self.failed

    def of_subject(self, name: str) -> set[str]:
        want = unicodedata.normalize("NFC", self.names[name])
        return {r.id for r in self.rows.values()
                if r.subject is not None and unicodedata.normalize("NFC", r.subject) == want} & self.learned()

    def of_task(self, task: str) -> set[str]:
        return {r.id for r in self.rows.values() if r.task == task} & self.learned()

    def digest(self, sample_id: str) -> str:
        return self.lc.sample_digest(sample_id)

    def files_of(self, learn) -> set[str]:
        """A queued learn's data file and its task's probe set."""
        task = self.lc.ledger.task(self.model_id, learn.target["task"])
        return {self.lc.ledger.payload_digest(learn.id), task.probe_digest}


def _learn(scene: Scene, t, rows: range, subjects: list[str | None]):
    ids = [f"{scene.token}/{t.name}/{i}" for i in rows]
    X = np.ascontiguousarray(t.X[rows.start:rows.stop], np.float32)
    y = t.y[rows.start:rows.stop]
    subs = [subjects[k % len(subjects)] for k in range(len(ids))]
    for i, sid in enumerate(ids):
        scene.rows[sid] = Row(sid, t.name, X[i].tobytes(), int(y[i]), subs[i])
    scene.probes[t.name] = [r.tobytes() for r in np.ascontiguousarray(t.X_probe, np.float32)]
    req = scene.lc.learn(MODEL, task=t.name, X=X, y=y, sample_ids=ids, subjects=subs, probe=(t.X_probe, t.y_probe))
    return req, ids


@pytest.fixture
def scene(db_url, tmp_path, monkeypatch, caplog) -> Scene:
    """Everything up to the moment before the forgets, with the auditor's memory of it."""
    caplog.set_level(logging.DEBUG, logger="lifecycle")
    token = "audit" + secrets.token_hex(5)  # not hex as a whole: it cannot hide inside a stored digest
    names = {n: f"{n}.{token}" for n in ("alice", "bob", "carol", "dave", "erin")}
    names["café"] = unicodedata.normalize("NFC", f"café.{token}")
    cafe_nfd = unicodedata.normalize("NFD", names["café"])
    assert cafe_nfd != names["café"]
    lc = lifecycle.connect(db_url, artifacts=tmp_path / "artifacts", keys=tmp_path / "keys")
    s = Scene(lc, db_url, tmp_path, tmp_path / "artifacts", tmp_path / "keys", token,
              "reason-zq" + secrets.token_hex(6), names, cafe_nfd)
    make_model(lc, MODEL, forgotten_probes="purge")
    t0, t1, t2, t3, t4 = digits_tasks(5)
    n = names
    s.requests["0-1"], _ = _learn(s, t0, range(len(t0.y)), [n["alice"], n["bob"], n["carol"], n["café"]])
    s.requests["2-3"], _ = _learn(s, t1, range(len(t1.y)), [n["bob"], cafe_nfd, n["alice"], n["carol"]])
    s.requests["4-5"], _ = _learn(s, t2, range(len(t2.y)), [n["carol"], n["bob"], None])
    s.requests["6-7"], _ = _learn(s, t3, range(len(t3.y)), [n["bob"], n["carol"]])

    # dave's learn is cancelled while queued, erin's fails in its step: both
    # must take their rows and their new task's probe set with them
    s.requests["dave"], dave = _learn(s, t4, range(0, 100), [n["dave"]])
    s.dropped_files |= s.files_of(s.requests["dave"])
    s.remember_keys()
    lc.cancel(s.requests["dave"].id)
    s.cancelled |= set(dave)
    s.requests["erin"], erin = _learn(s, t4, range(100, len(t4.y)), [n["erin"]])
    s.dropped_files |= s.files_of(s.requests["erin"])
    s.remember_keys()
    original = AnalyticStrategy.learn

    def runs_out_of_memory_on_erin(self, data):
        if data.task == "8-9":
            raise RuntimeError("out of memory (simulated)")
        return original(self, data)

    with monkeypatch.context() as m:
        m.setattr(AnalyticStrategy, "learn", runs_out_of_memory_on_erin)
        lc.drain()
    s.failed |= set(erin)
    status = {k: lc.status(r.id).status for k, r in s.requests.items()}
    assert status == {"0-1": "applied", "2-3": "applied", "4-5": "applied", "6-7": "applied",
                      "dave": "cancelled", "erin": "failed"}, status
    for digest in s.dropped_files:
        assert not lc.vault.exists(digest) and not lc.vault.keys.exists(digest), \
            f"an unapplied learn's file {digest} outlived it"
    assert lc.ledger.samples(s.model_id, [s.digest(i) for i in dave + erin]) == {}
    for who in ("dave", "erin"):
        counts = lc.ledger.subject_counts(s.model_id, lc.subject_digest(MODEL, n[who]))
        assert counts.get("pending", 0) + counts.get("active", 0) + counts["tombstoned"] == 0, (who, counts)

    found = lc.ledger.samples(s.model_id, [s.digest(i) for i in s.learned()])
    for sid in s.learned():
        sample = found[s.digest(sid)]
        assert sample.status == "active"
        s.pointers[sid] = (sample.data_digest, sample.data_row)
    s.remember_keys()
    s.backup = tmp_path / "backup-of-artifacts"
    shutil.copytree(s.artifacts, s.backup)
    return s


# ---- the phases -----------------------------------------------------------

# A real worker process, killed for real at a chosen point of its purge: after
# the plan's keys are destroyed, before the ledger records the purge.
KILLED_IN_PURGE = r"""
import os, signal, sys
import lifecycle
from lifecycle.store.ledger import Ledger

def killed(ledger, plan):
    # the plan's keys are destroyed by now; the ledger is yet to record it
    os.kill(os.getpid(), signal.SIGKILL)

Ledger.finish_purge = killed
url, artifacts, keys = sys.argv[1:4]
lc = lifecycle.connect(url, artifacts=artifacts, keys=keys, create=False)
lc.worker(owner="doomed").drain()
sys.exit(3)  # reached only when no purge got as far as recording what it erased
"""


class CommitsButNeverPurges(Worker):
    """A worker whose purges never run, so that others' can race over its work."""

    def purge(self, model) -> None:
        pass


def forget_alice_in_a_worker_killed_inside_its_purge(s: Scene) -> None:
    lc, mid = s.lc, s.model_id
    alice = s.of_subject("alice")
    kept_states = [v.version for v in lc.versions(MODEL) if not v.state_purged]
    s.requests["forget alice"] = lc.forget(MODEL, subject=s.names["alice"], reason=s.marker, requested_by="dpo")
    child = subprocess.run([sys.executable, "-c", KILLED_IN_PURGE, s.url, str(s.artifacts), str(s.keys)],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
    s.logs.append(child.stdout + child.stderr)
    assert child.returncode == -signal.SIGKILL, (child.returncode, child.stdout, child.stderr)
    assert lc.status(s.requests["forget alice"].id).status == "applied"
    s.remember_keys()  # the forget's new state

    # the worker died holding the purge lease, its plan unrecorded
    with lc.ledger.engine.connect() as conn:
        owner, lease_end = conn.execute(select(ModelRow.purge_owner, ModelRow.purge_until)
                                        .where(ModelRow.id == mid)).one()
    assert owner == "doomed"
    plan = lc.ledger.purge_plan(mid)
    assert {(d, r) for _, d, r in plan.rows} == {s.pointers[i] for i in alice}
    assert [v for v, _ in sorted(plan.states)] == kept_states  # every state trained on alice
    # ... but the erasure itself was done: the keys went before the ledger was told
    for sid in alice:
        digest, row = s.pointers[sid]
        with pytest.raises(Erased):
            lc.vault.rows(digest, [row], [s.digest(sid)])
    for _, digest in plan.states:
        assert not lc.vault.keys.exists(digest) and lc.vault.exists(digest)
    # nobody else purges the model while the dead worker's lease stands
    assert purge.purge_model(lc.ledger, lc.vault, mid, "auditor") is None
    assert len(lc.ledger.purge_plan(mid).rows) == len(alice)

    # the lease runs out: a handle on the ledger whose clock is moved past the
    # lease's end (rather than waited for) sees it; its drain() finishes the purge
    clock = ManualClock(lease_end)
    later = lifecycle.connect(s.url, artifacts=s.artifacts, keys=s.keys, clock=clock)
    assert purge.purge_model(later.ledger, later.vault, mid, "auditor") is None  # the lease's last instant
    clock.advance(1)
    later.drain()
    later.ledger.engine.dispose()
    assert lc.ledger.purge_plan(mid).empty
    for _, digest in plan.states:
        assert not lc.vault.exists(digest)
    gone = lc.ledger.samples(mid, [s.digest(i) for i in alice])
    assert {(x.status, x.data_digest) for x in gone.values()} == {("forgotten", None)}


def forget_the_rest_and_race_the_purges(s: Scene) -> None:
    lc, mid = s.lc, s.model_id
    bob_in_0_1 = sorted(i for i in s.of_subject("bob") if s.rows[i].task == "0-1")[:3]
    some = sorted(i for i in s.of_task("4-5") if int(i.rsplit("/", 1)[1]) % 3 == 0) + bob_in_0_1
    s.requests["forget café"] = lc.forget(MODEL, subject=s.cafe_nfd)  # learned under both spellings
    s.requests["forget samples"] = lc.forget(MODEL, samples=some)
    s.requests["forget 6-7"] = lc.forget(MODEL, task="6-7")
    s.erased_samples = set(some)
    CommitsButNeverPurges(lc.ledger, lc.vault, lc.signer, owner="no-purge").drain()
    for key in ("forget café", "forget samples", "forget 6-7"):
        assert lc.status(s.requests[key].id).status == "applied", key
    s.remember_keys()
    plan = lc.ledger.purge_plan(mid)
    expected = s.of_subject("café") | set(some) | s.of_task("6-7")
    assert {(d, r) for _, d, r in plan.rows} == {s.pointers[i] for i in expected}
    assert [name for name, _ in plan.probes] == ["6-7"] and plan.states

    # two ledger handles (two connection pools, as two processes would have),
    # four purgers with different owners, and the sweep, released at once
    other = lifecycle.connect(s.url, artifacts=s.artifacts, keys=s.keys)
    model = lc.model(MODEL)
    w1, w2 = lc.worker(owner="w1"), other.worker(owner="w2")
    jobs = {
        "worker w1": lambda: w1.purge(model),
        "worker w2": lambda: w2.purge(model),
        "purge_model w3": lambda: purge.purge_model(lc.ledger, lc.vault, mid, "w3"),
        "purge_model w4": lambda: purge.purge_model(other.ledger, other.vault, mid, "w4"),
        "sweep": lambda: lc.sweep(0),
    }
    events_before = len(lc.events(MODEL))
    start = threading.Barrier(len(jobs))
    errors: list[tuple[str, BaseException]] = []

    def run(name, job):
        try:
            start.wait(timeout=60)
            job()
        except BaseException as exc:  # surfaced below
            errors.append((name, exc))

    threads = [threading.Thread(target=run, args=item) for item in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    other.ledger.engine.dispose()
    assert not any(t.is_alive() for t in threads), "a purge hung"
    assert not errors, errors
    assert lc.ledger.purge_plan(mid).empty
    # the purge lease let exactly one purger do the work; the others found nothing left
    purged = [e for e in lc.events(MODEL)[events_before:] if e.kind == "purged"]
    assert len(purged) == 1, [e.detail for e in purged]
    assert purged[0].detail["rows"] == len(expected)
    assert purged[0].detail["versions"] == sorted(v for v, _ in plan.states)
    assert purged[0].detail["probes"] == ["6-7"]


def erased(s: Scene) -> set[str]:
    """Samples the ledger was told to forget."""
    return s.of_subject("alice") | s.of_subject("café") | s.erased_samples | s.of_task("6-7")


def check_every_pointer(s: Scene, erased_ids: set[str]) -> None:
    """Each retained sample's pointer opens to its own row and label; no erased one opens at all."""
    lc, mid = s.lc, s.model_id
    retained = s.learned() - erased_ids
    by_digest = {s.digest(i): i for i in s.learned()}
    found = lc.ledger.samples(mid, list(by_digest))
    active = {by_digest[d] for d, x in found.items() if x.status == "active"}
    assert active == retained
    resolved = {by_digest[x.sample_id] for t in ("0-1", "2-3", "4-5", "6-7")
                for x in lc.ledger.resolve_forget(mid, {"task": t})}
    assert resolved == retained
    by_file: dict[str, list] = defaultdict(list)
    for sid in retained:
        x = found[s.digest(sid)]
        by_file[x.data_digest].append((x.data_row, x.sample_id, sid))
    for digest, items in by_file.items():
        X, y = lc.vault.rows(digest, [r for r, _, _ in items], [d for _, d, _ in items])
        for k, (_, _, sid) in enumerate(items):
            assert X[k].tobytes() == s.rows[sid].x and int(y[k]) == s.rows[sid].label, sid
    for sid in erased_ids:
        x = found[s.digest(sid)]
        assert (x.status, x.data_digest) == ("forgotten", None), sid  # no pointer to data left
        digest, row = s.pointers[sid]
        with pytest.raises((Erased, ArtifactMissing)):
            lc.vault.rows(digest, [row], [s.digest(sid)])


# ---- the audit ---------------------------------------------------------------


@dataclass
class Needles:
    """What must not be found, and what must be (so that not finding the rest means something)."""

    forbidden: dict[bytes, str]  # needle -> what it is
    retained_rows: dict[bytes, str]
    retained_keys: dict[bytes, str]
    marker: bytes
    scanner: Scanner

    def report(self, found: dict[bytes, list[str]], wanted: Iterable[bytes] | None = None) -> list[str]:
        wanted = self.forbidden if wanted is None else wanted
        labels = {**self.forbidden, **self.retained_rows, **self.retained_keys, self.marker: "a forget's reason"}
        return [f"{labels[n]} in {found[n][:2]}" for n in wanted if n in found][:20]


def needles(s: Scene, gone: set[str], referenced: set[str]) -> Needles:
    retained = s.learned() - gone
    forbidden_rows = {s.rows[i].x: f"row of erased sample {i}" for i in gone | s.cancelled | s.failed}
    forbidden_rows |= {x: f"probe row of dropped task {t}" for t in ("6-7", "8-9") for x in s.probes[t]}
    retained_rows = {s.rows[i].x: f"row of retained sample {i}" for i in retained}
    retained_rows |= {x: f"probe row of task {t}" for t in ("0-1", "2-3", "4-5") for x in s.probes[t]}
    assert not forbidden_rows.keys() & retained_rows.keys()
    # every key ever seen is erased unless the ledger still needs it: a slot of
    # a file the ledger references that no forgotten sample held
    erased_slots = {s.pointers[i] for i in gone}
    forbidden_keys, retained_keys = {}, {}
    for digest, blob in s.keys_seen.items():
        for slot in range(len(blob) // KEY_BYTES):
            key = blob[slot * KEY_BYTES:(slot + 1) * KEY_BYTES]
            if key == ZERO_KEY:
                continue
            if digest not in referenced or (digest, slot) in erased_slots:
                forbidden_keys[key] = f"key {slot} of {digest[:12]} (erased)"
            else:
                retained_keys[key] = f"key {slot} of {digest[:12]}"
    for digest, slot in erased_slots:
        assert s.keys_seen[digest][slot * KEY_BYTES:(slot + 1) * KEY_BYTES] in forbidden_keys
    for digest in s.dropped_files:
        assert s.keys_seen[digest][:KEY_BYTES] in forbidden_keys
    identifiers = {sid.encode(): f"sample id {sid}" for sid in s.rows}
    identifiers |= {v.encode(): f"subject name {k}" for k, v in s.names.items()}
    identifiers[s.cafe_nfd.encode()] = "subject name café (NFD)"
    identifiers[s.token.encode()] = "the scenario's identifier token"
    marker = s.marker.encode()
    scanner = Scanner([*forbidden_rows, *retained_rows, *forbidden_keys, *retained_keys],
                      {s.token.encode(): list(identifiers), marker: [marker]})
    return Needles({**forbidden_rows, **forbidden_keys, **identifiers}, retained_rows, retained_keys, marker,
                   scanner)


def current_keys(lc):
    return lambda digest: lc.vault.keys.read(digest) if lc.vault.keys.exists(digest) else None


def scan_in_memory(scanner: Scanner, blobs: dict[str, bytes]) -> dict[bytes, list[str]]:
    where: dict[bytes, list[str]] = defaultdict(list)
    for name, data in blobs.items():
        for needle in scanner.find(data):
            where[needle].append(name)
    return where


def database_files(s: Scene, request) -> list[Path]:
    """The files the database keeps: SQLite's file, WAL and shared memory, or
    PostgreSQL's data directory (after a checkpoint) and its log."""
    engine = s.lc.ledger.engine
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            # a deleted row's bytes are overwritten, not left in a free page
            assert conn.exec_driver_sql("PRAGMA secure_delete").scalar() == 1
        path = Path(engine.url.database)
        places = [Path(f"{path}{suffix}") for suffix in ("", "-wal", "-shm")]
        assert places[0].exists() and places[1].exists()
        return [p for p in places if p.exists()]
    server = request.getfixturevalue("postgres_server")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("CHECKPOINT")
        ours = conn.exec_driver_sql("SELECT oid FROM pg_database WHERE datname = current_database()").scalar()
    data = Path(server.data)
    assert (data / "base" / str(ours)).is_dir()
    # the server's other databases are other tests' ledgers; ours, the shared
    # catalogs and the WAL (which every database's changes pass through) are scanned
    others = [p for p in (data / "base").iterdir() if p.name != str(ours)]
    return [*files_under(data, others), Path(server.dir, "log")]


def audit_stored_files(s: Scene, n: Needles, db_places: list[Path]) -> None:
    everything = sorted({p.resolve() for p in [*files_under(s.root, [s.backup]), *db_places]})
    found, n_bytes = scan_files(n.scanner, everything)
    leaks = n.report(found)
    assert not leaks, f"erased data, its keys or identifiers in stored files ({n_bytes} bytes scanned): {leaks}"
    seen_in = set(found.get(n.marker, ())) & {str(p.resolve()) for p in db_places}
    assert seen_in, "the scan does not see what the database holds (a forget's reason)"
    in_keys, _ = scan_files(n.scanner, files_under(s.keys))
    missing = [label for key, label in n.retained_keys.items() if key not in in_keys]
    assert not missing, f"the scan misses keys that are in the key store: {missing[:5]}"


def audit_what_still_decrypts(s: Scene, n: Needles) -> None:
    found = scan_in_memory(n.scanner, readable(s.artifacts, current_keys(s.lc)))
    leaks = n.report(found)
    assert not leaks, f"erased data still decrypts from the stores: {leaks}"
    missing = [label for x, label in n.retained_rows.items() if x not in found]
    assert not missing, f"the decrypting scan misses rows that are there: {missing[:5]}"


def audit_the_logs(s: Scene, n: Needles, caplog) -> None:
    records = [*caplog.get_records("setup"), *caplog.get_records("call")]
    assert records, "no log records captured: the check below would prove nothing"
    logged = "\n".join([*(f"{r.getMessage()} {vars(r)!r}" for r in records), *s.logs]).encode()
    leaks = n.report({needle: ["the logs"] for needle in n.scanner.find(logged)})
    assert not leaks, f"identifiers in the logs: {leaks}"


def audit_the_backup(s: Scene, n: Needles, gone: set[str], referenced: set[str]) -> None:
    """The artifact store copied before the erasure, read with the key store as it is now."""
    lc = s.lc
    retained = s.learned() - gone
    from_backup = Vault(FolderArtifactStore(s.backup), lc.vault.keys)
    for sid in gone:
        digest, row = s.pointers[sid]
        assert from_backup.exists(digest)
        with pytest.raises((Erased, ArtifactMissing)):
            from_backup.rows(digest, [row], [s.digest(sid)])
    # the same copied files still open for the samples that were kept: the
    # failures above come from destroyed keys, not from a broken copy
    mixed = {s.pointers[i][0] for i in gone} & {s.pointers[i][0] for i in retained}
    assert mixed
    for digest in mixed:
        keep = [i for i in retained if s.pointers[i][0] == digest][:5]
        X, y = from_backup.rows(digest, [s.pointers[i][1] for i in keep], [s.digest(i) for i in keep])
        assert [r.tobytes() for r in X] == [s.rows[i].x for i in keep]
        assert y.tolist() == [s.rows[i].label for i in keep]
    backed_up = {p.parent.name + p.name for p in s.backup.glob("??/*")}
    assert not [d for d in backed_up - referenced if lc.vault.keys.exists(d)], \
        "keys are kept for backed-up files the ledger no longer references"
    found = scan_in_memory(n.scanner, readable(s.backup, current_keys(lc)))
    leaks = n.report(found)
    assert not leaks, f"the backup still opens for erased data with today's keys: {leaks}"
    # with the keys as they were before the erasure, the same search finds all of it
    found = scan_in_memory(n.scanner, readable(s.backup, s.keys_seen.get))
    should = [s.rows[i].x for i in gone] + s.probes["6-7"]
    missing = [n.forbidden[x] for x in should if x not in found]
    assert not missing, f"the backup scan is blind: {missing[:5]}"


# ---- the tests -------------------------------------------------------------


def test_the_scanner_finds_every_needle_wherever_it_lies_and_nothing_else():
    rng = np.random.default_rng(7)
    rows = [rng.random(64).astype(np.float32).tobytes() for _ in range(50)]
    sparse = np.zeros(64, np.float32)
    sparse[[9, 30, 54]] = 0.5  # mostly zeros, as a digit's border is
    rows.append(sparse.tobytes())
    keys = [rng.bytes(32) for _ in range(50)]
    ids = [f"tokq1/{i}".encode() for i in range(20)] + ["café.tokq1".encode()]
    scanner = Scanner(rows + keys, {b"tokq1": ids})
    noise = rng.bytes(4096) + bytes(4096)
    assert scanner.find(noise) == set()
    for needle in (rows[0], rows[-1], keys[0], keys[-1], ids[-1]):
        # every alignment, in random bytes and in zeros, and at both ends
        for at in (0, len(noise), *range(4000, 4009), *range(5000, 5009)):
            got = scanner.find(noise[:at] + needle + noise[at:])
            assert got - {b"tokq1"} == {needle}, (needle[:8], at)
    for i in (0, 100, 255):  # one bit off anywhere is not a find
        altered = bytearray(rows[0])
        altered[i] ^= 1
        assert scanner.find(noise + bytes(altered)) == set()
    assert scanner.find(noise + rows[0][:-1]) == set()
    with pytest.raises(AssertionError, match="could miss"):
        Scanner([bytes(64)], {})  # nothing distinctive to find it by: refused, not silently missed


def test_nothing_erased_remains_anywhere_the_system_keeps_data(scene: Scene, request, caplog):
    s, lc = scene, scene.lc
    forget_alice_in_a_worker_killed_inside_its_purge(s)
    forget_the_rest_and_race_the_purges(s)
    gone = erased(s)
    assert len(gone) > 500 and s.of_subject("bob") - gone and s.of_subject("carol") - gone
    check_every_pointer(s, gone)

    lc.drain()
    assert lc.sweep(0) == [], "the purges left files behind that only the sweep erased"
    assert lc.ledger.purge_plan(s.model_id).empty
    referenced = lc.ledger.referenced_digests()
    on_disk = set(lc.vault.artifacts.digests()) | set(lc.vault.keys.digests())
    assert on_disk == referenced, "files on disk that the ledger does not reference, or the reverse"
    assert not [p for p in files_under(s.root, [s.backup]) if p.name.startswith(".tmp-")]

    n = needles(s, gone, referenced)
    audit_stored_files(s, n, database_files(s, request))
    audit_what_still_decrypts(s, n)
    audit_the_logs(s, n, caplog)
    audit_the_backup(s, n, gone, referenced)
    # and after all of it, every remaining sample still opens to its own row
    check_every_pointer(s, gone)
