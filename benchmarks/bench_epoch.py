"""Where a grid's epoch goes: a pack-of-8 lecture epoch inside a 2-worker grid against the single-worker
step time x steps (issue 28's second figure).

1. The step: a pack of the 8 lecture gate sets (the lecture's config: GloVe vectors, diagonal peepholes,
   batches of 10), `train_step` timed over ``--steps`` batches of epoch 1 after a warm-up, alone.
2. The grid: `ablation grid experiments/lecture.toml --seeds 2 --workers 2 --set train.epochs=1` into a
   temporary folder (two packs of 8, one a core, as `make reproduce` runs them), then each pack's
   records: its epoch's seconds (metrics.jsonl: the training steps and the dev evaluation) and its wall
   time (summary.json: also data, model, probes, test and the records).

Prints the breakdown and, last, `epoch over step x steps: <ratio>` (1.0: a grid epoch costs what its steps
do alone). Portable numerics, as training runs. Ratios, not seconds: the machine is noisy.

    python benchmarks/bench_epoch.py [--steps 500]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ablation.training import numerics

numerics.request("portable")  # before torch is imported (the trainer's imports): its kernels read the pins once

from ablation.core.config import RunConfig, apply  # noqa: E402
from ablation.core.spec import LECTURE_ORDER, split_gates  # noqa: E402
from ablation.kernels import cpp  # noqa: E402
from ablation.tasks.sst import batch_order  # noqa: E402
from ablation.training.adagrad import PackAdagrad  # noqa: E402
from ablation.training.trainer import build_pack, data_for, evaluate, train_step  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def step_ms(steps: int, warmup: int = 100) -> tuple[float, float, int]:
    """(ms a training step of the pack of 8 alone, seconds of one dev evaluation, steps an epoch)."""
    cfg = apply(RunConfig(), {})
    data = data_for(cfg)
    order = batch_order(data.train.lengths, cfg.train.batch_size, seed=1, epoch=1)
    batches = [data.train.batch(i) for i in order[: warmup + steps]]
    model, _ = build_pack([apply(cfg, {"model.gates": list(split_gates(g))}) for g in LECTURE_ORDER], data)
    opt = PackAdagrad(model, cfg.train.lr)
    for b in batches[:warmup]:
        train_step(model, opt, *b)
    start = time.perf_counter()
    for b in batches[warmup:]:
        train_step(model, opt, *b)
    ms = (time.perf_counter() - start) / steps * 1e3
    start = time.perf_counter()
    evaluate(model, data.dev, cfg.train.eval_batch_size)
    return ms, time.perf_counter() - start, len(order)


def grid_epochs() -> list[dict]:
    """Each pack of a 2-worker, 1-epoch lecture grid: its epoch seconds, wall seconds and steps."""
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([sys.executable, "-m", "ablation", "grid", "experiments/lecture.toml", "--out", out,
                        "--seeds", "2", "--workers", "2", "--set", "train.epochs=1"], cwd=ROOT, check=True,
                       capture_output=True)
        packs = {}
        for s in Path(out).glob("*/summary.json"):
            summary = json.loads(s.read_text())
            (line,) = [json.loads(x) for x in s.with_name("metrics.jsonl").read_text().splitlines() if x]
            packs[summary["seed"]] = {"epoch": line["seconds"], "wall": summary["wall_seconds"],
                                      "steps": summary["steps"]}
    return list(packs.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=500, help="training steps timed alone")
    args = ap.parse_args()
    numerics.enforce("cpu")
    cpp.keep_heap()  # as `trainer.train_pack` does
    ms, dev, steps = step_ms(args.steps)
    packs = grid_epochs()
    epoch = statistics.median(p["epoch"] for p in packs)
    outside = statistics.median(p["wall"] - p["epoch"] for p in packs)
    alone = ms * steps / 1e3
    print(f"step alone: {ms:.2f} ms x {steps} steps = {alone:.1f} s; dev evaluation alone {dev:.2f} s")
    print(f"grid, 2 workers: epoch {epoch:.1f} s (steps and dev evaluation); outside the epoch "
          f"{outside:.1f} s (data, model, probes, test, records), median of {len(packs)} packs")
    print(f"epoch over step x steps: {epoch / alone:.2f}")


if __name__ == "__main__":
    main()
