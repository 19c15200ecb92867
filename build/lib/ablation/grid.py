"""The grid runner: expand an experiment, pack its runs, train what is missing, resumably.

A run's identity is `RunConfig.run_id()` (its resolved config and seed). Runs whose record
is complete are skipped; the rest are grouped into packs of runs that differ only in
per-member settings such as their gates (same seed, so same data order and shared initial
weights; see `train.pack_key`), and each pack trains in one fused pass; a run that cannot
share (another cell kind, peephole shape or data) gets a pack of its own kind. Each record
is written atomically the moment its pack ends, so a grid killed at any moment (SIGKILL
included) resumes where it stopped.

Packs run in worker processes (one torch thread each: the per-step work is small, so two
single-threaded packs on two cores beat one pack on two threads).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .config import Experiment, RunConfig
from .records import clean_partial, is_complete, versions, write_record


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
    from .train import pack_key

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


def train_and_record(pack: Sequence[RunConfig], out: str | os.PathLike, device: str,
                     progress=None, show_bar: bool = False) -> list[Path]:
    """Train one pack and write each member's record; returns the record directories."""
    from .train import resolve_device, train_pack

    meta = versions()  # the code as it is when training starts
    results, _ = train_pack(pack, device=resolve_device(device), on_epoch=progress, show_bar=show_bar)
    paths = []
    for r in results:
        summary = {**r.summary, "run_id": r.config.run_id(), "versions": meta}
        paths.append(write_record(out, r.config.run_id(), r.config.to_dict(), r.metrics, summary,
                                  r.test_labels, r.test_predictions, r.probes))
    return paths


class GridError(RuntimeError):
    """Some packs failed; their runs have no record and the next run of the grid retries them."""


def run_grid(exp: Experiment, out: str | os.PathLike, *, seeds: int | None = None,
             device: str = "auto", pack_size: int = 8, workers: int | None = None,
             threads: int = 1, executor: str = "local", slurm: dict | None = None,
             show_progress: bool | None = None) -> Plan:
    """Train every missing run of ``exp`` into ``out``; returns the plan that was carried out.

    Raises `GridError` naming each failed pack (and its log) once every pack has ended.
    """
    from .executors import EXECUTORS, LocalExecutor, SlurmExecutor, SlurmOptions

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clean_partial(out)
    if workers is None:
        workers = 1 if device == "cuda" or executor != "local" else os.cpu_count() or 1
    p = plan(exp, out, seeds=seeds, pack_size=pack_size, workers=workers if executor == "local" else 1)
    if not p.todo:
        return p
    bar = tqdm(total=len(p.runs), initial=p.done, desc=f"grid {exp.name}", unit="run",
               disable=(not _isatty()) if show_progress is None else not show_progress,
               dynamic_ncols=True)
    epochs = p.todo[0][0].train.epochs
    total_epochs = sum(len(pk) * pk[0].train.epochs for pk in p.todo)
    progress = {"model_epochs": 0, "start": time.time()}

    def on_epoch(n: int, epoch: int) -> None:
        progress["model_epochs"] += n
        done = progress["model_epochs"]
        rate = done / max(time.time() - progress["start"], 1e-9)
        eta = (total_epochs - done) / rate
        status = f"epoch {epoch}/{epochs}, model-epochs {done}/{total_epochs}, ETA {eta / 60:.1f} min"
        bar.set_postfix_str(status)
        if bar.disable:  # not a terminal: one log line per pack-epoch
            print(f"grid {exp.name}: {status}", file=sys.stderr, flush=True)

    if executor == "local":
        ex = LocalExecutor(min(workers, len(p.todo)), threads, on_epoch)
    elif executor == "slurm":
        opts = SlurmOptions.from_mapping({**exp.slurm, **(slurm or {})})
        ex = SlurmExecutor(out / ".slurm", opts, threads)
    else:
        raise ValueError(f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}")
    try:
        jobs = ex.submit_all(p.todo, out, device)
        pending = set(range(len(jobs)))
        while pending:
            ex.wait(0.5 if executor == "local" else 2.0)
            pending = {k for k in pending if not jobs[k].done()}
            bar.n = p.done + sum(is_complete(out / r.run_id()) for pk in p.todo for r in pk)
            bar.refresh()
        failures = [(pk, job) for pk, job in zip(p.todo, jobs) if job.error() is not None]
    finally:
        ex.close()
        bar.close()
    if failures:
        lines = [f"{len(failures)} of {len(jobs)} packs failed (their runs are retried by the next `ablation grid`):"]
        for pk, job in failures:
            where = f"; log: {job.log}" if job.log else ""
            lines.append(f"- pack of {len(pk)} ({pk[0].run_id()} ...){where}\n  {job.error()}")
        raise GridError("\n".join(lines))
    return p


def _isatty() -> bool:
    return sys.stderr.isatty()
