"""Training: the lecture's protocol for a pack of models that share data order.

AdaGrad, mini-batches of 10, a fixed number of epochs, dev accuracy after each epoch, the
best-on-dev parameters kept and evaluated once on test. A single run is a pack of one; the
grid trains packs of up to 8 runs with the same seed that differ only in per-member settings
(gates, LSTM variant, forget bias, word vectors: `pack_key`), so every member sees the same
batches and starts from the same shared weights (paired comparisons).

Each member takes exactly the steps it would take alone: its loss, gradient norm (for
clipping) and AdaGrad state are its own; nothing mixes members.
"""

from __future__ import annotations

import collections
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import fused
from .cell import gates_name
from .checkpoint import member_checkpoint
from .config import RunConfig, pack_key
from .data import LABEL_NAMES, Encoded, Vocab, batch_order, encode, load_sst
from .embeddings import embedding_matrix, load_vectors
from .model import PackedClassifier
from .probes import probe_gradients, probe_pack


@dataclass(frozen=True)
class SSTData:
    vocab: Vocab
    train: Encoded
    dev: Encoded
    test: Encoded
    counts: dict[str, int]  # training-token counts, for embedding coverage


@functools.lru_cache(maxsize=4)
def load_data(granularity: str, labels: str, data_dir: str | None, train_limit: int,
              vocab: str = "train") -> SSTData:
    """Train on ``granularity``; dev and test are always whole sentences.

    The vocabulary, and the token counts behind its GloVe coverage, come from the training
    sentences that ``vocab`` names (data.VOCABS), whatever ``train_limit`` keeps.
    """
    train = load_sst("train", granularity=granularity, labels=labels, data_dir=data_dir)
    if train_limit:
        train = train[:train_limit]
    # "fine" keeps every tree (each root has a 0-4 label); "train-labelled" drops what ``labels`` drops
    sentences = load_sst("train", labels="fine" if vocab == "train" else labels, data_dir=data_dir)
    words = Vocab.from_examples(sentences)
    counts = collections.Counter(t for ex in sentences for t in ex.tokens)
    dev = load_sst("dev", labels=labels, data_dir=data_dir)
    test = load_sst("test", labels=labels, data_dir=data_dir)
    return SSTData(words, encode(train, words), encode(dev, words), encode(test, words), dict(counts))


def data_for(cfg: RunConfig) -> SSTData:
    d = cfg.data
    return load_data(d.granularity, d.labels, d.data_dir, d.train_limit, d.vocab)


@functools.lru_cache(maxsize=2)
def _vectors(source: str):
    return load_vectors(source)


def initial_embeddings(cfg: RunConfig, data: SSTData) -> tuple[np.ndarray | None, dict]:
    """The embedding table's initial values (None = random from the seed) and its coverage."""
    m = cfg.model
    if m.embeddings == "random":
        return None, {"source": "random"}
    table, stats = embedding_matrix(data.vocab, _vectors(m.embeddings), m.embedding_dim,
                                    seed=cfg.train.seed, counts=data.counts)
    return table, {"source": m.embeddings, **stats}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; valid: auto, cpu, cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(device)


