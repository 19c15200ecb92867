"""Kill a grid at random moments, resume it, and check that nothing was lost or damaged.

    python scripts/fault_campaign.py [--kills 25] [--seed 0] [--out DIR]

Trains experiments/smoke.toml once without interruption (the reference), then, in a fresh
results directory, starts the same grid again and again, SIGKILLs its whole process group (or
the driver alone, or sends SIGTERM / SIGINT) at a random moment, including while the workers
import torch and load the C++ kernels, and checks after each kill that every record there is
complete (no half-written one, no temporary whose writer is gone, no build lock left). Then it
lets the grid finish and requires every record's numbers to be byte-identical to the reference
(`ablation compare`). Prints one line per kill and a summary; exit 1 on any loss.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMOKE = "experiments/smoke.toml"


def grid(out: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ablation.cli", "grid", SMOKE, "--out", str(out), "--workers", "2"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kw)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/fault_campaign")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from ablation.analysis.compare import compare
    from ablation.core.records import TMP_PREFIX, check_record
    from ablation.kernels import cpp

    rng = random.Random(args.seed)
    base = Path(args.out)
    ref, work = base / "reference", base / "killed"
    for d in (ref, work):
        subprocess.run(["rm", "-rf", str(d)], check=True)
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "ablation.cli", "grid", SMOKE, "--out", str(ref), "--workers", "2"],
                   cwd=ROOT, check=True, capture_output=True)
    full = time.time() - t0
    print(f"reference grid: {full:.0f} s")
    how = ["group SIGKILL"] * 3 + ["driver SIGKILL", "SIGTERM", "SIGINT"]
    problems = cycles = identical = 0
    for k in range(args.kills):
        kind = rng.choice(how)
        at = rng.uniform(0.5, full)  # from the workers' start (torch, the kernels) to the records' writing
        proc = grid(work)
        time.sleep(at)
        if kind == "group SIGKILL":
            os.killpg(proc.pid, signal.SIGKILL)
        elif kind == "driver SIGKILL":
            proc.send_signal(signal.SIGKILL)
        else:
            proc.send_signal(signal.SIGTERM if kind == "SIGTERM" else signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            print(f"kill {k + 1}: {kind} at {at:.1f} s: the driver did not stop within 30 s")
            problems += 1
        time.sleep(1.5)  # workers die with their driver (parent-death signal)
        bad = [(d.name, check_record(d)) for d in work.iterdir() if d.is_dir() and not d.name.startswith(".")
               and check_record(d) is not None] if work.is_dir() else []
        records = sum(1 for d in work.iterdir() if d.is_dir() and not d.name.startswith(".")) if work.is_dir() else 0
        temps = [d.name for d in work.glob(f"{TMP_PREFIX}*")] if work.is_dir() else []
        lock = (cpp.build_dir() / "lock").exists()
        status = "ok" if not bad and not lock else f"BAD: {bad} lock={lock}"
        problems += status != "ok"
        print(f"kill {k + 1}: {kind} at {at:.1f} s, rc {proc.returncode}: {records} records, "
              f"{len(temps)} temporaries (cleaned by the next driver), {status}")
        if records == 6 and not bad:  # the grid finished between kills: check it, and start it over
            a = compare(work, ref)
            cycles += 1
            identical += len(a.identical)
            if a.different or len(a.identical) != 6:
                print(f"  finished grid differs from the uninterrupted one: {a.different}")
                problems += 1
            subprocess.run(["rm", "-rf", str(work)], check=True)
    subprocess.run([sys.executable, "-m", "ablation.cli", "grid", SMOKE, "--out", str(work), "--workers", "2"],
                   cwd=ROOT, check=True, capture_output=True)
    a = compare(work, ref)
    print(f"{cycles} grids finished between kills, {identical} of {6 * cycles} records byte-identical")
    print(f"after resuming: {len(a.identical)} of {len(a.identical) + len(a.different)} records byte-identical "
          f"to the uninterrupted grid; differing: {a.different or 'none'}; unmatched: {a.unmatched or 'none'}")
    problems += bool(a.different or a.unmatched) + (len(a.identical) != 6)
    print(f"{args.kills} kills, {problems} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
