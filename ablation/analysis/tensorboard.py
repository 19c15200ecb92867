"""Run records as TensorBoard event files, written after the fact from the records alone.

One TensorBoard run per record, named by its path under the results directory: the
per-epoch ``train_loss``, ``dev_acc`` and ``seconds`` (metrics.jsonl) at step = epoch, the
best ``best_dev_acc`` and ``test_acc`` (summary.json) at the best epoch, and the resolved
config as hyperparameters (hparams plugin) with those two as its metrics. Because it reads
records, it serves finished grids and grids trained on Slurm alike; rerunning it replaces
the event files it wrote before. Needs the optional ``tensorboard`` package
(``pip install -e '.[tensorboard]'``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ablation.core.config import flatten
from ablation.core.errors import need
from ablation.core.records import EPOCH_CURVES, is_complete

EVENTS = "events.out.tfevents.*"
HPARAM_METRICS = ("best_dev_acc", "test_acc")  # summary.json's dev_acc / test_acc


def records_under(results: Path) -> list[Path]:
    """Every complete record at or below ``results`` (hidden folders, such as temporaries, skipped)."""
    found = [p.parent for p in results.rglob("summary.json")
             if is_complete(p.parent) and not any(part.startswith(".") for part in p.parent.relative_to(results).parts)]
    return sorted(found)


def hparams_of(config: dict) -> dict[str, str | int | float | bool]:
    """config.json flattened to {'model.gates': 'input+output', ...}: the types the hparams plugin takes."""
    out = {}
    for key, value in flatten(config).items():
        if isinstance(value, list | tuple):
            value = "+".join(map(str, value)) or "none"
        out[key] = "None" if value is None else value
    return out


def export(results: str | os.PathLike, logdir: str | os.PathLike) -> list[Path]:
    """Write each record's event file under ``logdir``; returns the run folders written."""
    need("tensorboard", "tensorboard", "ablation tensorboard")
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    results, logdir = Path(results), Path(logdir)
    runs = records_under(results) if results.is_dir() else []
    if not runs:
        raise FileNotFoundError(f"{results}: no complete run records below it")
    written = []
    for run in runs:
        name = run.relative_to(results).as_posix() if run != results else run.name
        target = logdir / name
        for old in target.glob(EVENTS):  # a rerun replaces, never doubles, the curves
            old.unlink()
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        summary = json.loads((run / "summary.json").read_text())
        config = json.loads((run / "config.json").read_text())
        with SummaryWriter(log_dir=str(target)) as w:
            for row in metrics:
                for key in EPOCH_CURVES:
                    if key in row:
                        w.add_scalar(key, row[key], row["epoch"])
            final = {"best_dev_acc": summary.get("dev_acc"), "test_acc": summary.get("test_acc")}
            final = {k: v for k, v in final.items() if v is not None}  # a diverged run has neither
            for key, value in final.items():
                w.add_scalar(key, value, summary.get("best_epoch") or 0)
            # the hparams plugin's three summaries, in this run's own file (add_hparams would
            # open a second run beside it)
            for s in hparams(hparams_of(config), final):
                w.file_writer.add_summary(s)
        written.append(target)
    return written
