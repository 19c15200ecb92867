"""Probes of a trained pack: vanishing gradients, measured, and gate statistics.

Gradient decay, per test sentence: J is the cross-entropy on its final hidden vector, ∂J/∂h_k the total
derivative through the recurrence (the scans return it through their ``probe`` input), and the statistic is

    r_d = log10 ||∂J/∂h_{T-d}|| − log10 ||∂J/∂h_T||      (T the last token, d = 0, 1, ...)

summarised per sentence-length bin (`LENGTH_BINS`) and distance (count, sentences with no gradient below
`FLOOR`, mean, 10/50/90% quantiles) at `CHECKPOINTS` (init, after epoch 1, best on dev). Gate statistics,
on the best-on-dev parameters: each gate's mean activation by position and the fraction saturated (< 0.05
or > 0.95). `trainer.train_pack` writes them as probes.json (format `VERSION`); see docs/statistics.md.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ablation.core.config import EVAL_BATCH
from ablation.models.cell import last_step
from ablation.models.classifier import PackedClassifier
from ablation.tasks.sst import Encoded

VERSION = 2
SATURATED = (0.05, 0.95)  # a gate unit this close to 0 or 1 passes (or blocks) nearly everything
CHECKPOINTS = ("init", "epoch1", "best")  # where the gradient probe is taken (see train.train_pack)
# Sentence-length bins (inclusive); SST's test sentences are 2-56 tokens, 19 on average, so
# the last bin still holds ~300 sentences.
LENGTH_BINS = ((1, 10), (11, 20), (21, 30), (31, None))
QUANTILES = (0.1, 0.5, 0.9)  # the spread band (10-90%) and the median
# A float32 gradient below the smallest normal float32 is no gradient: it is counted in
# "zero" and its log taken at this floor, so the mean stays finite (the median is robust to it).
FLOOR = torch.finfo(torch.float32).tiny


def _sweep(model: PackedClassifier, test: Encoded, batch_size: int, gates: bool):
    """One pass over ``test`` in length-sorted batches: per-sentence log10 ||∂J/∂h_k|| by
    distance, (M, N, L) with NaN past each sentence's start, and (if ``gates``) each gate's
    summed mean and saturated fraction by position, {gate: (M, 2, L)}."""
    M, N, L = model.M, len(test.lengths), int(test.lengths.max())
    log_norm = torch.full((M, N, L), float("nan"), dtype=torch.float64)
    sums = {g: torch.zeros(M, 2, L, dtype=torch.float64) for s in model.specs for g in s.gates} if gates else {}
    order = torch.argsort(test.lengths.cpu(), stable=True)
    for k in range(0, N, batch_size):
        sel = order[k : k + batch_size]
        dev_sel = sel.to(test.ids.device)
        lengths = test.lengths[dev_sel]
        T = int(lengths.max())
        ids, labels = test.ids[dev_sel, :T], test.labels[dev_sel]
        with torch.enable_grad():
            x = model.embed(ids).detach()  # (M, T, B, E)
            probe = x.new_zeros(T, M, len(sel), model.hidden_size, requires_grad=True)
            hs, acts = model.hidden(x, probe)
            logits = model.classify(last_step(hs, lengths))  # (M, B, C)
            # summed over sentences, so ∂J/∂h_k of sentence b is that of its own J_b
            loss = model.loss(logits, labels, reduction="sum").sum()
            (dh,) = torch.autograd.grad(loss, probe)  # (T, M, B, H)
        lengths = lengths.cpu()
        norm = dh.norm(dim=-1).double().cpu().clamp(min=FLOOR).log10()  # (T, M, B)
        # distance d of sentence b sits at position lengths[b] - 1 - d
        d = torch.arange(T).view(T, 1)
        pos = (lengths.view(1, -1) - 1 - d)  # (D=T, B): position of distance d
        valid = pos >= 0
        gathered = norm.permute(1, 2, 0).gather(2, pos.clamp(min=0).t().unsqueeze(0).expand(M, -1, -1))  # (M, B, D)
        log_norm[:, sel, :T] = torch.where(valid.t().unsqueeze(0), gathered, float("nan"))
        if gates:
            w = (torch.arange(T).view(T, 1) < lengths.view(1, -1)).double()  # (T, B) real tokens
            for g, a in acts.items():  # a (T, M, B, H)
                if g not in sums:
                    continue
                a = a.detach()
                mean = a.mean(-1).double().cpu()  # (T, M, B)
                sat = ((a < SATURATED[0]) | (a > SATURATED[1])).double().mean(-1).cpu()
                sums[g][:, 0, :T] += (mean * w.unsqueeze(1)).sum(-1).t()
                sums[g][:, 1, :T] += (sat * w.unsqueeze(1)).sum(-1).t()
    return log_norm, sums


def gradient_decay(log_norm: torch.Tensor, lengths: torch.Tensor) -> list[dict]:
    """Per-sentence log-ratios (module doc) summarised by length bin, one dict per member.

    ``log_norm`` (M, N, L): log10 ||∂J/∂h|| of sentence n at distance d (NaN where it has no
    token); ``lengths`` (N,). A point with no finite ratio (no sentence reaches it, or the
    member diverged) is None.
    """
    ratio = (log_norm - log_norm[:, :, :1]).numpy()  # (M, N, L): r_d, 0 at d = 0
    lengths = lengths.cpu().numpy()
    out = []
    for m in range(ratio.shape[0]):
        bins = []
        for lo, hi in LENGTH_BINS:
            in_bin = (lengths >= lo) & (lengths <= (hi if hi is not None else lengths.max()))
            top = int(lengths[in_bin].max()) if in_bin.any() else 0
            r = ratio[m][in_bin][:, :top]  # (n_bin, distances up to the longest)
            n = np.isfinite(r).sum(0) if len(r) else np.zeros(0, int)
            zero = (log_norm[m].numpy()[in_bin][:, :top] <= np.log10(FLOOR)).sum(0) if len(r) else n
            with np.errstate(all="ignore"), warnings.catch_warnings():  # a diverged member: all NaN, None
                warnings.simplefilter("ignore", RuntimeWarning)
                cols = {"mean": [_num(np.nanmean(c)) for c in r.T]}
                for q in QUANTILES:
                    cols[f"q{round(q * 100)}"] = [_num(np.nanquantile(c, q)) for c in r.T]
            bins.append({"lengths": [lo, hi], "distance": list(range(top)), "n": n.tolist(), "zero": zero.tolist(),
                         **cols})
        out.append({"bins": bins})
    return out


def probe_gradients(model: PackedClassifier, test: Encoded, batch_size: int = EVAL_BATCH) -> list[dict]:
    """The gradient-decay probe of every member over ``test`` (one checkpoint)."""
    log_norm, _ = _sweep(model, test, batch_size, gates=False)
    return gradient_decay(log_norm, test.lengths)


def probe_pack(model: PackedClassifier, test: Encoded, batch_size: int = EVAL_BATCH,
               earlier: dict[str, list[dict]] | None = None) -> list[dict]:
    """Every probe of every member over ``test`` at the model's current parameters (the
    "best" checkpoint), joined with the gradient probes of ``earlier`` checkpoints
    ({name: `probe_gradients` result}); see the module doc for the format."""
    log_norm, sums = _sweep(model, test, batch_size, gates=True)
    best = gradient_decay(log_norm, test.lengths)
    earlier = earlier or {}
    L = sums[next(iter(sums))].shape[-1] if sums else int(test.lengths.max())
    by_position = (test.lengths.cpu().view(-1, 1) > torch.arange(L)).sum(0).double()  # sentences reaching t
    n_p = by_position.clamp(min=1)  # divisor (a position no sentence reaches is 0)
    return [{"version": VERSION,
             "gradient_decay": {"statistic": "log10 ||dJ/dh_(T-d)|| - log10 ||dJ/dh_T|| per test sentence",
                                "checkpoints": {**{name: probes[m] for name, probes in earlier.items()},
                                                "best": best[m]}},
             "gates": {g: {"mean": _round(sums[g][m, 0] / n_p), "saturated": _round(sums[g][m, 1] / n_p)}
                       for g in spec.gates},
             "positions_n": by_position.long().tolist(),
             "saturation_thresholds": list(SATURATED)}
            for m, spec in enumerate(model.specs)]


def _num(x) -> float | None:
    """A finite float rounded to 6 significant digits, or None (JSON has no NaN)."""
    return float(f"{x:.6g}") if np.isfinite(x) else None


def _round(x: torch.Tensor) -> list[float]:
    return [_num(v) for v in x.tolist()]
