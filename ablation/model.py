"""The lecture's classifier, for a pack of M models trained side by side.

    embedding -> gated LSTM -> linear layer on the final hidden vector -> softmax

Every parameter is stacked along a leading member dimension M, so one batched matmul per
time step serves the whole pack (horizontal fusion); each member has its own gates and
peephole masks (`cell.CellSpec`). A pack of one is the plain single model: `member_state`
gives a member's weights under `torch.nn.LSTM`'s names, loadable into `cell.GatedLSTM`.

`forward` embeds and classifies; the trainer calls `logits` on inputs it gathered itself
from the rows a batch uses, so the embedding gradient holds those rows only (see
`train.PackAdagrad`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .cell import PEEPHOLE_NAMES, CellSpec, active_lstm_params, gate_masks, init_lstm, last_step, lstm_scan


class PackedClassifier(nn.Module):
    """M sentence classifiers sharing shapes; member m = (specs[m], seeds[m], embeddings[m])."""

    def __init__(self, specs: Sequence[CellSpec], seeds: Sequence[int], *, vocab_size: int,
                 embedding_dim: int, hidden_size: int, num_classes: int = 2,
                 embeddings: Sequence[np.ndarray | None] | None = None,
                 freeze_embeddings: bool = False, forget_bias: float = 0.0):
        super().__init__()
        peepholes = {s.peephole for s in specs}
        if len(peepholes) != 1:
            raise ValueError(f"a pack shares one peephole shape, got {sorted(peepholes)}")
        self.specs, self.peephole = list(specs), peepholes.pop()
        self.M, self.V, self.E, self.H, self.C = len(specs), vocab_size, embedding_dim, hidden_size, num_classes
        embeddings = embeddings or [None] * self.M
        members = [self._init_member(seed, emb, forget_bias) for seed, emb in zip(seeds, embeddings)]
        for name in members[0]:  # embedding (M, V, E), weight_ih (M, 4H, E), ...
            self.register_parameter(name, nn.Parameter(torch.stack([m[name] for m in members])))
        self.embedding.requires_grad_(not freeze_embeddings)
        self.register_buffer("on", gate_masks(self.specs), persistent=False)  # (M, 3)

    def _init_member(self, seed: int, emb: np.ndarray | None, forget_bias: float) -> dict:
        """One member's initial values: same seed -> same values for every shared weight."""
        gen = torch.Generator().manual_seed(seed)
        table = torch.rand(self.V, self.E, generator=gen) * 0.1 - 0.05  # U(-0.05, 0.05)
        if emb is not None:
            table = torch.as_tensor(emb, dtype=torch.float32).clone()
        table[0] = 0.0  # <pad>
        k = 1.0 / math.sqrt(self.H)
        p = {"embedding": table,
             "cls_weight": torch.rand(self.C, self.H, generator=gen) * (2 * k) - k,
             "cls_bias": torch.zeros(self.C)}
        p.update(init_lstm(gen, self.E, self.H, self.peephole, forget_bias))  # peepholes last
        return p

    def peepholes(self) -> list[torch.Tensor | None]:
        return [getattr(self, n, None) for n in PEEPHOLE_NAMES]

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """ids (B, T), lengths (B,) shared by the pack -> logits (M, B, C)."""
        return self.logits(self.embedding[:, ids.t()], lengths)

    def logits(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Embedded inputs x (M, T, B, E) -> logits (M, B, C)."""
        M, T, B, E = x.shape
        bias = (self.bias_ih + self.bias_hh).unsqueeze(1)  # (M, 1, 4H)
        xw = torch.baddbmm(bias, x.reshape(M, T * B, E), self.weight_ih.transpose(1, 2))  # all steps in one matmul
        xw = xw.view(M, T, B, 4 * self.H).transpose(0, 1)  # (T, M, B, 4H)
        hs, _ = lstm_scan(xw, self.weight_hh, self.peepholes(), self.on)
        h = last_step(hs, lengths)  # (M, B, H): the final hidden vector of each sentence
        return torch.baddbmm(self.cls_bias.unsqueeze(1), h, self.cls_weight.transpose(1, 2))

    @torch.no_grad()
    def predict(self, ids: torch.Tensor, lengths: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Predicted classes (M, N) for N padded sequences, in length-sorted batches."""
        order = torch.argsort(lengths, stable=True)
        out = torch.empty(self.M, len(lengths), dtype=torch.long, device=ids.device)
        for k in range(0, len(order), batch_size):
            sel = order[k : k + batch_size]
            n = int(lengths[sel].max())
            out[:, sel] = self(ids[sel, :n], lengths[sel]).argmax(-1)
        return out

    def active_parameters(self, m: int) -> int:
        """Cell and classifier parameters that exist for member m (embeddings counted apart)."""
        return active_lstm_params(self.specs[m], self.E, self.H) + self.C * (self.H + 1)

    def member_state(self, m: int) -> dict[str, torch.Tensor]:
        """Member m's weights; the LSTM part under `torch.nn.LSTM` / `GatedLSTM` names."""
        return {name: p[m].detach().clone() for name, p in self.named_parameters()}
