"""Metrics against hand-computed values, and the relapse report built from a real ledger."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

import lifecycle
from lifecycle import metrics, mia
from lifecycle.report import build_report, write_report
from tests.data import alternating_subjects, digits_tasks, learn_task, make_model

nan = np.nan
T, F = True, False


# ---- metrics -------------------------------------------------------------------------------


def learn_forget_matrix():
    """Tasks a, b: learn a, learn b, forget a."""
    acc = np.array([[0.90, nan],
                    [0.80, 0.95],
                    [0.00, 0.93]])
    retained = np.array([[T, F], [T, T], [F, T]])
    forgotten = np.array([[F, F], [F, F], [T, F]])
    learned = np.array([[T, F], [F, T], [F, F]])
    return acc, retained, forgotten, learned


def test_a_successful_forget_is_not_counted_as_forgetting():
    acc, retained, forgotten, learned = learn_forget_matrix()
    per_task = metrics.forgetting(acc, retained, learned)
    assert np.isnan(per_task[0])  # a fell from 0.90 to 0.00 on purpose
    assert per_task[1] == pytest.approx(0.02)
    assert metrics.stream_forgetting(acc, retained, learned) == pytest.approx(0.02)
    assert metrics.bwt(acc, retained, learned) == pytest.approx(-0.02)
    assert metrics.average_accuracy(acc, retained) == pytest.approx(0.93)
    assert metrics.retained_accuracy(acc, retained) == pytest.approx(0.93)
    assert metrics.forget_accuracy(acc, forgotten) == pytest.approx(0.0)
    assert metrics.forget_spill(acc, retained, 2) == pytest.approx(0.02)
    assert metrics.relapse_paper(acc, forgotten)[0] == pytest.approx(0.0)
    # counting the forgotten task would have reported (0.90 + 0.02) / 2 of forgetting
    everything = np.ones_like(retained)
    assert metrics.stream_forgetting(acc, everything, learned) == pytest.approx(0.46)


def test_relapse_spill_and_the_task_just_learned():
    """Learn a, learn b, forget a, learn c; a comes back to 0.30 with chance 0.10."""
    acc = np.array([[0.90, nan, nan],
                    [0.85, 0.90, nan],
                    [0.05, 0.88, nan],
                    [0.30, 0.86, 0.97]])
    retained = np.array([[T, F, F], [T, T, F], [F, T, F], [F, T, T]])
    forgotten = np.array([[F, F, F], [F, F, F], [T, F, F], [T, F, F]])
    learned = np.array([[T, F, F], [F, T, F], [F, F, F], [F, F, T]])
    chance = np.array([0.1, 0.1, 0.1])

    per_task = metrics.forgetting(acc, retained, learned)
    assert np.isnan(per_task[0]) and per_task[1] == pytest.approx(0.04)
    assert np.isnan(per_task[2])  # trained by the last step: Avalanche reports no forgetting for it yet
    assert metrics.stream_forgetting(acc, retained, learned) == pytest.approx(0.04)
    assert metrics.average_accuracy(acc, retained) == pytest.approx((0.86 + 0.97) / 2)
    assert metrics.forget_accuracy(acc, forgotten) == pytest.approx(0.30)
    assert list(metrics.forgotten_at(forgotten)) == [2, -1, -1]
    assert metrics.relapse_paper(acc, forgotten)[0] == pytest.approx(0.25)
    assert metrics.relapse_one_sided(acc, forgotten, chance)[0] == pytest.approx(0.20)
    assert np.isnan(metrics.relapse_one_sided(acc, forgotten, chance)[1])
    assert metrics.spill(acc, retained, [2]) == pytest.approx(0.02)
    assert np.isnan(metrics.spill(acc, retained, []))


def test_one_sided_relapse_ignores_a_climb_back_to_chance_and_peak_keeps_the_worst():
    acc = np.array([[0.9], [0.0], [0.1], [0.4], [0.1]])
    retained = np.array([[T], [F], [F], [F], [F]])
    forgotten = ~retained
    chance = np.array([0.1])
    assert metrics.relapse_one_sided(acc, forgotten, chance)[0] == 0.0
    assert metrics.relapse_paper(acc, forgotten)[0] == pytest.approx(0.1)
    assert metrics.relapse_one_sided(acc, forgotten, chance, peak=True)[0] == pytest.approx(0.3)
    assert np.isnan(metrics.average_accuracy(acc, retained))


def test_a_relearned_task_forgets_from_its_relearn():
    """Learn a, forget a, relearn a, learn b: a's forgetting is measured from the relearn."""
    acc = np.array([[0.90, nan], [0.00, nan], [0.80, nan], [0.75, 0.90]])
    retained = np.array([[T, F], [F, F], [T, F], [T, T]])
    forgotten = np.array([[F, F], [T, F], [F, F], [F, F]])
    learned = np.array([[T, F], [F, F], [T, F], [F, T]])
    assert list(metrics.learned_at(learned)) == [2, 3]
    assert metrics.forgetting(acc, retained, learned)[0] == pytest.approx(0.05)
    assert list(metrics.forgotten_at(forgotten)) == [-1, -1]
    assert np.isnan(metrics.forget_accuracy(acc, forgotten))


