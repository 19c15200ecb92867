"""Probes of a trained pack: vanishing gradients, measured, and gate statistics.

- Gradient norms. The lecture argues that in a plain RNN ∂J/∂h^(1) shrinks (or grows)
  geometrically with the number of steps between h^(1) and the loss, and that the LSTM's
  additive cell path keeps it from vanishing. We measure it: for every test sentence, J is
  the cross-entropy of the classifier on the final hidden vector, and ||∂J/∂h_k|| is taken
  for every position k, as a function of the distance from the last token (0 = the last
  token itself). ∂J/∂h_k is the total derivative through the recurrence (the scans return
  it through their ``probe`` input), as in the lecture's ∂J/∂h^(1).
- Gate statistics. Mean activation of each gate present, by position from the start of the
  sentence, and the fraction of units saturated (< 0.05 or > 0.95).

Both are computed on the best-on-dev parameters over the test sentences, and written to
each run's record as probes.json (`probe_pack` returns one dict per member).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .cell import last_step
from .data import Encoded
from .model import PackedClassifier

SATURATED = (0.05, 0.95)


def probe_pack(model: PackedClassifier, test: Encoded, batch_size: int = 256) -> list[dict]:
    """Gradient-norm and gate probes of every member over ``test``; see the module doc."""
    M, L = model.M, int(test.lengths.max())
    grad_sum = torch.zeros(M, L, dtype=torch.float64)  # Σ ||∂J/∂h_k|| by distance
    grad_log = torch.zeros(M, L, dtype=torch.float64)  # Σ log10 ||∂J/∂h_k||
    by_distance = torch.zeros(L, dtype=torch.float64)  # sentences with a token at that distance
    gates = {g: torch.zeros(M, 2, L, dtype=torch.float64) for s in model.specs for g in s.gates}
    order = torch.argsort(test.lengths.cpu(), stable=True)
    for k in range(0, len(order), batch_size):
        sel = order[k : k + batch_size].to(test.ids.device)
        lengths = test.lengths[sel]
        T = int(lengths.max())
        ids, labels = test.ids[sel, :T], test.labels[sel]
        with torch.enable_grad():
            x = model.embedding.detach()[:, ids.t()]  # (M, T, B, E)
            probe = x.new_zeros(T, M, len(sel), model.H, requires_grad=True)
            hs, acts = model.hidden(x, probe)
            logits = model.classify(last_step(hs, lengths))  # (M, B, C)
            loss = F.cross_entropy(logits.flatten(0, 1), labels.repeat(M), reduction="sum")
            (dh,) = torch.autograd.grad(loss, probe)  # (T, M, B, H): ∂J_b/∂h_k, one sentence each
        valid = (torch.arange(T, device=ids.device).view(T, 1) < lengths.view(1, -1)).float()  # (T, B)
        # position t of sentence b is at distance lengths[b] - 1 - t from its last token
        dist = (lengths.view(1, -1) - 1 - torch.arange(T, device=ids.device).view(T, 1)).clamp(min=0)
        norm = dh.norm(dim=-1).double().cpu()  # (T, M, B)
        w, dist = valid.double().cpu(), dist.cpu()
        flat_d = dist.flatten()
        for m in range(M):
            grad_sum[m].index_add_(0, flat_d, (norm[:, m] * w).flatten())
            grad_log[m].index_add_(0, flat_d, (norm[:, m].clamp(min=1e-300).log10() * w).flatten())
        by_distance.index_add_(0, flat_d, w.flatten())
        for g, a in acts.items():  # a (T, M, B, H)
            if g not in gates:
                continue
            a = a.detach()
            mean = a.mean(-1).double().cpu()  # (T, M, B)
            sat = ((a < SATURATED[0]) | (a > SATURATED[1])).double().mean(-1).cpu()
            gates[g][:, 0, :T] += (mean * w.unsqueeze(1)).sum(-1).t()
            gates[g][:, 1, :T] += (sat * w.unsqueeze(1)).sum(-1).t()
    by_position = (test.lengths.cpu().view(-1, 1) > torch.arange(L)).sum(0).double()  # sentences reaching t
    n_d, n_p = by_distance.clamp(min=1), by_position.clamp(min=1)  # divisors (a point no sentence reaches is 0)
    return [{"grad_norm": {"distance": list(range(L)), "mean": _round(grad_sum[m] / n_d),
                           "log10_mean": _round(grad_log[m] / n_d), "n": by_distance.long().tolist()},
             "gates": {g: {"mean": _round(gates[g][m, 0] / n_p), "saturated": _round(gates[g][m, 1] / n_p)}
                       for g in spec.gates},
             "positions_n": by_position.long().tolist(),
             "saturation_thresholds": list(SATURATED)}
            for m, spec in enumerate(model.specs)]

def _round(x: torch.Tensor) -> list[float]:
    return [float(f"{v:.6g}") for v in x.tolist()]
