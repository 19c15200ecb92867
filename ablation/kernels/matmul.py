"""The matmuls around the scan (input projection, classifier), with autograd, in a fixed order.

On CPU (`select.wanted`) they run the C++ kernel's `mm` (csrc/lstm_kernels.h), which sums every
element bias first, then k = 0, 1, ... with one IEEE multiply and one add a term, so no MKL
kernel, whose order follows the CPU, touches a training step. Elsewhere (CUDA,
ABLATION_SCAN=python, no compiler) `torch.baddbmm`.
"""

from __future__ import annotations

import torch

from ablation.kernels import select
from ablation.kernels.cpp import fixed_order_bmm


def bmm(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """bias + a @ b for a (M, N, K), b (M, K, P), bias (M, P) or None -> (M, N, P)."""
    if not select.wanted(a):
        return torch.bmm(a, b) if bias is None else torch.baddbmm(bias.unsqueeze(1), a, b)
    return _Bmm.apply(a, b, bias)


class _Bmm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, bias):
        ctx.save_for_backward(a, b)
        ctx.bias = bias is not None
        return fixed_order_bmm(a, b, bias)

    @staticmethod
    def backward(ctx, dc):
        a, b = ctx.saved_tensors
        need_a, need_b, need_bias = ctx.needs_input_grad
        da = fixed_order_bmm(dc, b.transpose(1, 2)) if need_a else None  # (M, N, P) @ (M, P, K)
        db = fixed_order_bmm(a.transpose(1, 2), dc) if need_b else None  # (M, K, N) @ (M, N, P)
        dbias = None
        if ctx.bias and need_bias:  # Σ_n dc[n], n ascending, as a (1, N) @ (N, P) product
            dbias = fixed_order_bmm(dc.new_ones(dc.shape[0], 1, dc.shape[1]), dc).squeeze(1)
        return da, db, dbias