# ---- membership inference ------------------------------------------------------------------


class HardLabels:
    def __init__(self, labels):
        self.labels = np.asarray(labels)

    def predict(self, X, task=None):
        return self.labels[: len(X)]


class Scored(HardLabels):
    def __init__(self, scores):
        self._scores = np.asarray(scores, dtype=float)
        super().__init__(self._scores.argmax(axis=1))

    def scores(self, X, task=None):
        return self._scores[: len(X)]


class ScoresNotImplemented(HardLabels):
    def scores(self, X, task=None):
        raise NotImplementedError


def test_attack_auc_is_raw_and_both_directions_count_as_a_gap():
    assert mia.attack_auc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert mia.attack_auc([0.1, 0.2], [0.9, 0.8]) == 0.0  # under-confident on the forgotten: not folded to 1
    assert mia.attack_auc([1, 1, 1], [1, 1]) == 0.5
    assert mia.attack_auc([0.9, 0.2], [0.5, 0.1]) == 0.75
    assert mia.auc_gap(0.2, 0.5) == pytest.approx(0.3) and mia.auc_gap(0.8, 0.5) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        mia.attack_auc([], [0.5])


def test_margins_and_the_hard_label_fallback():
    scores = np.array([[2.0, 1.0, 0.5], [0.0, 3.0, 1.0]])
    assert list(mia.margins(scores, np.array([0, 0]))) == [1.0, -3.0]
    X = np.zeros((2, 4))
    s, kind = mia.sample_scores(Scored(scores), X, np.array([0, 2]))
    assert kind == mia.MARGIN and list(s) == [1.0, -2.0]
    s, kind = mia.sample_scores(Scored(scores), X, np.array([0, 2]), kind=mia.CORRECT)
    assert kind == mia.CORRECT and list(s) == [1.0, 0.0]
    for hard in (HardLabels([1, 1]), ScoresNotImplemented([1, 1])):
        s, kind = mia.sample_scores(hard, X, np.array([1, 0]))
        assert kind == mia.CORRECT and list(s) == [1.0, 0.0]
    with pytest.raises(ValueError, match="offers no scores"):
        mia.sample_scores(HardLabels([1, 1]), X, np.array([1, 0]), kind=mia.MARGIN)
    result = mia.membership_auc(HardLabels([1, 1, 1]), (X[:2], np.array([1, 1])), (X[:1], np.array([0])))
    assert result == mia.AttackResult(1.0, mia.CORRECT, 2, 1)


# ---- the report from a real ledger ---------------------------------------------------------


