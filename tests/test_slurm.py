"""The grid on a real Slurm cluster (scripts/slurm.sh, brought up by `make test`).

Skipped where no cluster answers, unless ABLATION_REQUIRE_SLURM=1 (as `make test` sets
when its cluster came up), which turns a missing cluster into a failure.
"""

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from _helpers import epoch_numbers

from ablation.core.config import load_experiment
from ablation.core.records import is_complete
from ablation.running.grid import GridError, run_grid


def _cluster_up() -> bool:
    if not shutil.which("sbatch") or not os.environ.get("SLURM_CONF"):
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and any(state in out.stdout for state in ("idle", "mix", "alloc"))


if not _cluster_up():
    if os.environ.get("ABLATION_REQUIRE_SLURM") == "1":
        raise RuntimeError("ABLATION_REQUIRE_SLURM=1 but no Slurm cluster answers (scripts/slurm.sh up)")
    pytest.skip("no Slurm cluster (run `scripts/slurm.sh up` and source its env)", allow_module_level=True)

pytestmark = pytest.mark.slurm
SMOKE = "experiments/smoke.toml"


def summaries(out: Path) -> dict[str, dict]:
    return {p.name: json.loads((p / "summary.json").read_text()) for p in out.iterdir()
            if not p.name.startswith(".") and is_complete(p)}


def test_smoke_grid_through_slurm_equals_local(tmp_path):
    exp = load_experiment(SMOKE)
    t0 = time.time()
    run_grid(exp, tmp_path / "local", workers=2)
    t1 = time.time()
    run_grid(exp, tmp_path / "slurm", executor="slurm")
    t2 = time.time()
    print(f"smoke grid wall time: local {t1 - t0:.1f} s, Slurm {t2 - t1:.1f} s")
    local, slurm = summaries(tmp_path / "local"), summaries(tmp_path / "slurm")
    assert sorted(local) == sorted(slurm) == sorted(r.run_id() for r in exp.runs())
    for rid in local:
        for key in ("test_acc", "dev_acc", "best_epoch", "status"):
            assert local[rid][key] == slurm[rid][key], (rid, key)
        local_run, slurm_run = tmp_path / "local" / rid, tmp_path / "slurm" / rid
        assert epoch_numbers(local_run) == epoch_numbers(slurm_run), rid  # seconds differ; the numbers may not
        assert (local_run / "predictions.csv").read_text() == (slurm_run / "predictions.csv").read_text(), rid


def test_failed_pack_is_reported_with_its_log_then_rerun_completes(tmp_path, monkeypatch, sst_dir):
    bad = tmp_path / "corrupt-sst"
    bad.mkdir()
    for s in ("train", "dev", "test"):
        shutil.copy(sst_dir / f"{s}.txt", bad / f"{s}.txt")
    with open(bad / "test.txt", "a") as f:
        f.write("(2 (2 not) (2 official))\n")
    monkeypatch.setenv("SST_DIR", str(bad))  # sbatch exports it: the jobs' data fails its checksum
    exp = load_experiment(SMOKE)
    out = tmp_path / "out"
    with pytest.raises(GridError, match="2 of 2 packs failed") as e:
        run_grid(exp, out, executor="slurm", seeds=2)
    message = str(e.value)
    assert "ChecksumError" in message and "test.txt" in message
    logs = [line.split("log: ", 1)[1] for line in message.splitlines() if "log: " in line]
    assert len(logs) == 2 and all(Path(p).is_file() for p in logs)
    assert "ChecksumError" in Path(logs[0]).read_text()
    assert summaries(out) == {}  # nothing half-written
    monkeypatch.delenv("SST_DIR")
    p = run_grid(exp, out, executor="slurm", seeds=2)
    assert p.done == 0 and len(summaries(out)) == 6


def test_cancelled_job_is_detected_then_rerun_completes(tmp_path):
    # epochs enough that the cancelled pack is still training when SIGTERM comes (a smoke epoch takes ~1 s)
    exp = load_experiment(SMOKE, ["data.train_limit=3000", "train.epochs=20"])
    out = tmp_path / "out"
    result: dict = {}

    def drive():
        try:
            run_grid(exp, out, executor="slurm", pack_size=3, slurm={"max_parallel": 1})
        except GridError as e:
            result["error"] = str(e)

    driver = threading.Thread(target=drive)
    driver.start()
    # Cancel once the pack is training (its log says so), not while Python starts: that is
    # the case a user meets, and the moment before it is submitit's, not ours.
    deadline = time.time() + 120
    running = ""
    while time.time() < deadline and not running:
        started = any("training a pack" in p.read_text() for p in out.glob(".slurm/*/*_log.err"))
        ids = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i"], capture_output=True,
                             text=True).stdout.split()
        running = ids[0] if started and ids else ""
        time.sleep(0.2)
    assert running, "no job started"
    subprocess.run(["scancel", running], check=True)
    driver.join(timeout=300)
    assert "CANCELLED" in result.get("error", "") and "Cancelled: stopped by SIGTERM" in result["error"], result
    assert "1 of 2 packs failed" in result["error"] and "log: " in result["error"]
    done = summaries(out)
    assert len(done) == 3  # the other pack finished
    p = run_grid(exp, out, executor="slurm")
    assert p.done == 3 and len(p.todo) == 1
    assert len(summaries(out)) == 6
