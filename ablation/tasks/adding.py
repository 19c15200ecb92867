"""The adding problem (Hochreiter & Schmidhuber 1997, sec. 5.4, experiment 4), in its common modern form
(Le et al. 2015; Arjovsky et al. 2016): a sequence of T pairs (value, marker), values ~ U(0, 1), markers 0
except two 1s, one in each half; the target is the sum of the two marked values. Predicting the targets'
mean scores MSE = Var(u1 + u2) = 2/12 ≈ 0.167: the plateau a model sits on until it learns to remember.
"""

from __future__ import annotations

import numpy as np
import torch

from ablation.core.config import TaskConfig
from ablation.tasks.registry import Splits, rng
from ablation.tasks.sst import Encoded

INPUT_SIZE = 2  # (value, marker)


def generate(n: int, length: int, gen: np.random.Generator) -> Encoded:
    """n sequences: inputs (n, T, 2) float32, lengths (n,) all T, targets (n,) float32."""
    values = gen.random((n, length), dtype=np.float32)
    half = length // 2
    first = gen.integers(0, half, n)  # one marker in [0, T/2), one in [T/2, T)
    second = gen.integers(half, length, n)
    markers = np.zeros((n, length), dtype=np.float32)
    rows = np.arange(n)
    markers[rows, first] = markers[rows, second] = 1.0
    x = torch.from_numpy(np.stack([values, markers], axis=-1))
    target = torch.from_numpy(values[rows, first] + values[rows, second])
    return Encoded(x, torch.full((n,), length, dtype=torch.long), target)


def load(task: TaskConfig) -> Splits:
    sizes = {"train": task.train_size, "dev": task.eval_size, "test": task.eval_size}
    splits = {s: generate(n, task.length, rng(task, s)) for s, n in sizes.items()}
    return Splits(**splits, vocab_size=1, input_size=INPUT_SIZE, num_outputs=1)
