"""Temporal order (Hochreiter & Schmidhuber 1997, sec. 5.6, experiment 6a): a sequence of T symbols that
starts with B and ends with E; two positions hold X or Y, the first in [0.1T, 0.2T], the second in
[0.5T, 0.6T] (the paper's 10-20 and 50-60 of T = 100-110), every other is a distractor a, b, c or d. The
class is the order of the two: XX, XY, YX or YY, so the first must be remembered for ~0.4T steps.
Always guessing one class scores 25%.
"""

from __future__ import annotations

import numpy as np
import torch

from ablation.core.config import TaskConfig
from ablation.tasks.registry import Splits, rng
from ablation.tasks.sst import Encoded

SYMBOLS = ("<pad>", "a", "b", "c", "d", "B", "E", "X", "Y")  # token ids by position; <pad> = 0 is never used
CLASSES = ("XX", "XY", "YX", "YY")
_ID = {s: k for k, s in enumerate(SYMBOLS)}


def windows(length: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The positions [low, high] of the first and second relevant symbol."""
    return (round(0.1 * length), round(0.2 * length)), (round(0.5 * length), round(0.6 * length))


def generate(n: int, length: int, gen: np.random.Generator) -> Encoded:
    """n sequences: ids (n, T) int64, lengths (n,) all T, classes (n,) int64."""
    ids = gen.integers(_ID["a"], _ID["d"] + 1, (n, length))
    ids[:, 0], ids[:, -1] = _ID["B"], _ID["E"]
    (a, b), (c, d) = windows(length)
    t1, t2 = gen.integers(a, b + 1, n), gen.integers(c, d + 1, n)
    s1, s2 = gen.integers(0, 2, n), gen.integers(0, 2, n)  # 0: X, 1: Y
    rows = np.arange(n)
    ids[rows, t1], ids[rows, t2] = _ID["X"] + s1, _ID["X"] + s2
    return Encoded(torch.from_numpy(ids), torch.full((n,), length, dtype=torch.long), torch.from_numpy(2 * s1 + s2))


def load(task: TaskConfig) -> Splits:
    sizes = {"train": task.train_size, "dev": task.eval_size, "test": task.eval_size}
    splits = {s: generate(n, task.length, rng(task, s)) for s, n in sizes.items()}
    return Splits(**splits, vocab_size=len(SYMBOLS), input_size=0, num_outputs=len(CLASSES))
