"""The relapse report of one model: a self-contained HTML page plus the same numbers as JSON.

The page needs nothing but itself to be read: plots are PNG data URIs and
there is no external script, style sheet or font. It is meant to be written
on a schedule by the service and opened by an operator or an auditor later.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import math
import os
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lifecycle import strategies
from lifecycle import metrics
from lifecycle.api import Lifecycle
from lifecycle.store.clock import utcnow
from lifecycle.store.records import Request, RequestKind, RequestStatus, TaskState

# A ledger can hold many thousands of requests; the page lists the latest ones
# and the JSON keeps them all.
MAX_REQUEST_ROWS = 500


@dataclass(frozen=True)
class ReportPaths:
    html: Path
    json: Path


def write_report(lc: Lifecycle, model: str, out_dir: str | os.PathLike, now: dt.datetime | None = None) -> ReportPaths:
    """Write ``<model>.html`` and ``<model>.json`` into ``out_dir`` and return their paths.

    Each file is written under a temporary name and renamed, so a reader
    never sees half a report.
    """
    data = build_report(lc, model, now)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = file_stem(model)
    paths = ReportPaths(out / f"{stem}.html", out / f"{stem}.json")
    _write_atomically(paths.json, json.dumps(jsonable(data), indent=2, allow_nan=False))
    _write_atomically(paths.html, render_html(data))
    return paths


# ---- numbers -------------------------------------------------------------------------------


def build_report(lc: Lifecycle, model: str, now: dt.datetime | None = None) -> dict[str, Any]:
    """Everything the report shows, as plain data (numpy arrays for the matrices)."""
    now = now or utcnow()
    m = lc.model(model)
    spec = strategies.get(m.strategy)
    requests = lc.ledger.requests(m.id)
    findings = lc.ledger.findings(m.id)
    matrix = metrics.from_history(lc.history(model))
    tasks = {t.name: t for t in lc.ledger.tasks(m.id)}
    by_id = {r.id: r for r in requests}

    return {
        "model": {
            "name": m.name,
            "strategy": m.strategy,
            "exactness": spec.tags.exactness,
            "forget_unit": spec.tags.forget_unit,
            "forget_needs": spec.tags.forget_needs,
            "needs_task_id": spec.tags.needs_task_id,
            "relapse_threshold": m.relapse_threshold,
            "latest_version": matrix.versions[-1] if matrix.versions else None,
        },
        "generated_at": now,
        "timeline": {
            "versions": list(matrix.versions),
            "kinds": list(matrix.kinds),
            "targets": [by_id[rid].describe_target() for rid in matrix.request_ids],
            "tasks": list(matrix.tasks),
            "accuracy": matrix.acc,
            "roles": _roles(matrix),
            "chance": matrix.chance,
        },
        "retained": _retained_section(matrix),
        "forgotten": _forgotten_rows(matrix, requests, findings, tasks, m.relapse_threshold),
        "findings": [
            {
                "version": f.version,
                "task": f.task,
                "forgotten_at_version": f.forgotten_at_version,
                "acc_at_forget": f.acc_at_forget,
                "accuracy": f.accuracy,
                "chance": f.chance,
                "relapse": f.relapse,
                "threshold": f.threshold,
                "peak_since_forget": f.peak_since_forget,
                "created_at": f.created_at,
            }
            for f in findings
        ],
        "open_requests": _open_requests(requests, now),
        "unapplied": [
            {"id": r.id, "seq": r.seq, "kind": r.kind, "target": r.describe_target(), "status": r.status,
             "attempt": r.attempt, "error": r.error, "received_at": r.received_at, "finished_at": r.finished_at}
            for r in requests if r.status in (RequestStatus.FAILED, RequestStatus.REJECTED)
        ],
        "requests": [_request_times(r) for r in requests],
        "request_summary": _time_summary(requests),
    }


def _roles(matrix: metrics.AccuracyMatrix) -> list[list[str | None]]:
    out = []
    for i in range(len(matrix.versions)):
        out.append(["retained" if matrix.retained[i, k] else "forgotten" if matrix.forgotten[i, k] else None
                    for k in range(len(matrix.tasks))])
    return out


def _retained_section(matrix: metrics.AccuracyMatrix) -> dict[str, Any]:
    if not matrix.versions:
        keep = np.zeros(len(matrix.tasks), dtype=bool)
    else:
        keep = matrix.retained[-1]
    per_task = metrics.forgetting(matrix.acc, matrix.retained, matrix.learned)
    boundary = metrics.learned_at(matrix.learned)
    return {
        "tasks": [t for t, k in zip(matrix.tasks, keep) if k],
        "versions": list(matrix.versions),
        "accuracy": matrix.acc[:, keep],
        "learned_at_version": [matrix.versions[b] if b >= 0 else None for b, k in zip(boundary, keep) if k],
        "forgetting": per_task[keep],
        "average_accuracy": metrics.average_accuracy(matrix.acc, matrix.retained),
        "stream_forgetting": metrics.stream_forgetting(matrix.acc, matrix.retained, matrix.learned),
        "bwt": metrics.bwt(matrix.acc, matrix.retained, matrix.learned),
    }


def _forgotten_rows(matrix, requests, findings, tasks, threshold) -> list[dict[str, Any]]:
    """One row per task forgotten now, and one per applied sample or subject forget."""
    row_of_version = {v: i for i, v in enumerate(matrix.versions)}
    column = {t: k for k, t in enumerate(matrix.tasks)}
    paper = metrics.relapse_paper(matrix.acc, matrix.forgotten)
    one_sided = metrics.relapse_one_sided(matrix.acc, matrix.forgotten, matrix.chance)
    by_version = {r.result_version: r for r in requests if r.status == RequestStatus.APPLIED}
    rows = []
    for t in tasks.values():
        if t.state != TaskState.FORGOTTEN or t.name not in column:
            continue
        k = column[t.name]
        step = row_of_version.get(t.forgotten_at_version)
        req = by_version.get(t.forgotten_at_version)
        relapsed = [f for f in findings if f.task == t.name and f.forgotten_at_version == t.forgotten_at_version]
        rows.append({
            "unit": "task",
            "target": t.name,
            "request_id": req.id if req else None,
            "forgotten_at_version": t.forgotten_at_version,
            "fa_now": float(matrix.acc[-1, k]),
            "fa_at_forget": t.acc_at_forget,
            "peak_since_forget": t.peak_since_forget,
            "chance": float(matrix.chance[k]),
            "relapse_now": float(one_sided[k]),
            "relapse_paper": float(paper[k]),
            "relapsed": bool(relapsed) or float(one_sided[k]) > threshold,
            "findings": len(relapsed),
            "spill": metrics.forget_spill(matrix.acc, matrix.retained, step) if step is not None else None,
        })
    by_id = {r.id: r for r in requests}
    for step, request_id in enumerate(matrix.request_ids):
        r = by_id[request_id]
        if r.kind != RequestKind.FORGET or "task" in r.target:
            continue
        rows.append({
            "unit": r.forget_target.unit,
            "target": r.describe_target(),
            "request_id": r.id,
            "forgotten_at_version": r.result_version,
            # a subject or a list of samples has no probe set of its own
            "fa_now": None, "fa_at_forget": None, "peak_since_forget": None, "chance": None,
            "relapse_now": None, "relapse_paper": None, "relapsed": False, "findings": 0,
            "spill": metrics.forget_spill(matrix.acc, matrix.retained, step),
        })
    return rows


def _open_requests(requests: list[Request], now: dt.datetime) -> list[dict[str, Any]]:
    open_ = sorted((r for r in requests if r.status in (RequestStatus.QUEUED, RequestStatus.RUNNING)), key=lambda r: (r.received_at, r.seq))
    return [
        {"id": r.id, "seq": r.seq, "kind": r.kind, "target": r.describe_target(), "status": r.status,
         "received_at": r.received_at, "age_s": (now - r.received_at).total_seconds(), "due_at": r.due_at,
         "overdue": r.due_at is not None and r.due_at < now}
        for r in open_
    ]


def _request_times(r: Request) -> dict[str, Any]:
    def seconds(a, b):
        return (b - a).total_seconds() if a is not None and b is not None else None

    return {"seq": r.seq, "id": r.id, "kind": r.kind, "target": r.describe_target(), "status": r.status,
            "version": r.result_version, "attempt": r.attempt, "received_at": r.received_at,
            "started_at": r.started_at, "finished_at": r.finished_at,
            "wait_s": seconds(r.received_at, r.started_at), "step_s": r.step_seconds,
            "total_s": seconds(r.received_at, r.finished_at)}


def _time_summary(requests: list[Request]) -> list[dict[str, Any]]:
    out = []
    for kind in (RequestKind.LEARN, RequestKind.FORGET):
        done = [_request_times(r) for r in requests if r.kind == kind and r.status == RequestStatus.APPLIED]
        steps = [d["step_s"] for d in done if d["step_s"] is not None]
        totals = [d["total_s"] for d in done if d["total_s"] is not None]
        out.append({
            "kind": kind,
            "applied": len(done),
            "step_s_mean": statistics.fmean(steps) if steps else None,
            "step_s_max": max(steps) if steps else None,
            "total_s_median": statistics.median(totals) if totals else None,
            "total_s_max": max(totals) if totals else None,
        })
    return out


# ---- plots ---------------------------------------------------------------------------------

# What a cell of the retained-task heat map stands for. Only RETAINED cells carry a number:
# an accuracy measured while a task was forgotten on purpose, or before it was learned, is
# not a retained accuracy and is drawn as a blank, never as 0.00.
RETAINED, FORGOTTEN, NOT_LEARNED, NOT_EVALUATED = "retained", "forgotten", "not learned yet", "not evaluated"

# y range of a plot with nothing to show, and of the panel of forgotten tasks
FULL_RANGE = (-0.03, 1.03)

_CELL_STYLE = {  # how a blank heat-map cell is drawn, and named in the legend
    FORGOTTEN: {"facecolor": "#d9d9d9", "edgecolor": "#8c8c8c", "hatch": "///"},
    NOT_LEARNED: {"facecolor": "white", "edgecolor": "#bfbfbf", "hatch": None},
    NOT_EVALUATED: {"facecolor": "#f2f2f2", "edgecolor": "#bfbfbf", "hatch": ".."},
}


@dataclass(frozen=True)
class MatrixCells:
    """The heat map's data: accuracies of retained tasks, masked wherever the task was not retained."""

    tasks: list[str]
    versions: list[int]
    accuracy: np.ma.MaskedArray  # (versions, tasks); masked unless state is RETAINED with a number
    state: np.ndarray  # (versions, tasks) of RETAINED, FORGOTTEN, NOT_LEARNED, NOT_EVALUATED


