"""Helpers the tests share: scan inputs and runs, one gradcheck for every recurrent layer, fake
grids of records, and what a retrain must reproduce of a record."""

import itertools
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils._pytree import tree_leaves

from ablation.core.config import RunConfig, apply
from ablation.core.records import write_record
from ablation.core.spec import GATES, LECTURE_ORDER
from ablation.models.cell import ScanFlags, gate_masks

COMBOS = [c for r in range(4) for c in itertools.combinations(GATES, r)]  # the 8 gate sets
LECTURE = list(LECTURE_ORDER)


def gate_ids(g) -> str:
    return "+".join(g) or "none"


# --- scans -----------------------------------------------------------------------------------------

def inputs(specs, peephole, dtype=torch.float32, T=6, B=3, H=5, seed=0):
    """Random scan inputs for a pack; FGR weights zero for members without FGR, as in a model."""
    gen = torch.Generator().manual_seed(seed)
    M = len(specs)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=dtype)  # noqa: E731
    xw = r(T, M, B, 4 * H)
    whh = r(M, 4 * H, H) * 0.5
    peeps = {"none": [None] * 3, "diagonal": [r(M, H) for _ in range(3)],
             "full": [r(M, H, H) * 0.5 for _ in range(3)]}[peephole]
    flags = ScanFlags(specs)
    w_gr = None if flags.fgr is None else r(M, 3 * H, 3 * H) * 0.3 * flags.fgr.to(dtype)
    return xw, whh, peeps, w_gr, gate_masks(specs, dtype=dtype), flags


def run(scan, xw, whh, peeps, w_gr, on, flags, probe=True):
    """Forward and backward of one scan on a loss that uses hs and cs: outputs and gradients."""
    leaves = [t.clone().requires_grad_() for t in (xw, whh, *[p for p in peeps if p is not None])]
    if w_gr is not None:
        leaves.append(w_gr.clone().requires_grad_())
    xw_, whh_, *rest = leaves
    peeps_ = [rest.pop(0) if p is not None else None for p in peeps]
    w_gr_ = rest.pop(0) if w_gr is not None else None
    pr = torch.zeros(xw.shape[:-1] + (whh.shape[-1],), dtype=xw.dtype, device=xw.device,
                     requires_grad=True) if probe else None
    hs, cs, S, o = scan.apply(xw_, whh_, *peeps_, w_gr_, pr, on, flags)
    H = hs.shape[-1]
    loss = (hs * torch.linspace(-1, 1, H, dtype=xw.dtype, device=xw.device)).square().sum() + cs.sin().sum()
    grads = torch.autograd.grad(loss, leaves + ([pr] if probe else []))
    return [hs, cs, S, o, *grads]


def assert_agree(got, want, rtol=1e-5):
    """Elementwise to ``rtol``, relative to each tensor's largest magnitude where values are small."""
    for k, (a, b) in enumerate(zip(got, want)):
        torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * float(b.detach().abs().max()), msg=f"output {k}")


# --- gradcheck -------------------------------------------------------------------------------------

def layer_gradcheck(layer: torch.nn.Module) -> bool:
    """gradcheck of ``layer(x, lengths)`` (I = 3) with respect to x and every parameter."""
    layer = layer.double()
    with torch.no_grad():
        for p in layer.parameters():
            p.uniform_(-0.8, 0.8)
    x = torch.randn(3, 4, 3, dtype=torch.double, requires_grad=True)
    lengths = torch.tensor([4, 2, 3])
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]

    def f(x, *ps):
        return tuple(tree_leaves(torch.func.functional_call(layer, dict(zip(names, ps)), (x, lengths))))

    return torch.autograd.gradcheck(f, (x, *params))


# --- records ---------------------------------------------------------------------------------------

def epoch_numbers(run_dir: Path) -> list[dict]:
    """Each metrics.jsonl line of ``run_dir`` without its ``seconds``."""
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def fake_grid(out: Path, accs: dict[str, list[float]], peephole: str = "diagonal"):
    labels = np.array([0, 1, 1, 0])
    for gates, values in accs.items():
        for seed, acc in enumerate(values, 1):
            cfg = apply(RunConfig(), {"model.gates": gates, "train.seed": seed, "model.peephole": peephole})
            summary = {"status": "complete", "gates": gates, "seed": seed, "test_acc": acc, "dev_acc": acc,
                       "best_epoch": 1, "active_params": 10}
            write_record(out, cfg.run_id(), cfg.to_dict(), [{"epoch": 1, "train_loss": 0.4, "dev_acc": acc}],
                         summary, labels, labels)
