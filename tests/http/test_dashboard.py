"""The dashboard: signing in and out over the served app, and the page as headless Chromium shows it
after a real login (a one-time link, so no token is ever in a URL)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from html.parser import HTMLParser

import pytest

import lifecycle
from lifecycle.http.limits import HttpLimits, RateLimit
from lifecycle.store.records import Role
from tests.data import alternating_subjects, digits_tasks, learn_task, make_model
from tests.helpers import ManualClock
from tests.http.support import FrozenClock, bearer, is_problem, served

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MODEL = "digits <i>&"  # model names are user input: the page must show them, not run them
GENEROUS = HttpLimits(RateLimit(1e6, 10**6))


@pytest.fixture
def chromium(tmp_path):
    if not os.access(CHROMIUM, os.X_OK):
        message = "Chromium not found (Debian package 'chromium'; scripts/ensure-chromium.sh installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + ": under CI=true the dashboard must be checked in a browser")
        pytest.skip(message)

    def dump_dom(url: str) -> str:
        profile = tmp_path / f"chromium-profile-{len(list(tmp_path.glob('chromium-profile-*')))}"
        done = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    return dump_dom


class Page(HTMLParser):
    """The tables of a dumped DOM: rows of (class, cells, links) by table id; and the page's text."""

    def __init__(self, dom: str) -> None:
        super().__init__()
        self.tables: dict[str, list[tuple[str, list[str], list[str]]]] = {}
        self.text: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = attrs.get("id")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append((attrs.get("class") or "", [], []))
        elif tag == "td" and self._table is not None:
            self._cell = []
        elif tag == "a" and self._table is not None and self.tables[self._table]:
            self.tables[self._table][-1][2].append(attrs.get("href"))

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.tables[self._table][-1][1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def rows(self, table: str) -> list[tuple[str, list[str], list[str]]]:
        return [r for r in self.tables[table] if r[1]]  # the header row has no td


def scenario(tmp_path):
    """A model that learned from alice and bob 40 days ago; bob's erasure done (certified), alice's
    received then and still pending, so overdue; a relapse report written."""
    from lifecycle.service import Service

    clock = ManualClock(dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=40))
    lc = lifecycle.connect(f"sqlite:///{tmp_path / 'ledger.db'}", clock=clock)
    make_model(lc, MODEL)
    t0, t1, _ = digits_tasks()
    learn_task(lc, MODEL, t0, subjects=alternating_subjects(len(t0.y), ("alice", "bob")))
    learn_task(lc, MODEL, t1)
    lc.drain()
    bob = lc.erase(subject="bob", reason="art. 17 <script>alert(1)</script>")
    lc.drain()
    clock.advance(60)
    alice = lc.erase(subject="alice", reason="art. 17")
    clock.advance(40 * 86400)
    Service(lc, reports_dir=tmp_path / "reports").write_reports()
    return lc, lc.erasure(bob.id), lc.erasure(alice.id)