def accuracy_limits(values, chance: float | None = None, pad: float = 0.1,
                    min_span: float = 0.04) -> tuple[float, float]:
    """An axis range that encloses ``values`` (accuracies in 0..1) with a margin, not a fixed 0..1.

    The range is at least ``min_span`` wide, so a flat line does not turn
    rounding noise into a cliff, and gets ``pad`` of its width as a margin
    on each side. Chance is brought into view when it lies below the data by
    no more than the data's own spread: then how far above guessing the
    tasks are is worth seeing; further down it would squash the differences
    between them flat again. NaNs are ignored; no values gives ``FULL_RANGE``.
    """
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return FULL_RANGE
    lo, hi = float(v.min()), float(v.max())
    if hi - lo < min_span:
        middle = (lo + hi) / 2
        lo, hi = middle - min_span / 2, middle + min_span / 2
        if hi > 1.0:
            lo, hi = lo - (hi - 1.0), 1.0
        if lo < 0.0:
            lo, hi = 0.0, hi - lo
    if chance is not None and math.isfinite(chance) and chance < lo and lo - chance <= hi - lo:
        lo = float(chance)
    margin = pad * (hi - lo)
    return lo - margin, hi + margin


def timeline_limits(data: dict[str, Any]) -> tuple[float, float]:
    """The y range of the timeline's retained panel: from the accuracies of tasks while retained."""
    tl = data["timeline"]
    acc = np.asarray(tl["accuracy"], dtype=float)
    if acc.size == 0:
        return FULL_RANGE
    kept = np.array([[r == RETAINED for r in row] for row in tl["roles"]], dtype=bool).reshape(acc.shape)
    return accuracy_limits(acc[kept], chance=_chance_near(tl, kept))


