"""The Python API: ``lifecycle.connect(url)`` and the ``Lifecycle`` handle."""

from __future__ import annotations

import binascii
import datetime as dt
import hashlib
import json
import os
import time
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from lifecycle import strategies
from lifecycle import erasure, purge, validation
from lifecycle.signing import Signer
from lifecycle.vault import Vault
from lifecycle.payloads import payload_sha
from lifecycle.loading import load_strategy
from lifecycle.worker import Worker
from lifecycle.errors import (
    AlreadyForgotten,
    DuplicateSampleIds,
    EncoderMismatch,
    IdempotencyConflict,
    InvalidConfig,
    InvalidRequest,
    ModelExists,
    NotReady,
    NotRepairable,
    StorageFault,
    RequestNotCancellable,
    TombstonedSample,
    UnknownModel,
    UnknownRequest,
    UnknownSamples,
    UnknownSubject,
    UnknownTask,
    UnsupportedForgetUnit,
)
from lifecycle.store.artifact_location import open_artifact_store
from lifecycle.store.artifacts import ArtifactStore, FolderArtifactStore
from lifecycle.store.errors import ArtifactCorrupt, ArtifactMissing
from lifecycle.migrations.migrate import open_engine
from lifecycle.store.engine import ledger_url
from lifecycle.store.identity import IdKey
from lifecycle.store.keystore import KeyStore
from lifecycle.store.clock import Clock, utcnow
from lifecycle.store.ledger import Ledger
from lifecycle.store.records import (
    Evaluation,
    Model,
    ModelVersion,
    RelapseFinding,
    Request,
    RequestKind,
    SampleStatus,
    Task,
    TaskState,
)

DEFAULT_URL = "sqlite:///lifecycle.db"
PROBE_POLICIES = ("keep", "purge")
# a submit writes its files before it commits their rows: the sweep spares files younger than this
SWEEP_GRACE_SECONDS = 3600.0


def connect(url: str | None = None, *, artifacts: str | os.PathLike | None = None,
            keys: str | os.PathLike | None = None, create: bool = True,
            signing_key: str | os.PathLike | None = None, id_key: str | os.PathLike | None = None,
            clock: Clock = utcnow) -> Lifecycle:
    """Open a ledger. A new empty database gets the current schema; an older
    one raises ``SchemaOutOfDate`` naming ``lifecycle db upgrade``.

    SQLite keeps artifacts in a folder beside the database file
    (``ledger.db`` -> ``ledger.db.artifacts``) and their data keys in another
    (``ledger.db.keys``); other backends take ``artifacts`` or the
    ``LIFECYCLE_ARTIFACTS`` environment variable, and keep the keys beside
    it (``<artifacts>.keys``). ``keys`` or ``LIFECYCLE_KEYS`` put the keys
    elsewhere. ``artifacts`` may be an object store URL (``s3://bucket/prefix``,
    see ``lifecycle.store.artifact_location``); its keys then must be given,
    as a folder: they never go into the bucket.
    Keep the key folder out of the artifacts' backups: erasing destroys keys
    (see ``lifecycle.vault``). Certificates are signed with the Ed25519 key
    at ``signing_key`` (see ``lifecycle.signing``) and identifiers are
    digested under the secret at ``id_key`` (see ``lifecycle.store.identity``); both
    are created on first use. ``clock`` gives the queue's times (leases,
    claims, commits); tests pass one they can move.
    """
    url = ledger_url(url or os.environ.get("LIFECYCLE_DB", DEFAULT_URL))
    store = open_artifact_store(artifacts or default_artifacts(url))
    vault = Vault(store, KeyStore(_key_folder(keys or default_keys(url, store))))
    engine = open_engine(url, create=create)
    ids = IdKey(id_key)
    return Lifecycle(Ledger(engine, ids, clock), vault, Signer(signing_key), ids)


def _sqlite_file(url: str) -> str | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    if not parsed.database or parsed.database == ":memory:":
        raise InvalidRequest("an in-memory SQLite ledger cannot be shared with workers; use a file")
    return parsed.database


def default_artifacts(url: str) -> str:
    """A folder path, or an object store URL from ``LIFECYCLE_ARTIFACTS``."""
    path = _sqlite_file(url)
    return path + ".artifacts" if path else os.environ.get("LIFECYCLE_ARTIFACTS", "lifecycle-artifacts")


def default_keys(url: str, artifacts: ArtifactStore) -> Path:
    if os.environ.get("LIFECYCLE_KEYS"):
        return Path(os.environ["LIFECYCLE_KEYS"])
    if not isinstance(artifacts, FolderArtifactStore):
        # erasing destroys keys: in the bucket they would share its copies, versions and backups
        raise InvalidConfig(f"artifacts in an object store ({artifacts!r}) need their keys in a folder kept "
                            "apart from the bucket: pass keys= (--keys) or set LIFECYCLE_KEYS")
    path = _sqlite_file(url)
    return Path(path + ".keys") if path else artifacts.root.with_name(artifacts.root.name + ".keys")


def _key_folder(keys: str | os.PathLike) -> Path:
    if "://" in os.fspath(keys):
        raise InvalidConfig(f"the keys location {os.fspath(keys)} is a URL; keys live in a folder (a path), "
                            "apart from the artifacts")
    return Path(keys)


@dataclass(frozen=True)
class Step:
    """One line of a model's history: a request and what its version measured."""

    request: Request
    version: int | None
    evaluations: tuple[Evaluation, ...]


