"""The whole training step of an LSTM sentence-classifier pack as one call into the C++ extension.

`csrc/train_step.h` does in one call what `trainer.train_step` does through autograd: gather the
batch's embeddings, project, scan, classify the last real token, cross-entropy, the backward pass
through all of it, per-member clipping and AdaGrad (dense parameters, then the batch's embedding rows),
with no autograd graph and no Python between the kernels; `logits` is its forward alone (evaluation).
Same bits as the autograd path, which stays the reference (tests/test_train_step.py compares them).

It serves what the lecture's grid trains: an LSTM pack on CPU (`select.wanted`) with token inputs, a
classifier on the final hidden vector (two or more classes) and AdaGrad with its row-sparse embedding
update. Everything else (GRU, Elman RNN, language models, piano rolls, regression, Adam, RMSprop, CUDA)
takes the autograd path; so does every pack with ``ABLATION_STEP=autograd``.
"""

from __future__ import annotations

import torch

from ablation.kernels import select

# The parameters the C++ step takes, in its order (csrc/train_step.h's `Pack`): the classifier, the cell,
# then the peepholes and FGR's R where the pack has them; `PackedClassifier.named_parameters()`'s order.
LAYOUT = ("cls_weight", "cls_bias", "weight_ih", "weight_hh", "bias_ih", "bias_hh")
OPTIONAL = ("weight_ci", "weight_cf", "weight_co", "weight_gr")


def applies(model) -> bool:
    """Whether the one call serves this pack (`models.classifier.PackedClassifier`), its forward and, if it
    trains by AdaGrad (the trainer asks), its step: see the module doc."""
    if not (select.step_choice() == "auto" and model.kind == "lstm" and not (model.every_step or model.vectors)
            and not model.regression and select.wanted(model.embedding)):
        return False
    if not getattr(model, "_one_call_layout", False):  # checked once a pack: its parameters do not change
        names = tuple(n for n, _ in model.named_parameters() if n != "embedding")
        if names != LAYOUT + tuple(n for n in OPTIONAL if n in names):  # a parameter the C++ step does not know
            raise ValueError(f"the one-call training step takes {', '.join(LAYOUT + OPTIONAL)}, in that order; this "
                             f"pack has {', '.join(names)} (set ABLATION_STEP=autograd, or teach csrc/train_step.h)")
        model._one_call_layout = True
    return True


@torch.no_grad()
def train_step(model, opt, ids: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One AdaGrad step (``opt``: a `training.adagrad.PackAdagrad`) of every member on a shared batch, ids
    (B, T), lengths and labels (B,); returns the (M,) losses, as `trainer.train_step`."""
    table = model.embedding  # updated in place, as torch.optim does under no_grad
    return torch.ops.ablation_fused.train_step(
        table, opt.dense, opt.state, opt.emb_state, ids, lengths, labels, model.on, *model.flags.kernel_args(),
        model.flags.fgr, opt.neg_lr, opt.eps, opt.clip, table.requires_grad)


@torch.no_grad()
def logits(model, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The pack's logits (M, B, C) for ids (B, T), lengths (B,): `PackedClassifier.forward` in one call."""
    dense = [p.detach() for n, p in model.named_parameters() if n != "embedding"]
    return torch.ops.ablation_fused.classify(model.embedding.detach(), dense, ids, lengths, model.on,
                                           *model.flags.kernel_args())
