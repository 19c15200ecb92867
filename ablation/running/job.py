"""What a pack's job runs, wherever it runs (a local worker process or a Slurm task).

`run_pack` is the body of every job: it asks for the driver's numerics mode before torch's
first kernel, trains the pack (`trainer.train_pack`) and writes each member's record
(`train_and_record`, atomically: `records.write_record`); `run_slurm_pack` is the same as a
Slurm task that stops when Slurm says so. Torch and the trainer are imported inside the
functions, after the numerics request.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from ablation.core.config import RunConfig
from ablation.core.records import Summary, versions, write_record
from ablation.training import numerics
from ablation.training.progress import EpochEnd, OnEpoch

_EVENTS = None  # a local worker's progress queue (set by `executors._worker_init`)


def train_and_record(pack: Sequence[RunConfig], out: str | os.PathLike, device: str,
                     progress: OnEpoch | None = None, show_bar: bool = False) -> list[Path]:
    """Train one pack and write each member's record; returns the record directories.

    ``progress`` is `train.train_pack`'s ``on_epoch``.
    """
    from ablation.training.trainer import resolve_device, train_pack  # after the numerics request (run_pack)

    dev = resolve_device(device)
    numerics.enforce(dev)  # the requested mode (portable by default), or a NumericsError saying why not
    meta, machine = versions(), numerics.describe(dev)  # the code as it is when training starts, and where
    results, _ = train_pack(pack, device=dev, on_epoch=progress, show_bar=show_bar)
    paths = []
    for r in results:
        summary: Summary = {**r.summary, "run_id": r.config.run_id(), "versions": meta, "machine": machine}
        paths.append(write_record(out, r.config.run_id(), r.config.to_dict(), r.metrics, summary,
                                  r.test_labels, r.test_predictions, r.probes,
                                  r.checkpoint))
    return paths


def run_pack(pack: Sequence[RunConfig], out: str, device: str, threads: int, events=None,
             numerics_mode: str | None = None) -> int:
    """The body of every pack job, local or remote: train the pack, write its records.

    ``numerics_mode`` is the driver's (`numerics.requested()`); None: this process's own.
    """
    import torch

    if numerics_mode is not None:  # before torch's first kernel; train_and_record checks it took effect
        numerics.request(numerics_mode)
    torch.set_num_threads(threads)
    events = _EVENTS if events is None else events  # a local worker's queue (executors._worker_init)
    on_epoch = None
    if events is not None:
        def on_epoch(end: EpochEnd) -> None:
            events.put(end)  # to the driver (executors.LocalExecutor.wait)
    train_and_record(pack, out, device, on_epoch)
    return len(pack)


class Cancelled(RuntimeError):
    """The job was told to stop (scancel, a time limit, the node going away)."""


def _cancel(signum, frame):
    raise Cancelled(f"stopped by {signal.Signals(signum).name}; its unfinished runs left no record")


def run_slurm_pack(pack: Sequence[RunConfig], out: str, device: str, threads: int,
                   numerics_mode: str | None = None) -> int:
    """`run_pack` as a Slurm task that stops when Slurm says so.

    Slurm stops a job with SIGTERM, then SIGKILL after `KillWait` seconds; submitit
    ignores SIGTERM (it waits for its own requeue signal), so a cancelled pack would go on
    training and might even finish and write its records. Our packs do not checkpoint, so
    SIGTERM ends the pack at once: the job fails with this reason and writes nothing more.
    """
    signal.signal(signal.SIGTERM, _cancel)
    print(f"ablation: training a pack of {len(pack)} runs; SIGTERM stops it", file=sys.stderr, flush=True)
    return run_pack(pack, out, device, threads, numerics_mode=numerics_mode)
