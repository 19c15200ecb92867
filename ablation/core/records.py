"""Run records: one directory per run (config.json, metrics.jsonl, summary.json, predictions.csv,
and optionally probes.json and checkpoint.pt; docs/reproducibility.md lists what each holds).

A record is assembled in a hidden temporary beside its final place and moved there with one
`os.rename`, so a run killed at any moment leaves a whole record or none; a temporary's name says
who writes it, so `clean_partial` removes only those whose writer is gone. `check_record` is the
one definition of a valid record, for the grid and the table alike; `quarantine` moves a damaged
one aside. The keys of summary.json and of a metrics line are defined once, here (`Summary`,
`EpochMetrics`, `SUMMARY_CHECKS`).
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypedDict, get_args

import numpy as np

from ablation.core.config import RunConfig, apply, flatten
from ablation.core.spec import TASKS, gates_name

FILES = ("config.json", "metrics.jsonl", "summary.json", "predictions.csv")
PROBES = "probes.json"  # optional: see the module doc
CHECKPOINT = "checkpoint.pt"  # optional: see the module doc
TMP_PREFIX = ".partial-"

# --- the schema: summary.json and a metrics.jsonl line --------------------------------------------------------
# The writers (train.member_summary, job.train_and_record, write_record) build these; readers
# (check_record, aggregate, tune, analysis/tensorboard) read plain dicts, since older records lack newer keys.
# `SUMMARY_CHECKS` and `EPOCH_CHECKS` below give each key's type and range at run time.

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
    scan: str  # select.scan_name: 'fused-cpp', 'triton' or 'python'
    cuda_graphs: bool  # the steps replayed as CUDA graphs (kernels/cuda_graphs.py); False on CPU
    wall_seconds: float
    train_examples: int
    # a generated task's (core/spec.TASKS; SST's records lack them: its metric is dev_acc/test_acc)
    task: str
    metric: str  # "accuracy" (%), "mse", "perplexity" or "nll"
    dev_metric: float | None  # at the best epoch; None if diverged
    test_metric: float | None  # of the best-on-dev weights
    baseline_dev: float  # the trivial predictor's dev and test metric (the majority class, the mean)
    baseline_test: float
    label_names: list  # a TSV task's labels, in the order of their ids (sorted)


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
    dev_acc: float  # %; a regression task's lines have dev_metric instead
    seconds: float  # the pack's epoch, training and dev evaluation
    dev_metric: float  # a generated task's metric (`MemberSummary.metric`)


SUMMARY_KEYS = tuple(SummaryCore.__annotations__)  # check_record requires these, in this order
EPOCH_CURVES = tuple(k for k in EpochMetrics.__annotations__ if k != "epoch")  # a metrics line's curves
# Test-set size by data.labels, for records written before summary.json carried "test_examples"
# (the sentences of the official test.txt, whose sha256 data.SHA256 pins).
TEST_EXAMPLES = {"binary": 1821, "fine": 2210}
BROKEN = ".broken"  # <out>/.broken/<run_id>-<UTC time>/: damaged records moved aside, with reason.txt
STALE_SECONDS = 600  # a record is written in well under a second: a temporary this old has no writer


# --- what a valid record is: `check_record` -------------------------------------------------------------------
# Each field's type and range, as data: key -> (test of a value, what the test wants, said in a reason). A
# field absent from a record is not checked here (older records lack newer keys; `SUMMARY_KEYS` are required
# separately); a field present must pass. JSON gives int, float, str, bool, None, list and dict; a bool is
# not a number here, though Python's bool is an int. Every key of `Summary` has its entry (tests/test_records.py).
Check = tuple[Callable[[object], bool], str]


def _integer(low: int) -> Check:
    return (lambda v: type(v) is int and v >= low), f"an integer >= {low}"


def _real(low: float, high: float = math.inf) -> Check:
    """A finite int or float (not a bool) in [low, high]."""
    def test(v) -> bool:
        return (type(v) is int or (type(v) is float and math.isfinite(v))) and low <= v <= high
    bounds = (f" in [{low:g}, {high:g}]" if math.isfinite(high) else f" >= {low:g}") if math.isfinite(low) else ""
    return test, f"a finite number{bounds}"


def _number() -> Check:
    return (lambda v: type(v) in (int, float)), "a number (NaN and infinity allowed)"


def _of_type(t: type) -> Check:
    return (lambda v: type(v) is t), {str: "a string", bool: "true or false", dict: "an object"}[t]


def _or_null(check: Check) -> Check:
    test, wants = check
    return (lambda v: v is None or test(v)), f"{wants} or null"


METRICS = ("accuracy", "mse", "perplexity", "nll")  # core/spec.TaskInfo.metric
STATUSES = get_args(Status)  # complete, diverged, no_learning
ACCURACY = _real(0, 100)  # %
SUMMARY_CHECKS: dict[str, Check] = {
    "status": ((lambda v: type(v) is str and v in STATUSES), f"one of {', '.join(STATUSES)}"),
    "gates": _of_type(str),
    "seed": _integer(0),
    "dev_acc": _or_null(ACCURACY),  # and not null when complete (`_check_summary`)
    "test_acc": _or_null(ACCURACY),
    "best_epoch": _or_null(_integer(1)),
    "active_params": _integer(0),
    "failure_reason": _or_null(_of_type(str)),
    "diverged_epoch": _or_null(_integer(1)),
    "cell": _of_type(str),  # cell, peephole, variant: also agree with config.json (`AGREE`)
    "peephole": _of_type(str),
    "variant": _of_type(str),
    "embedding_params": _integer(0),
    "num_classes": _integer(1),  # 1: a regression target
    "embedding_coverage": _of_type(dict),
    "pack_size": _integer(1),
    "steps": _integer(1),  # every epoch takes a step: the training split is never empty
    "device": _of_type(str),
    "threads": _integer(1),
    "scan": _of_type(str),
    "cuda_graphs": _of_type(bool),
    "wall_seconds": _real(0),
    "train_examples": _integer(1),
    "task": ((lambda v: type(v) is str and v in TASKS), f"one of {', '.join(TASKS)}"),
    "metric": ((lambda v: type(v) is str and v in METRICS), " or ".join(METRICS)),
    "dev_metric": _or_null(_real(0)),
    "test_metric": _or_null(_real(0)),
    "baseline_dev": _real(0),
    "baseline_test": _real(0),
    "label_names": ((lambda v: type(v) is list and all(type(x) is str for x in v)), "a list of strings"),
    "run_id": _of_type(str),  # and the folder's name (`check_record`)
    "versions": _of_type(dict),
    "machine": _of_type(dict),
    "test_examples": _integer(1),
}
# A metrics.jsonl line: every key but seconds required. A diverged run's lines may say what went wrong
# (a loss of NaN or infinity, no dev accuracy); the trainer writes no line for the epoch it diverged in.
EPOCH_CHECKS: dict[str, Check] = {"epoch": _integer(1), "train_loss": _real(-math.inf), "dev_acc": ACCURACY,
                                  "seconds": _real(0), "dev_metric": _real(0)}
DIVERGED_EPOCH_CHECKS = {**EPOCH_CHECKS, "train_loss": _number(), "dev_acc": _or_null(ACCURACY),
                         "dev_metric": _or_null(_number())}
EPOCH_REQUIRED = ("epoch", "train_loss", "dev_acc")  # a regression task's: dev_metric for dev_acc (`_dev_key`)
# summary.json keys that restate config.json: the value the config gives, from its RunConfig.
AGREE: dict[str, tuple[str, Callable[[RunConfig], object]]] = {
    "gates": ("model.gates", lambda c: gates_name(c.model.gates)),
    "seed": ("train.seed", lambda c: c.train.seed),
    "cell": ("model.cell", lambda c: c.model.cell),
    "peephole": ("model.peephole", lambda c: c.model.peephole),
    "variant": ("model.variant", lambda c: c.model.variant),
    "num_classes": ("data.labels", lambda c: TASKS[c.task.name].num_outputs(c.data.labels)),
    "task": ("task.name", lambda c: c.task.name),
}


def _dev_key(cfg: RunConfig) -> str:
    """The key of a metrics line's dev metric: dev_acc, or a regression task's dev_metric."""
    return "dev_acc" if TASKS[cfg.task.name].metric == "accuracy" else "dev_metric"


def real_predictions(cfg: RunConfig) -> bool:
    """predictions.csv holds real numbers: a regression's targets and outputs, or a language model's
    tokens and summed negative log-likelihood per sentence."""
    return TASKS[cfg.task.name].metric != "accuracy"


def check_record(run_dir: str | os.PathLike, *, identity: bool = True) -> str | None:
    """Why ``run_dir`` is not a complete record, or None if it is one: one line.

    The one definition of a valid record, for the grid (what is done) and the aggregator (what
    is counted) alike. Every file of `FILES` parses, and:

    - config.json loads into a `RunConfig` whose `run_id` is the folder's name, and summary.json's
      run_id (when it has one) is that name too: an edited config or a copied record is no record
      of this run. ``identity=False`` (`checkpoint.load_run`, which may read a copy kept anywhere)
      asks only that config.json hash to the run id summary.json gives;
    - summary.json has `SUMMARY_KEYS`, every field it has passes `SUMMARY_CHECKS`, a complete run
      has its accuracies and best epoch, and what it restates of config.json agrees (`AGREE`);
    - every metrics.jsonl line has `EPOCH_REQUIRED` and passes `EPOCH_CHECKS`;
    - predictions.csv has one row per test example, indexed 0..N-1, its labels and predictions
      classes of the task (a diverged run's predictions are -1: it has none).

    Never raises on a record's content; reads no torch.
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
        cfg = _run_config(config)
        if isinstance(cfg, str):
            return cfg
        name = "summary.json"
        summary = json.loads((d / name).read_text())
        lacking = [k for k in SUMMARY_KEYS if k not in summary] if isinstance(summary, dict) else ["everything"]
        if lacking:
            return f"summary.json lacks {', '.join(lacking)}"
        reason = _check_fields(summary, SUMMARY_CHECKS, "summary.json") or _check_summary(summary, cfg)
        if reason:
            return reason
        run_id, claimed = cfg.run_id(), summary.get("run_id")
        if identity and run_id != d.name:
            return f"config.json hashes to run id {run_id}, not this folder's name {d.name} (edited or copied)"
        if identity and claimed is not None and claimed != d.name:
            return f"summary.json run_id is {claimed}, not this folder's name {d.name} (copied)"
        if claimed is not None and claimed != run_id:
            return f"config.json hashes to run id {run_id}, but summary.json run_id is {claimed} (edited)"
        name = "metrics.jsonl"
        lines = [json.loads(line) for line in (d / name).read_text().splitlines()]
        diverged = summary["status"] == "diverged"
        for n, line in enumerate(lines, 1):
            where = f"metrics.jsonl line {n}"
            if not isinstance(line, dict):
                return f"{where} is not an object"
            lacking = [k for k in (*EPOCH_REQUIRED[:2], _dev_key(cfg)) if k not in line]
            reason = (f"{where} lacks {', '.join(lacking)}" if lacking else
                      _check_fields(line, DIVERGED_EPOCH_CHECKS if diverged else EPOCH_CHECKS, where))
            if reason:
                return reason
        name = "predictions.csv"
        expected = summary.get("test_examples", TEST_EXAMPLES.get(cfg.data.labels))
        classes = summary.get("num_classes") or TASKS[cfg.task.name].num_outputs(cfg.data.labels)
        return _check_predictions(d / name, expected, 1 if real_predictions(cfg) else classes, diverged)
    except json.JSONDecodeError as e:
        return f"{name} does not parse: {e}"
    except (OSError, UnicodeDecodeError) as e:
        return f"{name} is unreadable: {e}"
    except RecursionError:  # JSON nested deeper than Python's stack
        return f"{name} does not parse: nested too deeply"


def _run_config(config: dict) -> RunConfig | str:
    """config.json as a RunConfig, or why it is not one, naming the key."""
    flat = flatten(config)
    try:
        return apply(RunConfig(), flat)
    except Exception as e:  # noqa: BLE001 - whatever a hand-edited value makes of the config's checks
        error = e
    cfg = RunConfig()
    for key in sorted(flat, key=lambda k: k != "model.cell"):  # which key: applied one by one, the cell first
        try:
            cfg = apply(cfg, {key: flat[key]})
        except Exception as e:  # noqa: BLE001
            return f"config.json: {_first_line(e)}" if key in str(e) else \
                f"config.json {key} = {_show(flat[key])}: {_first_line(e)}"
    return f"config.json: {_first_line(error)}"


def _check_fields(obj: dict, checks: dict[str, Check], where: str) -> str | None:
    for key, value in obj.items():
        if key in checks:
            test, wants = checks[key]
            if not test(value):
                return f"{where} {key}: expected {wants}, got {type(value).__name__} {_show(value)}"
    return None


def _check_summary(summary: dict, cfg: RunConfig) -> str | None:
    """What the field table cannot say alone: a complete run's numbers, agreement with config.json."""
    if summary["status"] == "complete":
        scores = ("dev_acc", "test_acc") if _dev_key(cfg) == "dev_acc" else ("dev_metric", "test_metric")
        nulls = [k for k in (*scores, "best_epoch") if summary.get(k) is None]
        if nulls:
            return f"summary.json {', '.join(nulls)}: null, but the status is complete"
    for key in ("best_epoch", "diverged_epoch"):
        if summary.get(key) is not None and summary[key] > cfg.train.epochs:
            return (f"summary.json {key} {summary[key]} is after the last epoch "
                    f"(config.json's train.epochs {cfg.train.epochs})")
    for key, (config_key, of) in AGREE.items():
        if key in summary and of(cfg) is not None and summary[key] != of(cfg):
            return (f"summary.json {key} {_show(summary[key])} disagrees with config.json's {config_key} "
                    f"(which gives {_show(of(cfg))})")
    return None


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _check_predictions(path: Path, expected: int | None, classes: int, diverged: bool) -> str | None:
    """predictions.csv: ``classes`` classes, or for 1 real numbers (`real_predictions`)."""
    text = path.read_text()
    lines = text.split("\n")
    if lines[0] != "index,label,prediction" or lines[-1] != "":  # a whole file ends with a newline
        return "predictions.csv is truncated or not index,label,prediction"
    rows = lines[1:-1]
    if classes == 1:
        for k, row in enumerate(rows):
            parts = row.split(",")
            if len(parts) != 3 or parts[0] != str(k) or not all(_is_float(p) for p in parts[1:]):
                return f"predictions.csv row {k + 1} is not '{k},<target>,<output>'"
        return None if expected is None or len(rows) == expected else \
            f"predictions.csv has {len(rows)} rows; the test set has {expected}"
    valid = {str(c) for c in range(classes)}
    predicted = valid | {"-1"} if diverged else valid  # write_record gives a diverged run -1 for each
    for k, row in enumerate(rows):
        parts = row.split(",")
        if len(parts) == 3 and parts[0] == str(k) and parts[1] in valid and parts[2] in predicted:
            continue
        if len(parts) != 3 or parts[0] != str(k) or not all(p.lstrip("-").isdigit() for p in parts[1:]):
            return f"predictions.csv row {k + 1} is not '{k},<label>,<prediction>'"
        return (f"predictions.csv row {k + 1}: label {parts[1]}, prediction {parts[2]}; the task's classes "
                f"are 0..{classes - 1}" + (" (-1, no prediction, is for a diverged run)" if parts[2] == "-1" else ""))
    if expected is not None and len(rows) != expected:
        return f"predictions.csv has {len(rows)} rows; the test set has {expected}"
    return None


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


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
    if d.is_dir():
        os.rename(d, dest)
    else:  # a file (or link) where a record should be: kept inside a folder of its own
        dest.mkdir()
        os.rename(d, dest / d.name)
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
        if np.issubdtype(np.asarray(labels).dtype, np.floating):  # a regression task's targets and outputs
            preds = np.full(len(labels), np.nan) if predictions is None else predictions
            rows = "".join(f"{k},{float(y)!r},{float(p)!r}\n" for k, (y, p) in enumerate(zip(labels, preds)))
        else:
            rows = "".join(f"{k},{int(y)},{int(p)}\n" for k, (y, p) in enumerate(zip(labels, preds)))
        (tmp / "predictions.csv").write_text("index,label,prediction\n" + rows)
        written = list(FILES)
        if probes is not None:
            _dump(tmp / PROBES, probes)
            written.append(PROBES)
        if checkpoint is not None:
            import torch

            try:
                torch.save(checkpoint, tmp / CHECKPOINT)
            except RuntimeError as e:  # torch's own words for a full disk ("enforce fail ... unexpected pos")
                raise OSError(f"cannot write {final / CHECKPOINT}: {str(e).splitlines()[0]} (is the disk full?)") \
                    from None
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

    from ablation import __version__

    return {"ablation": __version__, "git": _git_commit(), "python": platform.python_version(),
            "torch": torch.__version__, "numpy": np.__version__, "platform": platform.platform()}


def _git_commit() -> str | None:
    """HEAD, with "+dirty" when the code (not results/) differs from it."""
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        commit = out.stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no",
                                "--", "ablation", "pyproject.toml"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (commit + ("+dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None