def test_the_dashboard_in_headless_chromium_after_a_real_login(chromium, tmp_path):
    lc, bob, alice = scenario(tmp_path)
    assert bob.status == "completed" and alice.status == "pending"
    reader = lc.create_token("auditor", scopes=["read"])[1]
    with served(lc, limits=GENEROUS) as http:
        link = http.post("/dashboard/login-links", headers=bearer(reader))
        assert link.status_code == 200, link.text
        assert reader not in link.text
        page = Page(chromium(link.json()["url"]))
        # every link the page holds leads somewhere a reader may go
        hrefs = [href for table in page.tables.values() for _, _, links in table for href in links]
        assert len(hrefs) == 5
        for href in hrefs:
            assert http.get(href, headers=bearer(reader)).status_code == 200, href

    m = lc.model(MODEL)
    evals = lc.ledger.evaluations(m.id)
    latest = max(e.version for e in evals)
    retained = [e.accuracy for e in evals if e.version == latest and e.role == Role.RETAINED]
    [(css, cells, links)] = page.rows("models")
    assert cells[0] == MODEL and cells[1] == "analytic" and cells[2] == f"v{latest}"
    assert cells[3] == f"{sum(retained) / len(retained):.1%}"
    assert cells[5] == "1"  # alice's forget, queued
    assert links == ["/v1/models/digits%20%3Ci%3E%26/reports/latest?format=html"]

    erasures = page.rows("erasures")
    assert [r[2][0] for r in erasures] == [f"/v1/erasures/{bob.id}", f"/v1/erasures/{alice.id}"]  # oldest first
    (bob_css, bob_cells, bob_links), (alice_css, alice_cells, _) = erasures
    assert alice_css == "overdue" and alice_cells[3] == "pending overdue"
    assert bob_css == "" and bob_cells[3] == "completed"
    assert bob_cells[4] == "art. 17 <script>alert(1)</script>"  # shown as text, never run
    forget_id = next(p.request_id for p in bob.parts if p.request_id)
    assert bob_links[1:] == [f"/v1/certificates/{forget_id}"]
    assert [r[2] for r in page.rows("certificates")] == [[f"/v1/certificates/{forget_id}"]]
    assert "No relapse found." in "".join(page.text)
    assert reader not in "".join(page.text)


def test_signing_in_and_out_and_what_the_cookie_may_do(lc):
    make_model(lc, "digits")
    t0, _, _ = digits_tasks()
    learn_task(lc, "digits", t0)
    lc.drain()
    reader = lc.create_token("reader", scopes=["read"])[1]
    submitter = lc.create_token("submitter", scopes=["erasure:submit"])[1]
    with served(lc, limits=GENEROUS) as http:
        away = http.get("/dashboard")
        assert away.status_code == 303 and away.headers["location"] == "/dashboard/login"
        form = http.get("/dashboard/login")
        assert form.status_code == 200 and 'name="token"' in form.text
        refused = http.post("/dashboard/login", data={"token": submitter})
        assert refused.status_code == 403 and "lacks the read scope" in refused.text and not http.cookies
        assert http.post("/dashboard/login", data={"token": "lct_nope"}).status_code == 401
        assert http.post("/dashboard/login", data={"token": ""}).status_code == 400

        signed = http.post("/dashboard/login", data={"token": reader})
        assert signed.status_code == 303 and signed.headers["location"] == "/dashboard"
        cookie = signed.headers["set-cookie"]
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower() and "secure" not in cookie.lower()
        page = http.get("/dashboard")
        assert page.status_code == 200 and "digits" in page.text and "<script" not in page.text
        # the cookie reads, and nothing else: a write needs the bearer header
        assert http.get("/v1/models").status_code == 200
        is_problem(http.post("/v1/models/digits/forget", json={"task": t0.name}), 401, "Unauthenticated")

        out = http.get("/dashboard/logout")
        assert out.status_code == 303 and not http.cookies
        assert http.get("/dashboard").status_code == 303

        # a login link works once
        url = http.post("/dashboard/login-links", headers=bearer(reader)).json()["url"]
        path = url.removeprefix(str(http.base_url).rstrip("/"))
        assert http.get(path).status_code == 303 and http.get("/dashboard").status_code == 200
        http.cookies.clear()
        assert http.get(path).status_code == 401
        is_problem(http.post("/dashboard/login-links", headers=bearer(submitter)), 403, "Forbidden")
        # a revoked token's cookie no longer reads: the browser is sent back to the form
        http.post("/dashboard/login", data={"token": reader})
        lc.revoke_token(lc.authenticate(reader).id)
        assert http.get("/dashboard").status_code == 303
        is_problem(http.get("/v1/models"), 401, "Unauthenticated")


def test_a_login_link_expires():
    from lifecycle.http.dashboard import LINK_SECONDS, LoginLinks

    clock = FrozenClock()
    links = LoginLinks(clock)
    late, soon = links.issue("token-a"), links.issue("token-b")
    assert links.redeem(soon) == "token-b" and links.redeem(soon) is None
    clock.advance(LINK_SECONDS)
    assert links.redeem(late) is None
    assert links.redeem("made-up") is None
