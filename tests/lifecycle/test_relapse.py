"""The relapse check and UnCLe's numbers, against hand-computed values."""

from __future__ import annotations

import pytest

from lifecycle.relapse import Forgotten, end_of_run_relapse, findings, relapse, spill


@pytest.mark.parametrize(
    "acc_now, acc_at_forget, chance, expected",
    [
        (0.10, 0.10, 0.10, 0.0),  # stayed at chance
        (0.00, 0.00, 0.10, 0.0),  # pushed below chance, still there
        (0.10, 0.00, 0.10, 0.0),  # drifted back up to chance: not a relapse (one-sided)
        (0.35, 0.00, 0.10, 0.25),  # came back above chance
        (0.50, 0.30, 0.10, 0.20),  # forget left it above chance; measured from there
        (0.20, 0.30, 0.10, 0.0),  # kept falling
    ],
)
def test_relapse_is_one_sided_above_the_higher_of_forget_time_and_chance(acc_now, acc_at_forget, chance, expected):
    assert relapse(acc_now, acc_at_forget, chance) == pytest.approx(expected)


def test_findings_only_above_threshold_and_keep_the_peak():
    tasks = [
        Forgotten("a", 3, acc_at_forget=0.0, peak_since_forget=0.4, accuracy=0.2, chance=0.1),  # 0.10 > 0.05
        Forgotten("b", 3, acc_at_forget=0.0, peak_since_forget=0.0, accuracy=0.14, chance=0.1),  # 0.04 <= 0.05
        Forgotten("c", 5, acc_at_forget=0.1, peak_since_forget=0.1, accuracy=0.9, chance=0.5),  # 0.40
    ]
    out = findings(tasks, threshold=0.05)
    assert [f["task"] for f in out] == ["a", "c"]
    assert out[0]["relapse"] == pytest.approx(0.1) and out[0]["peak_since_forget"] == 0.4
    assert out[1]["relapse"] == pytest.approx(0.4) and out[1]["peak_since_forget"] == 0.9


def test_spill_sums_absolute_changes_over_tasks_retained_across_the_forget():
    before = {"a": 0.9, "b": 0.8, "c": 0.7}
    after = {"a": 0.85, "b": 0.9, "c": 0.7}
    assert spill(before, after) == pytest.approx(0.05 + 0.1)


def test_end_of_run_relapse_is_absolute():
    assert end_of_run_relapse(0.05, 0.10) == pytest.approx(0.05)
    assert end_of_run_relapse(0.30, 0.10) == pytest.approx(0.20)


def test_a_gate_that_misses_the_task_it_has_just_forgotten_is_a_finding(lc):
    import tests.slow_strategy  # noqa: F401 (registers leaky_gate)
    from tests.data import digits_tasks, learn_task

    # the leaky gate fires on half of the retained task's probes too: allowed here (that finding is
    # tested in test_encoders.py), so the gate miss is the only finding
    lc.create_model("gated", strategy="leaky_gate", n_features=64, n_classes=10, config={"width": 128},
                    max_false_activation=0.6)
    t0, t1, _ = digits_tasks()
    learn_task(lc, "gated", t0)
    learn_task(lc, "gated", t1)
    lc.drain()
    req = lc.forget("gated", task="2-3")
    lc.drain()
    findings = lc.relapse("gated")
    assert [(f.task, f.version) for f in findings] == [("2-3", 3)]
    assert findings[0].relapse == pytest.approx(0.5, abs=0.01)
    body = lc.certificate(req.id)["certificate"]
    assert body["verification"]["relapse_status"] == "relapse"
    assert body["verification"]["gate"]["recall"]["2-3"] == pytest.approx(0.5, abs=0.01)
