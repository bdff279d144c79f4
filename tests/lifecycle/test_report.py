"""Metrics against hand-computed values, and the relapse report built from a real ledger."""

from __future__ import annotations

import datetime as dt

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
from lifecycle.report import (
    FORGOTTEN,
    FULL_RANGE,
    NOT_LEARNED,
    RETAINED,
    accuracy_limits,
    build_report,
    matrix_cells,
    matrix_figure,
    matrix_png,
    render_html,
    short_labels,
    timeline_figure,
    timeline_limits,
    timeline_png,
    write_report,
)
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
    s, kind = mia.sample_scores(HardLabels([1, 1]), X, np.array([1, 0]))
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
    queued = lc.status(ids["queued"])
    data = build_report(lc, "digits", now=queued.received_at + dt.timedelta(seconds=90))

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
    assert data["open_requests"][0]["age_s"] == 90 and not data["open_requests"][0]["overdue"]
    assert [(r["id"], r["status"]) for r in data["unapplied"]] == [(ids["failed"], "failed")]
    assert "out of memory" in data["unapplied"][0]["error"]
    times = {r["id"]: r for r in data["requests"]}
    forget = lc.status(ids["forget"])
    assert times[ids["forget"]]["step_s"] == forget.step_seconds
    assert times[ids["forget"]]["total_s"] == (forget.finished_at - forget.received_at).total_seconds()
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


# ---- what the figures draw ------------------------------------------------------------------------


def relearn_data(names=("a", "b", "c")) -> dict:
    """Report data as build_report lays it out: learn a, learn b, forget a, learn c, relearn a.

    a is near 0 while forgotten (v3, v4); retained accuracies all lie in 0.9..1.0.
    """
    acc = np.array([[0.97, nan, nan],
                    [0.95, 0.99, nan],
                    [0.02, 0.98, nan],
                    [0.00, 0.97, 0.93],
                    [0.96, 0.96, 0.92]])
    roles = [["retained", None, None],
             ["retained", "retained", None],
             ["forgotten", "retained", None],
             ["forgotten", "retained", "retained"],
             ["retained", "retained", "retained"]]
    return {
        "model": {"name": "toy"},
        "findings": [],
        "timeline": {"versions": [1, 2, 3, 4, 5], "kinds": ["learn", "learn", "forget", "learn", "learn"],
                     "tasks": list(names), "accuracy": acc, "roles": roles, "chance": np.array([0.1, 0.1, 0.1])},
        "retained": {"tasks": list(names), "versions": [1, 2, 3, 4, 5], "accuracy": acc},
    }


def test_accuracy_limits_fit_the_data_not_the_unit_interval():
    values = [0.97, 0.95, 0.99, 0.93, 0.92, 0.96, 1.0, nan]
    lo, hi = accuracy_limits(values, chance=0.1)
    assert lo < 0.92 and hi > 1.0  # every point inside, none on the frame
    assert 0.85 < lo and hi < 1.02  # zoomed: chance at 0.1 would flatten the differences, so it stays out
    assert (lo, hi) != (0.0, 1.0) and (lo, hi) != FULL_RANGE
    # chance close below the data is brought into view
    lo, hi = accuracy_limits([0.3, 0.45, 0.6], chance=0.2)
    assert lo < 0.2 and 0.6 < hi < 0.7
    # a flat line still gets a range of its own, inside what an accuracy can be near
    lo, hi = accuracy_limits([1.0, 1.0])
    assert lo < 1.0 < hi and hi - lo >= 0.04 and lo > 0.9
    assert accuracy_limits([]) == FULL_RANGE and accuracy_limits([nan]) == FULL_RANGE


