"""The task registry's loader: a run's task (`core/spec.TASKS`) -> its splits.

A task's entry in `spec.TASKS` names its module under ablation/tasks/; the module's `load(task)`
gives a `Splits` from the `[task]` config section. SST keeps its own loader (`tasks/splits.py`:
files with checksums, a vocabulary, word vectors); a generated task's splits are drawn from
``task.data_seed``, so a run id (which hashes the task's keys) names its data as SST's checksums do.
"""

from __future__ import annotations

import functools
import importlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from ablation.core.config import RunConfig, TaskConfig
from ablation.core.spec import TASKS
from ablation.tasks.sst import Encoded

SPLIT_CODES = {"train": 0, "dev": 1, "test": 2}  # each split's stream of the generator (numpy SeedSequence)


@dataclass(frozen=True)
class Splits:
    """A generated task's data: the three splits (`sst.Encoded`: ``ids`` holds token ids (N, T), or
    for a vector task the inputs (N, T, D) float; ``labels`` classes (N,) or targets (N,) float)."""

    train: Encoded
    dev: Encoded
    test: Encoded
    vocab_size: int  # tokens: the symbols, <pad> = 0 included; vectors: 1 (a frozen <pad> row, unused)
    input_size: int  # vectors: D, what W_ih reads; tokens: 0 (model.embedding_dim)
    num_outputs: int  # classes, or 1 for a regression target

    def baselines(self) -> tuple[float, float, float]:
        return baselines(self.train.labels, self.dev.labels, self.test.labels, self.num_outputs)


def baselines(train: torch.Tensor, dev: torch.Tensor, test: torch.Tensor, outputs: int) -> tuple[float, float, float]:
    """(training loss of a model that learned nothing, dev and test metric of the trivial predictor) from
    each split's targets: for a regression (``outputs`` 1) the training targets' variance and the MSE of
    predicting their mean; for classes their entropy in nats and the accuracy in % of always predicting
    the training split's most frequent class; for a language model's next tokens the unigram model's
    entropy per token and perplexity; for piano rolls the NLL per frame of each note's training frequency
    (add-one smoothed) on each split."""
    if train.dim() == 3:  # piano rolls' next frames (N, T, notes), -1 padding: each note's frequency, independently
        frames = [s[s[..., 0] >= 0].double() for s in (train, dev, test)]  # (frames, notes) each
        p = (frames[0].sum(0) + 1) / (len(frames[0]) + 2)  # Laplace's rule: a note train never plays is not impossible
        return tuple(float(-(y * p.log() + (1 - y) * (1 - p).log()).sum(1).mean()) for y in frames)
    if train.dim() > 1:  # a language model's next tokens (N, T), 0 padding: the unigram model of the training targets
        counts = torch.bincount(train[train != 0], minlength=outputs).double()
        logp = (counts / counts.sum()).log()
        nll = [float(-logp[s[s != 0]].mean()) for s in (dev, test)]
        return float(-(logp[counts > 0] * (counts[counts > 0] / counts.sum())).sum()), *(math.exp(x) for x in nll)
    if outputs == 1:
        mean = train.double().mean()
        mse = [float(((s.double() - mean) ** 2).mean()) for s in (dev, test)]
        return float(((train.double() - mean) ** 2).mean()), *mse
    p = torch.bincount(train, minlength=outputs).double() / len(train)
    top = int(p.argmax())
    acc = [float((s == top).double().mean() * 100) for s in (dev, test)]
    p = p[p > 0]
    return float(-(p * p.log()).sum()), *acc


def module(name: str):
    """The module of task ``name`` (its `spec.TASKS` entry's)."""
    return importlib.import_module(f"ablation.tasks.{TASKS[name].module}")


@functools.lru_cache(maxsize=8)
def load(task: TaskConfig):
    """A task's splits (`Splits`; a TSV task's: `splits.SSTData`), from its config alone (cached: a
    worker's packs share them)."""
    if task.name == "sst":
        raise ValueError("SST's splits are tasks/splits.data_for's")
    return module(task.name).load(task)


def is_sst(cfg: RunConfig) -> bool:
    """The lecture's task: SST's own loader (`tasks/splits.py`) and records without the task keys."""
    return cfg.task.name == "sst"


def rng(task: TaskConfig, split: str):
    """The generator of one split: seeded by (data_seed, split, length), so the splits of one task
    are independent, and every length has its own data."""
    return np.random.default_rng([task.data_seed, SPLIT_CODES[split], task.length])
