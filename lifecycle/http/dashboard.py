"""The dashboard: one server-rendered page (no JavaScript) behind the ``read`` scope.

It shows every model with its latest accuracy and open requests, erasures
oldest first with their due dates (overdue ones marked), relapse findings,
and links to each model's latest relapse report and to certificates.

Logging in: ``/dashboard/login`` takes a pasted API token (a form POST) and
keeps it in an HttpOnly, SameSite=Strict cookie (Secure over TLS), which
reads accept (see ``lifecycle.http.auth``); ``/dashboard/logout`` clears it.
A script or a person at a terminal can also ask ``POST /dashboard/login-links``
(bearer token) for a login link: it holds a random code, not the token, works
once and within a minute, so that the token never appears in a URL or a log.
Everything shown is escaped: model names, tasks and reasons are user input.
"""

from __future__ import annotations

import datetime as dt
import html
import secrets
import threading
import time
from collections.abc import Callable
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from lifecycle import erasure as erasures
from lifecycle.http.auth import COOKIE, authenticate, require
from lifecycle.http.problems import HttpProblem
from lifecycle.store.records import Role

router = APIRouter(include_in_schema=False)
READ = require("read")
LINK_SECONDS = 60.0
MAX_LOGIN_BODY = 8192
LISTED = 100  # findings and certificates shown: the latest ones