def relapse_scenario(lc, monkeypatch) -> dict:
    """Learn, forget a task, bring it back under another name, erase a subject,
    fail one request and leave one queued."""
    make_model(lc)
    t0, t1, t2 = digits_tasks()
    learn_task(lc, "digits", t0, subjects=alternating_subjects(len(t0.y)))
    learn_task(lc, "digits", t1)
    lc.drain()
    forget = lc.forget("digits", task="2-3", reason="licence revoked")
    lc.drain()
    lc.learn("digits", task="twos-and-threes-again", X=t1.X, y=t1.y, sample_ids=[f"x{i}" for i in range(len(t1.y))],
             probe=(t1.X_probe, t1.y_probe))
    lc.drain()
    erase = lc.forget("digits", subject="alice")
    lc.drain()

    from lifecycle.strategies.analytic.model import AnalyticStrategy

    def out_of_memory(self, data):
        raise RuntimeError("out of memory (simulated)")

    with monkeypatch.context() as patch:
        patch.setattr(AnalyticStrategy, "learn", out_of_memory)
        failed = learn_task(lc, "digits", t2)
        lc.drain()
    queued = learn_task(lc, "digits", t2)
    return {"forget": forget.id, "erase": erase.id, "failed": failed.id, "queued": queued.id}


def test_report_numbers_come_from_the_ledger(lc, monkeypatch, tmp_path):
    ids = relapse_scenario(lc, monkeypatch)
    data = build_report(lc, "digits")

    tl = data["timeline"]
    assert tl["versions"] == [1, 2, 3, 4, 5]
    assert tl["kinds"] == ["learn", "learn", "forget", "learn", "forget"]
    assert tl["tasks"] == ["0-1", "2-3", "twos-and-threes-again"]
    assert tl["roles"][-1] == ["retained", "forgotten", "retained"]

    rows = {r["target"]: r for r in data["forgotten"]}
    task_row = rows["2-3"]
    assert task_row["request_id"] == ids["forget"] and task_row["forgotten_at_version"] == 3
    assert task_row["fa_at_forget"] == 0.0 and task_row["fa_now"] > 0.9
    assert task_row["relapsed"] and task_row["findings"] == 2  # flagged at v4 and again at v5
    assert task_row["relapse_now"] == pytest.approx(task_row["fa_now"] - task_row["chance"])
    assert task_row["relapse_paper"] == pytest.approx(task_row["fa_now"])
    assert task_row["spill"] >= 0
    subject_rows = [r for r in data["forgotten"] if r["unit"] == "subject"]
    assert [r["request_id"] for r in subject_rows] == [ids["erase"]] and subject_rows[0]["forgotten_at_version"] == 5
    assert [f["task"] for f in data["findings"]] == ["2-3", "2-3"]

    retained = data["retained"]
    assert retained["tasks"] == ["0-1", "twos-and-threes-again"]
    assert retained["average_accuracy"] > 0.9
    # 0-1 lost only what erasing alice's samples and sharing the head cost it, not a forgotten task's drop
    assert 0 <= retained["stream_forgetting"] < 0.1 and retained["bwt"] == -retained["stream_forgetting"]
    assert retained["learned_at_version"] == [1, 4]

    assert [r["id"] for r in data["open_requests"]] == [ids["queued"]]
    assert data["open_requests"][0]["age_s"] >= 0 and not data["open_requests"][0]["overdue"]
    assert [(r["id"], r["status"]) for r in data["unapplied"]] == [(ids["failed"], "failed")]
    assert "out of memory" in data["unapplied"][0]["error"]
    times = {r["id"]: r for r in data["requests"]}
    assert times[ids["forget"]]["step_s"] > 0 and times[ids["forget"]]["total_s"] >= times[ids["forget"]]["step_s"]
    assert times[ids["queued"]]["step_s"] is None

    paths = write_report(lc, "digits", tmp_path / "reports")
    assert paths.html.name == "digits.html" and paths.json.name == "digits.json"
    saved = json.loads(paths.json.read_text())
    assert saved["forgotten"][0]["target"] == "2-3" and saved["forgotten"][0]["relapsed"] is True
    assert saved["retained"]["average_accuracy"] == pytest.approx(retained["average_accuracy"])
    assert saved["timeline"]["accuracy"][0][1] is None  # NaN (not yet learned) is null in JSON
    page = paths.html.read_text()
    assert '<table id="relapse">' in page and page.count('src="data:image/png;base64,') == 2
    assert "http://" not in page and "https://" not in page  # nothing to fetch


