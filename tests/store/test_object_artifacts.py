"""The artifact store's contract, kept by the folder store and by the object
store on a real S3-compatible server (moto's, started here on a loopback
port); a whole lifecycle with its artifacts in a bucket; the sweep of what a
crashed stage left; how a location picks its store."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import socket
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import s3fs
from moto.server import ThreadedMotoServer

import lifecycle
from lifecycle import purge
from lifecycle.errors import InvalidConfig
from lifecycle.store.artifact_location import OPTIONS_ENV, open_artifact_store
from lifecycle.errors import BadArtifactsLocation
from lifecycle.store.artifacts import STAGE_PREFIX, FolderArtifactStore
from lifecycle.store.errors import ArtifactCorrupt, ArtifactMissing
from lifecycle.store.keystore import KeyStore
from lifecycle.store.object_artifacts import FsspecArtifactStore
from lifecycle.vault import Vault
from tests.data import digits_tasks, learn_task, make_model
from tests.helpers import REPO

BUCKET = "lifecycle-artifacts"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test-key", "AWS_SECRET_ACCESS_KEY": "test-secret",
               "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's S3-compatible server on a free loopback port, with one bucket; stopped after the module."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        raw_fs(endpoint).mkdir(BUCKET)
        yield endpoint
    finally:
        server.stop()


def raw_fs(endpoint: str) -> s3fs.S3FileSystem:
    """A client of the bucket of its own, to look at (and damage) objects behind the store's back."""
    return s3fs.S3FileSystem(endpoint_url=endpoint, key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                             secret=CREDENTIALS["AWS_SECRET_ACCESS_KEY"], use_listings_cache=False,
                             skip_instance_cache=True)


def store_from_spec(spec: dict):
    """The store a spec names (a child process builds the same store from it)."""
    if spec["kind"] == "folder":
        return FolderArtifactStore(spec["root"])
    return FsspecArtifactStore(raw_fs(spec["endpoint"]), spec["root"], spool=spec["spool"])


class Backend:
    """A store under test, and a way around it to its stored files or objects."""

    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.store = store_from_spec(spec)

    def listing(self) -> list[str]:
        """Every stored file or object under the store's root, relative to it."""
        if self.spec["kind"] == "folder":
            root = Path(self.spec["root"])
            return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        root = self.spec["root"]
        return sorted(name[len(root) + 1:] for name in raw_fs(self.spec["endpoint"]).find(root))

    def overwrite(self, digest: str, data: bytes) -> None:
        name = f"{digest[:2]}/{digest[2:]}"
        if self.spec["kind"] == "folder":
            (Path(self.spec["root"]) / name).write_bytes(data)
        else:
            raw_fs(self.spec["endpoint"]).pipe_file(f"{self.spec['root']}/{name}", data)

    def staged_files(self) -> list[Path]:
        folder = Path(self.spec["root"] if self.spec["kind"] == "folder" else self.spec["spool"])
        return sorted(folder.glob(STAGE_PREFIX + "*"))


@pytest.fixture(params=["folder", "s3"])
def backend(request, tmp_path) -> Backend:
    if request.param == "folder":
        return Backend({"kind": "folder", "root": str(tmp_path / "artifacts")})
    spool = tmp_path / "spool"
    spool.mkdir()
    return Backend({"kind": "s3", "endpoint": request.getfixturevalue("s3_endpoint"),
                    "root": f"{BUCKET}/{uuid.uuid4().hex}", "spool": str(spool)})


def filed(digest: str) -> str:
    return f"{digest[:2]}/{digest[2:]}"


# ---- the contract, over both stores --------------------------------------------------------------------------


