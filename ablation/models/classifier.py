"""The lecture's classifier for a pack of M models: embedding -> recurrent layer -> linear -> softmax.

The recurrent layer is the gated LSTM (`models/cell.py`), the GRU or the Elman RNN (`models/rnn.py`): an
entry of `KINDS` (its init, scan, active-parameter count and bias handling). Every parameter is stacked
along a leading member dimension M (embedding (M, V, E), weight_ih (M, G·H, E), ...), so one batched
matmul per time step serves the pack; gates, variant flags and forget bias are per member (`CellSpec`),
kind, peepholes and GRU reset position the pack's. `forward`: ids (B, T), lengths (B,) -> logits (M, B, C);
the trainer calls `logits` on inputs it gathered from the batch's rows (see `training/adagrad.py`).
`member_state` gives a member's weights under `torch.nn.LSTM`'s names, loadable into `cell.GatedLSTM`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ablation.core.config import EVAL_BATCH
from ablation.core.spec import OOV_SCALE
from ablation.kernels import matmul, whole_step
from ablation.models.cell import (
    PEEPHOLE_NAMES,
    CellSpec,
    ScanFlags,
    active_lstm_params,
    gate_masks,
    init_lstm,
    last_step,
    lstm_scan,
    pack_params,
    uniform,
)
from ablation.models.rnn import active_gru_params, active_rnn_params, gru_scan, init_gru, init_rnn, rnn_scan


@dataclass(frozen=True)
class Kind:
    """What `PackedClassifier` does with one cell kind (the keys of `spec.CELL_GATES`)."""

    # (pack, gen, spec, (forget_bias, chrono)) -> the member's cell parameters, drawn from gen after the
    # classifier's (chrono: `cell.init_lstm`'s, 0 for the constant forget bias)
    init: Callable[[PackedClassifier, torch.Generator, CellSpec, tuple[float, int]], dict[str, torch.Tensor]]
    # (pack, xw (T, M, B, G·H), probe) -> hs (T, M, B, H), {gate: activations (T, M, B, H)}
    scan: Callable[[PackedClassifier, torch.Tensor, torch.Tensor | None], tuple]
    active_params: Callable[[CellSpec, int, int], int]  # (spec, input size, hidden size) -> cell parameters
    joins_bias_hh: bool = True  # b_hh joins the input projection (the GRU's scan takes it apart: r multiplies it)


def _lstm_init(pack, gen, spec, forget):
    forget_bias, chrono = forget
    return init_lstm(gen, pack.embedding_dim, pack.hidden_size, pack.peephole, forget_bias, spec.variant,
                     pack.variant_params, chrono)


def _lstm_scan(pack, xw, probe):
    w_gr = getattr(pack, "weight_gr", None)  # FGR's R, there when a member is FGR
    hs, _, acts = lstm_scan(xw, pack.weight_hh, pack.peepholes(), pack.on, pack.flags, w_gr, probe)
    return hs, acts


KINDS = {
    "lstm": Kind(_lstm_init, _lstm_scan, active_lstm_params),
    "gru": Kind(lambda pack, gen, spec, forget: init_gru(gen, pack.embedding_dim, pack.hidden_size),
                lambda pack, xw, probe: gru_scan(xw, pack.weight_hh, pack.bias_hh, pack.on, pack.reset, probe),
                active_gru_params, joins_bias_hh=False),
    "rnn": Kind(lambda pack, gen, spec, forget: init_rnn(gen, pack.embedding_dim, pack.hidden_size),
                lambda pack, xw, probe: rnn_scan(xw, pack.weight_hh, probe), active_rnn_params),
}


class PackedClassifier(nn.Module):
    """M sentence classifiers sharing shapes; member m = (specs[m], seeds[m], embeddings[m])."""

    def __init__(self, specs: Sequence[CellSpec], seeds: Sequence[int], *, vocab_size: int,
                 embedding_dim: int, hidden_size: int, num_classes: int = 2,
                 embeddings: Sequence[np.ndarray | None] | None = None,
                 freeze_embeddings: bool = False, forget_bias: float | Sequence[float] = 0.0,
                 chrono: Sequence[int] | None = None, vectors: bool = False, readout: str = "final"):
        super().__init__()
        # readout (core/spec.TaskInfo.readout): "final", the last hidden state to the output, as the lecture's
        # classifier; "every", each step's to the next token, as a language model; "frames", each step's to
        # the next frame's notes, one sigmoid each (piano rolls)
        self.every_step, self.frames = readout != "final", readout == "frames"
        # vectors: the inputs are real vectors (B, T, embedding_dim) straight into W_ih (a generated task's,
        # core/spec.TaskInfo.inputs); the table then holds only a frozen <pad> row (vocab_size 1)
        self.vectors = vectors
        shared = {(s.kind, s.peephole, s.reset) for s in specs}
        if len(shared) != 1:
            raise ValueError(f"a pack shares one cell kind, peephole shape and reset position, got {sorted(shared)}")
        self.specs = list(specs)
        self.kind, self.peephole, self.reset = shared.pop()
        self.cell = KINDS[self.kind]
        self.variant_params = pack_params(s.variant for s in specs)  # e.g. FGR's weight_gr, if a member is FGR
        self.M = len(specs)  # the pack's size: the leading dimension of every parameter
        self.vocab_size, self.embedding_dim, self.hidden_size, self.num_classes = (vocab_size, embedding_dim,
                                                                                   hidden_size, num_classes)
        embeddings = embeddings or [None] * self.M
        biases = [forget_bias] * self.M if isinstance(forget_bias, int | float) else list(forget_bias)
        chrono = list(chrono or [0] * self.M)
        members = [self._init_member(s, seed, emb, (fb, ch))
                   for s, seed, emb, fb, ch in zip(specs, seeds, embeddings, biases, chrono)]
        for name in members[0]:  # embedding (M, V, E), weight_ih (M, 4H, E), ...
            self.register_parameter(name, nn.Parameter(torch.stack([m[name] for m in members])))
        self.embedding.requires_grad_(not (freeze_embeddings or vectors))
        self.register_buffer("on", gate_masks(self.specs), persistent=False)  # (M, gates)
        self._flags = ScanFlags(self.specs)  # variant masks, rebuilt when the pack moves device

    @property
    def flags(self) -> ScanFlags:
        if self._flags.device != self.on.device:
            self._flags = ScanFlags(self.specs, self.on.device)
        return self._flags

    def _init_member(self, spec: CellSpec, seed: int, emb: np.ndarray | None, forget: tuple[float, int]) -> dict:
        """One member's initial values: same seed -> same values for every shared weight."""
        gen = torch.Generator().manual_seed(seed)
        V, E, H, C = self.vocab_size, self.embedding_dim, self.hidden_size, self.num_classes
        table = torch.rand(V, E, generator=gen) * (2 * OOV_SCALE) - OOV_SCALE  # U(-0.05, 0.05), as GloVe's gaps
        if emb is not None:
            table = torch.as_tensor(emb, dtype=torch.float32).clone()
        table[0] = 0.0  # <pad>
        p = {"embedding": table,
             "cls_weight": uniform(gen, H)(C, H),  # nn.Linear's U(-1/√H, 1/√H)
             "cls_bias": torch.zeros(C)}
        p.update(self.cell.init(self, gen, spec, forget))  # LSTM: peepholes and variant parameters last
        return p

    def peepholes(self) -> list[torch.Tensor | None]:
        return [getattr(self, n, None) for n in PEEPHOLE_NAMES]

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, T) -> the members' inputs x (M, T, B, E); a vector task's inputs (B, T, E) pass as they are."""
        if self.vectors:
            return ids.transpose(0, 1).unsqueeze(0).expand(self.M, -1, -1, -1)
        return self.embedding[:, ids.t()]

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """ids (B, T) (or a vector task's inputs (B, T, E)), lengths (B,) shared by the pack -> logits (M, B, C).
        Without gradients, one call into the C++ extension where it serves the pack (`kernels/whole_step.py`)."""
        if not torch.is_grad_enabled() and whole_step.applies(self):
            return whole_step.logits(self, ids, lengths)
        return self.logits(self.embed(ids), lengths)

    def hidden(self, x: torch.Tensor, probe: torch.Tensor | None = None):
        """Embedded inputs x (M, T, B, E) -> hidden states hs (T, M, B, H) and the gate
        activations {gate: (T, M, B, H)}; ``probe`` see `cell._Scan`."""
        M, T, B, E = x.shape
        # W_ih x_t + b_ih for all steps in one matmul; b_hh joins it unless the kind's scan takes it apart
        bias = self.bias_ih + self.bias_hh if self.cell.joins_bias_hh else self.bias_ih
        xw = matmul.bmm(x.reshape(M, T * B, E), self.weight_ih.transpose(1, 2), bias)
        xw = xw.view(M, T, B, -1).transpose(0, 1)  # (T, M, B, G·H)
        return self.cell.scan(self, xw, probe)

    def classify(self, h: torch.Tensor) -> torch.Tensor:
        """Final hidden vectors h (M, B, H) -> logits (M, B, C)."""
        return matmul.bmm(h, self.cls_weight.transpose(1, 2), self.cls_bias)

    def logits(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Embedded inputs x (M, T, B, E) -> logits (M, B, C), or with `every_step` (M, T, B, C)."""
        hs, _ = self.hidden(x)
        if self.every_step:
            T, M, B, H = hs.shape
            return self.classify(hs.transpose(0, 1).reshape(M, T * B, H)).view(M, T, B, -1)
        return self.classify(last_step(hs, lengths))  # the final hidden vector of each sentence

    @torch.no_grad()
    def predict(self, ids: torch.Tensor, lengths: torch.Tensor, batch_size: int = EVAL_BATCH) -> torch.Tensor:
        """Predicted classes (M, N) for N padded sequences, in length-sorted batches (`regression`: the
        output's values, float)."""
        regression = self.regression
        out = torch.empty(self.M, len(lengths), dtype=torch.float if regression else torch.long, device=ids.device)
        for sel, n in _length_batches(lengths, batch_size):
            logits = self(ids[sel, :n], lengths[sel])
            out[:, sel] = logits[..., 0] if regression else logits.argmax(-1)
        return out

    @property
    def regression(self) -> bool:
        """One output: a real-valued target (the adding problem's sum), trained on squared error."""
        return self.num_classes == 1

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """logits (M, B, C), targets (B,) -> each member's loss, (M,) (``reduction`` "sum": summed over
        the batch): cross-entropy over classes, or the squared error of the single output. With
        `every_step`, logits (M, T, B, C) and next tokens (B, T) (0: padding, not counted), or with
        `frames` next frames (B, T, C): the negative log-likelihood per step (`step_nll`), averaged (or
        summed) over the batch's steps."""
        if self.every_step:
            total = self.step_nll(logits, targets).sum((1, 2))  # (M,)
            return total if reduction == "sum" else total / self.step_mask(targets).sum()
        M, B, C = logits.shape
        if self.regression:
            err = (logits[..., 0] - targets).pow(2)  # (M, B)
        else:
            err = F.cross_entropy(logits.reshape(M * B, C), targets.repeat(M), reduction="none").view(M, B)
        return err.sum(1) if reduction == "sum" else err.mean(1)

    def step_mask(self, targets: torch.Tensor) -> torch.Tensor:
        """The steps a batch's targets count, (T, B) bool: a next token other than <pad> (0), or a next frame
        other than the padding frame (every note -1, tasks/chorales.PAD)."""
        return targets[..., 0].t() >= 0 if self.frames else targets.t() != 0

    def step_nll(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """logits (M, T, B, C) -> each step's negative log-likelihood (M, T, B), 0 past a sequence's end: of
        the next token (B, T), cross-entropy over the C tokens; or of the next frame (B, T, C) of notes on
        (1) and off (0), the Bernoulli NLL of each note's sigmoid summed over the C notes."""
        M, T, B, C = logits.shape
        mask = self.step_mask(targets)  # (T, B)
        if self.frames:
            y = targets.transpose(0, 1).clamp(min=0).expand(M, T, B, C)  # (M, T, B, C)
            return F.binary_cross_entropy_with_logits(logits, y, reduction="none").sum(-1) * mask
        tgt = targets.t().reshape(-1)  # (T·B,)
        nll = F.cross_entropy(logits.reshape(M * T * B, C), tgt.repeat(M), reduction="none").view(M, T, B)
        return nll * mask

    @torch.no_grad()
    def sequence_nll(self, ids: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor,
                     batch_size: int = EVAL_BATCH) -> torch.Tensor:
        """Each sequence's summed next-step negative log-likelihood in nats (`step_nll`), (M, N), in length-sorted
        batches."""
        out = torch.empty(self.M, len(lengths), device=ids.device)
        for sel, n in _length_batches(lengths, batch_size):
            out[:, sel] = self.step_nll(self(ids[sel, :n], lengths[sel]), targets[sel, :n]).sum(1)
        return out

    def active_parameters(self, m: int) -> int:
        """Cell and classifier parameters that exist for member m (embeddings counted apart)."""
        H = self.hidden_size
        return self.cell.active_params(self.specs[m], self.embedding_dim, H) + self.num_classes * (H + 1)

    def member_state(self, m: int) -> dict[str, torch.Tensor]:
        """Member m's weights; the LSTM part under `torch.nn.LSTM` / `GatedLSTM` names."""
        return {name: p[m].detach().clone() for name, p in self.named_parameters()}


def _length_batches(lengths: torch.Tensor, batch_size: int):
    """(indices, longest length) of each evaluation batch: the N sequences sorted by length (stable),
    cut into batches of ``batch_size``, so a batch pads little."""
    order = torch.argsort(lengths, stable=True)
    for k in range(0, len(order), batch_size):
        sel = order[k : k + batch_size]
        yield sel, int(lengths[sel].max())