def _chance_near(tl: dict[str, Any], kept: np.ndarray) -> float | None:
    """The highest chance level among the tasks the panel shows (the one nearest their accuracies)."""
    chance = np.asarray(tl.get("chance", []), dtype=float)
    if chance.size != kept.shape[1]:
        return None
    shown = chance[kept.any(axis=0) & np.isfinite(chance)]
    return float(shown.max()) if shown.size else None


def matrix_cells(data: dict[str, Any]) -> MatrixCells | None:
    """The retained section's accuracy matrix with every cell not meant to be known masked.

    A cell is kept only where the timeline's role of that task at that version
    is ``retained``; a task's forgotten stretch (before a relearn) and the
    versions before it was first learned are masked, whatever the probe said.
    None when there is no cell at all.
    """
    sec, tl = data["retained"], data["timeline"]
    acc = np.asarray(sec["accuracy"], dtype=float)
    if acc.size == 0:
        return None
    column = {t: k for k, t in enumerate(tl["tasks"])}
    row = {v: i for i, v in enumerate(tl["versions"])}
    state = np.full(acc.shape, NOT_EVALUATED, dtype=object)
    for j, task in enumerate(sec["tasks"]):
        seen = False  # retained or forgotten at an earlier version: learned by now
        for i, version in enumerate(sec["versions"]):
            role = tl["roles"][row[version]][column[task]] if version in row and task in column else None
            if role == RETAINED:
                state[i, j] = RETAINED if math.isfinite(acc[i, j]) else NOT_EVALUATED
            elif role == FORGOTTEN:
                state[i, j] = FORGOTTEN
            else:
                state[i, j] = NOT_EVALUATED if seen else NOT_LEARNED
            seen = seen or role in (RETAINED, FORGOTTEN)
    masked = np.ma.masked_array(np.where(state == RETAINED, acc, np.nan), mask=state != RETAINED)
    return MatrixCells(list(sec["tasks"]), list(sec["versions"]), masked, state)