def test_timeline_limits_use_retained_points_only():
    data = relearn_data()
    lo, hi = timeline_limits(data)
    retained = [0.97, 0.95, 0.99, 0.98, 0.97, 0.93, 0.96, 0.96, 0.92]
    assert lo < min(retained) and hi > max(retained)
    assert lo > 0.8  # a's 0.00 and 0.02 while forgotten do not drag the axis to 0

    fig = timeline_figure(data)
    top, bottom = fig.axes[:2]
    assert top.get_ylim() == pytest.approx((lo, hi))
    assert "accuracy" in top.get_ylabel() and "not 0" in top.get_ylabel()
    # the forgotten stretch is drawn on its own panel, over the full range, next to chance
    assert bottom.get_ylim() == pytest.approx(FULL_RANGE)
    assert "forgotten" in bottom.get_ylabel()
    legend = [t.get_text() for t in bottom.get_legend().get_texts()]
    assert "a (forgotten)" in legend and "chance" in legend
    # in the top panel a is drawn only while retained: nothing at v3 and v4
    a_line = next(line for line in top.get_lines() if line.get_label() == "a")
    assert np.isnan(a_line.get_ydata()[2:4]).all() and not np.isnan(a_line.get_ydata()[[0, 1, 4]]).any()
    assert timeline_png(data)[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_timeline_without_forgets_has_one_zoomed_panel():
    data = relearn_data()
    tl = data["timeline"]
    tl["roles"] = [[r if r != "forgotten" else "retained" for r in row] for row in tl["roles"]]
    data["timeline"]["accuracy"] = np.where(np.isnan(data["timeline"]["accuracy"]), nan, 0.95)
    data["timeline"]["accuracy"][0, 0] = 0.99
    fig = timeline_figure(data)
    assert len(fig.axes) == 1
    lo, hi = fig.axes[0].get_ylim()
    assert 0.9 < lo < 0.95 and 0.99 < hi < 1.01


def test_the_matrix_masks_a_forgotten_stretch_and_what_was_not_yet_learned():
    cells = matrix_cells(relearn_data())
    a, b, c = 0, 1, 2
    assert list(cells.state[:, a]) == [RETAINED, RETAINED, FORGOTTEN, FORGOTTEN, RETAINED]
    assert list(cells.state[:, c]) == [NOT_LEARNED, NOT_LEARNED, NOT_LEARNED, RETAINED, RETAINED]
    assert list(cells.accuracy.mask[:, a]) == [False, False, True, True, False]
    assert list(cells.accuracy.mask[:, c]) == [True, True, True, False, False]
    assert not cells.accuracy.mask[:, b][1:].any() and cells.accuracy.mask[0, b]
    # what is left is exactly the retained accuracies: no 0.00 for the forgotten stretch
    assert sorted(cells.accuracy.compressed()) == pytest.approx(sorted([0.97, 0.95, 0.96, 0.99, 0.98, 0.97, 0.96,
                                                                        0.93, 0.92]))
    assert cells.accuracy.compressed().min() > 0.9
    assert matrix_cells({"timeline": relearn_data()["timeline"],
                         "retained": {"tasks": [], "versions": [1, 2, 3, 4, 5], "accuracy": np.zeros((5, 0))}}) is None


def test_the_heat_map_draws_forgotten_cells_blank_with_a_legend_and_a_zoomed_colour_bar():
    fig = matrix_figure(relearn_data())
    ax, bar = fig.axes
    shown = ax.images[0].get_array()
    assert shown.mask[2, 0] and shown.mask[3, 0] and not shown.mask[4, 0]
    numbers = [t.get_text() for t in ax.texts]
    assert len(numbers) == 9 and not any(float(n) < 0.5 for n in numbers)  # one per retained cell, none 0.00
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["forgotten", "not learned yet"]
    assert "accuracy" in bar.get_ylabel()
    vmin, vmax = ax.images[0].norm.vmin, ax.images[0].norm.vmax
    assert 0.85 < vmin <= 0.92 and 0.99 <= vmax <= 1.0  # 0.92 and 0.99 get different colours
    assert matrix_png(relearn_data())[:8] == b"\x89PNG\r\n\x1a\n"


def test_long_task_names_get_short_distinct_tick_labels_and_crowded_cells_no_numbers():
    names = [f"customer-segment-{i:02d}-quarterly-scan" for i in range(3)]
    labels = short_labels(names)
    assert labels == ["…gment-00-quart…", "…gment-01-quart…", "…gment-02-quart…"]  # the part that differs, kept
    assert all(len(s) <= 16 for s in labels)
    assert short_labels(["a", "b"]) == ["a", "b"]
    assert all(len(s) <= 10 for s in short_labels(["x" * 30, "y" * 30], 10))

    fig = matrix_figure(relearn_data(tuple(names)))
    ax = fig.axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == short_labels(names) and len(set(ticks)) == 3
    assert all(t.get_rotation() == 45 for t in ax.get_xticklabels())

    rng = np.random.default_rng(0)
    n, steps = 30, 30
    acc = np.tril(rng.uniform(0.9, 1.0, (steps, n)))
    acc[acc == 0] = nan
    roles = [["retained" if k <= i else None for k in range(n)] for i in range(steps)]
    tasks = [f"task-{k}" for k in range(n)]
    crowded = {"model": {"name": "many"}, "findings": [],
               "timeline": {"versions": list(range(1, steps + 1)), "kinds": ["learn"] * steps, "tasks": tasks,
                            "accuracy": acc, "roles": roles, "chance": np.full(n, 0.1)},
               "retained": {"tasks": tasks, "versions": list(range(1, steps + 1)), "accuracy": acc}}
    ax = matrix_figure(crowded).axes[0]
    assert len(ax.texts) == 0 and ax.get_xticklabels()[0].get_fontsize() < 9


def test_a_relearned_task_is_masked_while_it_was_forgotten_in_a_real_report(tmp_path):
    lc = lifecycle.connect(f"sqlite:///{tmp_path / 'ledger.db'}")
    make_model(lc)
    t0, t1, _ = digits_tasks()
    learn_task(lc, "digits", t0)
    learn_task(lc, "digits", t1)
    lc.drain()
    lc.forget("digits", task="0-1")
    lc.drain()
    learn_task(lc, "digits", t0, prefix="again")
    lc.drain()
    data = build_report(lc, "digits")
    assert data["timeline"]["kinds"] == ["learn", "learn", "forget", "learn"]
    assert data["retained"]["tasks"] == ["0-1", "2-3"]
    assert data["retained"]["accuracy"][2, 0] < 0.5  # the probe did see the forget ...

    cells = matrix_cells(data)
    assert list(cells.state[:, 0]) == [RETAINED, RETAINED, FORGOTTEN, RETAINED]
    assert cells.accuracy.mask[2, 0] and cells.accuracy.compressed().min() > 0.5  # ... the matrix does not show it
    assert list(cells.state[:, 1]) == [NOT_LEARNED, RETAINED, RETAINED, RETAINED]
    lo, hi = timeline_limits(data)
    assert lo > 0.5 and lo < cells.accuracy.min() and hi > cells.accuracy.max()

    page = render_html(data)
    table = page[page.index('<table id="matrix">'):]
    table = table[:table.index("</table>")]
    assert table.count(">forgotten</td>") == 1
    rows = table.split("<tr>")
    assert ">forgotten</td>" in rows[4] and "v3" in rows[4]
