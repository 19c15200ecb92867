"""Wall time of an experiment's grid on one device, as a user waits for it, with what its records say.

Runs `ablation grid` in a fresh process (start-up, data, the C++ extension's or the Triton kernels'
compilation and every epoch's evaluation all count), then reads the records it wrote: how many runs,
which scan trained them, on which device, and their mean test accuracy (a check that the timed work
was the real work). Appends one JSON line to ``--json``; `scripts/gpu_check.sh` times the lecture grid
this way on a GPU and on the same machine's CPU cores, and `readings.gpu_reading` writes the README's
figures from those lines.

usage:
    python benchmarks/time_grid.py experiments/lecture.toml --device cuda --seeds 5 --workers 5 \
        [--set train.epochs=2 ...] [--out DIR] [--json FILE] [--timeout S] [--cuda-graphs]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ablation.kernels import cuda_graphs

ROOT = Path(__file__).resolve().parents[1]


def records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("*/summary.json"))]


def describe(summaries: list[dict]) -> dict:
    """What the records say about the timed grid (never the wall time: that is measured outside)."""
    done = [s for s in summaries if s.get("status") == "complete" and s.get("test_acc") is not None]
    machine = summaries[0]["machine"] if summaries else {}
    return {
        "runs": len(summaries),
        "complete": len(done),
        "scans": sorted({s.get("scan") for s in summaries}),
        "cuda_graphs": any(s.get("cuda_graphs") for s in summaries),  # kernels/cuda_graphs.py: steps replayed as graphs
        "record_device": sorted({s.get("device") for s in summaries}),
        "gpu": machine.get("gpu"),
        "cpu_model": machine.get("cpu_model"),
        "mean_test_acc": round(sum(s["test_acc"] for s in done) / len(done), 2) if done else None,
        "versions": summaries[0].get("versions") if summaries else None,
    }


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("experiment")
    ap.add_argument("--device", required=True, choices=["cpu", "cuda"])
    ap.add_argument("--seeds", type=int)
    ap.add_argument("--workers", type=int, required=True)
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--out", help="results folder (default: a fresh temporary one; it must not hold records)")
    ap.add_argument("--json", help="append the figures here as one JSON line")
    ap.add_argument("--timeout", type=float, help="stop the grid after S seconds (recorded as timed out)")
    ap.add_argument("--cuda-graphs", action="store_true", help=f"replay the steps as CUDA graphs ({cuda_graphs.ENV}=1)")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix=f"time-grid-{args.device}-"))
    if records(out):
        sys.exit(f"{out} already holds records: the grid would skip them and the time would mean nothing")
    cmd = [sys.executable, "-m", "ablation.cli", "grid", args.experiment, "--device", args.device,
           "--workers", str(args.workers), "--out", str(out)]
    cmd += ["--seeds", str(args.seeds)] if args.seeds else []
    for s in args.set:
        cmd += ["--set", s]
    log = out.with_suffix(".log")
    start = time.perf_counter()
    with open(log, "w") as f:
        # its own process group, so that a timeout stops the grid's workers too, not only the grid
        env = {**os.environ, cuda_graphs.ENV: "1" if args.cuda_graphs else "0"}
        grid = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = grid.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            rc = "timeout"
            os.killpg(grid.pid, signal.SIGTERM)  # the grid cancels its packs and leaves no half-written record
            try:
                grid.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(grid.pid, signal.SIGKILL)
                grid.wait()
    wall = time.perf_counter() - start
    line = {"experiment": Path(args.experiment).stem, "device": args.device, "seeds": args.seeds,
            "workers": args.workers, "set": args.set, "rc": rc, "wall_seconds": round(wall, 1),
            "cpu_count": os.cpu_count(), "host_cpu": platform.processor() or platform.machine(),
            "triton": _version("triton"),
            **describe(records(out))}
    print(json.dumps(line))
    if rc != 0:
        print(log.read_text()[-3000:], file=sys.stderr)
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
