"""Training progress: the event a pack reports as each epoch ends, one signature everywhere.

`trainer.train_pack` calls ``on_epoch(EpochEnd(...))``; `ablation train` prints it (cli); in a
grid, a local worker (`job.run_pack`) puts it on its queue, the driver's executor takes it
off (`executors.LocalExecutor.wait`) and hands it to the grid's bar (`grid.run_grid`).
Torch-free: the driver imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple


class EpochEnd(NamedTuple):
    epoch: int  # 1-based
    members: int  # the pack's runs: the model-epochs this epoch stands for
    batches: int  # the epoch's batches
    epochs: int = 0  # the epochs the pack trains at most
    train_loss: float = float("nan")  # the epoch's training loss, mean over the pack's members
    dev_acc: float = float("nan")  # the best member's dev accuracy after the epoch, % (or `metric`)
    seconds: float = float("nan")  # the epoch's wall time, training and dev evaluation
    metric: str = "accuracy"  # what dev_acc holds: accuracy in %, or a regression task's MSE


def epoch_line(end: EpochEnd, elapsed: float) -> str:
    """One line per epoch: loss, dev accuracy, time and the ETA of the run's remaining epochs."""
    eta = elapsed / end.epoch * (end.epochs - end.epoch) if end.epochs else float("nan")
    dev = f"dev {end.dev_acc:.2f}%" if end.metric == "accuracy" else f"dev {end.metric} {end.dev_acc:.4g}"
    return (f"epoch {end.epoch}/{end.epochs or '?'}: train loss {end.train_loss:.4f}, {dev}, "
            f"{end.seconds:.0f} s; ETA {eta / 60:.1f} min")


OnEpoch = Callable[[EpochEnd], None]
