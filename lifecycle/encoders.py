"""Bring your own encoder: a frozen feature extractor in front of a model's strategy.

A model created with ``encoder=`` takes raw inputs of the encoder's input
shape (images N x C x H x W, token-id arrays N x L). The strategy never sees
them: it is built on the encoder's output size, and the adapter in
``lifecycle.loading`` encodes every input before it reaches the strategy.

Three ways to hand one over, all files (nothing is downloaded):

- a TorchScript file (``torch.jit.save``);
- a ``torch.export`` program (``torch.export.save``); with a static batch
  dimension it is fed batches of exactly that size;
- an importable factory ``"package.module:build"`` that returns an
  ``nn.Module``, plus a weights file (``torch.save(module.state_dict())``),
  loaded with ``weights_only=True``.

The file (for a factory: the weights) is stored in the artifact store in
clear, under its sha256, which is therefore the sha256 of the user's own file
and can be checked against a certificate by anyone who has it. It is not
encrypted because no erasure can ever touch it: the encoder is outside the
deletion scope (the user declares what it was trained on, and it never
trains on what the ledger learns), so a per-file key would protect nothing
that crypto-shredding could later destroy. Loading checks the digest, and a
factory's output on fixed inputs (its code is not in the file).

Encoding runs under ``torch.no_grad`` in eval mode, in batches of exactly
``batch_size`` rows (the last one padded with zeros): a sample's features are
then the same bits whichever samples it is batched with, so what ``analytic``
subtracts at a forget is what it added at the learn. A module whose output for
one input depends on the others of its batch (BatchNorm in training mode,
dropout) is refused when it is registered.

This module imports torch only inside the functions that need it: submit-time
checks (``check_inputs``) stay free of it.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import logging
import math
import os
import re
import warnings
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from lifecycle import validation
from lifecycle.errors import EncoderMismatch, InvalidEncoder, InvalidRequest
from lifecycle.store.records import Encoder

log = logging.getLogger("lifecycle.encoders")

KINDS = ("torchscript", "export", "factory")
INPUT_DTYPES = ("float32", "int64")
DEFAULT_BATCH = 128
# token ids ride in float32 rows: exact below 2**24
MAX_TOKEN_ID = 1 << 24
FINGERPRINT_INPUTS = 2
FINGERPRINT_FEATURES = 16
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


# ---- submit-time checks (no torch) --------------------------------------------------------


def check_inputs(X: object, encoder: Encoder, what: str = "X") -> np.ndarray:
    """Raw inputs of ``encoder``'s shape, checked like features are, as flattened float32 rows
    (how they are stored); raises ``InvalidRequest`` naming the problem."""
    shape = tuple(encoder.input_shape)
    want = f"(n, {', '.join(str(s) for s in shape)})"
    arr = validation.numeric_batch(X, what, f"numeric array of shape {want}")
    if arr.ndim != 1 + len(shape) or tuple(arr.shape[1:]) != shape:
        raise InvalidRequest(f"{what} must have shape {want}: one input of the encoder's input shape "
                             f"{shape} per sample; got shape {arr.shape}")
    rows = arr.reshape(arr.shape[0], -1)
    if encoder.input_dtype == "int64":
        if arr.dtype.kind not in "iu":
            raise InvalidRequest(f"{what} must hold integer token ids for this encoder; got dtype {arr.dtype}")
        bad = (rows < 0) | (rows >= MAX_TOKEN_ID)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise InvalidRequest(f"{what} holds token ids outside 0..{MAX_TOKEN_ID - 1} (first in row {row})")
        return rows.astype(np.float32)
    return validation.finite_float32(rows, what)


def check_device(device: object) -> str:
    """``device`` as given, when it names a device this machine has (CUDA only where present)."""
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise InvalidRequest(f"device must be 'cpu', 'cuda' or 'cuda:N', not {device!r}")
    if device != "cpu":
        import torch

        if not torch.cuda.is_available():
            raise InvalidRequest(f"device {device!r}: this machine has no CUDA device (torch.cuda.is_available() "
                                 "is False); use device='cpu'")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise InvalidRequest(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def check_shape(input_shape: object) -> tuple[int, ...]:
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, (tuple, list)) or not input_shape:
        raise InvalidRequest(f"input_shape must be a tuple of positive integers (one input, without the batch "
                             f"dimension, e.g. (1, 28, 28)), not {input_shape!r}")
    if len(input_shape) > 5 or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and 1 <= s
                                       for s in input_shape):
        raise InvalidRequest(f"input_shape must hold 1 to 5 positive integers, not {input_shape!r}")
    shape = tuple(int(s) for s in input_shape)
    if math.prod(shape) > 10_000_000:
        raise InvalidRequest(f"input_shape {shape} has {math.prod(shape)} numbers per input; the limit is 10,000,000")
    return shape


# ---- registration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """An encoder checked and ready to store: the bytes to file and what the ledger records."""

    data: bytes
    record: Encoder


def prepare(source: str | os.PathLike, *, input_shape: tuple[int, ...], trained_on: str,
            weights: str | os.PathLike | None = None, input_dtype: str = "float32",
            batch_size: int | None = None, device: str = "cpu", expected_sha256: str | None = None) -> Prepared:
    """Read, load and try an encoder; raises ``InvalidEncoder`` naming what is wrong with it.

    ``source`` is a TorchScript or ``torch.export`` file, or a factory
    ``"package.module:callable"`` (then ``weights`` is its state-dict file).
    ``expected_sha256``: refuse the file unless this is its sha256.
    """
    if input_dtype not in INPUT_DTYPES:
        raise InvalidRequest(f"input_dtype must be one of {', '.join(INPUT_DTYPES)}, not {input_dtype!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or not 1 <= batch_size <= 65536):
        raise InvalidRequest(f"encoder_batch must be an integer in 1..65536, not {batch_size!r}")
    factory = None
    if isinstance(source, str) and _FACTORY.match(source) and not Path(source).exists():
        if weights is None:
            raise InvalidEncoder(f"encoder {source!r} names a factory: pass its weights file as encoder_weights= "
                                 "(torch.save(module.state_dict(), path))")
        kind, factory, data = "factory", source, _read(weights, "encoder_weights")
    elif isinstance(source, (str, os.PathLike)):
        if weights is not None:
            raise InvalidEncoder("encoder_weights= goes with a factory (encoder='package.module:build'); a "
                                 "TorchScript or torch.export file carries its own weights")
        data = _read(source, "encoder")
        kind = _kind_of(data, source)
    else:
        raise InvalidEncoder(f"encoder must be a path to a TorchScript or torch.export file, or a factory "
                             f"'package.module:build', not {type(source).__name__}")
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and expected_sha256.lower() != digest:
        raise InvalidEncoder(f"the {'weights' if factory else 'encoder'} file's sha256 is {digest}, not the "
                             f"{expected_sha256} declared: it was changed; refused")
    draft = Encoder(digest=digest, kind=kind, input_shape=tuple(input_shape), out_features=0,
                    trained_on=trained_on, input_dtype=input_dtype, factory=factory,
                    batch_size=batch_size or DEFAULT_BATCH)
    module, static_batch = _load_module(draft, data, device)
    if static_batch is not None:
        if batch_size is not None and batch_size != static_batch:
            raise InvalidEncoder(f"the torch.export program takes batches of exactly {static_batch} inputs (a static "
                                 f"batch dimension), not encoder_batch={batch_size}; leave encoder_batch out, or "
                                 "export with a dynamic batch (dynamic_shapes={0: torch.export.Dim('batch')})")
        draft = _with(draft, batch_size=static_batch)
    encoder = Runtime(module, draft, device)
    probe = _fingerprint_inputs(draft)
    try:
        first = encoder.features(probe, check=False)
    except Exception as exc:
        raise InvalidEncoder(f"the encoder failed on inputs of shape (n, {', '.join(map(str, draft.input_shape))}) "
                             f"and dtype {input_dtype}: {type(exc).__name__}: {_first_line(exc)}") from None
    if first.ndim != 2 or first.shape[1] < 1:
        raise InvalidEncoder(f"the encoder must return one feature vector per input; it returned shape {first.shape}")
    if not np.isfinite(first).all():
        raise InvalidEncoder("the encoder returned NaN or infinite features on ordinary inputs")
    # the same inputs batched with others must give the same bits
    companions = np.concatenate([np.flip(probe, 0), probe, _fingerprint_inputs(draft, seed=1)])
    again = encoder.features(companions, check=False)[FINGERPRINT_INPUTS:2 * FINGERPRINT_INPUTS]
    if not np.array_equal(again, first):
        if np.allclose(again, first, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(first).max()))):
            log.warning("the encoder's features of one input vary at float rounding with the inputs batched with "
                        "it (this device's kernels): a forget then matches a retrain to that rounding only")
        else:
            raise InvalidEncoder("the encoder's output for one input depends on the other inputs of its batch (BatchNorm "
                                 "in training mode? dropout? call .eval() before saving it): features must be a "
                                 "fixed function of each input, or forgetting cannot subtract what learning added")
    record = _with(draft, out_features=int(first.shape[1]),
                   fingerprint=tuple(_round(v) for v in first[:, :FINGERPRINT_FEATURES].ravel()))
    return Prepared(data, record)


def _read(path: str | os.PathLike, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise InvalidEncoder(f"{what}: no file {os.fspath(path)!r}") from None
    except (IsADirectoryError, PermissionError, OSError) as exc:
        raise InvalidEncoder(f"{what}: cannot read {os.fspath(path)!r}: {exc.strerror or exc}") from None


def _kind_of(data: bytes, source) -> str:
    try:
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    except zipfile.BadZipFile:
        names = []
    if any(n == "archive_format" or n.endswith("/archive_format") for n in names):
        return "export"
    if any(n.endswith("constants.pkl") for n in names) and any("/code/" in n or n.startswith("code/") for n in names):
        return "torchscript"
    raise InvalidEncoder(f"encoder {os.fspath(source)!r} is neither a TorchScript file (torch.jit.save) nor a "
                         "torch.export program (torch.export.save); for a module built by your own code pass "
                         "encoder='package.module:build' and encoder_weights=")


def _fingerprint_inputs(record: Encoder, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (FINGERPRINT_INPUTS, math.prod(record.input_shape))
    if record.input_dtype == "int64":
        return rng.integers(0, 2, shape).astype(np.float32)
    return rng.random(shape, dtype=np.float32)


def _round(v: float) -> float:
    return float(f"{float(v):.6g}")


def _with(record: Encoder, **changes: Any) -> Encoder:
    return replace(record, **changes)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""


# ---- loading -------------------------------------------------------------------------------


def load(record: Encoder, data: bytes, device: str = "cpu", model: str = "") -> Runtime:
    """The encoder ``record`` describes, from its stored bytes: refused (``EncoderMismatch``)
    unless they are the bytes it recorded and, for a factory, it still computes what it did."""
    who = f"model {model!r}'s encoder" if model else "the encoder"
    found = hashlib.sha256(data).hexdigest()
    if found != record.digest:
        raise EncoderMismatch(f"{who} file has sha256 {found}, not the {record.digest} the ledger recorded: it was "
                              "changed, and is refused")
    device = _usable_device(device)
    try:
        module, _ = _load_module(record, data, device)
    except InvalidEncoder as exc:
        raise EncoderMismatch(f"{who} no longer loads: {exc}") from None
    encoder = Runtime(module, record, device)
    if record.kind == "factory" and record.fingerprint:
        now = encoder.features(_fingerprint_inputs(record), check=False)[:, :FINGERPRINT_FEATURES].ravel()
        then = np.asarray(record.fingerprint, dtype=np.float64)
        scale = max(1.0, float(np.abs(then).max()))
        if now.shape != then.shape or not np.allclose(now, then, rtol=1e-3, atol=1e-4 * scale):
            raise EncoderMismatch(f"{who}: factory {record.factory!r} with the recorded weights no longer computes "
                                  "the features it computed when the model was created (its code changed); refused")
    return encoder


def _usable_device(device: str) -> str:
    if device == "cpu":
        return device
    import torch

    if torch.cuda.is_available():
        return device
    log.warning("the encoder's device is %s but this machine has no CUDA device: it runs on the CPU", device)
    return "cpu"


def _load_module(record: Encoder, data: bytes, device: str):
    """(callable module, static batch size of an export program or None); InvalidEncoder when it will not load."""
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
            if record.kind == "torchscript":
                module = torch.jit.load(io.BytesIO(data), map_location=device)
                module.eval()
                return module, None
            if record.kind == "export":
                program = torch.export.load(io.BytesIO(data))
                static = _static_batch(program)
                if device != "cpu":
                    from torch.export.passes import move_to_device_pass

                    program = move_to_device_pass(program, device)
                # an exported program is in the mode it was exported in (it refuses .eval())
                return program.module(), static
            if record.kind == "factory":
                return _from_factory(record.factory, data, device), None
    except InvalidEncoder:
        raise
    except Exception as exc:
        raise InvalidEncoder(f"the {record.kind} encoder does not load: {type(exc).__name__}: "
                             f"{_first_line(exc)}") from None
    raise InvalidEncoder(f"unknown encoder kind {record.kind!r}; known: {', '.join(KINDS)}")


def _static_batch(program) -> int | None:
    import torch

    user = [s.arg.name for s in program.graph_signature.input_specs
            if s.kind == torch.export.graph_signature.InputKind.USER_INPUT]
    if len(user) != 1:
        raise InvalidEncoder(f"the torch.export program takes {len(user)} inputs; an encoder takes one tensor")
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == user[0])
    val = node.meta.get("val")
    first = val.shape[0] if val is not None and len(val.shape) else None
    return int(first) if isinstance(first, int) else None


def _from_factory(factory: str, weights: bytes, device: str):
    import torch

    module_name, _, attr = factory.partition(":")
    try:
        target = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise InvalidEncoder(f"factory {factory!r} cannot be imported: {type(exc).__name__}: {exc}") from None
    if not callable(target):
        raise InvalidEncoder(f"factory {factory!r} is not callable")
    module = target()
    if not isinstance(module, torch.nn.Module):
        raise InvalidEncoder(f"factory {factory!r} returned a {type(module).__name__}, not a torch.nn.Module")
    try:
        state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InvalidEncoder(f"the weights file does not open as a state dict (torch.load with weights_only=True): "
                             f"{type(exc).__name__}: {_first_line(exc)}") from None
    if not isinstance(state, dict):
        raise InvalidEncoder(f"the weights file holds a {type(state).__name__}, not a state dict "
                             "(save it with torch.save(module.state_dict(), path))")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InvalidEncoder(f"the weights do not fit the module factory {factory!r} builds: "
                             f"{_first_line(exc)}") from None
    module.requires_grad_(False)
    return module.to(device).eval()


class Runtime:
    """A loaded encoder: ``features(rows)`` turns flattened input rows into (n, out_features) float32."""

    def __init__(self, module, record: Encoder, device: str) -> None:
        self.module = module
        self.record = record
        self.device = device

    @property
    def out_features(self) -> int:
        return self.record.out_features

    def features(self, rows: np.ndarray, check: bool = True) -> np.ndarray:
        """Encode ``rows`` (n, prod(input_shape)) in batches of exactly ``batch_size`` (the last padded)."""
        import torch

        rec, n = self.record, len(rows)
        size = rec.batch_size
        dtype = torch.int64 if rec.input_dtype == "int64" else torch.float32
        parts: list[np.ndarray] = []
        with torch.no_grad():
            for start in range(0, n, size):
                chunk = np.asarray(rows[start:start + size], dtype=np.float32)
                m = len(chunk)
                if m < size:
                    chunk = np.concatenate([chunk, np.zeros((size - m, chunk.shape[1]), np.float32)])
                x = torch.from_numpy(np.ascontiguousarray(chunk)).reshape(size, *rec.input_shape).to(dtype)
                out = self.module(x.to(self.device))
                if not isinstance(out, torch.Tensor):
                    raise ValueError(f"the encoder returned a {type(out).__name__}, not one tensor")
                if out.shape[0] != size:
                    raise ValueError(f"the encoder returned {out.shape[0]} rows for a batch of {size}")
                parts.append(out.reshape(size, -1)[:m].to("cpu", torch.float32).numpy())
        if not parts:
            return np.zeros((0, rec.out_features), np.float32)
        feats = np.concatenate(parts)
        if check:
            if feats.shape[1] != rec.out_features:
                raise ValueError(f"the encoder returned {feats.shape[1]} features per input, not the "
                                 f"{rec.out_features} recorded")
            if not np.isfinite(feats).all():
                raise ValueError("the encoder returned NaN or infinite features")
        return feats
