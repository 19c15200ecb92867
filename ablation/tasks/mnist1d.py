"""MNIST-1D (Greydanus 2020, "Scaling down deep learning"): each digit's 12-point 1-d template, padded,
translated, scaled, sheared and noised into a 40-step signal; 10 classes. Generated offline by the
`mnist1d` package (`make_dataset`, never `get_dataset`, which downloads), pinned to one version in
pyproject.toml's `tasks` extra, so a run id names its data. The package's default split is 4,000
training and 1,000 test signals; the last 500 training signals are held out here as the dev split
(best-on-dev selection needs one). Its README reports a GRU at 91% and a CNN at 94% test accuracy.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from ablation.core.config import TaskConfig
from ablation.core.errors import need
from ablation.tasks.registry import Splits
from ablation.tasks.sst import Encoded

DEV = 500  # training signals held out as dev
SEED = 42  # the package's own seed: task.data_seed 0 gives its canonical dataset
REFERENCE = {"GRU": 91.0, "CNN": 94.0}  # test accuracy %, the package's README


def _split(x: np.ndarray, y: np.ndarray) -> Encoded:
    """x (N, T) -> inputs (N, T, 1) float32, lengths all T, classes (N,)."""
    inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).unsqueeze(-1)
    return Encoded(inputs, torch.full((len(y),), x.shape[1], dtype=torch.long), torch.from_numpy(y.astype(np.int64)))


def load(task: TaskConfig) -> Splits:
    need("mnist1d", "tasks", "task.name = 'mnist1d'")
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = SEED + task.data_seed
    # make_dataset seeds numpy's and random's global generators: leave them as they were
    state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(state[0])
        random.setstate(state[1])
    x, y = data["x"], data["y"]
    return Splits(_split(x[:-DEV], y[:-DEV]), _split(x[-DEV:], y[-DEV:]), _split(data["x_test"], data["y_test"]),
                  vocab_size=1, input_size=1, num_outputs=10)
