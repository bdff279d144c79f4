"""A person's erasure across every model, and the HTTP API's tokens: the
checks behind ``Lifecycle.erase``, ``erasure``, ``erasures``,
``cancel_erasure`` and the token methods (see ``lifecycle.store.erasures``
and ``lifecycle.store.tokens`` for what is stored)."""

from __future__ import annotations

import hashlib
import math
import uuid
from typing import Any, Protocol
from urllib.parse import urlsplit

from lifecycle import strategies, validation
from lifecycle.payloads import payload_sha
from lifecycle.errors import (
    IdempotencyConflict,
    InvalidRequest,
    RequestNotCancellable,
    UnknownRequest,
    UnsupportedForgetUnit,
)
from lifecycle.group_commit import GroupCommit
from lifecycle.store.erasures import Erasure, Erasures, KeyReused, NewErasure, Refused
from lifecycle.store.identity import IdKey
from lifecycle.store.ledger import Ledger
from lifecycle.store.records import RequestKind
from lifecycle.store.tokens import SCOPES, ApiToken, Tokens


class Lifecycle(Protocol):
    """What these functions use of ``lifecycle.api.Lifecycle`` (named here so erasure never imports api)."""

    ledger: Ledger
    ids: IdKey
    erasure_intake: GroupCommit[NewErasure, tuple[Erasure, bool]]


# GDPR art. 12(3): one month, extendable by two further months
DEFAULT_DUE_DAYS = 30.0
MAX_DUE_DAYS = 92.0
MAX_CALLBACKS = 10


def erase(lc: Lifecycle, *, subject: str, reason: str | None, requested_by: str | None,
          idempotency_key: str | None, due_days: float, status_callback_urls, token_id: str | None
          ) -> tuple[Erasure, bool]:
    validation.name(subject, "subject")
    reason = validation.optional_text(reason, "reason")
    requested_by = validation.optional_text(requested_by, "requested_by", 200)
    key = None if idempotency_key is None else validation.name(idempotency_key, "idempotency_key")
    if isinstance(due_days, bool) or not isinstance(due_days, (int, float)) or not math.isfinite(due_days) \
            or not 0 < due_days <= MAX_DUE_DAYS:
        raise InvalidRequest(f"due_days must be a number of days in (0, {MAX_DUE_DAYS:g}], not {due_days!r}")
    callbacks = callback_urls(status_callback_urls)
    erasure_hash = lc.ids.subject(subject)

    def subject_digest(salt: str | None) -> str:
        # a model from before keyed identifiers keeps its subjects' older digests (migration 0006)
        if salt is None:
            return erasure_hash
        return lc.ids.legacy_subject(hashlib.sha256(f"{salt}:{subject}".encode()).hexdigest())

    payload = payload_sha(kind="erasure", subject=erasure_hash, due_days=float(due_days), callbacks=callbacks)
    try:
        return lc.erasure_intake.submit(NewErasure(
            subject_digest=subject_digest, erasure_hash=erasure_hash, payload_sha=payload, due_days=float(due_days),
            requested_by=requested_by, reason=reason, token_id=token_id, idempotency_key=key,
            callbacks=tuple(callbacks)))
    except Refused as exc:
        raise UnsupportedForgetUnit(
            f"model(s) {', '.join(exc.models)} hold this subject's samples but forget whole tasks only; an "
            "erasure of one person cannot be honoured there exactly and is not approximated. Nothing was queued: "
            "forget the tasks holding the subject's data on those models, then submit the erasure again.") from None
    except KeyReused as exc:
        raise IdempotencyConflict(f"idempotency key {key!r} was used for erasure {exc.erasure_id} with another "
                                  "subject or settings") from None


def intake(ledger: Ledger) -> GroupCommit[NewErasure, tuple[Erasure, bool]]:
    """Where a ``Lifecycle``'s erasures are submitted: the concurrent ones share a transaction."""
    return GroupCommit(lambda items: Erasures(ledger).submit_many(
        items, forget_sha=lambda target: payload_sha(kind=RequestKind.FORGET, target=target),
        forgets_tasks_only=_forgets_tasks_only))


def _forgets_tasks_only(strategy: str) -> bool:
    return strategies.get(strategy).tags.forget_unit == "task"


