"""Ed25519 signatures on deletion certificates.

The private key lives outside the ledger, in a file named by the
``signing_key`` argument of ``connect``, the ``LIFECYCLE_SIGNING_KEY``
environment variable, or ``$XDG_CONFIG_HOME/lifecycle/signing-key.pem``. It
is generated on first use. Verifying needs only the certificate file and the
public key, no ledger and no network.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from lifecycle import jcs
from lifecycle.errors import LifecycleError

log = logging.getLogger("lifecycle.signing")
ALGORITHM = "ed25519"


class InvalidCertificate(LifecycleError):
    """A certificate's signature does not verify, or the file is not a certificate."""


class SigningKeyError(LifecycleError):
    """The signing key is missing (where it must exist) or is not an Ed25519 private key."""


def default_key_path() -> Path:
    if os.environ.get("LIFECYCLE_SIGNING_KEY"):
        return Path(os.environ["LIFECYCLE_SIGNING_KEY"])
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "lifecycle" / "signing-key.pem"


CANONICALIZATION = "RFC8785"


def _legacy_canonical(body: dict[str, Any]) -> bytes:
    # what certificates were signed over before RFC 8785 (no "canonicalization" field)
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


class Signer:
    def __init__(self, key_path: str | os.PathLike | None = None) -> None:
        self.key_path = Path(key_path) if key_path else default_key_path()
        self._key: Ed25519PrivateKey | None = None

    def key(self, create: bool = True) -> Ed25519PrivateKey:
        """The private key; created on first use unless ``create`` is false."""
        if self._key is None:
            if not create and not self.key_path.exists():
                raise SigningKeyError(f"there is no signing key at {self.key_path}; the first command that signs a "
                                      "certificate (serve, or drain() through the API) creates it there")
            self._key = self._load_or_create()
        return self._key

    def _load_or_create(self) -> Ed25519PrivateKey:
        if self.key_path.exists():
            try:
                key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
            except (ValueError, TypeError) as exc:
                raise SigningKeyError(f"{self.key_path} is not a PEM private key without a password: {exc}") from None
            if not isinstance(key, Ed25519PrivateKey):
                raise SigningKeyError(f"{self.key_path} does not hold an Ed25519 private key")
            return key
        key = Ed25519PrivateKey.generate()
        self.key_path.parent.mkdir(parents=True, exist_ok=True)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        # O_EXCL: two workers starting at once must not each write a different key
        try:
            fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return self._load_or_create()
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        log.warning("generated a new certificate signing key at %s (key id %s); back it up, keep it out of the "
                    "ledger, and give verifiers its public key: lifecycle certificate public-key",
                    self.key_path, key_id(key.public_key()))
        return key

    def sign(self, body: dict[str, Any]) -> dict[str, Any]:
        """Sign the RFC 8785 canonical bytes of ``body``. The signed bytes ride
        along (``signed_body``, base64) so that openssl alone can check them."""
        key = self.key()
        signed = jcs.canonical(body)
        return {
            "certificate": body,
            "signature": {
                "algorithm": ALGORITHM,
                "canonicalization": CANONICALIZATION,
                "key_id": key_id(key.public_key()),
                "value": base64.b64encode(key.sign(signed)).decode(),
                "signed_body": base64.b64encode(signed).decode(),
            },
        }

    def public_pem(self, create: bool = True) -> bytes:
        return public_pem(self.key(create).public_key())


def loads(text: str | bytes) -> dict[str, Any]:
    """Read a certificate file strictly: duplicate keys or NaN make it invalid,
    since two JSON parsers could then show different contents."""
    try:
        signed = jcs.loads_strict(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCertificate(f"not a JSON certificate: {exc}") from None
    if not isinstance(signed, dict):
        raise InvalidCertificate("not a signed lifecycle certificate: the file is not a JSON object")
    return signed


def verify(signed: dict[str, Any], public_key_pem: bytes) -> dict[str, Any]:
    """Return the certificate body when the signature holds; raise otherwise.

    The signature is checked over the RFC 8785 form of the body as parsed, so
    any faithful re-serialisation of the file verifies; ``signed_body``, when
    present, must be those same bytes.
    """
    try:
        body, sig = signed["certificate"], signed["signature"]
        value = base64.b64decode(sig["value"], validate=True)
        if sig.get("canonicalization") == CANONICALIZATION:
            message = jcs.canonical(body)
            carried = base64.b64decode(sig["signed_body"], validate=True) if "signed_body" in sig else message
        elif "canonicalization" in sig:
            raise InvalidCertificate(f"unsupported canonicalization {sig['canonicalization']!r}")
        else:
            message = carried = _legacy_canonical(body)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidCertificate(f"not a signed lifecycle certificate: {exc}") from None
    if sig.get("algorithm") != ALGORITHM:
        raise InvalidCertificate(f"unsupported signature algorithm {sig.get('algorithm')!r}")
    try:
        public = serialization.load_pem_public_key(public_key_pem)
    except ValueError as exc:
        raise InvalidCertificate(f"not a PEM public key: {exc}") from None
    if not isinstance(public, Ed25519PublicKey):
        raise InvalidCertificate("the public key is not an Ed25519 key")
    if sig.get("key_id") != key_id(public):
        raise InvalidCertificate(f"signed by key {sig.get('key_id')}, but the public key given is {key_id(public)}")
    try:
        public.verify(value, message)
    except InvalidSignature:
        raise InvalidCertificate("the signature does not match the certificate: it was altered after signing") \
            from None
    if carried != message:
        raise InvalidCertificate("signed_body is not the certificate's canonical form: it was altered")
    return body


def check_anchor(body: dict[str, Any], ledger) -> None:
    """The certificate's audit anchor must be its own request's claim on the
    model's chain, and that chain intact: a chain rewritten after the
    certificate was signed no longer holds the anchored event."""
    anchor = body.get("audit_anchor") or {}
    link = ledger.chain_link(body.get("model"), anchor.get("seq"))
    if link is None or link.hash != anchor.get("hash"):
        raise InvalidCertificate(f"the certificate's audit anchor (seq {anchor.get('seq')}) is not on model "
                                 f"{body.get('model')!r}'s chain: the chain was rewritten or this is another ledger")
    if link.request_id != body["request"]["id"] or link.kind != "claimed":
        raise InvalidCertificate(f"the audit anchor is event {link.seq} ({link.kind}), not the claim of request "
                                 f"{body['request']['id']}")
    broken = [p for p in ledger.audit_problems()[1] if p.model == body.get("model")]
    if broken:
        raise InvalidCertificate(f"the anchor is on the chain, but the chain is broken: {broken[0]}")
