
"""The grid runner: resumes, never retrains finished runs, survives SIGKILL mid-grid."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ablation.core.config import EXPERIMENT_COPY, load_experiment
from ablation.core.records import CHECKPOINT, FILES, PROBES, TMP_PREFIX, is_complete
from ablation.running.grid import plan, run_grid
from ablation.running.lock import LOCK_NAME

NOT_RECORDS = (LOCK_NAME, EXPERIMENT_COPY)  # what else a grid keeps in its results directory

SMOKE = "experiments/smoke.toml"


def records(out: Path) -> dict[str, str]:
    return {p.name: (p / "summary.json").read_text() for p in out.iterdir()
            if not p.name.startswith(TMP_PREFIX) and is_complete(p)}


def test_grid_trains_every_run_then_skips_them(tmp_path):
    exp = load_experiment(SMOKE)
    p = run_grid(exp, tmp_path, workers=1, pack_size=8)
    assert len(p.runs) == 6 and len(p.todo) == 2  # one pack per seed
    first = records(tmp_path)
    assert sorted(first) == sorted(r.run_id() for r in exp.runs())
    for rid, text in first.items():
        s = json.loads(text)
        assert s["status"] == "complete" and s["pack_size"] == 3 and s["run_id"] == rid
        assert s["machine"]["numerics"] == "portable"  # the spawned workers inherit the mode
    mtimes = {p.name: (p / "summary.json").stat().st_mtime_ns for p in tmp_path.iterdir() if p.name not in NOT_RECORDS}
    again = run_grid(exp, tmp_path, workers=1)
    assert again.todo == [] and again.done == 6
    assert {p.name: (p / "summary.json").stat().st_mtime_ns for p in tmp_path.iterdir()
            if p.name not in NOT_RECORDS} == mtimes


@pytest.mark.slow
def test_pack_membership_does_not_change_results(tmp_path):
    """Packs of 1 give the records that packs of 3 give (paired, same seed)."""
    exp = load_experiment(SMOKE)
    run_grid(exp, tmp_path / "a", workers=1, pack_size=8, seeds=1)
    run_grid(exp, tmp_path / "b", workers=2, pack_size=1, seeds=1)
    for rid, text in records(tmp_path / "a").items():
        a, b = json.loads(text), json.loads(records(tmp_path / "b")[rid])
        assert (a["test_acc"], a["dev_acc"]) == (b["test_acc"], b["dev_acc"])


@pytest.mark.slow
def test_sigkill_mid_grid_then_resume(tmp_path):
    out = tmp_path / "out"
    args = [sys.executable, "-m", "ablation.cli", "grid", SMOKE, "--out", str(out), "--workers", "1",
            "--pack-size", "1", "--set", "data.train_limit=1500", "--set", "train.epochs=3"]
    exp = load_experiment(SMOKE, ["data.train_limit=1500", "train.epochs=3"])
    proc = subprocess.Popen(args, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not (out.is_dir() and len(records(out)) >= 2):
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, mid-grid
    proc.wait()
    before = records(out)
    assert 2 <= len(before) < 6, "the kill should land mid-grid"
    for p in out.iterdir():  # whatever is there is either complete or a hidden temporary
        assert is_complete(p) or p.name.startswith(TMP_PREFIX) or p.name in NOT_RECORDS
    assert len(plan(exp, out, pack_size=1).todo) == 6 - len(before)
    subprocess.run(args, check=True, capture_output=True, timeout=300)
    after = records(out)
    assert sorted(after) == sorted(r.run_id() for r in exp.runs())
    assert all(after[k] == v for k, v in before.items())  # finished runs were not retrained
    assert sorted(p.name for p in out.iterdir()) == sorted([*after, *NOT_RECORDS])  # no temporaries, no duplicates
    assert all(sorted(f.name for f in (out / k).iterdir()) == sorted([*FILES, PROBES, CHECKPOINT]) for k in after)


def test_trailing_packs_are_split_to_fill_the_last_round(tmp_path):
    exp = load_experiment("experiments/lecture.toml")
    sizes = lambda p: [len(pk) for pk in p.todo]  # noqa: E731
    assert sizes(plan(exp, tmp_path)) == [8] * 20
    assert sizes(plan(exp, tmp_path, workers=2, seeds=5)) == [8, 8, 8, 8, 4, 4]
    assert sizes(plan(exp, tmp_path, workers=3, seeds=2)) == [8, 4, 4]
    assert sizes(plan(exp, tmp_path, workers=2, seeds=1)) == [4, 4]

    assert sizes(plan(exp, tmp_path, workers=4, seeds=1)) == [2, 2, 2, 2]
    for p in (plan(exp, tmp_path, workers=2), plan(exp, tmp_path, workers=4, seeds=1)):
        assert sorted(r.run_id() for pk in p.todo for r in pk) == sorted(r.run_id() for r in p.runs)
        assert all(len({r.train.seed for r in pk}) == 1 for pk in p.todo)