class LoginLinks:
    """One-time login codes, each standing for a token for ``LINK_SECONDS``; kept in this process only."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._codes: dict[str, tuple[str, float]] = {}  # code -> (token, expires)

    def issue(self, token: str) -> str:
        code = secrets.token_urlsafe(24)
        with self._lock:
            now = self.clock()
            self._codes = {c: v for c, v in self._codes.items() if v[1] > now}
            self._codes[code] = (token, now + LINK_SECONDS)
        return code

    def redeem(self, code: str) -> str | None:
        """The token the code stands for, once; None when unknown, used or expired."""
        with self._lock:
            found = self._codes.pop(code, None)
        if found is None or found[1] <= self.clock():
            return None
        return found[0]


# ---- logging in and out ---------------------------------------------------------------------------


def _signed_in(request: Request, token: str) -> Response:
    response = RedirectResponse("/dashboard", status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https",
                        path="/")
    return response


def _login_page(message: str | None = None, status: int = 200) -> HTMLResponse:
    note = f'<p class="error">{_e(message)}</p>' if message else ""
    body = (f"<h1>lifecycle: sign in</h1>{note}"
            '<form method="post" action="/dashboard/login">'
            '<label for="token">API token with the <code>read</code> scope (lifecycle token create)</label><br>'
            '<input type="password" id="token" name="token" size="70" autocomplete="off" required> '
            '<button type="submit">Sign in</button></form>')
    return _html("lifecycle: sign in", body, status)


@router.get("/dashboard/login")
def login_form(request: Request, code: str | None = None) -> Response:
    """The sign-in form; with ``?code=`` from a login link, signs in at once."""
    if code is None:
        return _login_page()
    token = request.app.state.login_links.redeem(code)
    if token is None:
        return _login_page("That login link is unknown, used or expired; ask for a new one, or paste a token.", 401)
    return _signed_in(request, token)


@router.post("/dashboard/login")
async def login(request: Request) -> Response:
    body = await request.body()
    if len(body) > MAX_LOGIN_BODY:
        return _login_page("That is not an API token.", 400)
    token = (parse_qs(body.decode("utf-8", "replace")).get("token") or [""])[0].strip()
    if not token:
        return _login_page("Paste an API token.", 400)
    try:
        found = authenticate(request, token)
    except HttpProblem as exc:
        return _login_page(exc.detail, exc.status)
    if not found.allows("read"):
        return _login_page(f"Token {found.id} lacks the read scope the dashboard needs.", 403)
    return _signed_in(request, token)


@router.post("/dashboard/login-links")
def login_link(request: Request, token=Depends(READ)) -> dict[str, object]:
    """A one-time link that signs a browser in with the bearer token of this request."""
    secret = request.headers["authorization"].partition(" ")[2].strip()
    code = request.app.state.login_links.issue(secret)
    return {"url": str(request.base_url).rstrip("/") + f"/dashboard/login?code={code}",
            "expires_in": int(LINK_SECONDS)}


@router.get("/dashboard/logout")
def logout() -> Response:
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


# ---- the page -------------------------------------------------------------------------------------


def _reader(request: Request):
    """The ``read`` token, or None for a browser not signed in, or whose token was revoked (it is sent to
    the form); a bearer header that fails is a problem like anywhere else."""
    if request.headers.get("authorization"):
        return READ(request)
    if not request.cookies.get(COOKIE):
        return None
    try:
        return READ(request)
    except HttpProblem as exc:
        if exc.status == 401:
            return None
        raise


@router.get("/dashboard")
def dashboard(request: Request, token=Depends(_reader)) -> Response:
    if token is None:
        return RedirectResponse("/dashboard/login", status_code=303)
    lc = request.app.state.lc
    now = dt.datetime.now(dt.timezone.utc)
    body = [f'<h1>lifecycle</h1><p class="muted">as of {_time(now)} UTC; signed in with token '
            f'{_e(token.name)} ({_e(token.id)}) &middot; <a href="/dashboard/logout">sign out</a></p>',
            _models(lc), _erasures(lc, now), _findings(lc), _certificates(lc)]
    return _html("lifecycle dashboard", "".join(body))


def _models(lc) -> str:
    reports = {r.model: r for r in lc.ledger.reports()}
    rows = []
    for m in lc.models():
        evals = lc.ledger.evaluations(m.id)
        latest = max((e.version for e in evals), default=None)
        now = [e for e in evals if e.version == latest]
        retained = [e.accuracy for e in now if e.role == Role.RETAINED]
        accuracy = f"{sum(retained) / len(retained):.1%}" if retained else "–"
        tasks = ", ".join(f"{e.task} {e.accuracy:.1%}" + (" (forgotten)" if e.role == Role.FORGOTTEN else "")
                          for e in now)
        open_requests = len(lc.requests(m.name, statuses=["queued", "running"]))
        findings = len(lc.ledger.findings(m.id))
        report = (f'<a href="/v1/models/{quote(m.name, safe="")}/reports/latest?format=html">'
                  f'v{reports[m.name].model_version}, {_time(reports[m.name].written_at)}</a>'
                  if m.name in reports else '<span class="muted">none yet</span>')
        rows.append([_e(m.name), _e(m.strategy), "–" if latest is None else f"v{latest}",
                     accuracy, _e(tasks), str(open_requests), str(findings), report])
    return _table("models", "Models", ["model", "strategy", "version", "retained accuracy", "tasks (latest)",
                                       "open requests", "relapse findings", "latest relapse report"], rows,
                  "No models yet.")


def _erasures(lc, now: dt.datetime) -> str:
    rows, classes = [], []
    for e in erasures.erasures(lc):  # oldest first
        overdue = e.overdue(now)
        certs = " ".join(f'<a href="/v1/certificates/{quote(p.request_id, safe="")}">{_e(p.model)}</a>'
                         for p in e.parts if p.request_id and p.certified)
        status = _e(e.status) + (' <strong class="flag">overdue</strong>' if overdue else "")
        rows.append([f'<a href="/v1/erasures/{quote(e.id, safe="")}">{_e(e.id[:8])}</a>', _time(e.received_at),
                     _time(e.due_at), status, _e(e.reason or ""), certs or '<span class="muted">–</span>'])
        classes.append("overdue" if overdue else "")
    return _table("erasures", "Erasures (oldest first)", ["erasure", "received (UTC)", "due (UTC)", "status",
                                                           "reason", "certificates"], rows, "No erasures.",
                  classes)


def _findings(lc) -> str:
    rows = [[_e(f.model), _e(f.task), f"v{f.version}", f"{f.accuracy:.1%}", f"+{f.relapse:.1%}",
             f"{f.threshold:.1%}", f"v{f.forgotten_at_version}", _time(f.created_at)]
            for f in lc.ledger.findings()[-LISTED:]]
    return _table("findings", "Relapse findings", ["model", "task", "at version", "accuracy", "relapse",
                                                   "threshold", "forgotten at", "found (UTC)"], rows,
                  "No relapse found.")


def _certificates(lc) -> str:
    applied = [r for r in lc.requests(statuses=["applied"]) if r.kind == "forget"]
    applied.sort(key=lambda r: r.finished_at or r.received_at, reverse=True)
    rows = [[_e(r.model), _e(r.describe_target()), _time(r.finished_at),
             f'<a href="/v1/certificates/{quote(r.id, safe="")}">{_e(r.id[:8])}</a>'] for r in applied[:LISTED]]
    return _table("certificates", "Certificates of the latest forgets", ["model", "forgot", "applied (UTC)",
                                                                        "certificate"], rows, "No forget applied yet.")


# ---- HTML -----------------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; }
tr.overdue td { background: #fde2e2; }
.flag { color: #b00; } .muted { color: #777; } .error { color: #b00; font-weight: bold; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _time(value: dt.datetime | None) -> str:
    return "–" if value is None else value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


def _table(ident: str, title: str, header: list[str], rows: list[list[str]], empty: str,
           classes: list[str] | None = None) -> str:
    """A section; the cells are HTML already escaped by the caller."""
    if not rows:
        return f'<h2>{_e(title)}</h2><p class="muted" id="{ident}-empty">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(f'<tr class="{c}">' + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
                   for row, c in zip(rows, classes or [""] * len(rows), strict=True))
    return f'<h2>{_e(title)}</h2><table id="{ident}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _html(title: str, body: str, status: int = 200) -> HTMLResponse:
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{_STYLE}</style></head><body>{body}</body></html>")
    # no script runs here, and the page may not be framed by another site
    return HTMLResponse(page, status_code=status, headers={
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                                   "frame-ancestors 'none'",
        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})
