"""Where packs train: local worker processes, or Slurm jobs through submitit.

The seam is narrow on purpose: an executor submits packs (`submit_all`) and returns one
job per pack that later says whether it ended and how (`done()`, `error()`, `log`); `wait`
lets it refresh its view and report progress. The grid (`grid.run_grid`) needs nothing
else, so another backend (Ray, Dask) is one more class here. Whatever the backend, a
pack's job calls `grid.train_and_record`, which writes each record atomically into the
results directory; a job that dies leaves no record, and the next `ablation grid` trains
its runs again.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path

from .config import RunConfig

EXECUTORS = ("local", "slurm")


def run_pack(pack: Sequence[RunConfig], out: str, device: str, threads: int, events=None) -> int:
    """The body of every pack job, local or remote: train the pack, write its records."""
    import torch

    from .grid import train_and_record

    torch.set_num_threads(threads)
    on_epoch = None
    if events is not None:
        def on_epoch(epoch, batches):
            events.put((len(pack), epoch))
    train_and_record(pack, out, device, on_epoch)
    return len(pack)


class Cancelled(RuntimeError):
    """The job was told to stop (scancel, a time limit, the node going away)."""


def _cancel(signum, frame):
    raise Cancelled(f"stopped by {signal.Signals(signum).name}; its unfinished runs left no record")


def run_slurm_pack(pack: Sequence[RunConfig], out: str, device: str, threads: int) -> int:
    """`run_pack` as a Slurm task that stops when Slurm says so.

    Slurm stops a job with SIGTERM, then SIGKILL after `KillWait` seconds; submitit
    ignores SIGTERM (it waits for its own requeue signal), so a cancelled pack would go on
    training and might even finish and write its records. Our packs do not checkpoint, so
    SIGTERM ends the pack at once: the job fails with this reason and writes nothing more.
    """
    signal.signal(signal.SIGTERM, _cancel)
    print(f"ablation: training a pack of {len(pack)} runs; SIGTERM stops it", file=sys.stderr, flush=True)
    return run_pack(pack, out, device, threads)


class LocalJob:
    def __init__(self, future: Future):
        self.future = future
        self.log = None

    def done(self) -> bool:
        return self.future.done()

    def error(self) -> str | None:
        """None on success, else the exception, one line."""
        e = self.future.exception()
        return None if e is None else traceback.format_exception_only(e)[-1].strip()


class LocalExecutor:
    """Packs in worker processes on this machine (spawned: no forked torch state)."""

    def __init__(self, workers: int = 1, threads: int = 1,
                 on_epoch: Callable[[int, int], None] | None = None):
        ctx = mp.get_context("spawn")
        self.manager = ctx.Manager()
        self.events = self.manager.Queue()
        self.pool = ProcessPoolExecutor(workers, mp_context=ctx)
        self.threads, self.on_epoch = threads, on_epoch

    def submit_all(self, packs: Sequence[Sequence[RunConfig]], out: Path, device: str) -> list[LocalJob]:
        return [LocalJob(self.pool.submit(run_pack, list(p), str(out), device, self.threads, self.events))
                for p in packs]

    def wait(self, timeout: float) -> None:
        """Block up to ``timeout`` seconds for progress, reporting each finished epoch."""
        try:
            n, epoch = self.events.get(timeout=timeout)
        except queue.Empty:
            return
        if self.on_epoch is not None:
            self.on_epoch(n, epoch)

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)
        self.manager.shutdown()


@dataclass(frozen=True)
class SlurmOptions:
    """Resources for each pack's job (`--slurm.KEY`, or a [slurm] table in the experiment)."""

    partition: str | None = None  # None: the cluster's default partition
    time: int = 60  # minutes a pack may run
    gpus: int = 0  # GPUs per pack (packs use one; more is wasted)
    cpus: int = 1  # CPUs per pack (the per-step work is small: 1 is best)
    mem_gb: int = 4  # memory per pack
    max_parallel: int = 64  # array jobs running at once

    @classmethod
    def from_mapping(cls, values: dict) -> SlurmOptions:
        valid = {f.name for f in fields(cls)}
        unknown = set(values) - valid
        if unknown:
            raise KeyError(f"unknown slurm option {sorted(unknown)[0]!r}; valid: {', '.join(sorted(valid))}")
        return cls(**values)


class SlurmJob:
    def __init__(self, job):
        self.job = job
        self.log = str(job.paths.stderr)

    def done(self) -> bool:
        return self.job.done()

    def error(self) -> str | None:
        """None on success, else Slurm's final state and the job's last error line."""
        e = self.job.exception()  # the job's traceback, or why it never produced a result
        if e is None:
            return None
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        rules = [k for k, line in enumerate(lines) if set(line) == {"-"}]
        if len(rules) >= 2:  # submitit puts the job's traceback between two rules of dashes
            lines = lines[rules[0] + 1 : rules[1]]
        return f"Slurm state {self.job.state}: {lines[-1]}"


class SlurmExecutor:
    """Each pack is one task of a Slurm job array, submitted through submitit.

    The results directory must be on a filesystem that the nodes share: jobs write their
    records there, and the driver learns a job's end from Slurm's accounting (sacct).
    """

    def __init__(self, folder: str | os.PathLike, options: SlurmOptions, threads: int = 1):
        import submitit

        self.folder = Path(folder)
        self.executor = submitit.AutoExecutor(folder=self.folder / "%j", cluster="slurm")
        params = dict(timeout_min=options.time, cpus_per_task=options.cpus, mem_gb=options.mem_gb,
                      slurm_array_parallelism=options.max_parallel, name="ablation")
        if options.gpus:
            params["gpus_per_node"] = options.gpus
        if options.partition:
            params["slurm_partition"] = options.partition
        self.executor.update_parameters(**params)
        self.threads = max(threads, options.cpus)
        self.jobs: list[SlurmJob] = []

    def submit_all(self, packs: Sequence[Sequence[RunConfig]], out: Path, device: str) -> list[SlurmJob]:
        """One job array for the whole grid."""
        n = len(packs)
        jobs = self.executor.map_array(run_slurm_pack, [list(p) for p in packs], [str(out)] * n, [device] * n,
                                       [self.threads] * n)
        self.jobs = [SlurmJob(j) for j in jobs]
        return self.jobs

    def wait(self, timeout: float) -> None:
        time.sleep(timeout)
        if self.jobs:  # one sacct call refreshes every job's state
            self.jobs[0].job.watcher.update()

    def close(self) -> None:
        pass