def callback_urls(urls: Any) -> list[str]:
    if urls is None:
        return []
    if isinstance(urls, str) or not isinstance(urls, (list, tuple)):
        raise InvalidRequest("status_callback_urls must be a list of URLs")
    if len(urls) > MAX_CALLBACKS:
        raise InvalidRequest(f"at most {MAX_CALLBACKS} status_callback_urls, not {len(urls)}")
    out = []
    for url in urls:
        validation.name(url, "status callback URL")
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise InvalidRequest(f"status callback URL {url!r} is not an http(s) URL with a host")
        out.append(url)
    return out


def resolve(lc: Lifecycle, erasure_id: str) -> str:
    """A full erasure id from an id or a unique prefix (at least 4 characters)."""
    if not isinstance(erasure_id, str):
        raise InvalidRequest(f"erasure id must be a string, not {type(erasure_id).__name__}")
    store = Erasures(lc.ledger)
    try:
        uuid.UUID(erasure_id)
        return erasure_id.lower()
    except ValueError:
        pass
    if len(erasure_id) < 4 or any(c not in "0123456789abcdef-" for c in erasure_id.lower()):
        raise UnknownRequest(f"no erasure with id {erasure_id!r} (erasure ids are UUIDs, or a unique prefix of "
                             "one of at least 4 characters)")
    matches = store.ids_starting(erasure_id.lower(), limit=2)
    if len(matches) > 1:
        raise UnknownRequest(f"{erasure_id!r} is the start of several erasure ids; give more of it")
    if not matches:
        raise UnknownRequest(f"no erasure id starts with {erasure_id!r}")
    return matches[0]


def erasure(lc: Lifecycle, erasure_id: str) -> Erasure:
    found = Erasures(lc.ledger).refresh(resolve(lc, erasure_id))
    if found is None:
        raise UnknownRequest(f"no erasure with id {erasure_id!r}")
    return found[0]


def erasures(lc: Lifecycle, statuses: list[str] | None = None) -> list[Erasure]:
    refresh_all(lc)
    return Erasures(lc.ledger).list(statuses)


def refresh_all(lc: Lifecycle) -> list[tuple[Erasure, str]]:
    """Bring every open erasure's status up to date; returns those that changed, with their previous status."""
    store = Erasures(lc.ledger)
    changed = []
    for erasure_id in store.open_ids():
        found = store.refresh(erasure_id)
        if found is not None and found[1] is not None:
            changed.append(found)
    return changed


def cancel(lc: Lifecycle, erasure_id: str) -> Erasure:
    current = erasure(lc, erasure_id)
    cancelled = Erasures(lc.ledger).cancel(current.id)
    if cancelled is None:
        current = erasure(lc, current.id)
        raise RequestNotCancellable(f"erasure {current.id} is {current.status}; only pending erasures (none of "
                                    "whose forgets has started) can be cancelled")
    return cancelled


def redact(lc: Lifecycle, erasure_id: str, fields: tuple[str, ...], why: str, requested_by: str | None) -> Erasure:
    fields = validation.redactable(fields)
    validation.name(why, "why")
    requested_by = validation.optional_text(requested_by, "requested_by", 200)
    return Erasures(lc.ledger).redact(erasure(lc, erasure_id).id, fields, why, requested_by)


# ---- API tokens -------------------------------------------------------------


def create_token(lc: Lifecycle, name: str, scopes, created_by: str | None) -> tuple[ApiToken, str]:
    validation.name(name, "token name")
    created_by = validation.optional_text(created_by, "created_by", 200)
    if isinstance(scopes, str) or not isinstance(scopes, (list, tuple)) or not scopes:
        raise InvalidRequest(f"scopes must be a non-empty list of: {', '.join(SCOPES)}")
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise InvalidRequest(f"unknown scope(s) {', '.join(map(repr, unknown))}; scopes are: {', '.join(SCOPES)}")
    return Tokens(lc.ledger).create(name, sorted(set(scopes)), created_by)


def revoke_token(lc: Lifecycle, token_id: str) -> ApiToken:
    validation.name(token_id, "token id")
    revoked = Tokens(lc.ledger).revoke(token_id)
    if revoked is None:
        raise UnknownRequest(f"no API token with id {token_id!r} (see lifecycle token list)")
    return revoked
