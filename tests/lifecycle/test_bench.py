"""A small comparative bench run, fast enough for CI."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.harness import run_bench
from bench.reference import Retrain
from bench.sequence import Op, parse_sequence, role_masks
from bench.streams import STREAMS, load_stream
from lifecycle import strategies


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
    result = run_bench("split-digits", "L0 L1 U0", names, tmp_path, quick=True, baselines=("naive",), progress=False)

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


def test_the_retrain_reference_refits_on_what_is_retained_in_learn_order():
    fits = []
    retrain = Retrain(lambda parts: fits.append([(t, X.tolist()) for t, X, _ in parts]) or len(fits))
    one, two = np.array([1.0]), np.array([2.0])
    assert retrain.learn(1, one, one) == 1 and retrain.learn(0, two, two) == 2
    retrain.forget(1)
    retrain.learn(1, two, two)
    assert retrain.retained == [0, 1]
    assert fits == [[(1, [1.0])], [(1, [1.0]), (0, [2.0])], [(0, [2.0])], [(0, [2.0]), (1, [2.0])]]


def test_streams_are_loaded_by_name():
    assert set(STREAMS) >= {"split-digits", "permuted-mnist5k", "split-mnist5k"}
    tasks = load_stream("split-mnist5k", n_tasks=2, seed=0)
    assert [t.name for t in tasks] == ["0-1", "2-3"]
    assert set(tasks[1].y.tolist()) == {2, 3} and tasks[1].X.dtype == np.float32
    with pytest.raises(ValueError, match="unknown stream 'nope'"):
        load_stream("nope")


def test_the_runtime_does_not_import_the_bench_and_the_bench_not_the_tests():
    root = Path(__file__).resolve().parents[2]

    def imported(path: Path, top_level_only: bool) -> set[str]:
        tree = ast.parse(path.read_text())
        nodes = tree.body if top_level_only else ast.walk(tree)
        names = set()
        for node in nodes:
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        return names

    runtime = [p for p in (root / "lifecycle").rglob("*.py") if "bench" in imported(p, top_level_only=True)]
    assert runtime == [], "the runtime package imports the bench at module level"
    bench = [p.name for p in (root / "bench").glob("*.py") if "tests" in imported(p, top_level_only=False)]
    assert bench == [], "bench scripts import the tests"


def test_the_bench_command_says_when_it_is_not_in_a_checkout(monkeypatch, tmp_path, capsys):
    from lifecycle import cli

    fake = tmp_path / "site-packages" / "lifecycle" / "cli.py"  # an installed package: no bench/ beside it
    fake.parent.mkdir(parents=True)
    monkeypatch.setattr(cli, "__file__", str(fake))
    monkeypatch.setattr(sys, "argv", ["lifecycle", "bench", "--quick", "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error (BenchUnavailable): `lifecycle bench` ships with the source checkout")
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