def short_label(name: str, width: int = 16) -> str:
    """A task name cut in the middle to at most ``width`` characters, so both ends stay readable."""
    name = str(name)
    if len(name) <= width:
        return name
    head = (width - 1) // 2 + (width - 1) % 2
    return name[:head] + "…" + name[len(name) - (width - 1 - head):]


def short_labels(names, width: int = 16) -> list[str]:
    """Tick or legend labels of at most ``width`` characters that still tell the names apart.

    Names that share a long beginning and end ("customer-07-scan",
    "customer-08-scan") keep the part where they differ, widened with what
    is around it while it fits, and mark each cut with "…". A distinct part
    longer than ``width`` is itself cut in the middle.
    """
    names = [str(n) for n in names]
    if all(len(n) <= width for n in names):
        return names
    lead = len(os.path.commonprefix(names)) if len(names) > 1 else 0
    trail = len(os.path.commonprefix([n[::-1] for n in names])) if len(names) > 1 else 0
    out = []
    for name in names:
        if len(name) <= width:
            out.append(name)
            continue
        start = min(lead, len(name))
        end = max(len(name) - trail, start)
        if start == end:  # nothing of its own (a name that is a prefix of the others): cut in the middle
            out.append(short_label(name, width))
            continue

        def label(a: int, b: int, name: str = name) -> str:
            return ("…" if a > 0 else "") + name[a:b] + ("…" if b < len(name) else "")

        if len(label(start, end)) > width:
            inner = width - (start > 0) - (end < len(name))
            out.append(("…" if start > 0 else "") + short_label(name[start:end], max(inner, 3))
                       + ("…" if end < len(name) else ""))
            continue
        grew = True
        while grew:  # widen left and right in turn while the label fits
            grew = False
            if start > 0 and len(label(start - 1, end)) <= width:
                start, grew = start - 1, True
            if end < len(name) and len(label(start, end + 1)) <= width:
                end, grew = end + 1, True
        out.append(label(start, end))
    return out


def _tick_fontsize(count: int) -> float:
    return 9 if count <= 10 else 8 if count <= 20 else 7 if count <= 40 else 6


def _task_colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(k % cmap.N) for k in range(n)]


def timeline_png(data: dict[str, Any]) -> bytes:
    """Every task's accuracy after every step; learns and forgets marked, findings circled."""
    return figure_png(timeline_figure(data))


