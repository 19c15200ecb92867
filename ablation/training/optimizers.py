"""The optimizers a pack trains with (`train.optimizer`): AdaGrad (the lecture's; `training/adagrad.py`),
Adam and RMSprop (what long-lag tasks are usually trained with), each member's state and step size its own.

Every parameter is stacked along the member dimension M and every update here is elementwise, with
the learning rate broadcast per member, so a member takes the same steps, bit for bit, alone or in any
pack (tests/test_tasks.py). Gradients are clipped per member first (`adagrad.clip_members`). Adam and
RMSprop update every parameter densely, the embedding table too (the generated tasks' vocabularies are
a few symbols); AdaGrad keeps its row-sparse embedding update, so SST's records are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ablation.models.classifier import PackedClassifier
from ablation.training.adagrad import PackAdagrad, clip_members


class _Dense:
    """What Adam and RMSprop share: trainable parameters, per-member step sizes, clipping."""

    def __init__(self, model: PackedClassifier, lr: float | Sequence[float], clip_norm: float = 0.0,
                 eps: float = 1e-8):
        self.params = [p for p in model.parameters() if p.requires_grad]
        lrs = [lr] * model.M if isinstance(lr, int | float) else list(lr)
        self.lr = torch.tensor(lrs, dtype=self.params[0].dtype, device=self.params[0].device)  # (M,)
        self.clip, self.eps, self.t = clip_norm, eps, 0

    def _lr(self, p: torch.Tensor) -> torch.Tensor:
        return self.lr.view(-1, *[1] * (p.dim() - 1))  # broadcast over a member's (...) shape

    def grads(self) -> list[torch.Tensor]:
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in self.params]
        return clip_members(grads, self.clip) if self.clip > 0 else grads

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


class PackAdam(_Dense):
    """Adam (Kingma & Ba 2015, Algorithm 1), with torch.optim.Adam's defaults β = (0.9, 0.999), ε = 1e-8:
    m ← β1·m + (1-β1)·g; v ← β2·v + (1-β2)·g²; p ← p - lr·(m / (1-β1^t)) / (√(v / (1-β2^t)) + ε)."""

    betas = (0.9, 0.999)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self, *_) -> None:
        """One update from the parameters' .grad (the trainer's row arguments are AdaGrad's only)."""
        b1, b2 = self.betas
        self.t += 1
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t  # bias corrections
        for p, g, m, v in zip(self.params, self.grads(), self.m, self.v):
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.sub_(self._lr(p) * (m / c1) / ((v / c2).sqrt() + self.eps))


class PackRMSprop(_Dense):
    """RMSprop (Tieleman & Hinton 2012, lecture 6e), with torch.optim.RMSprop's α = 0.99, ε = 1e-8:
    v ← α·v + (1-α)·g²; p ← p - lr·g / (√v + ε)."""

    alpha = 0.99

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.v = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self, *_) -> None:
        for p, g, v in zip(self.params, self.grads(), self.v):
            v.mul_(self.alpha).addcmul_(g, g, value=1 - self.alpha)
            p.sub_(self._lr(p) * g / (v.sqrt() + self.eps))


OPTIMIZERS = {"adagrad": PackAdagrad, "adam": PackAdam, "rmsprop": PackRMSprop}  # core/spec.OPTIMIZERS' names


def make_optimizer(name: str, model: PackedClassifier, lr: float | Sequence[float], clip_norm: float = 0.0):
    """The pack's optimizer ``name`` (one of `core/spec.OPTIMIZERS`)."""
    return OPTIMIZERS[name](model, lr, clip_norm)


def row_sparse(name: str) -> bool:
    """Whether the optimizer takes the batch's embedding rows (AdaGrad) rather than the whole table."""
    return name == "adagrad"
