"""The grid runner: expand an experiment, pack its runs, train what is missing, resumably.

A run's identity is `RunConfig.run_id()` (its resolved config and seed). Runs whose record
is complete are skipped; the rest are grouped into packs of runs that differ only in
per-member settings such as their gates (same seed, so same data order and shared initial
weights; see `config.pack_key`), and each pack trains in one fused pass; a run that cannot
share (another cell kind, peephole shape or data) gets a pack of its own kind. Each record
is written atomically the moment its pack ends, so a grid killed at any moment (SIGKILL
included) resumes where it stopped.

Packs run in worker processes (one torch thread each: the per-step work is small, so two
single-threaded packs on two cores beat one pack on two threads).

Before anything trains, the grid checks its options, its data and that it can write into
the results directory, then takes the directory's lock (`lock.ResultsLock`: one driver per
directory), removes temporaries whose writer is gone and moves damaged records aside to
`.broken/` (`records.quarantine`), so that their runs train again.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .config import Experiment, RunConfig, pack_key
from .executors import EXECUTORS, GridError, SlurmOptions, check_executor
from .lock import ResultsLock
from .progress import EpochEnd
from .records import check_record, clean_partial, is_complete, quarantine


@dataclass(frozen=True)
class Plan:
    runs: list[RunConfig]  # every run of the grid
    todo: list[list[RunConfig]]  # packs still to train

    @property
    def done(self) -> int:
        return len(self.runs) - sum(len(p) for p in self.todo)


def plan(exp: Experiment, out: str | os.PathLike, *, seeds: int | None = None,
         pack_size: int = 8, workers: int = 1) -> Plan:
    """The runs of the grid and the packs still to train.

    With several workers, the largest packs (the last first) are halved until the packs
    fill whole rounds (5 packs on 2 workers become 4 + 2 halves), so no core idles through
    a last lone pack.
    """
    runs = exp.runs(seeds)
    ids = [r.run_id() for r in runs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{exp.name}: the grid repeats a run (two axes give the same config)")
    todo_runs = [r for r in runs if not is_complete(Path(out) / r.run_id())]
    groups: dict = {}
    for r in todo_runs:
        groups.setdefault(pack_key(r), []).append(r)
    packs = [g[k : k + pack_size] for g in groups.values() for k in range(0, len(g), pack_size)]
    while workers > 1 and len(packs) % workers and any(len(pk) > 1 for pk in packs):
        biggest = max(len(pk) for pk in packs)
        k = max(i for i, pk in enumerate(packs) if len(pk) == biggest)
        half = (len(packs[k]) + 1) // 2
        packs[k : k + 1] = [packs[k][:half], packs[k][half:]]
    return Plan(runs, packs)


def run_grid(exp: Experiment, out: str | os.PathLike, *, seeds: int | None = None,
             device: str = "auto", pack_size: int = 8, workers: int | None = None,
             threads: int = 1, executor: str = "local", slurm: dict | None = None,
             show_progress: bool | None = None) -> Plan:
    """Train every missing run of ``exp`` into ``out``; returns the plan that was carried out.

    Raises `GridError` naming each failed pack (and its log) once every pack has ended.
    """
    out = Path(out)
    check_options(exp, seeds=seeds, pack_size=pack_size, workers=workers, threads=threads)
    opts = SlurmOptions.from_mapping({**exp.slurm, **(slurm or {})})  # checked even when not used
    check_executor(executor)
    if EXECUTORS[executor].checks_data_here:
        check_data(exp.runs(seeds))
    check_writable(out)
    with ResultsLock(out):
        clean_partial(out)
        for r in exp.runs(seeds):
            reason = check_record(out / r.run_id()) if (out / r.run_id()).exists() else None
            if reason is not None:
                dest = quarantine(out / r.run_id(), reason)
                print(f"ablation: damaged record {r.run_id()} ({reason}) moved to {dest}; it trains again",
                      file=sys.stderr)
        return _run(exp, out, seeds, device, pack_size, workers, threads, executor, opts, show_progress)


def _run(exp, out, seeds, device, pack_size, workers, threads, executor, opts, show_progress) -> Plan:
    """`run_grid` once its checks passed and it holds the lock: plan, submit, watch."""
    kind = EXECUTORS[executor]
    workers = kind.planned_workers(workers, device)
    p = plan(exp, out, seeds=seeds, pack_size=pack_size, workers=workers)
    if not p.todo:
        return p
    bar = tqdm(total=len(p.runs), initial=p.done, desc=f"grid {exp.name}", unit="run",
               disable=(not _isatty()) if show_progress is None else not show_progress,
               dynamic_ncols=True)
    epochs = p.todo[0][0].train.epochs
    total_epochs = sum(len(pk) * pk[0].train.epochs for pk in p.todo)
    progress = {"model_epochs": 0, "start": time.time()}

    def on_epoch(end: EpochEnd) -> None:
        progress["model_epochs"] += end.members
        done = progress["model_epochs"]
        rate = done / max(time.time() - progress["start"], 1e-9)
        eta = (total_epochs - done) / rate
        status = f"epoch {end.epoch}/{epochs}, model-epochs {done}/{total_epochs}, ETA {eta / 60:.1f} min"
        bar.set_postfix_str(status)
        if bar.disable:  # not a terminal: one log line per pack-epoch
            print(f"grid {exp.name}: {status}", file=sys.stderr, flush=True)

    ex = kind.create(out, len(p.todo), workers, threads, on_epoch, opts)
    aborted = True  # until the loop ends: Ctrl-C, SIGTERM or an error stop every job at once
    try:
        jobs = ex.submit_all(p.todo, out, device)
        pending = set(range(len(jobs)))
        while pending:
            ex.wait(ex.poll)
            pending = {k for k in pending if not jobs[k].done()}
            bar.n = p.done + sum((out / r.run_id()).is_dir() for pk in p.todo for r in pk)  # records land whole
            bar.refresh()
        failures = [(pk, job) for pk, job in zip(p.todo, jobs) if job.error() is not None]
        aborted = False
    finally:
        ex.close(abort=aborted)
        bar.close()
    if failures:
        lines = [f"{len(failures)} of {len(jobs)} packs failed (their runs are retried by the next `ablation grid`):"]
        for pk, job in failures:
            where = f"; log: {job.log}" if job.log else ""
            lines.append(f"- pack of {len(pk)} ({pk[0].run_id()} ...){where}\n  {job.error()}")
        raise GridError("\n".join(lines))
    return p


def check_options(exp: Experiment, *, seeds: int | None = None, pack_size: int = 8, workers: int | None = None,
                  threads: int = 1) -> None:
    """Refuse grid options that cannot run, before any folder is made or any process starts."""
    if not (exp.has_grid or exp.axes or exp.variants):
        raise ValueError(f"experiment {exp.name!r} has no [grid] or [variants] table, so no runs to cross; "
                         "add one, or train a single run with `ablation train --config`")
    for flag, value in (("--seeds", seeds), ("--pack-size", pack_size), ("--workers", workers),
                        ("--threads", threads)):
        if value is not None and not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{flag}: must be an integer >= 1, got {value!r}")


def check_data(runs: Sequence[RunConfig]) -> None:
    """Every data folder the runs name holds the SST files (the error names the missing one),
    and every word-vector file they name exists."""
    from .data import find_sst_dir
    from .embeddings import NAMED

    for data_dir in dict.fromkeys(r.data.data_dir for r in runs):
        find_sst_dir(data_dir)
    for source in dict.fromkeys(r.model.embeddings for r in runs):
        if source != "random" and source not in NAMED and not Path(source).is_file():
            raise FileNotFoundError(f"model.embeddings: no file {source}; valid: random, "
                                    f"{', '.join(NAMED)} or a GloVe text file")


def check_writable(out: Path) -> None:
    """Make ``out`` and write a file into it now, not after hours of training."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise OSError(f"cannot write into the results directory {out}: {e.strerror or e}") from None


def _isatty() -> bool:
    return sys.stderr.isatty()
