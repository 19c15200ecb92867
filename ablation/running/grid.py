"""The grid runner: expand an experiment, pack its runs, train what is missing, resumably.

A run's identity is `RunConfig.run_id()`; runs whose record is complete are skipped, the rest are packed
(same seed, differing only in per-member settings: `core/config.py`'s `pack_key`; a run that cannot share
gets a pack of its own kind) and each pack trains in one fused pass, in a worker process with one torch
thread. Each record is written atomically as its pack ends, so a grid killed at any moment (SIGKILL
included) resumes where it stopped. Before anything trains, the grid checks its options, its data and the
results directory, takes the directory's lock (`running/lock.py`), keeps a copy of the experiment file
(`experiment.toml`), removes temporaries whose writer is gone and moves damaged records to `.broken/`
(`core/records.py`'s `quarantine`), so that their runs train again. See docs/performance.md.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ablation.core.config import EXPERIMENT_COPY, Experiment, RunConfig, pack_key
from ablation.core.errors import ConfigError
from ablation.core.records import check_record, clean_partial, is_complete, quarantine
from ablation.running.executors import EXECUTORS, GridError, SlurmOptions, check_executor
from ablation.running.lock import ResultsLock
from ablation.training.progress import EpochEnd


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
        raise ConfigError(f"{exp.name}: the grid repeats a run (two axes give the same config)")
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
        keep_experiment(exp, out)
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

    if kind.checks_data_here and device != "cuda":
        build_kernels()  # once, here, so no worker compiles (or waits) while the others train
    ex = kind.create(out, len(p.todo), workers, threads, on_epoch, opts)
    try:
        return _watch(ex, p, out, device, bar)
    except KeyboardInterrupt as e:  # say how far the grid got, without expanding it again (cli)
        e.finished = (p.done + sum((out / r.run_id()).is_dir() for pk in p.todo for r in pk), len(p.runs))
        raise
    finally:
        bar.close()


def _watch(ex, p: Plan, out: Path, device: str, bar) -> Plan:
    """Submit the plan's packs to the executor ``ex`` and wait for all of them."""
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
    if failures:
        lines = [f"{len(failures)} of {len(jobs)} packs failed (their runs are retried by the next `ablation grid`):"]
        for pk, job in failures:
            where = f"; log: {job.log}" if job.log else ""
            lines.append(f"- pack of {len(pk)} ({pk[0].run_id()} ...){where}\n  {job.error()}")
        raise GridError("\n".join(lines))
    return p


def build_kernels() -> None:
    """Build the C++ kernels unless they are built (`kernels.cpp.build`, one line while it compiles);
    if they cannot be, the workers run the Python scan and say so."""
    from ablation.kernels import cpp

    try:
        if not cpp.is_built():
            cpp.build(lambda s: print(s, file=sys.stderr, flush=True))
    except cpp.BuildError:
        pass


def describe_plan(p: Plan, out: Path, workers: int, estimate_from: str | os.PathLike | None = None) -> list[str]:
    """What a grid would do (`ablation grid --dry-run`): runs, packs and, from the records of the same
    run ids in ``estimate_from`` (e.g. the committed results), what training them cost there."""
    todo = [r for pk in p.todo for r in pk]
    lines = [f"{len(p.runs)} runs: {p.done} already complete in {out}, {len(todo)} to train in {len(p.todo)} packs "
             f"on {workers} workers"]
    if estimate_from is not None and todo:
        import json

        seconds, found = 0.0, 0
        for r in todo:
            summary = Path(estimate_from) / r.run_id() / "summary.json"
            if summary.is_file():
                s = json.loads(summary.read_text())
                if s.get("wall_seconds") is not None and s.get("pack_size"):
                    seconds, found = seconds + s["wall_seconds"] / s["pack_size"], found + 1
        if found:
            hours = seconds / 3600 * len(todo) / found
            lines.append(f"the same runs took {hours:.1f} core-hours in {estimate_from} ({found} of {len(todo)} "
                         f"found there, one thread a pack): about {hours / workers:.1f} hours on {workers} workers")
    return lines


def keep_experiment(exp: Experiment, out: Path) -> None:
    """Copy the experiment file beside its records (`aggregate.EXPERIMENT_COPY`), so that the table,
    its reading and its page read the experiment from the results directory, wherever they run."""
    if exp.path is None:
        return
    text = Path(exp.path).read_text(encoding="utf-8")
    dest = out / EXPERIMENT_COPY
    if dest.is_file() and dest.read_text(encoding="utf-8") == text:
        return
    tmp = out / f".{EXPERIMENT_COPY}.{os.getpid()}"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, dest)


def check_options(exp: Experiment, *, seeds: int | None = None, pack_size: int = 8, workers: int | None = None,
                  threads: int = 1) -> None:
    """Refuse grid options that cannot run, before any folder is made or any process starts."""
    if not (exp.has_grid or exp.axes or exp.variants):
        raise ConfigError(f"experiment {exp.name!r} has no [grid] or [variants] table, so no runs to cross; "
                         "add one, or train a single run with `ablation train --config`")
    for flag, value in (("--seeds", seeds), ("--pack-size", pack_size), ("--workers", workers),
                        ("--threads", threads)):
        if value is not None and not (isinstance(value, int) and value >= 1):
            raise ConfigError(f"{flag}: must be an integer >= 1, got {value!r}")
    for key, values in exp.axes.items():
        repeated = sorted({json.dumps(v) for v in values if values.count(v) > 1})
        if repeated:
            raise ConfigError(f"{exp.name}: grid axis {key!r} repeats {', '.join(repeated)}: a run would be trained "
                              "twice into one record")


def check_data(runs: Sequence[RunConfig]) -> None:
    """Every data folder the SST runs name holds the SST files (the error names the missing one), a TSV
    task's files read without error and match their checksum, and every word-vector file named exists."""
    from ablation.core.spec import TASKS
    from ablation.tasks import registry
    from ablation.tasks.sst import find_sst_dir, verify_sst
    from ablation.tasks.vectors import NAMED

    for data_dir in dict.fromkeys(r.data.data_dir for r in runs if r.task.name == "sst"):
        verify_sst(find_sst_dir(data_dir))  # the checksums, here, not in a worker after the folder is made
    for task in dict.fromkeys(r.task for r in runs if r.task.name == "tsv"):
        registry.load(task)  # every line read and checked now (a generated task's data are drawn from its seed)
    for source in dict.fromkeys(r.model.embeddings for r in runs if TASKS[r.task.name].words):
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