def timeline_figure(data: dict[str, Any]):
    """The timeline as a matplotlib Figure (see ``timeline_png``).

    The top panel holds the tasks while retained, on a y range fitted to them
    (``timeline_limits``); when a task has been forgotten, a lower panel shows
    the tasks while forgotten on the full 0..1 range with their chance level,
    which is where a relapse shows.
    """
    from matplotlib.figure import Figure

    tl = data["timeline"]
    versions = np.array(tl["versions"], dtype=float)
    acc = np.asarray(tl["accuracy"], dtype=float).reshape(len(versions), len(tl["tasks"]))
    roles = np.array([[r or "" for r in row] for row in tl["roles"]], dtype=object).reshape(acc.shape)
    kept, off = roles == RETAINED, roles == FORGOTTEN
    chance = np.asarray(tl.get("chance", [np.nan] * len(tl["tasks"])), dtype=float)
    colours = _task_colours(len(tl["tasks"]))
    names = short_labels(tl["tasks"], 24)
    two = bool((off & np.isfinite(acc)).any() or data["findings"])

    fig = Figure(figsize=(10, 7 if two else 4.5), dpi=100)
    if two:
        top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    else:
        top, bottom = fig.add_subplot(), None
    fig.suptitle(f"{data['model']['name']}: accuracy of every task after every step")
    if len(versions) == 0:
        top.text(0.5, 0.5, "no applied steps yet", ha="center", va="center", transform=top.transAxes)
    for ax in (top, bottom):
        if ax is None:
            continue
        for v, kind in zip(versions, tl["kinds"]):
            ax.axvline(v, color="tab:green" if kind == RequestKind.LEARN else "tab:red", alpha=0.25,
                       linestyle="-" if kind == RequestKind.LEARN else "--", linewidth=1.5)
        ax.grid(alpha=0.3)

    # top: retained tasks only, broken where a task is not retained, on a range fitted to them
    for k in range(len(tl["tasks"])):
        if kept[:, k].any():
            top.plot(versions, np.where(kept[:, k], acc[:, k], np.nan), color=colours[k], linewidth=2,
                     marker="o", markersize=4, label=names[k])
    lo, hi = timeline_limits(data)
    top.set_ylim(lo, hi)
    for c in sorted({float(c) for c in chance[kept.any(axis=0)] if math.isfinite(c) and lo <= c <= hi}):
        top.axhline(c, color="0.4", linestyle="-.", linewidth=1)
    zoomed = f"\n(axis from {lo:.2f}, not 0)" if lo > 0.05 else ""
    top.set_ylabel(f"probe accuracy, retained tasks{zoomed}")
    top.set_title("tasks while retained (solid; a gap is a forgotten or not yet learned stretch)", fontsize=10)

    top.plot([], [], color="tab:green", alpha=0.4, label="learn step")
    top.plot([], [], color="tab:red", alpha=0.4, linestyle="--", label="forget step")
    if bottom is not None:
        # bottom: tasks while forgotten, their whole history faint for context, on the full range
        for k in np.flatnonzero(off.any(axis=0)):
            bottom.plot(versions, acc[:, k], color=colours[k], linewidth=1, linestyle=":", alpha=0.7)
            bottom.plot(versions, np.where(off[:, k], acc[:, k], np.nan), color=colours[k], linewidth=2,
                        marker="x", markersize=7, label=f"{names[k]} (forgotten)")
            if math.isfinite(chance[k]):
                bottom.axhline(chance[k], color="0.4", linestyle="-.", linewidth=1)
        right = versions.max() - 0.25 * (versions.max() - versions.min()) if len(versions) else 0
        named = set()  # each relapsed task is named once; later findings of it are circled only
        for f in data["findings"]:
            bottom.plot([f["version"]], [f["accuracy"]], marker="o", markersize=14, markerfacecolor="none",
                        markeredgecolor="red", markeredgewidth=2)
            if f["task"] in named:
                continue
            named.add(f["task"])
            late = f["version"] > right  # near the right edge: write the note to the left of the circle
            name = names[tl["tasks"].index(f["task"])] if f["task"] in tl["tasks"] else short_label(f["task"])
            bottom.annotate(f"relapse {name}", (f["version"], f["accuracy"]),
                            textcoords="offset points", xytext=(-10 if late else 10, -14), color="red",
                            fontsize=8, ha="right" if late else "left")
        bottom.plot([], [], color="0.4", linestyle="-.", linewidth=1, label="chance")
        if data["findings"]:
            bottom.plot([], [], marker="o", markerfacecolor="none", markeredgecolor="red", linestyle="",
                        label="relapse finding")
        bottom.set_ylim(*FULL_RANGE)
        bottom.set_ylabel("probe accuracy\n(forgotten tasks)")
        bottom.set_title("tasks while forgotten (x; dotted: their whole history); above chance is relapse",
                         fontsize=10)
        bottom.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    elif any(math.isfinite(c) and lo <= c <= hi for c in chance):
        top.plot([], [], color="0.4", linestyle="-.", linewidth=1, label="chance")
    last = bottom if bottom is not None else top
    last.set_xlabel("model version (one per applied request)")
    if len(versions):
        step = max(1, math.ceil(len(versions) / 20))
        last.set_xticks(versions[::step])
    top.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8,
               ncol=1 if len(tl["tasks"]) <= 16 else 2)
    fig.tight_layout()
    return fig


def matrix_png(data: dict[str, Any]) -> bytes | None:
    """Heat map of the accuracy matrix over retained tasks; None when there is nothing to show."""
    fig = matrix_figure(data)
    return None if fig is None else figure_png(fig)