class Lifecycle:
    def __init__(self, ledger: Ledger, vault: Vault, signer: Signer, ids: IdKey) -> None:
        self.ledger = ledger
        self.vault = vault
        self.signer = signer
        self.ids = ids
        self.erasure_intake = erasure.intake(ledger)

    # ---- models --------------------------------------------------------------

    def create_model(
        self,
        name: str,
        *,
        strategy: str,
        n_features: int | None = None,
        n_classes: int,
        config: dict[str, Any] | None = None,
        relapse_threshold: float = 0.05,
        forget_due_days: float = 30.0,
        keep_states: int = 3,
        forgotten_probes: str = "keep",
        encoder: str | os.PathLike | None = None,
        encoder_weights: str | os.PathLike | None = None,
        input_shape: tuple[int, ...] | None = None,
        input_dtype: str = "float32",
        encoder_trained_on: str | None = None,
        encoder_sha256: str | None = None,
        encoder_batch: int | None = None,
        device: str = "cpu",
        max_false_activation: float = 0.05,
    ) -> Model:
        """Register a model.

        ``keep_states``: how many of the latest model states are kept (at
        least 1); older ones, and every state trained on forgotten data, are
        erased.
        ``forgotten_probes``: what a task forget does to the task's probe
        set: ``"keep"`` it to watch the task for relapse (certificates say
        so), or ``"purge"`` it with the task (relapse is then not watched).
        ``max_false_activation``: for gated strategies, the share of a
        retained task's probes the forget gate may fire on; above it the
        step records a finding.

        ``encoder``: a frozen feature extractor in front of the strategy
        (see ``lifecycle.encoders``): a TorchScript or ``torch.export`` file,
        or a factory ``"package.module:build"`` with ``encoder_weights`` (a
        state-dict file). It takes inputs of ``input_shape`` (one input,
        without the batch dimension) and ``input_dtype`` ("float32", or
        "int64" for token ids); requests then carry raw inputs of that shape
        and ``n_features`` may be left out. ``encoder_trained_on`` declares
        what it was trained on (required: certificates quote it; it must not
        be data this model may be asked to forget). ``encoder_sha256``
        refuses the file unless that is its digest. ``encoder_batch``:
        inputs encoded at a time (default 128). ``device``: where the
        encoder runs ("cpu", or "cuda"/"cuda:N" where present).
        """
        validation.name(name, "model name")
        try:
            spec = strategies.get(strategy)
            cfg = spec.make_config(config)
        except (strategies.UnknownStrategy, strategies.StrategyConfigError, TypeError) as exc:
            raise InvalidConfig(str(exc)) from None
        if not isinstance(max_false_activation, (int, float)) or isinstance(max_false_activation, bool) \
                or not 0 < max_false_activation < 1:
            raise InvalidRequest(f"max_false_activation is a share of a task's probes in (0, 1), not "
                                 f"{max_false_activation!r}")
        if encoder is None:
            given = [k for k, v in (("encoder_weights", encoder_weights), ("input_shape", input_shape),
                                    ("encoder_trained_on", encoder_trained_on), ("encoder_sha256", encoder_sha256),
                                    ("encoder_batch", encoder_batch)) if v is not None]
            if given:
                raise InvalidRequest(f"{', '.join(given)} describe an encoder: pass encoder= too, or leave them out")
            if input_dtype != "float32" or device != "cpu":
                raise InvalidRequest("input_dtype and device are encoder settings: pass encoder= too, or leave them "
                                     "out")
            if n_features is None:
                raise InvalidRequest("n_features is required (the width of a feature row), unless an encoder= with "
                                     "its input_shape= gives it")
        else:
            from lifecycle import encoders

            shape = encoders.check_shape(input_shape)
            if n_features is not None and n_features != int(np.prod(shape)):
                raise InvalidRequest(f"n_features ({n_features!r}) must be left out with an encoder, or equal the "
                                     f"number of values in one input of shape {shape} ({int(np.prod(shape))})")
            n_features = int(np.prod(shape))
            if encoder_trained_on is None:
                raise InvalidRequest("encoder_trained_on= is required with an encoder: certificates state what it was "
                                     "trained on (it must not be data this model may be asked to forget)")
            trained_on = validation.optional_text(encoder_trained_on, "encoder_trained_on", 2000)
            if not trained_on.strip():
                raise InvalidRequest("encoder_trained_on must not be empty")
            if encoder_sha256 is not None and (not isinstance(encoder_sha256, str) or len(encoder_sha256) != 64
                                               or any(c not in "0123456789abcdef" for c in encoder_sha256.lower())):
                raise InvalidRequest(f"encoder_sha256 must be 64 hex digits, not {encoder_sha256!r}")
            device = encoders.check_device(device)
            _encoder_config_fits(strategy, cfg)
        for value, what, hi in ((n_features, "n_features", 10_000_000), (n_classes, "n_classes", 100_000)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not 1 <= value <= hi:
                raise InvalidRequest(f"{what} must be an integer in 1..{hi}, not {value!r}")
        if n_classes < 2:
            raise InvalidRequest("n_classes must be at least 2")
        if not isinstance(relapse_threshold, (int, float)) or not 0 < relapse_threshold < 1:
            raise InvalidRequest(f"relapse_threshold is a fraction of accuracy in (0, 1), not {relapse_threshold!r}")
        if not isinstance(forget_due_days, (int, float)) or not 0 < forget_due_days <= 3650:
            raise InvalidRequest(f"forget_due_days must be in (0, 3650], not {forget_due_days!r}")
        if isinstance(keep_states, bool) or not isinstance(keep_states, int) or not 1 <= keep_states <= 1000:
            raise InvalidRequest(f"keep_states must be an integer in 1..1000, not {keep_states!r}")
        if forgotten_probes not in PROBE_POLICIES:
            raise InvalidRequest(f"forgotten_probes must be one of {', '.join(PROBE_POLICIES)}, not "
                                 f"{forgotten_probes!r}")
        if self.ledger.model(name) is not None:
            raise ModelExists(f"a model named {name!r} already exists")
        record, written = None, []
        if encoder is not None:
            prepared = encoders.prepare(encoder, input_shape=shape, trained_on=trained_on, weights=encoder_weights,
                                        input_dtype=input_dtype, batch_size=encoder_batch, device=device,
                                        expected_sha256=encoder_sha256)
            record = prepared.record
            # in clear: nothing an erasure destroys is in it (see lifecycle.encoders); its digest is the file's sha256
            existed = self.vault.artifacts.exists(record.digest)
            self.vault.artifacts.put(prepared.data)
            written = [] if existed else [record.digest]
        try:
            return self.ledger.create_model(name, strategy, strategies.base.config_to_dict(cfg), int(n_features),
                                            int(n_classes), float(relapse_threshold), float(forget_due_days),
                                            keep_states, forgotten_probes, encoder=record, device=device,
                                            max_false_activation=float(max_false_activation))
        except IntegrityError:
            self._discard(written)
            raise ModelExists(f"a model named {name!r} already exists") from None
        except BaseException:
            self._discard(written)
            raise

    def model(self, name: str) -> Model:
        found = self.ledger.model(validation.name(name, "model name"))
        if found is None:
            known = ", ".join(m.name for m in self.ledger.models()[:10]) or "none"
            raise UnknownModel(f"no model named {name!r} (models: {known})")
        return found

    def models(self) -> list[Model]:
        return self.ledger.models()

    def tasks(self, model: str) -> list[Task]:
        return self.ledger.tasks(self.model(model).id)

    # ---- submitting ----------------------------------------------------------

    def learn(
        self,
        model: str,
        *,
        task: str,
        X: Any,
        y: Any = None,
        sample_ids: Any = None,
        subjects: Any = None,
        probe: tuple[Any, Any] | None = None,
        idempotency_key: str | None = None,
        requested_by: str | None = None,
        reason: str | None = None,
        token_id: str | None = None,
    ) -> Request:
        """Queue a learn request. Raises a typed error and writes nothing when invalid.

        ``X`` is one of
        - an array (or array-like) of rows, with ``y`` and optionally ``sample_ids`` and ``subjects``;
        - the path of a ``.npy`` file (``y`` an array or another ``.npy`` path), read a slice of rows
          at a time with plain reads: never loaded whole, nor mapped;
        - an iterator of batches ``(X, y)``, ``(X, y, sample_ids)`` or ``(X, y, sample_ids, subjects)``
          (or dicts with those keys), with ``y``, ``sample_ids`` and ``subjects`` left out.

        The data is checked, digested and sealed into the artifact store a
        chunk at a time (``validation.CHUNK_BYTES``); the ledger's transaction
        comes last and is short. Limits per request: ``validation.MAX_BATCH``
        rows and ``validation.MAX_REQUEST_BYTES`` of float32 features, else
        ``RequestTooLarge``. See README, "Big learns". ``token_id``: the HTTP
        API token that submitted it, recorded in its ``submitted`` event.
        """
        m = self.model(model)
        validation.name(task, "task")
        key = None if idempotency_key is None else validation.name(idempotency_key, "idempotency_key")
        requested_by = validation.optional_text(requested_by, "requested_by", 200)
        reason = validation.optional_text(reason, "reason")
        batches = validation.is_batches(X)
        if batches:
            beside = [k for k, v in (("y", y), ("sample_ids", sample_ids), ("subjects", subjects)) if v is not None]
            if beside:
                raise InvalidRequest(f"X is an iterator of batches, and each batch carries its own y (and sample_ids, "
                                     f"subjects): pass {', '.join(beside)} inside the batches, not beside them")
        existing_task = self.ledger.task(m.id, task)
        probe_arrays = None
        if probe is not None:
            if not isinstance(probe, (tuple, list)) or len(probe) != 2:
                raise InvalidRequest("probe must be a pair (X_probe, y_probe)")
            Xp = self._inputs(m, probe[0], "probe X")
            probe_arrays = (Xp, validation.labels(probe[1], len(Xp), m.n_classes, "probe y"))
        elif existing_task is None or existing_task.probe_digest is None:
            raise InvalidRequest(f"task {task!r} has no probe set yet: pass probe=(X_probe, y_probe) to evaluate it")

        written: list[str] = []
        staged: _StagedLearn | None = None
        try:
            if batches:
                found = self._stage_batches(m, task, X, probe_arrays, key, written)
            else:
                found = self._stage_rows(m, task, X, y, sample_ids, subjects, probe_arrays, key, written)
            if isinstance(found, Request):
                return found  # the same payload under the same idempotency key: nothing staged
            staged = found
            probe_digest = None
            if probe_arrays is not None:
                probe_digest = self._seal(written, *probe_arrays)
            classes = set(np.unique(staged.labels).tolist())
            if probe_arrays is not None:
                classes |= set(np.unique(probe_arrays[1]).tolist())
            return self.ledger.submit_learn(
                m, task=task, classes=sorted(classes), probe_digest=probe_digest, payload_digest=staged.payload,
                payload_sha=staged.sha, sample_ids=staged.digests, labels=staged.labels,
                subject_hashes=staged.subjects, content_digests=staged.contents, idempotency_key=key,
                requested_by=requested_by, reason=reason, token_id=token_id,
            )
        except IntegrityError:
            self._discard(written)
            if key is not None and staged is not None and (prior := self._by_key(m, key, staged.sha)) is not None:
                return prior
            raise DuplicateSampleIds("a concurrent request took some of these sample ids first") from None
        except BaseException:
            self._discard(written)
            raise

    def _stage_rows(self, m: Model, task: str, X: Any, y: Any, sample_ids: Any, subjects: Any,
                    probe_arrays: tuple[np.ndarray, np.ndarray] | None, key: str | None,
                    written: list[str]) -> _StagedLearn | Request:
        """Stage a learn whose rows are given whole (an array-like, or a .npy path).

        Two passes over the rows: the first checks them, digests their
        content and computes the request digest (exactly as ``_sha`` would on
        the whole arrays); then the ledger is consulted (idempotency key,
        tombstones, ids already learned); the second seals them into the
        artifact store. A row that changed in between is refused.
        """
        source = _RowSource(X)
        try:
            step = validation.chunk_rows(m.n_features)
            if source.n is not None:
                validation.request_size(source.n, m.n_features)
            sha = _PayloadSha()
            contents: np.ndarray | None = None
            sums: list[int] = []
            kept: np.ndarray | None = None  # a request of one chunk is not read twice
            n = source.n
            for start, stop, raw in source.chunks(step):
                Xc = np.ascontiguousarray(self._inputs(m, raw, "X" if stop == n and start == 0 else
                                                       f"X[{start}:{stop}]"))
                if n is None:  # an input whose length only its check tells
                    n, stop = len(Xc), len(Xc)
                    validation.request_size(n, m.n_features)
                if len(Xc) != stop - start:
                    raise InvalidRequest(f"X[{start}:{stop}] gave {len(Xc)} rows for {stop - start} inputs")
                if start == 0:
                    contents = np.empty((n, 32), np.uint8)
                    sha.field("X")
                    sha.update(f"{Xc.dtype.str}{(n, *Xc.shape[1:])}".encode())
                sha.update(Xc)
                sums.append(zlib.crc32(Xc))
                contents[start:stop] = _raw_digests(self.ids.rows(Xc))
                if stop == n and start == 0:
                    kept = Xc
                del Xc
            sha.end()
            ya = validation.labels(validation.npy_array(y, "y") if validation.is_path(y) else y, n, m.n_classes)
            ids = validation.id_list(sample_ids, "sample_ids", n) if sample_ids is not None else None
            subs = validation.subjects(subjects, n) if subjects is not None else None
            digests = None if ids is None else _raw_column(n, lambda a, b: [self.ids.sample(i) for i in ids[a:b]])
            hashes = None if subs is None else _digest_array(n, lambda a, b: self._subject_digests(m, subs[a:b]))
            sha.field("ids")
            sha.json_digests(digests)
            sha.end()
            sha.rest(task, probe_arrays, lambda: sha.json_digests(hashes, n),
                     lambda: sha.update(f"{ya.dtype.str}{ya.shape}".encode() + ya.tobytes()))
            payload_sha = sha.hexdigest()
            if key is not None and (prior := self._by_key(m, key, payload_sha)) is not None:
                return prior
            if digests is None:
                digests = _raw_column(n, lambda a, b: [self.ids.sample(f"{task}/{payload_sha[:16]}/{i}")
                                                       for i in range(a, b)])
            elif len(np.unique(digests.view("S32").ravel())) != n:
                raise DuplicateSampleIds("sample_ids repeats ids that differ only in Unicode normalisation")
            try:
                self._refuse_known(m, lambda: ((a, _strs(digests, a, a + _CHECK_ROWS),
                                                _strs(contents, a, a + _CHECK_ROWS)) for a in range(0, n, _CHECK_ROWS)))
            except DuplicateSampleIds:
                # the same payload under the same key, sent at once from elsewhere, may have committed since
                if key is not None and (prior := self._by_key(m, key, payload_sha)) is not None:
                    return prior
                raise
            with self.vault.row_writer(n) as writer:
                for (start, stop, raw), crc in zip(source.chunks(step) if kept is None else [(0, n, None)], sums,
                                                  strict=True):
                    Xc = kept if kept is not None else np.ascontiguousarray(self._inputs(m, raw, f"X[{start}:{stop}]"))
                    if len(Xc) != stop - start or zlib.crc32(Xc) != crc:
                        raise InvalidRequest(f"X[{start}:{stop}] changed while the request was being submitted")
                    writer.write(Xc, ya[start:stop], _hex(digests, start, stop))
                    del Xc
                payload = writer.finish()
            written.append(payload)
            return _StagedLearn(payload, payload_sha, digests, ya, hashes, contents)
        finally:
            source.close()

    def _stage_batches(self, m: Model, task: str, batches: Any,
                       probe_arrays: tuple[np.ndarray, np.ndarray] | None, key: str | None,
                       written: list[str]) -> _StagedLearn | Request:
        """Stage a learn given as an iterator of batches, in one pass: each
        chunk is checked, digested, checked against the ledger and sealed
        into a staged file as it comes.

        Sample ids a batch leaves out are keyed digests of the task, the
        row's position, label and content. The request digest covers the same
        fields as ``_sha``, each digested as it streams, so it does not depend
        on where the batches split (but differs from the digest of the same
        rows given whole).
        """
        prior = self.ledger.request_by_key(m.id, key) if key is not None else None
        step = validation.chunk_rows(m.n_features)
        h_x, h_y, h_ids, h_subjects = (hashlib.sha256() for _ in range(4))
        parts: dict[str, list] = {"digests": [], "labels": [], "subjects": [], "contents": []}
        any_subject, with_ids, n, width = False, None, 0, None
        writer = None if prior is not None else self.vault.row_writer(None)
        try:
            for index, item in enumerate(batches):
                Xb, yb, ib, sb = validation.batch(item, index)
                if with_ids is None:
                    with_ids = ib is not None
                elif with_ids != (ib is not None):
                    raise InvalidRequest(f"batch {index} {'lacks' if with_ids else 'has'} sample_ids; either every "
                                         "batch carries them or none does")
                for start, stop, Xr, yr, ir, sr in _batch_slices(Xb, yb, ib, sb, step):
                    where = f"batch {index}" + ("" if start is None else f" [{start}:{stop}]")
                    Xc = np.ascontiguousarray(self._inputs(m, Xr, f"{where} X"))
                    k = len(Xc)
                    width = Xc.shape[1] if width is None else width
                    validation.request_size(n + k, m.n_features, "the batches")
                    yc = validation.labels(yr, k, m.n_classes, f"{where} y")
                    ids = validation.id_list(ir, f"{where} sample_ids", k) if with_ids else None
                    subs = validation.subjects(sr, k) if sr is not None else [None] * k
                    contents = self.ids.rows(Xc)
                    digests = ([self.ids.sample(i) for i in ids] if ids is not None else
                               [self.ids.sample(f"{task}/{n + j}/{label}/{c}")
                                for j, (label, c) in enumerate(zip(yc.tolist(), contents))])
                    hashes = self._subject_digests(m, subs)
                    any_subject = any_subject or any(h is not None for h in hashes)
                    for h, values in ((h_ids, digests if ids is not None else None), (h_subjects, hashes)):
                        if values is not None:
                            h.update((", " if n else "").encode() + ", ".join(map(json.dumps, values)).encode())
                    h_x.update(Xc)
                    h_y.update(yc)
                    if writer is not None:
                        self._refuse_known(m, lambda: [(n, digests, contents)])
                        writer.write(Xc, yc, digests)
                    parts["digests"].append(_raw_digests(digests))
                    parts["contents"].append(_raw_digests(contents))
                    # a chunk without subjects keeps only its count
                    parts["subjects"].append(np.array([h or "" for h in hashes], "S64")
                                             if any(h is not None for h in hashes) else k)
                    parts["labels"].append(yc)
                    n += k
            if n == 0:
                raise InvalidRequest("X is empty: the batches hold no sample, and a request needs at least one")
            sha = _PayloadSha()
            sha.field("X")
            sha.update(f"<f4{(n, width)}stream:".encode() + h_x.digest())
            sha.end()
            sha.field("ids")
            sha.update(b"stream:" + h_ids.digest() if with_ids else b"null")
            sha.end()
            sha.rest(task, probe_arrays, lambda: sha.update(b"stream:" + h_subjects.digest()),
                     lambda: sha.update(f"<i8{(n,)}stream:".encode() + h_y.digest()))
            payload_sha = sha.hexdigest()
            if prior is not None:
                if (found := self._by_key(m, key, payload_sha)) is not None:
                    return found
                raise IdempotencyConflict(f"idempotency key {key!r} was used with a different payload")
            digests = np.concatenate(parts.pop("digests"))
            if len(np.unique(digests.view("S32").ravel())) != n:
                raise DuplicateSampleIds("sample_ids repeats ids across batches (or ids that differ only in "
                                         "Unicode normalisation)")
            payload = writer.finish()
            written.append(payload)
            subjects = np.concatenate([p if isinstance(p, np.ndarray) else np.zeros(p, "S64")
                                       for p in parts.pop("subjects")]) if any_subject else None
            return _StagedLearn(payload, payload_sha, digests, np.concatenate(parts.pop("labels")), subjects,
                                np.concatenate(parts.pop("contents")))
        except BaseException:
            if writer is not None:
                writer.abort()
            raise

    def _refuse_known(self, m: Model, chunks) -> None:
        """Refuse rows forgotten before (by id or by content) and ids the model already holds.
        ``chunks()`` gives ``(first row, digests, content digests)`` slices, each checked in one
        short transaction; the problems are named in that order, counted over all the slices."""
        counts, rows = [0, 0, 0], [[], [], []]
        for start, ids, contents in chunks():
            found = self.ledger.learn_conflicts(m.id, ids, contents)  # tombstoned ids, known ids, tombstoned rows
            for k, (hits, values) in enumerate(zip(found, (ids, ids, contents))):
                counts[k] += len(hits)
                if hits and len(rows[k]) < 3:
                    rows[k] += [start + i for i, v in enumerate(values) if v in hits][:3 - len(rows[k])]
        if counts[0]:
            raise TombstonedSample(f"{counts[0]} sample(s) of this learn request were forgotten earlier and may not "
                                   f"be learned again, e.g. rows {rows[0]}")
        if counts[1]:
            raise DuplicateSampleIds(f"{counts[1]} sample id(s) are already in model {m.name!r}, e.g. rows {rows[1]}")
        count, rows = counts[2], rows[2]
        if count:
            raise TombstonedSample(
                f"{count} row(s) of this learn request have the same content as samples forgotten earlier (under "
                f"other ids), e.g. rows {rows}; forgotten data may not be learned again"
            )

    def forget(
        self,
        model: str,
        *,
        task: str | None = None,
        samples: Any = None,
        subject: str | None = None,
        reason: str | None = None,
        requested_by: str | None = None,
        idempotency_key: str | None = None,
        due_at: dt.datetime | None = None,
        token_id: str | None = None,
    ) -> Request:
        """Queue a forget of a task, a list of sample ids, or everything of a subject.
        ``token_id``: the HTTP API token that submitted it, recorded in its ``submitted`` event."""
        m = self.model(model)
        given = [k for k, v in (("task", task), ("samples", samples), ("subject", subject)) if v is not None]
        if len(given) != 1:
            raise InvalidRequest(f"forget takes exactly one of task=, samples=, subject=; got {given or 'none'}")
        reason = validation.optional_text(reason, "reason")
        requested_by = validation.optional_text(requested_by, "requested_by", 200)
        key = None if idempotency_key is None else validation.name(idempotency_key, "idempotency_key")
        received = self.ledger.clock()
        due = validation.due(due_at, received) if due_at is not None else received + dt.timedelta(days=m.forget_due_days)
        spec = strategies.get(m.strategy)
        if given[0] != "task" and spec.tags.forget_unit == "task":
            why = f" Why: {spec.sample_forget_refusal}." if spec.sample_forget_refusal else ""
            raise UnsupportedForgetUnit(
                f"model {m.name!r} uses strategy {m.strategy!r}, which forgets whole tasks only; a "
                f"{given[0]}-level forget cannot be honoured exactly and is not approximated.{why} Forget the "
                f"task instead, or use a sample-level strategy ({', '.join(sample_level_strategies())})."
            )

        if task is not None:
            validation.name(task, "task")
            target: dict[str, Any] = {"task": task}
        elif samples is not None:
            ids = [self.ids.sample(i) for i in validation.id_list(samples, "samples")]
            if len(set(ids)) != len(ids):
                raise DuplicateSampleIds("samples repeats ids that differ only in Unicode normalisation")
            target = {"samples": ids}
        else:
            validation.name(subject, "subject")
            target = {"subject_hash": self._subject_digests(m, [subject])[0]}
        sha = payload_sha(kind=RequestKind.FORGET, target=target)
        if key is not None:
            prior = self._by_key(m, key, sha)
            if prior is not None:
                return prior

        if task is not None:
            t = self.ledger.task(m.id, task)
            if t is None:
                names = ", ".join(x.name for x in self.ledger.tasks(m.id)[:10]) or "none"
                raise UnknownTask(f"model {m.name!r} has no task {task!r} (tasks: {names})")
            if t.state == TaskState.FORGOTTEN:
                raise AlreadyForgotten(f"task {task!r} was already forgotten at version {t.forgotten_at_version}")
        elif samples is not None:
            ids = target["samples"]
            asked = list(samples)
            tomb = self.ledger.tombstoned(m.id, ids)
            if tomb:
                raise AlreadyForgotten(f"{len(tomb)} sample(s) were already forgotten, e.g. "
                                       f"{[asked[i] for i, d in enumerate(ids) if d in tomb][:3]}")
            known = self.ledger.samples(m.id, ids)
            missing = [asked[i] for i, d in enumerate(ids) if d not in known]
            if missing:
                raise UnknownSamples(f"{len(missing)} sample id(s) were never learned by {m.name!r}, "
                                     f"e.g. {missing[:3]}")
        else:
            counts = self.ledger.subject_counts(m.id, target["subject_hash"])
            if counts.get(SampleStatus.PENDING, 0) + counts.get(SampleStatus.ACTIVE, 0) == 0:
                if counts.get("tombstoned", 0):
                    raise AlreadyForgotten("every sample of this subject was already forgotten")
                raise UnknownSubject(f"model {m.name!r} holds no sample of this subject")
        open_id = self.ledger.open_forget_overlapping(m.id, target)
        if open_id is not None:
            raise AlreadyForgotten(f"a forget of the same {given[0]} is already queued or running: request {open_id}")
        return self.ledger.submit_forget(m, target=target, payload_sha=sha, received_at=received, due_at=due,
                                         idempotency_key=key,
                                         requested_by=requested_by, reason=reason, token_id=token_id)

    def cancel(self, request_id: str) -> Request:
        current = self.status(request_id)
        request_id = current.id
        cancelled = self.ledger.cancel(request_id)
        if cancelled is None:
            raise RequestNotCancellable(f"request {request_id} is {current.status}; only queued requests can be "
                                        "cancelled")
        request, freed = cancelled
        purge.discard(self.ledger, self.vault, freed)
        return request

    def extend_deadline(self, request_id: str, *, until: dt.datetime, reason: str,
                        requested_by: str | None = None) -> Request:
        """Postpone an open forget's due date, with a reason; the change is audited.

        GDPR art. 12(3) allows up to two further months for complex requests,
        provided the subject is told why within the first month.
        """
        req = self.status(request_id)
        request_id = req.id
        validation.name(reason, "reason")
        requested_by = validation.optional_text(requested_by, "requested_by", 200)
        if req.kind != RequestKind.FORGET:
            raise InvalidRequest(f"request {request_id} is a {req.kind} request; only forgets have deadlines")
        if req.done:
            raise RequestNotCancellable(f"request {request_id} is already {req.status}; its deadline is moot")
        if not isinstance(until, dt.datetime) or until.tzinfo is None:
            raise InvalidRequest("until must be a timezone-aware datetime")
        if until <= req.due_at:
            raise InvalidRequest(f"until {until.isoformat()} is not later than the current due date "
                                 f"{req.due_at.isoformat()}; deadlines are only extended")
        extended = self.ledger.extend_deadline(request_id, until, reason, requested_by)
        if extended is None:
            raise RequestNotCancellable(f"request {request_id} finished while its deadline was being extended")
        return extended

    def redact(self, request_id: str, *, fields: tuple[str, ...] = ("reason",), why: str,
               requested_by: str | None = None) -> Request:
        """Erase free text (``reason``, ``requested_by``) from a request, e.g. a
        name someone typed into a reason. Audited; the audit chain still verifies."""
        request_id = self.status(request_id).id
        validation.name(why, "why")
        requested_by = validation.optional_text(requested_by, "requested_by", 200)
        return self.ledger.redact(request_id, validation.redactable(fields), why, requested_by)

    # ---- following requests ------------------------------------------------

    def status(self, request_id: str) -> Request:
        """A request by its id, or by a unique prefix of it (at least 4 characters), as git takes commits."""
        if not isinstance(request_id, str):
            raise InvalidRequest(f"request id must be a string, not {type(request_id).__name__}")
        try:
            uuid.UUID(request_id)
        except ValueError:
            if len(request_id) < 4 or any(c not in "0123456789abcdef-" for c in request_id.lower()):
                raise UnknownRequest(f"no request with id {request_id!r} (request ids are UUIDs, or a unique "
                                     "prefix of one of at least 4 characters)") from None
            matches = self.ledger.request_ids_starting(request_id.lower(), limit=2)
            if len(matches) > 1:
                raise UnknownRequest(f"{request_id!r} is the start of several request ids; give more of it")
            if not matches:
                raise UnknownRequest(f"no request id starts with {request_id!r}")
            request_id = matches[0]
        found = self.ledger.request(request_id)
        if found is None:
            raise UnknownRequest(f"no request with id {request_id!r}")
        return found

    def wait(self, request_id: str, timeout: float | None = None, poll: float = 0.2) -> Request:
        """Block until the request is applied, failed, rejected or cancelled."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            req = self.status(request_id)
            if req.done:
                return req
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"request {request_id} is still {req.status} after {timeout} s")
            time.sleep(poll)

    def requests(self, model: str | None = None, statuses: list[str] | None = None) -> list[Request]:
        model_id = None if model is None else self.model(model).id
        return self.ledger.requests(model_id, statuses)

    def drain(self, model: str | None = None, max_steps: int | None = None,
              sweep_grace_seconds: float = SWEEP_GRACE_SECONDS) -> list[Request]:
        """Apply queued requests in this process until none is left; return them.

        Finishes what the service would: re-queues requests whose lease
        expired, completes purges a crash interrupted, and sweeps artifacts
        nothing references (older than ``sweep_grace_seconds``).
        """
        model_id = None if model is None else self.model(model).id
        worker = self.worker()
        worker.maintain()
        done = worker.drain(model_id, max_steps=max_steps)
        self.sweep(sweep_grace_seconds)
        return done

    def worker(self, **settings: Any) -> Worker:
        """A worker on this ledger, vault and signer (``settings``: see ``Worker``)."""
        return Worker(self.ledger, self.vault, self.signer, **settings)

    def sweep(self, grace_seconds: float = SWEEP_GRACE_SECONDS) -> list[str]:
        """Erase stored artifacts and keys that nothing in the ledger references
        (left by a crash), older than ``grace_seconds``, and staged files a crash
        cut short, untouched for as long; returns the artifacts' digests."""
        return purge.sweep(self.ledger, self.vault, grace_seconds)

    def repair(self, model: str, *, requested_by: str | None = None) -> Request:
        """Check every stored file the model needs and queue the repair that
        brings it back: a state rebuilt from the retained data (exact strategies;
        rows of unreadable data files are then lost, and tombstoned), unreadable
        probe sets dropped, the quarantine lifted. The repair is applied ahead
        of the model's queue. Raises ``NotRepairable`` naming what to restore
        (or the last good version) when the strategy cannot be rebuilt."""
        m = self.model(model)
        requested_by = validation.optional_text(requested_by, "requested_by", 200)
        if (open_id := self.ledger.open_repair(m.id)) is not None:
            return self.status(open_id)
        latest = self.ledger.latest_version(m.id)
        state_ok = latest is None or _readable(lambda: self.vault.blob(latest.artifact_digest))
        bad_probes = sorted(t.name for t in self.ledger.tasks(m.id)
                            if t.probe_digest and not _readable(lambda: self.vault.rows(t.probe_digest)))
        bad_files = sorted(d for d in self.ledger.data_files(m.id)
                           if not (_readable(lambda: self.vault.artifacts.get(d)) and self.vault.keys.exists(d)))
        rebuild = not state_ok or bool(bad_files)
        if rebuild and strategies.get(m.strategy).tags.exactness != "exact":
            good = next((v.version for v in reversed(self.ledger.versions(m.id))
                         if not v.state_purged and _readable(lambda: self.vault.blob(v.artifact_digest))), None)
            what = [f"its state (version {latest.version})"] if not state_ok else []
            what += [f"data file {d}" for d in bad_files]
            raise NotRepairable(
                f"model {m.name!r} uses {m.strategy!r}, which cannot be rebuilt from stored data; unreadable: "
                f"{', '.join(what)}. Restore those files from a backup of the artifact folder (the key folder still "
                f"opens them) and run lifecycle repair again; the last version whose state opens is "
                f"{good if good is not None else 'none'}.")
        if not rebuild and not bad_probes and m.quarantine is None:
            raise InvalidRequest(f"model {m.name!r} is not quarantined and every stored file it needs opens: "
                                 "nothing to repair")
        target = {"rebuild": rebuild, "drop_probes": bad_probes, "lost_files": bad_files}
        why = "; ".join(filter(None, [
            "state unreadable" if not state_ok else "",
            f"{len(bad_files)} data file(s) unreadable" if bad_files else "",
            f"probe set(s) of {', '.join(bad_probes)} unreadable" if bad_probes else "",
            "quarantine lifted" if m.quarantine is not None else ""]))
        return self.ledger.submit_repair(m.id, target, requested_by, why)

    def sample_digest(self, sample_id: str) -> str:
        """The keyed digest that stands for ``sample_id`` in the ledger and in certificates."""
        return self.ids.sample(validation.name(sample_id, "sample id"))

    def subject_digest(self, model: str, subject: str) -> str:
        """The keyed digest that stands for ``subject`` in ``model``'s ledger rows and certificates."""
        return self._subject_digests(self.model(model), [validation.name(subject, "subject")])[0]

    # ---- reading results ---------------------------------------------------

    def history(self, model: str) -> list[Step]:
        m = self.model(model)
        by_version: dict[int, list[Evaluation]] = {}
        for ev in self.ledger.evaluations(m.id):
            by_version.setdefault(ev.version, []).append(ev)
        return [
            Step(r, r.result_version, tuple(by_version.get(r.result_version, ())))
            for r in self.ledger.requests(m.id)
        ]

    def versions(self, model: str) -> list[ModelVersion]:
        return self.ledger.versions(self.model(model).id)

    def relapse(self, model: str) -> list[RelapseFinding]:
        return self.ledger.findings(self.model(model).id)

    def certificate(self, request_id: str) -> dict[str, Any]:
        """The signed receipt of an applied forget: ``{"certificate": ..., "signature": ...}``."""
        req = self.status(request_id)
        cert = self.ledger.certificate(req.id)
        if cert is None:
            raise NotReady(f"request {request_id} is a {req.kind} request in state {req.status}; certificates "
                           "exist for applied forget requests only")
        return cert

    def events(self, model: str):
        return self.ledger.events(self.model(model).id)

    @staticmethod
    def _inputs(m: Model, X: Any, what: str = "X") -> np.ndarray:
        """A model's inputs as submitted (learn rows, probe sets, predict), checked: the one place their shape is known.

        With an encoder they are raw inputs of its input shape, returned as
        flattened float32 rows (how they are stored; the shape comes back
        from the model's ``input_shape`` when they are encoded).
        """
        if m.encoder is not None:
            from lifecycle import encoders

            return encoders.check_inputs(X, m.encoder, what)
        return validation.features(X, m.n_features, what)

    def predict(self, model: str, X: Any, task: str | None = None) -> np.ndarray:
        """Predicted labels of ``X`` (raw inputs of the encoder's input shape when the model has one)."""
        m = self.model(model)
        Xa = self._inputs(m, X)
        version = self.ledger.latest_version(m.id)
        if version is None:
            raise NotReady(f"model {m.name!r} has no applied version yet; drain the queue or start the service")
        spec = strategies.get(m.strategy)
        if spec.tags.needs_task_id:
            if task is None:
                raise InvalidRequest(f"strategy {m.strategy!r} needs task= at inference")
            if self.ledger.task(m.id, validation.name(task, "task")) is None:
                raise UnknownTask(f"model {m.name!r} has no task {task!r}")
        try:
            strategy = load_strategy(self.vault, m, version)
        except EncoderMismatch:
            raise
        except (ArtifactCorrupt, ArtifactMissing) as exc:
            raise StorageFault(f"model {m.name!r} cannot be loaded: {exc}. Restore the file from a backup of the "
                               f"artifact folder, or run: lifecycle repair {m.name}") from None
        return strategy.predict(Xa, task=task)

    # ---- helpers -------------------------------------------------------------

    def _by_key(self, m: Model, key: str, sha: str) -> Request | None:
        found = self.ledger.request_by_key(m.id, key)
        if found is None:
            return None
        request, prior_sha = found
        if prior_sha != sha:
            raise IdempotencyConflict(
                f"idempotency key {key!r} was used for request {request.id} with a different payload"
            )
        return request

    def _seal(self, written: list[str], X: np.ndarray, y: np.ndarray, aad: list[str] | None = None) -> str:
        digest = self.vault.put_rows(X, y, aad)
        written.append(digest)
        return digest

    def _discard(self, written: list[str]) -> None:
        purge.discard(self.ledger, self.vault, written)

    def _subject_digests(self, m: Model, subjects: list[str | None]) -> list[str | None]:
        salt = self.ledger.subject_salt(m.id) if any(s is not None for s in subjects) else None
        if salt is None:
            return [None if s is None else self.ids.subject(s) for s in subjects]
        # a model from before keyed identifiers keeps its subjects' old digests, now keyed (migration 0006)
        return [None if s is None else self.ids.legacy_subject(hashlib.sha256(f"{salt}:{s}".encode()).hexdigest())
                for s in subjects]


    # ---- a person's erasure, across every model (see lifecycle.erasure) --------

    def erase(self, *, subject: str, reason: str | None = None, requested_by: str | None = None,
              idempotency_key: str | None = None, due_days: float = 30.0,
              status_callback_urls: Sequence[str] | None = None, token_id: str | None = None):
        """Erase a person from every model: one forget of the subject per model
        that holds their samples (joining one already queued), and a record,
        for every other model, that it holds none. Returns the erasure
        (``lifecycle.store.erasures.Erasure``): its person-level status is
        completed once every forget is applied and certified. Due in
        ``due_days`` (GDPR: a month); the forgets share its due date. A repeat
        with the same ``idempotency_key`` returns the first erasure. Raises
        ``UnsupportedForgetUnit`` (nothing queued) when a model that forgets
        whole tasks only holds the subject's samples."""
        return erasure.erase(self, subject=subject, reason=reason, requested_by=requested_by,
                             idempotency_key=idempotency_key, due_days=due_days,
                             status_callback_urls=status_callback_urls, token_id=token_id)[0]

    def erasure(self, erasure_id: str):
        """An erasure by its id (or a unique prefix), its status brought up to date."""
        return erasure.erasure(self, erasure_id)

    def erasures(self, statuses: list[str] | None = None) -> list:
        """Erasures, oldest first (statuses: pending, in_progress, completed, failed, cancelled)."""
        return erasure.erasures(self, statuses)

    def redact_erasure(self, erasure_id: str, *, fields: tuple[str, ...] = ("reason",), why: str,
                       requested_by: str | None = None):
        """Erase free text (``reason``, ``requested_by``) from an erasure and the forgets it queued. Audited."""
        return erasure.redact(self, erasure_id, fields, why, requested_by)

    def cancel_erasure(self, erasure_id: str):
        """Cancel a pending erasure and the forgets it queued; ``RequestNotCancellable`` once one started."""
        return erasure.cancel(self, erasure_id)

    def create_token(self, name: str, *, scopes: Sequence[str], created_by: str | None = None):
        """A new HTTP API token: ``(ApiToken, secret)``. The secret is shown once; the ledger keeps its SHA-256."""
        return erasure.create_token(self, name, scopes, created_by)

    def revoke_token(self, token_id: str):
        return erasure.revoke_token(self, token_id)

    def tokens(self) -> list:
        from lifecycle.store.tokens import Tokens
        return Tokens(self.ledger).list()

    def authenticate(self, token: str):
        """The API token a secret stands for (revoked ones too), or None."""
        from lifecycle.store.tokens import Tokens
        return Tokens(self.ledger).find(token) if isinstance(token, str) and token else None


def _readable(read) -> bool:
    try:
        read()
        return True
    except (ArtifactCorrupt, ArtifactMissing):
        return False


def _encoder_config_fits(strategy: str, cfg: Any) -> None:
    """With an encoder, the encoder is the pretrained base: a strategy's own pretrained base (on raw
    pixels) or an image-shaped target net would be applied to features, which means nothing."""
    base = getattr(cfg, "base", "random")
    if base != "random":
        raise InvalidConfig(f"strategy {strategy!r} with an encoder: config base must be 'random', not {base!r} (the "
                            "encoder is the pretrained base; a base pretrained on raw pixels cannot read its features)")
    target = getattr(cfg, "target_net", "mlp")
    if target != "mlp":
        raise InvalidConfig(f"strategy {strategy!r} with an encoder: config target_net must be 'mlp', not {target!r} "
                            "(the hypernetwork generates a head on the encoder's features, which are not an image)")


def sample_level_strategies() -> list[str]:
    return [n for n in strategies.names() if strategies.get(n).tags.forget_unit == "sample"]


# ---- big learns: rows given whole, batches, the request digest a field at a time ----

_CHECK_ROWS = 50_000  # digests checked against the ledger (and hashed) at a time


@dataclass(frozen=True)
class _StagedLearn:
    """A learn whose data file is stored and whose ledger rows are ready (columns in data-file order)."""

    payload: str
    sha: str
    digests: np.ndarray  # (rows, 32) uint8: keyed sample-id digests, raw (half the bytes of hex)
    labels: np.ndarray  # int64
    subjects: np.ndarray | None  # S64 hex, b"" for none; None when no row has a subject
    contents: np.ndarray  # (rows, 32) uint8: keyed content digests, raw


class _RowSource:
    """The rows of a learn given whole: an array-like, sliced, or a .npy path, read a slice at a time.
    ``n`` is None for an input whose length only its check can tell (it is then read in one piece)."""

    def __init__(self, X: Any) -> None:
        self.X, self.npy, self.n = X, None, None
        if validation.is_path(X):
            self.npy = validation.NpyRows(X, "X")
            self.n = len(self.npy) if self.npy.shape else None
        elif (isinstance(X, np.ndarray) and X.ndim >= 1) or (isinstance(X, Sequence) and not isinstance(X, str)):
            self.n = len(X)

    def chunks(self, rows: int):
        """``(start, stop, raw rows)``; the whole input in one piece when it fits in one."""
        if self.n is None or self.n <= rows:
            yield 0, self.n, (self.npy.whole() if self.npy is not None else self.X)
            return
        for start in range(0, self.n, rows):
            stop = min(self.n, start + rows)
            yield start, stop, (self.npy.read(start, stop) if self.npy is not None else self.X[start:stop])

    def close(self) -> None:
        if self.npy is not None:
            self.npy.close()


def _batch_slices(X: Any, y: Any, ids: Any, subjects: Any, rows: int):
    """A batch as ``(start, stop, X, y, ids, subjects)`` pieces of at most ``rows`` rows (start None: whole)."""
    sliceable = [v for v in (X, y, ids, subjects) if v is not None]
    n = len(X) if hasattr(X, "__len__") and not isinstance(X, (str, bytes)) else None
    if n == 0:
        return
    if n is None or n <= rows or not all(isinstance(v, (np.ndarray, Sequence)) for v in sliceable):
        yield None, None, X, y, ids, subjects
        return
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        yield (start, stop, X[start:stop], y[start:stop], None if ids is None else ids[start:stop],
               None if subjects is None else subjects[start:stop])


def _digest_array(n: int, digests) -> np.ndarray:
    """An S64 column of ``digests(start, stop)`` (hex digests, None stored as b"")."""
    out = np.empty(n, "S64")
    for start in range(0, n, _CHECK_ROWS):
        stop = min(n, start + _CHECK_ROWS)
        out[start:stop] = [d or "" for d in digests(start, stop)]
    return out


def _raw_column(n: int, digests) -> np.ndarray:
    """A (n, 32) uint8 column of the hex digests ``digests(start, stop)`` gives, raw."""
    out = np.empty((n, 32), np.uint8)
    for start in range(0, n, _CHECK_ROWS):
        stop = min(n, start + _CHECK_ROWS)
        out[start:stop] = _raw_digests(digests(start, stop))
    return out


def _raw_digests(hex_digests: list[str]) -> np.ndarray:
    return np.frombuffer(bytes.fromhex("".join(hex_digests)), np.uint8).reshape(-1, 32)


def _hex(column: np.ndarray, start: int, stop: int) -> list[bytes]:
    """Rows of a raw digest column as hex (ASCII bytes)."""
    return np.frombuffer(binascii.hexlify(column[start:stop].tobytes()), "S64").tolist()


def _strs(column: np.ndarray, start: int, stop: int) -> list[str]:
    return [v.decode() for v in _hex(column, start, stop)]


class _PayloadSha:
    """The request digest ``_sha`` gives a learn, fed a field at a time (fields in sorted order:
    X, ids, kind, probe, subjects, task, y), so that no field is ever held as one ``bytes``."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def field(self, name: str) -> None:
        self._h.update(name.encode() + b"\0")

    def end(self) -> None:
        self._h.update(b"\1")

    def update(self, data: Any) -> None:
        self._h.update(data)

    def json(self, value: Any) -> None:
        self._h.update(json.dumps(value, sort_keys=True).encode())

    def json_digests(self, column: np.ndarray | None, n: int | None = None) -> None:
        """``json.dumps`` of a list of hex digests (a raw column, or an S64 one where b"" stands for
        None); None with ``n``: n nulls, None alone: ``null``."""
        if column is None and n is None:
            self.json(None)
            return
        total = len(column) if column is not None else n
        self._h.update(b"[")
        for start in range(0, total, _CHECK_ROWS):
            stop = min(total, start + _CHECK_ROWS)
            values = None if column is None else \
                _hex(column, start, stop) if column.ndim == 2 else column[start:stop].tolist()
            items = [b"null"] * (stop - start) if values is None else \
                [b'"' + v + b'"' if v else b"null" for v in values]
            self._h.update((b", " if start else b"") + b", ".join(items))
        self._h.update(b"]")

    def rest(self, task: str, probe_arrays: tuple[np.ndarray, np.ndarray] | None, subjects, labels) -> None:
        """The fields after ids; ``subjects`` and ``labels`` are callables that feed their own content."""
        self.field("kind")
        self.json(RequestKind.LEARN)
        self.end()
        self.field("probe")
        if probe_arrays is None:
            self.json(None)
        else:
            for a in probe_arrays:
                self._h.update(f"{a.dtype.str}{a.shape}".encode() + a.tobytes())
        self.end()
        self.field("subjects")
        subjects()
        self.end()
        self.field("task")
        self.json(task)
        self.end()
        self.field("y")
        labels()
        self.end()

    def hexdigest(self) -> str:
        return self._h.hexdigest()
