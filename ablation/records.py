"""Run records: one directory per run, written atomically.

    <out>/<run_id>/config.json       the fully resolved RunConfig
                   metrics.jsonl     one line per epoch: train loss, dev accuracy, seconds
                   summary.json      status, best epoch, dev/test accuracy, params, coverage,
                                     seed, versions, device, wall time, and `machine`:
                                     where and how it ran (numerics.describe)
                   predictions.csv   test-set gold labels and predictions (for paired tests)
                   probes.json       gradient norms by distance, gate statistics (probes.py);
                                     absent from records older than the probes and from
                                     diverged runs
                   checkpoint.pt     the best-on-dev weights and the vocabulary (checkpoint.py);
                                     optional like probes.json (absent from older records)

The record is assembled in a hidden temporary directory beside its final place and moved
there with one `os.rename`, so a run killed at any moment leaves a complete record or none.
A temporary's name says who writes it (`.partial-<run_id>@<host>@<pid>@...`), so that
`clean_partial` removes only those whose writer is gone. A record counts as complete only
if `check_record` finds every file whole; a damaged one is moved aside by `quarantine`.
Records may hold further optional files (probes.json, ...); only `FILES` are required.
The keys of summary.json and of a metrics.jsonl line are defined once, here: `Summary` and
`EpochMetrics` (TypedDicts), `SUMMARY_KEYS` the part every record has.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Literal, TypedDict

import numpy as np

FILES = ("config.json", "metrics.jsonl", "summary.json", "predictions.csv")
PROBES = "probes.json"  # optional: see the module doc
CHECKPOINT = "checkpoint.pt"  # optional: see the module doc
TMP_PREFIX = ".partial-"

# --- the schema: summary.json and a metrics.jsonl line --------------------------------------------------------
# The writers (train.member_summary, job.train_and_record, write_record) build these; readers
# (check_record, aggregate, tune, tb_export) read plain dicts, since older records lack newer keys.

Status = Literal["complete", "diverged", "no_learning"]  # no_learning: selection.no_learning's rules


class SummaryCore(TypedDict):
    """The keys every record's summary.json has had since the first release (`SUMMARY_KEYS`)."""

    status: Status
    gates: str  # spec.gates_name: "input+output", "none", ...
    seed: int
    dev_acc: float | None  # % at the best epoch; None if diverged
    test_acc: float | None  # % of the best-on-dev weights, measured once; None if diverged
    best_epoch: int | None  # None: no epoch finished
    active_params: int  # the member's trainable parameters, embedding table excluded


class MemberSummary(SummaryCore):
    """What the trainer says of one member (`train.member_summary`)."""

    failure_reason: str | None  # why not complete, one line
    diverged_epoch: int | None  # the epoch whose training loss was not finite
    cell: str
    peephole: str  # the resolved one: "diagonal", "none", ...
    variant: str
    embedding_params: int
    num_classes: int
    embedding_coverage: dict  # source, and for word vectors their coverage (embeddings.embedding_matrix)
    pack_size: int
    steps: int  # optimizer steps the pack took
    device: str  # "cpu" or the CUDA device's name
    threads: int
    scan: str  # fused.scan_name: 'fused-cpp', 'triton' or 'python'
    cuda_graphs: bool  # the steps replayed as CUDA graphs (graphs.py); False on CPU
    wall_seconds: float
    train_examples: int


class Summary(MemberSummary):
    """summary.json: the trainer's `MemberSummary`, what `job.train_and_record` adds (run_id,
    versions, machine) and what `write_record` adds (test_examples). Records written before a
    key existed lack it; only `SUMMARY_KEYS` are in every record."""

    run_id: str
    versions: dict  # versions()
    machine: dict  # numerics.describe: where and how it ran
    test_examples: int  # predictions.csv's rows, so check_record sees a truncated file


class EpochMetrics(TypedDict):
    """A line of metrics.jsonl: one epoch of one member (none after the epoch it diverged in)."""

    epoch: int
    train_loss: float  # mean over the epoch's training examples
    dev_acc: float  # %
    seconds: float  # the pack's epoch, training and dev evaluation


SUMMARY_KEYS = tuple(SummaryCore.__annotations__)  # check_record requires these, in this order
EPOCH_CURVES = tuple(k for k in EpochMetrics.__annotations__ if k != "epoch")  # a metrics line's curves
# Test-set size by data.labels, for records written before summary.json carried "test_examples"
# (the sentences of the official test.txt, whose sha256 data.SHA256 pins).
TEST_EXAMPLES = {"binary": 1821, "fine": 2210}
BROKEN = ".broken"  # <out>/.broken/<run_id>-<UTC time>/: damaged records moved aside, with reason.txt
STALE_SECONDS = 600  # a record is written in well under a second: a temporary this old has no writer


