"""The optimizer: AdaGrad (Duchi et al. 2011) for a pack, each member's state and learning rate its own.

G += g²; p -= lr·g/(√G + eps), elementwise over parameters stacked along the member dimension M; the
embedding (M, V, E) is updated only in the rows a batch used. `PackAdagrad.step` takes one C++ pass a
parameter where `kernels/select.py`'s `wanted` says so (`torch.ops.ablation_fused.adagrad_`), else torch's
foreach kernels in the same order and float32 roundings; `trainer.train_step` calls it once per batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ablation.kernels import select
from ablation.models.classifier import PackedClassifier

CLIP_EPS = 1e-6  # keeps the clip scale finite for an all-zero gradient (torch.nn.utils.clip_grad_norm_'s)


def clip_members(grads: list[torch.Tensor | None], clip: float) -> list[torch.Tensor | None]:
    """Scale each member's gradients (each (M, ...); None: absent) so that their total norm is at most
    ``clip``: `torch.nn.utils.clip_grad_norm_` per member."""
    sq = sum(g.pow(2).flatten(1).sum(1) for g in grads if g is not None)
    scale = (clip / (sq.sqrt() + CLIP_EPS)).clamp(max=1.0)  # (M,)
    return [None if g is None else g * scale.view(-1, *[1] * (g.dim() - 1)) for g in grads]


class PackAdagrad:
    """AdaGrad (Duchi et al. 2011) over stacked parameters, with per-member norm clipping.

    G += g²; p -= lr·g/(√G + eps): the update of `torch.optim.Adagrad`, elementwise, so
    each member's state is its own, and so is its learning rate (``lr``: one for the pack,
    or one per member). The embedding table is updated only in the rows a batch used
    (`step(rows=...)`): a zero gradient leaves a row and its G untouched in the dense
    update too, so this is the same maths for a fraction of the work. `step(None, grad)`
    takes the whole table's gradient instead (what a CUDA graph can hold: `kernels/cuda_graphs.py`).
    """

    def __init__(self, model: PackedClassifier, lr: float | Sequence[float], clip_norm: float = 0.0,
                 eps: float = 1e-10):
        self.model, self.clip, self.eps = model, clip_norm, eps
        lrs = [lr] * model.M if isinstance(lr, int | float) else list(lr)
        # float32, as torch.optim.Adagrad's python-float lr becomes in its float32 kernels
        self.neg_lr = -torch.tensor(lrs, dtype=model.embedding.dtype, device=model.embedding.device)  # (M,)
        self.dense = [p for n, p in model.named_parameters() if n != "embedding"]
        self.state = [torch.zeros_like(p) for p in self.dense]
        self.emb_state = torch.zeros_like(model.embedding)

    @torch.no_grad()
    def step(self, rows: torch.Tensor | None = None, rows_grad: torch.Tensor | None = None) -> None:
        """Update every dense parameter, and the embedding rows ``rows`` (U,) by ``rows_grad`` (M, U, E)
        (``rows`` None: the whole table by (M, V, E))."""
        grads = [p.grad for p in self.dense]
        if self.clip > 0:
            *grads, rows_grad = clip_members([*grads, rows_grad], self.clip)
        if select.wanted(self.neg_lr):  # one C++ pass a parameter, in the fixed order below
            step = torch.ops.ablation_fused.adagrad_
            for p, g, G in zip(self.dense, grads, self.state):
                step(p.data, g, G, self.neg_lr, self.eps, None)
            if rows_grad is not None:
                step(self.model.embedding.data, rows_grad, self.emb_state, self.neg_lr, self.eps, rows)
            return
        torch._foreach_addcmul_(self.state, grads, grads)
        denom = torch._foreach_add(torch._foreach_sqrt(self.state), self.eps)
        for p, g, d in zip(self.dense, grads, denom):
            # p + (-lr·g)/d, in the order (and float32 roundings) of addcdiv_(g, d, value=-lr)
            p.add_(torch.mul(g, self.neg_lr.view(-1, *[1] * (g.dim() - 1))).div_(d))
        if rows_grad is not None:
            emb, g = self.model.embedding, rows_grad
            if rows is None:  # the whole table (M, V, E)
                G = self.emb_state.add_(g * g)
            else:  # index_select / index_copy_ rather than [:, rows]: the same copies, several times faster
                G = self.emb_state.index_select(1, rows) + g * g  # (M, U, E)
                self.emb_state.index_copy_(1, rows, G)
            step = self.neg_lr.view(-1, 1, 1) * g / (G.sqrt() + self.eps)  # x - lr·g/d, bit for bit
            emb.add_(step) if rows is None else emb.index_copy_(1, rows, emb.index_select(1, rows) + step)

    def zero_grad(self) -> None:
        for p in self.dense:
            p.grad = None
        self.model.embedding.grad = None  # set only by train_step(whole_table=True)
