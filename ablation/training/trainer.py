"""Training: the lecture's protocol for a pack of models that share data order.

AdaGrad, mini-batches of 10, a fixed number of epochs, dev accuracy after each, the best-on-dev parameters
evaluated once on test. A generated task (`tasks/registry.py`) runs the same loop on its own splits, with
its loss (cross-entropy, or squared error for a real-valued target), dev metric (accuracy or MSE, best
by its direction) and the optimizer the run names (`training/optimizers.py`). A single run is a pack of
one; the grid packs up to 8 runs of one seed that differ only in per-member settings (`core/config.py`'s
`pack_key`), so every member sees the same batches from the same shared weights (paired comparisons), yet
takes exactly the steps it would take alone: its loss, gradient norm (for clipping) and optimizer state
are its own. Here: `train_step`, `train_epoch`, `evaluate`,
`train_pack` and `member_summary`. Elsewhere: what a pack trains on (`tasks/splits.py`), the optimizer
(`training/optimizers.py`), best-on-dev selection and status (`training/best_on_dev.py`), the record's keys
(`core/records.py`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from tqdm import tqdm

from ablation.core.config import PER_MEMBER_KEYS, RunConfig, pack_key
from ablation.core.errors import ConfigError, DeviceError
from ablation.core.records import EpochMetrics, MemberSummary
from ablation.core.spec import TASKS
from ablation.kernels import cpp, cuda_graphs, select, whole_step
from ablation.models.cell import gates_name
from ablation.models.classifier import PackedClassifier
from ablation.tasks import registry
from ablation.tasks.splits import SSTData, initial_embeddings
from ablation.tasks.splits import data_for as sst_data
from ablation.tasks.sst import LABEL_NAMES, Encoded, batch_order
from ablation.training.adagrad import PackAdagrad
from ablation.training.best_on_dev import BestOnDev, label_baselines
from ablation.training.checkpoint import member_checkpoint
from ablation.training.optimizers import make_optimizer, row_sparse
from ablation.training.probes import probe_gradients, probe_pack
from ablation.training.progress import EpochEnd, OnEpoch


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"unknown device {device!r}; valid: auto, cpu, cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda: torch sees no CUDA device here; use --device cpu (or auto)")
    return torch.device(device)


@dataclass
class MemberResult:
    config: RunConfig
    metrics: list[EpochMetrics]
    summary: MemberSummary
    test_labels: np.ndarray
    test_predictions: np.ndarray | None
    probes: dict | None = None  # probes.probe_pack: best-on-dev, gradients also at init and after epoch 1
    checkpoint: dict | None = None  # best-on-dev weights and vocabulary (checkpoint.member_checkpoint)


def data_for(cfg: RunConfig) -> SSTData | registry.Splits:
    """What ``cfg``'s pack trains on: SST's encoded splits, a TSV task's (`SSTData` too), or a generated task's."""
    return sst_data(cfg) if registry.is_sst(cfg) else registry.load(cfg.task)


def build_pack(cfgs: Sequence[RunConfig], data: SSTData | registry.Splits) -> tuple[PackedClassifier, list[dict]]:
    keys = {pack_key(c) for c in cfgs}
    if len(keys) != 1:
        raise ConfigError(f"a pack's runs may differ only in {', '.join(PER_MEMBER_KEYS)}")
    m = cfgs[0].model
    # chrono initialisation spans the task's lags (Tallec & Ollivier 2018): up to its length
    chrono = [c.task.length if c.model.forget_init == "chrono" else 0 for c in cfgs]
    if not isinstance(data, SSTData):  # a generated task: its own inputs, no word vectors
        vectors = TASKS[cfgs[0].task.name].inputs == "vectors"
        model = PackedClassifier(
            [c.model.spec() for c in cfgs], [c.train.seed for c in cfgs], vocab_size=data.vocab_size,
            embedding_dim=data.input_size if vectors else m.embedding_dim, hidden_size=m.hidden_size,
            num_classes=data.num_outputs, forget_bias=[c.model.forget_bias for c in cfgs], chrono=chrono,
            vectors=vectors, readout=TASKS[cfgs[0].task.name].readout)
        return model, [{"source": "inputs" if vectors else "random"}] * len(cfgs)
    tables, coverage = zip(*(initial_embeddings(c, data) for c in cfgs))
    model = PackedClassifier(
        [c.model.spec() for c in cfgs], [c.train.seed for c in cfgs],
        vocab_size=len(data.vocab), embedding_dim=m.embedding_dim, hidden_size=m.hidden_size,
        num_classes=len(data.label_names or LABEL_NAMES[cfgs[0].data.labels]), embeddings=list(tables),
        freeze_embeddings=m.freeze_embeddings, forget_bias=[c.model.forget_bias for c in cfgs])
    return model, list(coverage)


def train_step(model: PackedClassifier, opt, ids, lengths, labels, *,
               whole_table: bool = False) -> torch.Tensor:
    """One optimizer step (``opt``: `optimizers.make_optimizer`'s) for every member on a shared batch;
    returns the (M,) losses.

    The embedding gradient covers the U distinct tokens of the batch, or with ``whole_table``
    the whole (M, V, E) table, zero outside them: the same numbers (a zero gradient leaves a
    row and its AdaGrad state as they were, and each row sums its contributions in the same
    order), at shapes that do not depend on which words the batch holds, as a CUDA graph
    needs (`kernels/cuda_graphs.py`). An LSTM classifier pack trained by AdaGrad on CPU takes the same
    step as one call into the C++ extension, with the same bits (`kernels/whole_step.py`)."""
    if not whole_table and isinstance(opt, PackAdagrad) and whole_step.applies(model):
        return whole_step.train_step(model, opt, ids, lengths, labels)
    table = model.embedding
    if model.vectors:  # a vector task's inputs (B, T, E) go straight in; the table is a frozen <pad>
        emb, rows, x = table, None, model.embed(ids)
    else:
        if whole_table:
            emb, inv, rows = table, ids, None
        else:
            rows, inv = torch.unique(ids, return_inverse=True)  # the U distinct tokens of the batch
            emb = table.detach().index_select(1, rows).requires_grad_(table.requires_grad)  # (M, U, E)
        x = emb.index_select(1, inv.t().flatten()).view(model.M, *inv.t().shape, model.embedding_dim)  # (M, T, B, E)
    losses = model.loss(model.logits(x, lengths), labels)
    opt.zero_grad()
    losses.sum().backward()  # members are independent: the sum gives each its own gradient
    opt.step(rows, emb.grad) if emb.requires_grad else opt.step()
    return losses.detach()


def train_epoch(step: cuda_graphs.Step, train: Encoded, order: Sequence, *, members: int, device: torch.device,
                max_steps: int | None = None, desc: str = "", show_bar: bool = False) -> tuple[torch.Tensor, int]:
    """One ``step`` (`train_step` bound to a pack, or its `cuda_graphs.GraphedSteps`) per batch of ``order``
    (index arrays into ``train``, on the CPU), at most ``max_steps``; returns each of the ``members``'
    training loss averaged over the examples seen, (M,) on the CPU, and the steps taken. ``show_bar``
    draws a tqdm bar over the batches."""
    loss_sum = torch.zeros(members, device=device)
    seen = steps = 0
    for idx in tqdm(order, desc=desc, unit="batch", disable=not show_bar, leave=False, dynamic_ncols=True):
        # cut on the CPU (the batch's length is read there), then queued for the device without waiting for it
        losses = step(*(x.to(device, non_blocking=True) for x in train.batch(idx)))
        loss_sum += losses * len(idx)
        seen += len(idx)
        steps += 1
        if max_steps is not None and steps >= max_steps:
            break
    return (loss_sum / seen).cpu(), steps


def evaluate(model: PackedClassifier, split: Encoded, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every member's predictions on ``split``, (M, N) where the model is, and its accuracy in %, (M,) on
    the CPU (a regression task's: its outputs and MSE; a language model's: each sequence's summed
    negative log-likelihood and the perplexity, exp of the mean per token; a piano roll's: the NLL per frame)."""
    if model.every_step:
        nll = model.sequence_nll(split.ids, split.lengths, split.labels, batch_size)  # (M, N)
        per_step = nll.double().sum(1).div(model.step_mask(split.labels).sum())
        return nll, (per_step if model.frames else per_step.exp()).float().cpu()
    pred = model.predict(split.ids, split.lengths, batch_size)
    score = (pred - split.labels).pow(2).mean(-1) if model.regression else accuracy(pred, split.labels)
    return pred, score.cpu()


def train_pack(cfgs: Sequence[RunConfig], *, device: str | torch.device = "cpu",
               on_epoch: OnEpoch | None = None, show_bar: bool = False,
               max_steps: int | None = None) -> tuple[list[MemberResult], PackedClassifier]:
    """Train the pack; returns one result per member (in ``cfgs`` order) and the final model.

    ``max_steps`` stops early after that many optimizer steps (tests); ``on_epoch`` is called
    with an `progress.EpochEnd` as each epoch ends (grid progress); ``show_bar`` draws a tqdm
    bar over each epoch's batches.
    """
    start = time.time()
    device = torch.device(device) if not isinstance(device, torch.device) else device
    if device.type == "cpu":
        cpp.keep_heap()
    cfg = cfgs[0]
    t = cfg.train
    data = data_for(cfg)
    model, coverage = build_pack(cfgs, data)
    model.to(device)
    opt = make_optimizer(t.optimizer, model, [c.train.lr for c in cfgs], t.clip_norm)
    dev, test = (e.to(device) for e in (data.dev, data.test))
    graphed = cuda_graphs.wanted(device, t.clip_norm)
    step = (cuda_graphs.GraphedSteps(partial(train_step, model, opt, whole_table=True), device) if graphed
            else partial(train_step, model, opt, whole_table=not row_sparse(t.optimizer)))
    other = not registry.is_sst(cfg)  # a task beyond SST: its records carry the task keys (records.MemberSummary)
    task = TASKS[cfg.task.name]
    accuracy_task = task.metric == "accuracy"
    best = BestOnDev(model, (("dev_acc",) if accuracy_task else ()) + (("dev_metric",) if other else ()),
                     higher=task.higher_is_better, baseline=task.baseline)
    # the gradient probe follows one loss at each sequence's end: a language model's is at every step
    probing = not model.every_step
    early_probes = {"init": probe_gradients(model, test)} if probing else {}  # probes.CHECKPOINTS
    steps = 0
    for epoch in range(1, t.epochs + 1):
        t0 = time.time()
        order = batch_order(data.train.lengths, t.batch_size, seed=t.seed, epoch=epoch, bucket=cfg.data.bucket)
        train_loss, taken = train_epoch(step, data.train, order, members=model.M, device=device, show_bar=show_bar,
                                        desc=f"epoch {epoch}/{t.epochs}",
                                        max_steps=None if max_steps is None else max_steps - steps)
        steps += taken
        _, dev_acc = evaluate(model, dev, t.eval_batch_size)
        best.update(model, epoch, train_loss, dev_acc, time.time() - t0)
        if epoch == 1 and probing:
            early_probes["epoch1"] = probe_gradients(model, test)
        if on_epoch is not None:
            on_epoch(EpochEnd(epoch, model.M, len(order), t.epochs, float(train_loss.mean()),
                              float(dev_acc.max() if task.higher_is_better else dev_acc.min()), time.time() - t0,
                              task.metric))
        if (max_steps is not None and steps >= max_steps) or best.all_diverged():
            break
    final = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.load_state_dict(best.best, strict=False)
    test_pred, test_acc = evaluate(model, test, t.eval_batch_size)
    probes = probe_pack(model, test, earlier=early_probes) if probing else [None] * model.M  # fixed batches
    checkpoints = [member_checkpoint(model, m, getattr(data, "vocab", None)) for m in range(model.M)]
    wall = time.time() - start
    if other:  # (train loss, dev, test) of the trivial predictor
        trivial = registry.baselines(data.train.labels, data.dev.labels, data.test.labels, model.num_classes)
        _, dev_base, test_base = trivial
    # SST's no-learning rule (also a TSV task's); a generated task's takes no tolerance
    baselines = label_baselines(data) if isinstance(data, SSTData) else trivial[:2] + (0.0,)
    # predictions.csv's label column: a language model's tokens per sentence (its predictions: their NLL)
    test_labels = data.test.lengths.double().numpy() if model.every_step else data.test.labels.numpy()
    results = []
    for m, c in enumerate(cfgs):
        ok = best.ok(m)
        summary = member_summary(c, m, model, best, baselines, test_acc, coverage[m], steps=steps, device=device,
                                 wall=wall, train_examples=len(data.train), graphed=graphed)
        if other:
            metric = TASKS[c.task.name].metric
            summary.update(task=c.task.name, metric=metric, dev_metric=summary["dev_acc"],
                           test_metric=summary["test_acc"], baseline_dev=dev_base, baseline_test=test_base)
            if metric != "accuracy":
                summary.update(dev_acc=None, test_acc=None)
            if getattr(data, "label_names", ()):
                summary["label_names"] = list(data.label_names)
        preds = test_pred[m].cpu().numpy() if ok else None
        results.append(MemberResult(c, best.metrics[m], summary, test_labels, preds,
                                    probes[m] if ok else None, checkpoints[m] if ok else None))
    model.load_state_dict(final, strict=False)
    return results, model


def member_summary(c: RunConfig, m: int, model: PackedClassifier, best: BestOnDev,
                   baselines: tuple[float, float, float], test_acc: torch.Tensor, coverage: dict, *,
                   steps: int, device: torch.device, wall: float, train_examples: int,
                   graphed: bool) -> MemberSummary:
    """What summary.json says of member ``m`` (config ``c``) once its pack has trained (`records.MemberSummary`).

    ``test_acc``: (M,) of the best-on-dev weights; ``baselines``: `selection.label_baselines`.
    """
    ok = best.ok(m)
    status, reason = best.outcome(m, baselines)
    return MemberSummary(
        status=status,
        failure_reason=reason,
        diverged_epoch=best.diverged[m],
        cell=c.model.cell,
        gates=gates_name(c.model.gates),
        peephole=c.model.peephole,
        variant=c.model.variant,
        seed=c.train.seed,
        best_epoch=best.epoch[m] or None,
        dev_acc=float(best.dev_acc[m]) if ok else None,
        test_acc=float(test_acc[m]) if ok else None,
        active_params=model.active_parameters(m),
        embedding_params=model.vocab_size * model.embedding_dim,
        num_classes=model.num_classes,
        embedding_coverage=coverage,
        pack_size=model.M,
        steps=steps,
        device=str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        threads=torch.get_num_threads(),
        # cpp.py: 'fused-cpp', 'triton' or 'python' (a pack with an FGR member runs the Python scan on CUDA)
        scan=select.scan_name(c.model.cell, device, fgr=hasattr(model, "weight_gr")),
        cuda_graphs=graphed,
        wall_seconds=round(wall, 2),
        train_examples=train_examples,
    )


def accuracy(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(M, N) predictions vs (N,) labels -> (M,) accuracy in percent."""
    return (pred == labels).float().mean(-1) * 100