def matrix_figure(data: dict[str, Any]):
    """The heat map as a matplotlib Figure, or None (see ``matrix_png`` and ``matrix_cells``).

    Colours span the retained accuracies actually seen, so tasks at 0.95 and
    0.99 do not share one colour; cells not retained are hatched or blank
    and named in the legend. Numbers are written into the cells only while
    there are few enough of them to read.
    """
    from matplotlib import colormaps
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Rectangle
    from matplotlib.ticker import FormatStrFormatter, MaxNLocator

    cells = matrix_cells(data)
    if cells is None:
        return None
    rows, cols = cells.accuracy.shape
    labels = short_labels(cells.tasks)
    longest = max(len(s) for s in labels)
    rotation = 0 if longest <= 5 and cols <= 12 else 45 if cols <= 30 else 90
    fig = Figure(figsize=(min(max(3.2 + 0.75 * cols, 6.0), 16.0),
                          min(max(2.2 + 0.32 * rows + (0.06 * longest if rotation else 0), 3.5), 14.0)), dpi=100)
    ax = fig.add_subplot()

    lo, hi = accuracy_limits(cells.accuracy.compressed(), pad=0.0, min_span=0.02)
    lo, hi = max(lo, 0.0), min(hi, 1.0)
    norm = Normalize(vmin=lo, vmax=hi)
    cmap = colormaps["viridis"].with_extremes(bad=(0, 0, 0, 0))
    image = ax.imshow(cells.accuracy, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    for i in range(rows):
        for k in range(cols):
            style = _CELL_STYLE.get(cells.state[i, k])
            if style is not None:
                ax.add_patch(Rectangle((k - 0.5, i - 0.5), 1, 1, linewidth=0, **style))

    if rows * cols <= 150 and cols <= 16:
        values = cells.accuracy.compressed()
        digits = 3 if values.size and float(values.max() - values.min()) < 0.1 else 2
        size = 8 if cols <= 8 and rows <= 15 else 7 if cols <= 12 else 6
        for i in range(rows):
            for k in range(cols):
                if cells.state[i, k] == RETAINED:
                    a = float(cells.accuracy[i, k])
                    ax.text(k, i, f"{a:.{digits}f}", ha="center", va="center", fontsize=size,
                            color="white" if norm(a) < 0.55 else "black")

    ax.set_xticks(range(cols), labels, fontsize=_tick_fontsize(cols), rotation=rotation,
                  ha="right" if rotation == 45 else "center", rotation_mode="anchor" if rotation == 45 else "default")
    ystep = max(1, math.ceil(rows / 40))
    ax.set_yticks(range(0, rows, ystep), [f"v{v}" for v in cells.versions[::ystep]], fontsize=_tick_fontsize(rows))
    ax.set_xticks(np.arange(cols + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(rows + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=1)
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel("retained task")
    ax.set_ylabel("after version")
    fig.suptitle("accuracy of the tasks retained now, after every version", fontsize=11)
    bar = fig.colorbar(image, ax=ax)
    bar.locator = MaxNLocator(6)
    bar.formatter = FormatStrFormatter("%.2f" if hi - lo >= 0.05 else "%.3f")
    bar.update_ticks()
    bar.set_label(f"probe accuracy (colour scale {lo:.2f} to {hi:.2f})")
    present = [s for s in (FORGOTTEN, NOT_LEARNED, NOT_EVALUATED) if (cells.state == s).any()]
    if present:
        handles = [Patch(label=s, linewidth=0.8, **_CELL_STYLE[s]) for s in present]
        ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=len(handles),
                  fontsize=8, frameon=False, borderaxespad=0.3, handlelength=2.5, handleheight=1.2)
    fig.tight_layout()
    return fig


def figure_png(fig) -> bytes:
    """PNG bytes of a matplotlib Figure, drawn with the Agg backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    # a canvas of its own: no pyplot, no global backend switch, safe in the service's threads
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# ---- HTML ----------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.text { text-align: left; }
tr.relapsed td { background: #fde2e2; } tr.overdue td { background: #fff0c2; }
.flag { color: #b00; font-weight: bold; } .muted { color: #777; }
img { max-width: 100%; border: 1px solid #eee; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dt { font-weight: bold; }
"""

# Lets a headless browser (and a curious reader) see that every plot decoded.
_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = document.querySelectorAll("img.plot"), ok = 0;
  imgs.forEach(function (img) { if (img.complete && img.naturalWidth > 0) { ok += 1; } });
  document.body.setAttribute("data-plots", String(imgs.length));
  document.body.setAttribute("data-plots-loaded", String(ok));
});
"""


def render_html(data: dict[str, Any]) -> str:
    m = data["model"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Relapse report: {_e(m['name'])}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Relapse report: {_e(m['name'])}</h1>",
        "<dl>",
        f"<dt>generated</dt><dd>{_e(_time(data['generated_at']))}</dd>",
        f"<dt>strategy</dt><dd>{_e(m['strategy'])} ({_e(m['exactness'])}; forgets by {_e(m['forget_unit'])}; "
        f"needs {_e(m['forget_needs'])} to forget)</dd>",
        f"<dt>latest version</dt><dd>{_e(m['latest_version'] if m['latest_version'] is not None else 'none')}</dd>",
        f"<dt>relapse threshold</dt><dd>{_pct(m['relapse_threshold'])}</dd>",
        f"<dt>relapse findings</dt><dd>{len(data['findings'])}</dd>",
        "</dl>",
        "<h2>Timeline</h2>",
        _img(timeline_png(data), "accuracy of every task after every step", "timeline"),
    ]
    parts += _retained_html(data)
    parts += _forgotten_html(data)
    parts += _findings_html(data)
    parts += _open_html(data)
    parts += _unapplied_html(data)
    parts += _requests_html(data)
    parts.append(f"<script>{_SCRIPT}</script></body></html>")
    return "\n".join(parts)


def _retained_html(data) -> list[str]:
    sec = data["retained"]
    out = ["<h2>Retained tasks: accuracy matrix</h2>",
           "<p>Over tasks that should still be known. Forgetting is Avalanche's: accuracy right after the task "
           "was last trained minus the latest accuracy (BWT is its negative); a task forgotten on purpose is "
           "not counted.</p>",
           '<table id="summary"><tr><th>average accuracy</th><th>forgetting</th><th>BWT</th></tr>',
           f"<tr><td>{_pct(sec['average_accuracy'])}</td><td>{_pts(sec['stream_forgetting'])}</td>"
           f"<td>{_pts(sec['bwt'])}</td></tr></table>"]
    png = matrix_png(data)
    if png is None:
        out.append('<p class="muted">No retained task has been evaluated yet.</p>')
        return out
    out.append(_img(png, "accuracy matrix over retained tasks", "matrix"))
    head = "".join(f"<th>{_e(t)}</th>" for t in sec["tasks"])
    out.append(f'<table id="matrix"><tr><th>version</th>{head}</tr>')
    cells = matrix_cells(data)
    for i, (v, row) in enumerate(zip(sec["versions"], np.asarray(sec["accuracy"], dtype=float))):
        out.append(f"<tr><td>v{v}</td>" + "".join(_matrix_cell_html(a, cells.state[i, k])
                                                   for k, a in enumerate(row)) + "</tr>")
    out.append("<tr><th>learned at</th>" + "".join(
        f"<td>{'v' + str(v) if v is not None else '—'}</td>" for v in sec["learned_at_version"]) + "</tr>")
    out.append("<tr><th>forgetting</th>" + "".join(f"<td>{_pts(f)}</td>" for f in sec["forgetting"]) + "</tr>")
    out.append("</table>")
    return out


def _matrix_cell_html(accuracy, state: str) -> str:
    """A cell of the retained matrix table: a number only while the task was retained, as in the plot."""
    if state == FORGOTTEN:
        return f'<td class="muted" title="measured while forgotten: {_pct(accuracy)}">forgotten</td>'
    return f"<td>{_pct(accuracy if state == RETAINED else float('nan'))}</td>"


def _forgotten_html(data) -> list[str]:
    out = ["<h2>Forgotten tasks and subjects</h2>",
           "<p>Relapse is one-sided: <code>max(0, acc − max(acc at forget, chance))</code>. The paper's "
           "number is <code>|acc now − acc at forget|</code>. Spill is the summed |Δ accuracy| of the tasks "
           "retained across that forget.</p>"]
    rows = data["forgotten"]
    out.append('<table id="relapse"><tr><th>unit</th><th>target</th><th>forgotten at</th><th>accuracy now</th>'
               "<th>at forget</th><th>peak since</th><th>chance</th><th>relapse now</th><th>relapse (paper)</th>"
               "<th>findings</th><th>relapsed</th><th>spill of that forget</th><th>request</th></tr>")
    if not rows:
        out.append('<tr><td class="text muted" colspan="13">nothing has been forgotten</td></tr>')
    for r in rows:
        flag = '<span class="flag">RELAPSED</span>' if r["relapsed"] else "no"
        out.append(
            f'<tr class="{"relapsed" if r["relapsed"] else ""}" data-target="{_e(r["target"])}">'
            f'<td class="text">{_e(r["unit"])}</td><td class="text">{_e(r["target"])}</td>'
            f"<td>v{r['forgotten_at_version']}</td><td>{_pct(r['fa_now'])}</td><td>{_pct(r['fa_at_forget'])}</td>"
            f"<td>{_pct(r['peak_since_forget'])}</td><td>{_pct(r['chance'])}</td><td>{_pts(r['relapse_now'])}</td>"
            f"<td>{_pts(r['relapse_paper'])}</td><td>{r['findings']}</td><td>{flag}</td><td>{_pts(r['spill'])}</td>"
            f'<td class="text">{_e(_short(r["request_id"]))}</td></tr>')
    out.append("</table>")
    return out


def _findings_html(data) -> list[str]:
    out = ["<h2>Relapse findings</h2>",
           '<table id="findings"><tr><th>version</th><th>task</th><th>forgotten at</th><th>accuracy</th>'
           "<th>at forget</th><th>chance</th><th>relapse</th><th>threshold</th><th>recorded</th></tr>"]
    if not data["findings"]:
        out.append('<tr><td class="text muted" colspan="9">none</td></tr>')
    for f in data["findings"]:
        out.append(f'<tr class="relapsed"><td>v{f["version"]}</td><td class="text">{_e(f["task"])}</td>'
                   f"<td>v{f['forgotten_at_version']}</td><td>{_pct(f['accuracy'])}</td>"
                   f"<td>{_pct(f['acc_at_forget'])}</td><td>{_pct(f['chance'])}</td><td>{_pts(f['relapse'])}</td>"
                   f"<td>{_pts(f['threshold'])}</td><td>{_e(_time(f['created_at']))}</td></tr>")
    out.append("</table>")
    return out


def _open_html(data) -> list[str]:
    out = ["<h2>Open requests (oldest first)</h2>",
           '<table id="open"><tr><th>received</th><th>age</th><th>due</th><th>kind</th><th>target</th>'
           "<th>status</th><th>request</th></tr>"]
    if not data["open_requests"]:
        out.append('<tr><td class="text muted" colspan="7">the queue is empty</td></tr>')
    for r in data["open_requests"]:
        due = _time(r["due_at"]) + (' <span class="flag">OVERDUE</span>' if r["overdue"] else "")
        out.append(f'<tr class="{"overdue" if r["overdue"] else ""}"><td>{_e(_time(r["received_at"]))}</td>'
                   f"<td>{_e(_duration(r['age_s']))}</td><td>{due}</td><td class=\"text\">{_e(r['kind'])}</td>"
                   f'<td class="text">{_e(r["target"])}</td><td class="text">{_e(r["status"])}</td>'
                   f'<td class="text">{_e(_short(r["id"]))}</td></tr>')
    out.append("</table>")
    return out


def _unapplied_html(data) -> list[str]:
    out = ["<h2>Failed and rejected requests</h2>",
           '<table id="failed"><tr><th>#</th><th>kind</th><th>target</th><th>status</th><th>attempts</th>'
           "<th>finished</th><th>error</th></tr>"]
    if not data["unapplied"]:
        out.append('<tr><td class="text muted" colspan="7">none</td></tr>')
    for r in data["unapplied"]:
        out.append(f"<tr><td>{r['seq']}</td><td class=\"text\">{_e(r['kind'])}</td>"
                   f'<td class="text">{_e(r["target"])}</td><td class="text">{_e(r["status"])}</td>'
                   f"<td>{r['attempt']}</td><td>{_e(_time(r['finished_at']))}</td>"
                   f'<td class="text">{_e(r["error"] or "")}</td></tr>')
    out.append("</table>")
    return out


def _requests_html(data) -> list[str]:
    out = ["<h2>Request times</h2>",
           '<table id="times-summary"><tr><th>kind</th><th>applied</th><th>mean step</th><th>max step</th>'
           "<th>median received→done</th><th>max received→done</th></tr>"]
    for s in data["request_summary"]:
        out.append(f"<tr><td class=\"text\">{s['kind']}</td><td>{s['applied']}</td><td>{_secs(s['step_s_mean'])}</td>"
                   f"<td>{_secs(s['step_s_max'])}</td><td>{_secs(s['total_s_median'])}</td>"
                   f"<td>{_secs(s['total_s_max'])}</td></tr>")
    out.append("</table>")
    rows = data["requests"]
    if len(rows) > MAX_REQUEST_ROWS:
        out.append(f'<p class="muted">The latest {MAX_REQUEST_ROWS} of {len(rows)} requests; the JSON lists '
                   "them all.</p>")
        rows = rows[-MAX_REQUEST_ROWS:]
    out.append('<table id="requests"><tr><th>#</th><th>kind</th><th>target</th><th>status</th><th>version</th>'
               "<th>received</th><th>queue wait</th><th>step</th><th>received→done</th><th>request</th></tr>")
    for r in rows:
        version = f"v{r['version']}" if r["version"] is not None else ""
        out.append(f"<tr><td>{r['seq']}</td><td class=\"text\">{_e(r['kind'])}</td>"
                   f'<td class="text">{_e(r["target"])}</td><td class="text">{_e(r["status"])}</td>'
                   f"<td>{version}</td><td>{_e(_time(r['received_at']))}</td><td>{_secs(r['wait_s'])}</td>"
                   f"<td>{_secs(r['step_s'])}</td><td>{_secs(r['total_s'])}</td>"
                   f'<td class="text">{_e(_short(r["id"]))}</td></tr>')
    out.append("</table>")
    return out


def _img(png: bytes, alt: str, ident: str) -> str:
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return f'<img class="plot" id="{ident}-plot" alt="{_e(alt)}" src="{uri}">'


# ---- formatting and files ------------------------------------------------------------------


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _pct(x) -> str:
    return "—" if _missing(x) else f"{100 * float(x):.1f}%"


def _pts(x) -> str:
    """An accuracy difference, in percentage points."""
    return "—" if _missing(x) else f"{100 * float(x):+.1f} pt"


def _secs(x) -> str:
    return "—" if _missing(x) else f"{x:.3f} s" if x < 60 else _duration(x)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def _time(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


def _short(request_id: str | None) -> str:
    return request_id[:8] if request_id else ""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def jsonable(value: Any) -> Any:
    """Plain JSON: NaN becomes null, datetimes ISO 8601, arrays lists."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value


def file_stem(model: str) -> str:
    # model names are free text; keep the file name portable
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("._") or "model"
    return stem[:100]


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