def test_put_get_exists_size_list_and_delete(backend):
    store = backend.store
    data = b"a model state" * 100
    digest = store.put(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert store.put(data) == digest  # the same bytes, the same one artifact
    assert store.get(digest) == data and store.exists(digest) and store.size(digest) == len(data)
    other = store.put(b"a probe set")
    assert store.digests() == sorted([digest, other])
    assert backend.listing() == sorted([filed(digest), filed(other)])

    store.delete(digest)
    assert not store.exists(digest) and store.size(digest) == 0 and store.digests() == [other]
    assert backend.listing() == [filed(other)]  # gone from the folder or the bucket itself, not hidden
    with pytest.raises(ArtifactMissing, match=digest):
        store.get(digest)
    with pytest.raises(ArtifactMissing, match=digest):
        store.open(digest)
    store.delete(digest)  # deleting again changes nothing
    assert store.digests() == [other]


def test_a_digest_that_is_not_one_is_refused(backend):
    with pytest.raises(ValueError, match="not a sha256"):
        backend.store.get("../../" + "0" * 58)
    with pytest.raises(ValueError, match="not a sha256"):
        backend.store.exists("AB" * 32)


def test_a_staged_file_is_filed_under_its_digest_only_on_commit(backend):
    store = backend.store
    staged = store.stage()
    staged.write(b"head")
    staged.write(np.arange(1000, dtype=np.int64))
    staged.patch(0, b"HEAD")  # a header rewritten once the counts are known
    whole = b"HEAD" + np.arange(1000, dtype=np.int64).tobytes()
    assert store.digests() == [] and not [n for n in backend.listing() if "/" in n]  # nothing filed yet
    digest = staged.commit()
    assert digest == hashlib.sha256(whole).hexdigest()
    assert store.digests() == [digest] and store.get(digest) == whole
    assert backend.listing() == [filed(digest)] and backend.staged_files() == []

    reader = store.open(digest)
    assert reader.read(4) == b"HEAD"
    rest = bytearray(len(whole) - 4)
    assert reader.readinto(rest) == len(rest) and bytes(rest) == whole[4:]
    reader.finish()


def test_a_discarded_stage_leaves_nothing(backend):
    store = backend.store
    staged = store.stage()
    staged.write(b"rows of a learn that failed a check" * 1000)
    staged.discard()
    assert store.digests() == [] and backend.listing() == [] and backend.staged_files() == []


def test_what_was_altered_is_refused_on_every_read(backend):
    store = backend.store
    data = bytes(range(256)) * 64
    digest = store.put(data)
    backend.overwrite(digest, data[:-1] + b"!")
    with pytest.raises(ArtifactCorrupt, match=f"artifact {digest} does not match its digest"):
        store.get(digest)
    reader = store.open(digest)
    reader.read(10)  # what was read so far cannot tell
    with pytest.raises(ArtifactCorrupt, match=digest):
        reader.finish()
    backend.overwrite(digest, data[:100])  # truncated
    with pytest.raises(ArtifactCorrupt, match=digest):
        store.open(digest).finish()


def test_age_is_counted_from_the_write(backend):
    store = backend.store
    digest = store.put(b"written now")
    now = time.time()
    assert 3600 <= store.age_seconds(digest, now + 3600 + 120)  # the store's clock may be a minute off ours
    assert store.age_seconds(digest, now + 3600 - 120) < 3600
    assert store.age_seconds("0" * 64, now) == 0.0


def test_a_stale_stage_is_removed_and_can_no_longer_be_filed(backend):
    store = backend.store
    staged = store.stage()
    staged.write(b"a submit that stalled")
    now = time.time()
    assert store.remove_stale_staging(3600, now) == 0 and len(backend.staged_files()) == 1
    assert store.remove_stale_staging(3600, now + 7200) == 1 and backend.staged_files() == []
    with pytest.raises(FileNotFoundError):
        staged.commit()
    assert store.digests() == [] and backend.listing() == []


def test_a_folders_stale_sweep_also_takes_what_a_put_cut_short_left_beside_its_target(tmp_path):
    store = FolderArtifactStore(tmp_path)
    digest = store.put(b"filed")
    left = tmp_path / digest[:2] / ".tmp-killed-put"  # the temporary a put writes, then renames into place
    left.write_bytes(b"half of a")
    now = time.time()
    assert store.remove_stale_staging(3600, now) == 0 and left.exists()
    assert store.remove_stale_staging(3600, now + 7200) == 1 and not left.exists()
    assert store.digests() == [digest] and store.get(digest) == b"filed"


def test_two_writers_staging_the_same_bytes_at_once_both_succeed_and_leave_one_artifact(backend):
    data = os.urandom(1 << 20)
    stores = [backend.store, store_from_spec(backend.spec)]  # two workers, each with a client of its own
    ready = threading.Barrier(len(stores))
    digests, errors = [], []

    def stage_and_commit(store):
        try:
            staged = store.stage()
            for i in range(0, len(data), 1 << 16):
                staged.write(data[i:i + (1 << 16)])
            ready.wait(timeout=60)
            digests.append(staged.commit())
            digests.append(store.put(data))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=stage_and_commit, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    digest = hashlib.sha256(data).hexdigest()
    assert digests == [digest] * 4
    assert backend.listing() == [filed(digest)] and backend.staged_files() == []
    assert backend.store.get(digest) == data


CRASH_WHILE_STAGING = """
import json, os, sys
import numpy as np
from lifecycle.store.keystore import KeyStore
from lifecycle.vault import Vault
from tests.store.test_object_artifacts import store_from_spec

vault = Vault(store_from_spec(json.loads(sys.argv[1])), KeyStore(sys.argv[2]))
writer = vault.row_writer()
writer.write(np.ones((2000, 8), np.float32), np.zeros(2000, np.int64))
os._exit(3)  # killed halfway through a submit's rows
"""


def test_the_sweep_removes_what_a_stage_cut_short_by_a_crash_left_after_its_grace(backend, tmp_path):
    lc = lifecycle.connect(f"sqlite:///{tmp_path / 'ledger.db'}", artifacts=tmp_path / "unused", keys=tmp_path / "k")
    vault = Vault(backend.store, lc.vault.keys)
    kept = vault.put_blob(b"an artifact nothing references yet, as young as the crash")
    child = subprocess.run([sys.executable, "-c", CRASH_WHILE_STAGING, json.dumps(backend.spec), str(tmp_path / "k")],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
    assert child.returncode == 3, child.stderr
    left = backend.staged_files()
    assert len(left) == 1 and left[0].stat().st_size > 0

    assert purge.sweep(lc.ledger, vault, grace_seconds=3600) == []  # it may be a submit still writing
    assert backend.staged_files() == left and vault.artifacts.digests() == [kept]
    assert purge.sweep(lc.ledger, vault, grace_seconds=0) == [kept]
    assert backend.staged_files() == [] and backend.listing() == [] and vault.keys.digests() == []


# ---- a lifecycle with its artifacts in a bucket ------------------------------------------------------------------


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch):
    """The configuration an operator gives: credentials as AWS's tools read them, the endpoint as a storage option."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(OPTIONS_ENV, json.dumps({"endpoint_url": s3_endpoint}))
    monkeypatch.delenv("LIFECYCLE_KEYS", raising=False)
    return s3_endpoint


def test_a_lifecycle_keeps_its_artifacts_in_a_bucket_and_its_forgets_erase_them_there(s3_env, tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    root = f"{BUCKET}/{uuid.uuid4().hex}"
    bucket = raw_fs(s3_env)
    keys = tmp_path / "keys"
    lc = lifecycle.connect(url, artifacts=f"s3://{root}", keys=keys)
    assert isinstance(lc.vault.artifacts, FsspecArtifactStore)
    make_model(lc, forgotten_probes="purge")
    t0, t1, t2 = digits_tasks()
    learn_task(lc, "digits", t0)
    lc.drain()
    before = set(lc.vault.artifacts.digests())
    learn_task(lc, "digits", t1)
    lc.drain()
    of_t1 = set(lc.vault.artifacts.digests()) - before  # its rows, its probe set, the state trained on it
    assert len(of_t1) == 3 and of_t1 <= set(KeyStore(keys).digests())

    # another worker, with a client of its own, applies what the first one stored, and serves what it trained
    other = lifecycle.connect(url, artifacts=f"s3://{root}", keys=keys)
    req = learn_task(lc, "digits", t2)
    assert [r.id for r in other.drain()] == [req.id] and other.status(req.id).status == "applied"
    assert np.array_equal(lc.predict("digits", t2.X_probe), other.predict("digits", t2.X_probe))

    forget = lc.forget("digits", task=t1.name, reason="licence revoked")
    lc.drain()
    assert lc.status(forget.id).status == "applied" and lc.certificate(forget.id)
    stored = set(lc.vault.artifacts.digests())
    assert not of_t1 & stored and not of_t1 & set(lc.vault.keys.digests())
    assert sorted(bucket.find(root)) == sorted(f"{root}/{filed(d)}" for d in stored)  # really gone
    checked, problems = lc.ledger.audit_problems()
    assert problems == [] and checked > 0
    assert lc.sweep(0) == []  # the purge left nothing behind for the sweep


def test_artifacts_in_a_bucket_need_their_keys_somewhere_else(s3_env, tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with pytest.raises(InvalidConfig, match="keys= .*LIFECYCLE_KEYS"):
        lifecycle.connect(url, artifacts=f"s3://{BUCKET}/p")
    with pytest.raises(InvalidConfig, match="is a URL"):
        lifecycle.connect(url, artifacts=f"s3://{BUCKET}/p", keys=f"s3://{BUCKET}/keys")
    assert list(tmp_path.iterdir()) == []  # refused before anything was created


def test_the_command_line_takes_a_bucket_and_says_what_is_missing(s3_env, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-c", "from lifecycle.cli import main; main()", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)

    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    no_keys = run("repair", "digits", "--db", ledger, "--artifacts", f"s3://{BUCKET}/cli")
    assert no_keys.returncode == 2 and "error (InvalidConfig)" in no_keys.stderr + no_keys.stdout
    bad = run("repair", "digits", "--db", ledger, "--artifacts", "ftp://host/x", "--keys", "keys")
    assert bad.returncode == 2 and "error (BadArtifactsLocation)" in bad.stderr + bad.stdout
    assert list(tmp_path.iterdir()) == []
    assert run("db", "upgrade", "--db", ledger).returncode == 0
    # upgrading an existing ledger opens its artifacts (to encrypt what older versions kept in clear)
    ok = run("db", "upgrade", "--db", ledger, "--artifacts", f"s3://{BUCKET}/cli", "--keys", "keys")
    assert ok.returncode == 0, ok.stderr + ok.stdout


# ---- choosing a store by location ------------------------------------------------------------------------------


def test_a_path_or_a_file_url_is_a_folder(tmp_path):
    assert open_artifact_store(tmp_path / "a").root == tmp_path / "a"
    assert open_artifact_store(str(tmp_path / "b")).root == tmp_path / "b"
    assert open_artifact_store(f"file://{tmp_path}/c%20d").root == tmp_path / "c d"
    with pytest.raises(BadArtifactsLocation, match="not a local file URL"):
        open_artifact_store("file://elsewhere/x")


@pytest.mark.parametrize("location, problem", [
    ("ftp://host/artifacts", "ftp:// is not a folder nor an object store"),
    ("nosuch://x/y", "nosuch:// is not a folder nor an object store"),
    ("s3://", "names no bucket"),
])
def test_a_location_no_store_can_use_is_refused(location, problem):
    with pytest.raises(BadArtifactsLocation, match=problem):
        open_artifact_store(location, {})


@pytest.mark.parametrize("location, package", [("gs://bucket/x", "gcsfs"), ("az://container/x", "adlfs")])
def test_a_missing_backend_names_the_package_to_install(location, package):
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here")
    with pytest.raises(BadArtifactsLocation, match=f"pip install {package}"):
        open_artifact_store(location, {})


@pytest.mark.parametrize("value, problem", [("{endpoint", "is not JSON"), ('["x"]', "must be a JSON object")])
def test_storage_options_that_are_not_a_json_object_are_refused(value, problem, monkeypatch):
    monkeypatch.setenv(OPTIONS_ENV, value)
    with pytest.raises(BadArtifactsLocation, match=problem):
        open_artifact_store(f"s3://{BUCKET}/x")


def test_a_bucket_that_does_not_answer_hands_the_step_back_and_it_applies_later(monkeypatch, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    # one quick try per call, so that a server that is down is found at once
    monkeypatch.setenv(OPTIONS_ENV, json.dumps({"endpoint_url": endpoint, "config_kwargs": {
        "connect_timeout": 1, "read_timeout": 5, "retries": {"max_attempts": 1}}}))
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        bucket = f"down-{uuid.uuid4().hex[:8]}"
        raw_fs(endpoint).mkdir(bucket)
        lc = lifecycle.connect(f"sqlite:///{tmp_path / 'ledger.db'}", artifacts=f"s3://{bucket}/x",
                               keys=tmp_path / "keys")
        make_model(lc)
        req = learn_task(lc, "digits", digits_tasks()[0])  # its rows reached the bucket
    finally:
        server.stop()
    # moto keeps what it holds in this process: the same server started again has the rows
    with pytest.raises(lifecycle.StorageUnavailable, match="did not answer"):
        lc.drain()
    back = lc.status(req.id)
    assert (back.status, back.attempt) == ("queued", 1)
    assert lc.model("digits").quarantine is None and lc.ledger.latest_version(lc.model("digits").id) is None
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        assert [r.id for r in lc.drain()] == [req.id] and lc.status(req.id).status == "applied"
    finally:
        server.stop()