def check_record(run_dir: str | os.PathLike) -> str | None:
    """Why ``run_dir`` is not a complete record, or None if it is one.

    Complete: every file of `FILES` parses; config.json has its three sections; summary.json
    has `SUMMARY_KEYS`; every metrics.jsonl line is a JSON object; predictions.csv has one
    row per test example, indexed 0..N-1. The one test of completeness, for the grid and the
    aggregator alike.
    """
    d = Path(run_dir)
    missing = [f for f in FILES if not (d / f).is_file()]
    if missing:
        return f"missing {', '.join(missing)}"
    name = "config.json"
    try:
        config = json.loads((d / name).read_text())
        if not (isinstance(config, dict) and all(isinstance(config.get(k), dict) for k in ("data", "model", "train"))):
            return "config.json is not a run config (data, model, train)"
        name = "summary.json"
        summary = json.loads((d / name).read_text())
        lacking = [k for k in SUMMARY_KEYS if k not in summary] if isinstance(summary, dict) else ["everything"]
        if lacking:
            return f"summary.json lacks {', '.join(lacking)}"
        name = "metrics.jsonl"
        for n, line in enumerate((d / name).read_text().splitlines(), 1):
            if not isinstance(json.loads(line), dict):
                return f"metrics.jsonl line {n} is not an object"
        name = "predictions.csv"
        expected = summary.get("test_examples", TEST_EXAMPLES.get(config["data"].get("labels")))
        return _check_predictions(d / name, expected)
    except json.JSONDecodeError as e:
        return f"{name} does not parse: {e}"
    except (OSError, UnicodeDecodeError) as e:
        return f"{name} is unreadable: {e}"


def _check_predictions(path: Path, expected: int | None) -> str | None:
    text = path.read_text()
    lines = text.split("\n")
    if lines[0] != "index,label,prediction" or lines[-1] != "":  # a whole file ends with a newline
        return "predictions.csv is truncated or not index,label,prediction"
    rows = lines[1:-1]
    for k, row in enumerate(rows):
        parts = row.split(",")
        if len(parts) != 3 or parts[0] != str(k) or not all(p.lstrip("-").isdigit() for p in parts[1:]):
            return f"predictions.csv row {k + 1} is not '{k},<label>,<prediction>'"
    if expected is not None and len(rows) != expected:
        return f"predictions.csv has {len(rows)} rows; the test set has {expected}"
    return None


def is_complete(run_dir: str | os.PathLike) -> bool:
    return check_record(run_dir) is None


def quarantine(run_dir: str | os.PathLike, reason: str) -> Path:
    """Move a damaged record to <out>/.broken/<run_id>-<UTC time>/ with a reason.txt; returns its new place."""
    d = Path(run_dir)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (d.parent / BROKEN).mkdir(exist_ok=True)
    dest = d.parent / BROKEN / f"{d.name}-{stamp}"
    k = 1
    while dest.exists():
        k += 1
        dest = d.parent / BROKEN / f"{d.name}-{stamp}-{k}"
    os.rename(d, dest)
    (dest / "reason.txt").write_text(f"{reason}\n")
    return dest


def write_record(out: str | os.PathLike, run_id: str, config: dict, metrics: list[EpochMetrics],
                 summary: dict, labels: np.ndarray, predictions: np.ndarray | None,
                 probes: dict | None = None, checkpoint: dict | None = None) -> Path:
    """Write a run's record atomically; returns its directory. An existing record is kept.

    ``summary`` is a `Summary` but for test_examples, which is ``labels``' length.
    ``checkpoint`` (tensors, strings and numbers only: `checkpoint.member_checkpoint`) is
    saved with `torch.save`, so `torch.load(weights_only=True)` reads it back.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    final = out / run_id
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{run_id}@{socket.gethostname()}@{os.getpid()}@", dir=out))
    try:
        _dump(tmp / "config.json", config)
        (tmp / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in metrics))
        record: Summary = {**summary, "test_examples": len(labels)}  # lets check_record see truncation
        _dump(tmp / "summary.json", record)
        preds = np.full(len(labels), -1) if predictions is None else predictions
        rows = "".join(f"{k},{int(y)},{int(p)}\n" for k, (y, p) in enumerate(zip(labels, preds)))
        (tmp / "predictions.csv").write_text("index,label,prediction\n" + rows)
        written = list(FILES)
        if probes is not None:
            _dump(tmp / PROBES, probes)
            written.append(PROBES)
        if checkpoint is not None:
            import torch

            torch.save(checkpoint, tmp / CHECKPOINT)
            written.append(CHECKPOINT)
        # make the bytes durable before the rename publishes them
        for f in written:
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


def clean_partial(out: str | os.PathLike, now: float | None = None) -> int:
    """Remove temporaries whose writer is gone; returns how many.

    Gone: a process of this host that no longer runs, or (another host's, e.g. a Slurm
    node's, or a name without its writer) nothing in it changed for `STALE_SECONDS`. A
    temporary that a live writer (a Slurm job of an earlier driver) is still filling stays.
    Only the driver holding the results directory's lock calls this, before it starts jobs.
    """
    out = Path(out)
    now = time.time() if now is None else now
    stale = [d for d in (out.glob(f"{TMP_PREFIX}*") if out.is_dir() else []) if _writer_gone(d, now)]
    for d in stale:
        shutil.rmtree(d, ignore_errors=True)
    return len(stale)


def _writer_gone(tmp: Path, now: float) -> bool:
    parts = tmp.name.split("@")
    if len(parts) == 4 and parts[1] == socket.gethostname() and parts[2].isdigit():
        return not _alive(int(parts[2]))
    try:
        changed = max(p.stat().st_mtime for p in [tmp, *tmp.iterdir()])
    except OSError:  # its writer just renamed or removed it
        return False
    return now - changed > STALE_SECONDS


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


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
