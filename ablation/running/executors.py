"""Where packs train: local worker processes, or Slurm jobs through submitit.

The seam is narrow on purpose: an executor submits packs (`submit_all`) and returns one
job per pack that later says whether it ended and how (`done()`, `error()`, `log`); `wait`
lets it refresh its view and report progress. The grid (`grid.run_grid`) needs nothing
else, so another backend (Ray, Dask) is one more class here. Whatever the backend, a
pack's job runs `job.run_pack`, which writes each record atomically into the
results directory; a job that dies leaves no record, and the next `ablation grid` trains
its runs again.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import queue
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path

from ablation.core.config import RunConfig
from ablation.core.errors import AblationError, ConfigError
from ablation.running import job
from ablation.running.job import run_pack, run_slurm_pack
from ablation.training import numerics
from ablation.training.progress import OnEpoch


class GridError(AblationError, RuntimeError):
    """Packs failed or could not be submitted; their runs have no record, and the next
    `ablation grid` trains them again."""




def check_executor(executor: str) -> None:
    """The executor exists and can run here (for Slurm: submitit and the Slurm commands)."""
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}")
    if executor == "slurm":
        missing = [cmd for cmd in ("sbatch", "sacct") if shutil.which(cmd) is None]
        if missing:
            raise ConfigError(f"--executor slurm: no Slurm cluster here ({' and '.join(missing)} not found on "
                             "PATH); run on a login node of a cluster, or use --executor local")
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise ConfigError("--executor slurm needs submitit: pip install -e '.[slurm]'") from None


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


PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when the thread that started it ends


def _worker_init(driver: int, events) -> None:
    """Each local worker dies with its driver, however the driver ends (SIGKILL included),
    and leaves Ctrl-C to it (a terminal sends SIGINT to the whole process group)."""
    from tqdm import tqdm

    job._EVENTS = events
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # tqdm's default lock is a multiprocessing semaphore; a killed worker would leave it to the
    # resource tracker, which then warns on the terminal. The worker draws no bars: a thread lock does.
    tqdm.set_lock(threading.RLock())
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != driver:  # the driver died before prctl took effect
        os._exit(1)
    threading.Thread(target=_watch_driver, args=(driver,), daemon=True).start()  # elsewhere than Linux


def _watch_driver(driver: int) -> None:
    while os.getppid() == driver:
        time.sleep(1.0)
    os._exit(1)


class LocalExecutor:
    """Packs in worker processes on this machine (spawned: no forked torch state), owned by the
    driver: they die with it (`_worker_init`), and `close(abort=True)` kills them at once."""

    poll = 0.5  # seconds between looks at the jobs (`wait` returns early on progress)
    checks_data_here = True  # the workers read the data the driver sees

    @staticmethod
    def planned_workers(workers: int | None, device: str) -> int:
        """Packs trained at once: one per core, unless told; on CUDA too, where a pack's time goes to
        launching kernels from its core, so packs sharing a GPU overlap (docs/performance.md)."""
        return workers or os.cpu_count() or 1

    @classmethod
    def create(cls, out: Path, packs: int, workers: int, threads: int, on_epoch: OnEpoch | None,
               options) -> LocalExecutor:
        return cls(min(workers, packs), threads, on_epoch)

    def __init__(self, workers: int = 1, threads: int = 1,
                 on_epoch: OnEpoch | None = None):
        ctx = mp.get_context("spawn")
        self.events = ctx.Queue()  # handed to each worker as it starts: no manager process
        self.pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                                        initargs=(os.getpid(), self.events))
        self.threads, self.on_epoch = threads, on_epoch

    def submit_all(self, packs: Sequence[Sequence[RunConfig]], out: Path, device: str) -> list[LocalJob]:
        return [LocalJob(self.pool.submit(run_pack, list(p), str(out), device, self.threads,
                                          numerics_mode=numerics.requested())) for p in packs]

    def wait(self, timeout: float) -> None:
        """Block up to ``timeout`` seconds for progress, reporting each finished epoch."""
        try:
            end = self.events.get(timeout=timeout)  # a progress.EpochEnd from a worker (job.run_pack)
        except queue.Empty:
            return
        if self.on_epoch is not None:
            self.on_epoch(end)

    def close(self, abort: bool = False) -> None:
        """Wait for the workers to end, or with ``abort`` kill them now (their runs leave no record)."""
        if abort:
            for proc in list(self.pool._processes.values()):  # no public way to stop a running task
                proc.kill()
        self.pool.shutdown(cancel_futures=True)  # quick once the workers are dead


@dataclass(frozen=True)
class SlurmOptions:
    """Resources for each pack's job (`--slurm.KEY`, or a [slurm] table in the experiment)."""

    # Each field's "help" is its --slurm.KEY help text (cli.py adds the default).
    partition: str | None = field(default=None, metadata={"help": "partition to submit to (default: the cluster's)"})
    # a 10-epoch pack of 8 takes 10-20 min on one core
    time: int = field(default=60, metadata={"help": "minutes each pack may run"})
    gpus: int = field(default=0, metadata={"help": "GPUs per pack (a pack uses one; more is wasted)"})
    cpus: int = field(default=1, metadata={"help": "CPUs per pack (the per-step work is small: 1 is best)"})
    mem_gb: int = field(default=4, metadata={"help": "memory per pack in GB"})  # a pack of 8 peaks near 1.2 GB
    max_parallel: int = field(default=64, metadata={"help": "array tasks running at once"})

    def __post_init__(self):
        for name, low in (("time", 1), ("gpus", 0), ("cpus", 1), ("mem_gb", 1), ("max_parallel", 1)):
            value = getattr(self, name)
            if type(value) is not int or value < low:
                raise ConfigError(f"slurm.{name}: must be an integer >= {low}, got {value!r}")
        if self.partition is not None and not isinstance(self.partition, str):
            raise ConfigError(f"slurm.partition: expected a name, got {self.partition!r}")

    @classmethod
    def from_mapping(cls, values: dict) -> SlurmOptions:
        valid = {f.name for f in fields(cls)}
        unknown = set(values) - valid
        if unknown:
            raise ConfigError(f"unknown slurm option {sorted(unknown)[0]!r}; valid: {', '.join(sorted(valid))}")
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

    poll = 2.0  # one sacct call a look
    checks_data_here = False  # a node may see other paths: there the job reports missing data

    @staticmethod
    def planned_workers(workers: int | None, device: str) -> int:
        return 1  # the cluster runs every pack at once: no pack is split to fill local cores

    @classmethod
    def create(cls, out: Path, packs: int, workers: int, threads: int, on_epoch: OnEpoch | None,
               options) -> SlurmExecutor:
        return cls(out / ".slurm", options, threads)

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
        try:
            jobs = self.executor.map_array(run_slurm_pack, [list(p) for p in packs], [str(out)] * n, [device] * n,
                                           [self.threads] * n, [numerics.requested()] * n)
        except Exception as e:  # sbatch refused: no controller answers, an unknown partition, ...
            lines = [line.strip() for line in str(e).splitlines() if line.strip()]
            raise GridError(f"Slurm did not take the jobs: {lines[-1] if lines else type(e).__name__}") from None
        self.jobs = [SlurmJob(j) for j in jobs]
        return self.jobs

    def wait(self, timeout: float) -> None:
        time.sleep(timeout)
        if self.jobs:  # one sacct call refreshes every job's state
            self.jobs[0].job.watcher.update()

    def close(self, abort: bool = False) -> None:
        """With ``abort`` (Ctrl-C, SIGTERM), cancel the jobs still queued or running."""
        if abort:
            for j in self.jobs:
                if not j.job.done():
                    j.job.cancel(check=False)


# The executors by name (`ablation grid --executor`): another backend is one class with the
# members above (poll, checks_data_here, planned_workers, create, submit_all, wait, close).
EXECUTORS = {"local": LocalExecutor, "slurm": SlurmExecutor}
