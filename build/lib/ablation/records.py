"""Run records: one directory per run, written atomically.

    <out>/<run_id>/config.json       the fully resolved RunConfig
                   metrics.jsonl     one line per epoch: train loss, dev accuracy, seconds
                   summary.json      status, best epoch, dev/test accuracy, params, coverage,
                                     seed, versions, device, wall time
                   predictions.csv   test-set gold labels and predictions (for paired tests)
                   probes.json       gradient norms by distance, gate statistics (probes.py);
                                     absent from records older than the probes and from
                                     diverged runs

The record is assembled in a hidden temporary directory beside its final place and moved
there with one `os.rename`, so a run killed at any moment leaves a complete record or none.
Leftover temporaries from killed runs are removed by `clean_partial`.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

FILES = ("config.json", "metrics.jsonl", "summary.json", "predictions.csv")
PROBES = "probes.json"  # optional: see the module doc
TMP_PREFIX = ".partial-"


def is_complete(run_dir: str | os.PathLike) -> bool:
    return all((Path(run_dir) / f).is_file() for f in FILES)


def write_record(out: str | os.PathLike, run_id: str, config: dict, metrics: list[dict],
                 summary: dict, labels: np.ndarray, predictions: np.ndarray | None,
                 probes: dict | None = None) -> Path:
    """Write a run's record atomically; returns its directory. An existing record is kept."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    final = out / run_id
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{run_id}-", dir=out))
    try:
        _dump(tmp / "config.json", config)
        (tmp / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in metrics))
        _dump(tmp / "summary.json", summary)
        preds = np.full(len(labels), -1) if predictions is None else predictions
        rows = "".join(f"{k},{int(y)},{int(p)}\n" for k, (y, p) in enumerate(zip(labels, preds)))
        (tmp / "predictions.csv").write_text("index,label,prediction\n" + rows)
        if probes is not None:
            _dump(tmp / PROBES, probes)
        # make the bytes durable before the rename publishes them
        for f in [*FILES, PROBES] if probes is not None else FILES:
            with open(tmp / f, "rb") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o755)
        os.rename(tmp, final)  # atomic; fails if a complete record already exists
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_complete(final):
            return final
        raise
    return final


def _dump(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def clean_partial(out: str | os.PathLike) -> int:
    """Remove temporaries left by killed runs; returns how many."""
    out = Path(out)
    stale = list(out.glob(f"{TMP_PREFIX}*")) if out.is_dir() else []
    for d in stale:
        shutil.rmtree(d, ignore_errors=True)
    return len(stale)


def versions() -> dict:
    import torch

    from . import __version__

    return {"ablation": __version__, "git": _git_commit(), "python": platform.python_version(),
            "torch": torch.__version__, "numpy": np.__version__, "platform": platform.platform()}


def _git_commit() -> str | None:
    """HEAD, with "+dirty" when the code (not results/) differs from it."""
    try:
        root = Path(__file__).resolve().parents[1]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        commit = out.stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no",
                                "--", "ablation", "pyproject.toml"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (commit + ("+dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None
