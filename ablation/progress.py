"""Training progress: the event a pack reports as each epoch ends, one signature everywhere.

`train.train_pack` calls ``on_epoch(EpochEnd(...))``; `ablation train` prints it (cli); in a
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


OnEpoch = Callable[[EpochEnd], None]