class PackAdagrad:
    """AdaGrad (Duchi et al. 2011) over stacked parameters, with per-member norm clipping.

    G += g²; p -= lr·g/(√G + eps): the update of `torch.optim.Adagrad`, elementwise, so
    each member's state is its own, and so is its learning rate (``lr``: one for the pack,
    or one per member). The embedding table is updated only in the rows a batch used
    (`step(rows=...)`): a zero gradient leaves a row and its G untouched in the dense
    update too, so this is the same maths for a fraction of the work.
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
        """Update every dense parameter, and the embedding rows ``rows`` (U,) by ``rows_grad`` (M, U, E)."""
        grads = [p.grad for p in self.dense]
        if self.clip > 0:  # clip each member by its own total norm
            sq = sum(g.pow(2).flatten(1).sum(1) for g in grads)
            if rows_grad is not None:
                sq = sq + rows_grad.pow(2).flatten(1).sum(1)
            scale = (self.clip / (sq.sqrt() + 1e-6)).clamp(max=1.0)  # (M,)
            grads = [g * scale.view(-1, *[1] * (g.dim() - 1)) for g in grads]
            if rows_grad is not None:
                rows_grad = rows_grad * scale.view(-1, 1, 1)
        if fused.wanted(self.neg_lr):  # one C++ pass a parameter, in the fixed order below
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
            # index_select / index_copy_ rather than [:, rows]: the same copies, several times faster
            G = self.emb_state.index_select(1, rows) + rows_grad * rows_grad  # (M, U, E)
            self.emb_state.index_copy_(1, rows, G)
            emb = self.model.embedding
            step = self.neg_lr.view(-1, 1, 1) * rows_grad / (G.sqrt() + self.eps)  # x - lr·g/d, bit for bit
            emb.index_copy_(1, rows, emb.index_select(1, rows) + step)

    def zero_grad(self) -> None:
        for p in self.dense:
            p.grad = None


@dataclass
class MemberResult:
    config: RunConfig
    metrics: list[dict]
    summary: dict
    test_labels: np.ndarray
    test_predictions: np.ndarray | None
    probes: dict | None = None  # probes.probe_pack: best-on-dev, gradients also at init and after epoch 1
    checkpoint: dict | None = None  # best-on-dev weights and vocabulary (checkpoint.member_checkpoint)


def build_pack(cfgs: Sequence[RunConfig], data: SSTData) -> tuple[PackedClassifier, list[dict]]:
    keys = {pack_key(c) for c in cfgs}
    if len(keys) != 1:
        raise ValueError("a pack's runs must differ only in gates, variant, forget bias, word vectors, "
                         "learning rate and trial")
    m = cfgs[0].model
    tables, coverage = zip(*(initial_embeddings(c, data) for c in cfgs))
    model = PackedClassifier(
        [c.model.spec() for c in cfgs], [c.train.seed for c in cfgs],
        vocab_size=len(data.vocab), embedding_dim=m.embedding_dim, hidden_size=m.hidden_size,
        num_classes=len(LABEL_NAMES[cfgs[0].data.labels]), embeddings=list(tables),
        freeze_embeddings=m.freeze_embeddings, forget_bias=[c.model.forget_bias for c in cfgs])
    return model, list(coverage)


def member_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """logits (M, B, C), labels (B,) -> mean cross-entropy of each member, (M,)."""
    M, B, C = logits.shape
    return F.cross_entropy(logits.reshape(M * B, C), labels.repeat(M), reduction="none").view(M, B).mean(1)


def train_step(model: PackedClassifier, opt: PackAdagrad, ids, lengths, labels) -> torch.Tensor:
    """One AdaGrad step for every member on a shared batch; returns the (M,) losses."""
    rows, inv = torch.unique(ids, return_inverse=True)  # the U distinct tokens of the batch
    emb = model.embedding.detach().index_select(1, rows).requires_grad_(model.embedding.requires_grad)  # (M, U, E)
    x = emb.index_select(1, inv.t().flatten()).view(model.M, *inv.t().shape, model.E)  # (M, T, B, E)
    losses = member_losses(model.logits(x, lengths), labels)
    opt.zero_grad()
    losses.sum().backward()  # members are independent: the sum gives each its own gradient
    opt.step(rows, emb.grad) if emb.requires_grad else opt.step()
    return losses.detach()


def train_pack(cfgs: Sequence[RunConfig], *, device: str | torch.device = "cpu",
               on_epoch: Callable[[int, int], None] | None = None, show_bar: bool = False,
               max_steps: int | None = None) -> tuple[list[MemberResult], PackedClassifier]:
    """Train the pack; returns one result per member (in ``cfgs`` order) and the final model.

    ``max_steps`` stops early after that many optimizer steps (tests); ``on_epoch(epoch,
    batches)`` is called as each epoch ends (grid progress); ``show_bar`` draws a tqdm bar
    over each epoch's batches.
    """
    start = time.time()
    device = torch.device(device) if not isinstance(device, torch.device) else device
    if device.type == "cpu":
        fused.keep_heap()
    cfg = cfgs[0]
    t = cfg.train
    data = data_for(cfg)
    model, coverage = build_pack(cfgs, data)
    model.to(device)
    opt = PackAdagrad(model, [c.train.lr for c in cfgs], t.clip_norm)
    M = model.M
    train, dev, test = (e.to(device) for e in (data.train, data.dev, data.test))
    best = {n: p.detach().clone() for n, p in model.named_parameters()}
    best_dev = torch.full((M,), -1.0)
    best_epoch = [0] * M
    diverged: list[int | None] = [None] * M
    metrics: list[list[dict]] = [[] for _ in range(M)]
    early_probes = {"init": probe_gradients(model, test)}  # probes.CHECKPOINTS
    steps = 0
    for epoch in range(1, t.epochs + 1):
        t0 = time.time()
        loss_sum = torch.zeros(M, device=device)
        seen = 0
        order = batch_order(data.train.lengths, t.batch_size, seed=t.seed, epoch=epoch, bucket=cfg.data.bucket)
        for idx in tqdm(order, desc=f"epoch {epoch}/{t.epochs}", unit="batch", disable=not show_bar,
                        leave=False, dynamic_ncols=True):
            losses = train_step(model, opt, *train.batch(idx))
            loss_sum += losses * len(idx)
            seen += len(idx)
            steps += 1
            if max_steps is not None and steps >= max_steps:
                break
        train_loss = (loss_sum / seen).cpu()
        dev_acc = accuracy(model.predict(dev.ids, dev.lengths, t.eval_batch_size), dev.labels).cpu()
        seconds = time.time() - t0
        improved = torch.zeros(M, dtype=torch.bool)
        for m in range(M):
            if diverged[m] is not None:
                continue
            if not torch.isfinite(train_loss[m]):
                diverged[m] = epoch
                continue
            metrics[m].append({"epoch": epoch, "train_loss": float(train_loss[m]),
                               "dev_acc": float(dev_acc[m]), "seconds": round(seconds, 3)})
            if dev_acc[m] > best_dev[m]:
                best_dev[m], best_epoch[m], improved[m] = dev_acc[m], epoch, True
        _keep_best(model, best, improved.to(device))
        if epoch == 1:
            early_probes["epoch1"] = probe_gradients(model, test)
        if on_epoch is not None:
            on_epoch(epoch, len(order))
        if (max_steps is not None and steps >= max_steps) or all(d is not None for d in diverged):
            break
    final = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.load_state_dict(best, strict=False)
    test_pred = model.predict(test.ids, test.lengths, t.eval_batch_size)
    test_acc = accuracy(test_pred, test.labels).cpu()
    probes = probe_pack(model, test, earlier=early_probes)  # fixed batches: not train.eval_batch_size's
    checkpoints = [member_checkpoint(model, m, data.vocab) for m in range(M)]
    wall = time.time() - start
    prior, majority, half_example = label_baselines(data)
    results = []
    for m, c in enumerate(cfgs):
        ok = diverged[m] is None and best_epoch[m] > 0
        reason = no_learning(metrics[m], prior, majority, half_example) if ok else (
            f"train loss not finite in epoch {diverged[m]}" if diverged[m] else "no epoch finished")
        summary = {
            "status": "diverged" if not ok else "no_learning" if reason else "complete",
            "failure_reason": reason,
            "diverged_epoch": diverged[m],
            "cell": c.model.cell,
            "gates": gates_name(c.model.gates),
            "peephole": c.model.peephole,
            "variant": c.model.variant,
            "seed": c.train.seed,
            "best_epoch": best_epoch[m] or None,
            "dev_acc": float(best_dev[m]) if ok else None,
            "test_acc": float(test_acc[m]) if ok else None,
            "active_params": model.active_parameters(m),
            "embedding_params": model.V * model.E,
            "num_classes": model.C,
            "embedding_coverage": coverage[m],
            "pack_size": M,
            "steps": steps,
            "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
            "threads": torch.get_num_threads(),
            "scan": fused.scan_name(c.model.cell, device),  # 'fused-cpp' or 'python' (fused.py)
            "wall_seconds": round(wall, 2),
            "train_examples": len(data.train),
        }
        preds = test_pred[m].cpu().numpy() if ok else None
        results.append(MemberResult(c, metrics[m], summary, data.test.labels.numpy(), preds,
                                    probes[m] if ok else None, checkpoints[m] if ok else None))
    model.load_state_dict(final, strict=False)
    return results, model


def label_baselines(data: SSTData) -> tuple[float, float, float]:
    """What a model that learned nothing scores: the cross-entropy in nats of predicting the
    training labels' frequencies (their entropy); the dev accuracy in % of always predicting
    the most frequent dev label; and half a dev example in % (float32 accuracies round, so
    "not above the majority rate" allows that much)."""
    p = torch.bincount(data.train.labels).double() / len(data.train)
    p = p[p > 0]
    majority = torch.bincount(data.dev.labels).max().item() / len(data.dev) * 100
    return float(-(p * p.log()).sum()), majority, 50 / len(data.dev)


def no_learning(metrics: Sequence[dict], prior_loss: float, majority_acc: float,
                tolerance: float = 0.0) -> str | None:
    """Why a run with finite losses learned nothing, or None if it learned.

    No learning: (1) its training loss never went below ``prior_loss``, what predicting the
    label frequencies costs; or (2) with two epochs or more, no later epoch's training loss
    went below the first epoch's; or (3) its dev accuracy was never above ``majority_acc``
    (+ ``tolerance`` points), what always guessing the most frequent label scores.
    """
    if not metrics:
        return None
    losses = [m["train_loss"] for m in metrics]
    best_dev = max(m["dev_acc"] for m in metrics)
    if min(losses) >= prior_loss:
        return (f"train loss never fell below {prior_loss:.3f}, the loss of predicting the label frequencies "
                f"(lowest {min(losses):.4g})")
    if len(losses) > 1 and min(losses[1:]) >= losses[0]:
        return f"train loss never fell below its first epoch's {losses[0]:.4g} (lowest later {min(losses[1:]):.4g})"
    if best_dev <= majority_acc + tolerance:
        return f"dev accuracy never rose above the majority-class rate {majority_acc:.2f}% (best {best_dev:.2f}%)"
    return None


def accuracy(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(M, N) predictions vs (N,) labels -> (M,) accuracy in percent."""
    return (pred == labels).float().mean(-1) * 100


@torch.no_grad()
def _keep_best(model: PackedClassifier, best: dict[str, torch.Tensor], improved: torch.Tensor) -> None:
    """Copy the members whose dev accuracy improved into ``best`` (member-wise where)."""
    for name, p in model.named_parameters():
        mask = improved.view(-1, *[1] * (p.dim() - 1))
        best[name].copy_(torch.where(mask, p, best[name]))
