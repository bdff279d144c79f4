from __future__ import annotations

import io

from rich.console import Console

from lifecycle.demo import run_demo


def test_demo_runs_every_step_through_the_service(tmp_path):
    out = io.StringIO()
    lc = run_demo(f"sqlite:///{tmp_path / 'demo.db'}", width=256, console=Console(file=out, width=120))
    reqs = lc.requests("digits")
    assert [r.kind for r in reqs] == ["learn"] * 5 + ["forget", "forget", "learn", "learn"]
    assert {r.status for r in reqs} == {"applied"}
    assert [r.result_version for r in reqs] == list(range(1, 10))
    text = out.getvalue()
    assert "forget task 4-5" in text and "forgotten" in text and "samples removed, exactness exact" in text
    tasks = {t.name: t.state for t in lc.tasks("digits")}
    assert tasks["4-5"] == "relearned"
