"""Best-on-dev selection and each member's outcome: complete, diverged or no_learning.

The lecture's protocol keeps, for each member, the parameters of the epoch with the best dev
accuracy and evaluates them once on test (`BestOnDev`). A member whose training loss is not
finite has diverged: it is left out from then on and reports no accuracy. A member with
finite losses that learned nothing (`no_learning`, against `label_baselines`) keeps its
numbers but is listed apart by the aggregator.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ablation.core.records import EpochMetrics, Status
from ablation.models.classifier import PackedClassifier
from ablation.tasks.splits import SSTData


class BestOnDev:
    """Each member's metrics, best dev score, best epoch and weights, and the epoch it diverged in.

    The dev score is accuracy in % (``higher`` is better) or a task's MSE or perplexity (lower is
    better), written to a metrics line under each of ``keys`` (records.EpochMetrics)."""

    def __init__(self, model: PackedClassifier, keys: tuple[str, ...] = ("dev_acc",), higher: bool = True,
                 baseline: str = "majority"):
        M = model.M
        self.best = {n: p.detach().clone() for n, p in model.named_parameters()}  # the best-on-dev weights
        self.higher, self.keys, self.baseline = higher, keys, baseline  # baseline: core/spec.TaskInfo.baseline
        self.dev_acc = torch.full((M,), -1.0 if self.higher else float("inf"))  # the best dev score
        self.epoch = [0] * M  # 0: no epoch finished
        self.diverged: list[int | None] = [None] * M
        self.metrics: list[list[EpochMetrics]] = [[] for _ in range(M)]

    def update(self, model: PackedClassifier, epoch: int, train_loss: torch.Tensor, dev_acc: torch.Tensor,
               seconds: float) -> None:
        """Record an epoch's (M,) training losses and dev accuracies (on CPU); keep the members that improved."""
        improved = torch.zeros(model.M, dtype=torch.bool)
        for m in range(model.M):
            if self.diverged[m] is not None:
                continue
            if not torch.isfinite(train_loss[m]):
                self.diverged[m] = epoch
                continue
            line = {"epoch": epoch, "train_loss": float(train_loss[m]), **{k: float(dev_acc[m]) for k in self.keys}}
            self.metrics[m].append(EpochMetrics(**line, seconds=round(seconds, 3)))
            if dev_acc[m] > self.dev_acc[m] if self.higher else dev_acc[m] < self.dev_acc[m]:
                self.dev_acc[m], self.epoch[m], improved[m] = dev_acc[m], epoch, True
        _keep_best(model, self.best, improved.to(model.embedding.device))

    def all_diverged(self) -> bool:
        return all(d is not None for d in self.diverged)

    def ok(self, m: int) -> bool:
        """Member ``m`` has a best epoch, so dev and test accuracies (it did not diverge first)."""
        return self.diverged[m] is None and self.epoch[m] > 0

    def outcome(self, m: int, baselines: tuple[float, float, float]) -> tuple[Status, str | None]:
        """Member ``m``'s status and, unless complete, why (``baselines``: `label_baselines`)."""
        ok = self.ok(m)
        reason = no_learning(self.metrics[m], *baselines, key=self.keys[0], higher=self.higher,
                             baseline=self.baseline) if ok else (
            f"train loss not finite in epoch {self.diverged[m]}" if self.diverged[m] else "no epoch finished")
        return ("diverged" if not ok else "no_learning" if reason else "complete"), reason


@torch.no_grad()
def _keep_best(model: PackedClassifier, best: dict[str, torch.Tensor], improved: torch.Tensor) -> None:
    """Copy the members whose dev accuracy improved into ``best`` (member-wise where)."""
    for name, p in model.named_parameters():
        mask = improved.view(-1, *[1] * (p.dim() - 1))
        best[name].copy_(torch.where(mask, p, best[name]))


def label_baselines(data: SSTData) -> tuple[float, float, float]:
    """What a model that learned nothing scores: the cross-entropy in nats of predicting the
    training labels' frequencies (their entropy); the dev accuracy in % of always predicting
    the most frequent dev label; and half a dev example in % (float32 accuracies round, so
    "not above the majority rate" allows that much)."""
    p = torch.bincount(data.train.labels).double() / len(data.train)
    p = p[p > 0]
    majority = torch.bincount(data.dev.labels).max().item() / len(data.dev) * 100
    return float(-(p * p.log()).sum()), majority, 50 / len(data.dev)


# What predicting without learning means, by core/spec.TaskInfo.baseline
TRIVIAL = {"majority": "label frequencies", "mean": "training targets' mean", "unigram": "unigram frequencies",
           "bernoulli": "notes' frequencies"}


def no_learning(metrics: Sequence[dict], prior_loss: float, majority_acc: float,
                tolerance: float = 0.0, *, key: str = "dev_acc", higher: bool = True,
                baseline: str = "majority") -> str | None:
    """Why a run with finite losses learned nothing, or None if it learned.

    No learning: (1) its training loss never went below ``prior_loss``, what predicting the
    label frequencies costs; or (2) with two epochs or more, no later epoch's training loss
    went below the first epoch's; or (3) its dev accuracy was never above ``majority_acc``
    (+ ``tolerance`` points), what always guessing the most frequent label scores. For a
    regression task (``higher`` False, ``key`` dev_metric): ``prior_loss`` and ``majority_acc``
    are the MSE of predicting the training targets' mean on train and dev, and (3) reads "its dev
    MSE never fell below that of the mean (- ``tolerance``)"; for a language model (``baseline``
    "unigram"), the unigram model's cross-entropy per token and dev perplexity; for piano rolls
    ("bernoulli"), the NLL per frame of each note's training frequency on train and dev.
    """
    if not metrics:
        return None
    losses = [m["train_loss"] for m in metrics]
    best_dev = max(m[key] for m in metrics) if higher else min(m[key] for m in metrics)
    trivial = TRIVIAL[baseline]
    if min(losses) >= prior_loss:
        return (f"train loss never fell below {prior_loss:.3f}, the loss of predicting the {trivial} "
                f"(lowest {min(losses):.4g})")
    if len(losses) > 1 and min(losses[1:]) >= losses[0]:
        return f"train loss never fell below its first epoch's {losses[0]:.4g} (lowest later {min(losses[1:]):.4g})"
    if higher and best_dev <= majority_acc + tolerance:
        return f"dev accuracy never rose above the majority-class rate {majority_acc:.2f}% (best {best_dev:.2f}%)"
    if not higher and best_dev >= majority_acc - tolerance:
        metric = {"unigram": "perplexity", "bernoulli": "NLL per frame"}.get(baseline, "MSE")
        return (f"dev {metric} never fell below {majority_acc:.4g}, that of predicting the {trivial} "
                f"(best {best_dev:.4g})")
    return None