def test_report_of_a_model_with_nothing_applied(tmp_path):
    lc = lifecycle.connect(f"sqlite:///{tmp_path / 'ledger.db'}")
    make_model(lc)
    t0, _, _ = digits_tasks()
    learn_task(lc, "digits", t0)
    paths = write_report(lc, "digits", tmp_path / "out")
    data = json.loads(paths.json.read_text())
    assert data["timeline"]["versions"] == [] and data["forgotten"] == []
    assert len(data["open_requests"]) == 1 and data["retained"]["average_accuracy"] is None
    assert "nothing has been forgotten" in paths.html.read_text()


# ---- the page in a real browser --------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def chromium(tmp_path):
    if not os.access(CHROMIUM, os.X_OK):
        message = "Chromium not found (Debian package 'chromium'; scripts/ensure-chromium.sh installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + ": under CI=true the report must be checked in a browser")
        pytest.skip(message)

    def run(*args: str) -> str:
        profile = tmp_path / f"chromium-profile-{len(list(tmp_path.glob('chromium-profile-*')))}"
        done = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    return run


class Page(HTMLParser):
    """The parts of a dumped DOM the test looks at."""

    def __init__(self, dom: str) -> None:
        super().__init__()
        self.body: dict[str, str | None] = {}
        self.images: list[dict[str, str | None]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body":
            self.body = attrs
        elif tag == "img":
            self.images.append(attrs)
        elif tag == "table":
            self._table = attrs.get("id")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def test_the_report_renders_in_headless_chromium(chromium, monkeypatch, tmp_path):
    lc = lifecycle.connect(f"sqlite:///{tmp_path / 'ledger.db'}")
    relapse_scenario(lc, monkeypatch)
    paths = write_report(lc, "digits", tmp_path / "reports")
    url = paths.html.resolve().as_uri()

    page = Page(chromium("--dump-dom", url))
    assert page.body.get("data-plots") == "2" and page.body.get("data-plots-loaded") == "2", page.body
    assert len(page.images) == 2
    assert all(img["src"].startswith("data:image/png;base64,") for img in page.images)
    header, *rows = page.tables["relapse"]
    assert header[:2] == ["unit", "target"]
    relapsed = [r for r in rows if "RELAPSED" in r]
    assert [r[:3] for r in relapsed] == [["task", "2-3", "v3"]]
    assert any(r[0] == "subject" for r in rows)
    assert [r[1] for r in page.tables["findings"][1:]] == ["2-3", "2-3"]

    artifacts = Path(os.environ.get("LIFECYCLE_TEST_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "relapse-report.png"
    chromium(f"--screenshot={shot}", "--window-size=1200,2000", "--hide-scrollbars", url)
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shutil.copy(paths.html, artifacts / "relapse-report.html")
    print(f"report screenshot: {shot}")


def test_a_report_imports_neither_torch_nor_avalanche(tmp_path):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    lc = lifecycle.connect(url)
    make_model(lc)
    for t in digits_tasks():
        learn_task(lc, "digits", t)
    lc.drain()
    lc.forget("digits", task="2-3")
    lc.drain()
    code = ("import sys, lifecycle\n"
            "from lifecycle.report import write_report\n"
            f"write_report(lifecycle.connect({url!r}), 'digits', {str(tmp_path / 'out')!r})\n"
            "print(sorted({n.split('.')[0] for n in sys.modules} & {'torch', 'avalanche'}))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "out" / "digits.html").exists()
