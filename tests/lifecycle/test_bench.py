"""A small comparative bench run, fast enough for CI."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from lifecycle import strategies
from lifecycle.bench import Op, parse_sequence, role_masks, run_bench


def test_sequences_are_parsed_and_checked():
    assert parse_sequence("L0 l1 U0 L0", 5) == (Op("learn", 0), Op("learn", 1), Op("forget", 0), Op("learn", 0))
    for bad, why in (("L0 L0", "already learned"), ("U1", "nothing to forget"), ("L7", "tasks 0..4"),
                     ("L0 X1", "bad step"), ("", "empty")):
        with pytest.raises(ValueError, match=why):
            parse_sequence(bad, 5)


def test_role_masks_follow_the_sequence():
    columns, retained, forgotten, learned = role_masks(parse_sequence("L2 L0 U2 L2", 5))
    assert columns == [2, 0]
    assert retained.tolist() == [[True, False], [True, True], [False, True], [True, True]]
    assert forgotten.tolist() == [[False, False], [False, False], [True, False], [False, False]]
    assert learned.tolist() == [[True, False], [False, True], [False, False], [True, False]]


def test_a_small_bench_run(tmp_path, capsys):
    # analytic and whichever other strategy is registered (hypernet lands beside this)
    names = ["analytic", *[n for n in strategies.names() if n != "analytic"][:1]]
    started = time.monotonic()
    result = run_bench("split-digits", "L0 L1 U0", names, tmp_path, quick=True, baselines=("naive",), progress=False)
    elapsed = time.monotonic() - started

    rows = {r.method: r for r in result.rows}
    assert list(rows) == ["retrain", "naive", *names]
    analytic, reference = rows["analytic"], rows["retrain"]
    # exact unlearning of classes 0 and 1 from a class-incremental head: they are never predicted again
    assert analytic.fa == 0.0 and analytic.ra > 0.9
    assert analytic.relapse == 0.0 and analytic.relapse_paper == 0.0
    assert analytic.exactness == "exact" and analytic.forget_needs == "the forgotten samples"
    assert analytic.mia_gap < 0.05
    assert analytic.learn_s > 0 and analytic.forget_s > 0
    assert reference.ra > 0.9 and reference.fa < 0.05 and reference.mia_gap == 0.0
    assert rows["naive"].family == "avalanche" and rows["naive"].forget_needs == "all retained data"
    for name in names[1:]:
        other = rows[name]
        assert other.exactness == strategies.get(name).tags.exactness
        assert 0 <= other.fa <= 1 and 0 <= other.ra <= 1

    run = next(r for r in result.runs if r.method == "analytic")
    assert run.tasks == ("0-1", "2-3") and run.forget_steps == (2,)
    assert np.isnan(run.acc[0, 1]) and run.forgotten[-1].tolist() == [True, False]

    saved = json.loads(result.json_path.read_text())
    assert [r["method"] for r in saved["rows"]] == list(rows)
    assert saved["rows"][2]["fa"] == 0.0
    assert "| analytic | strategy | exact |" in result.markdown_path.read_text()
    assert result.png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "analytic" in capsys.readouterr().out
    assert elapsed < 60, f"the CI bench run took {elapsed:.0f} s"
