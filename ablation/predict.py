"""Using a trained run: raw text tokenised as SST was, predictions with gate activations,
accuracy recomputed from the checkpoint.

Raw text is tokenised as SST's leaves are (`tasks/tokenize.py`), because the vocabulary is built
from those tokens as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ablation.models.cell import last_step
from ablation.tasks.sst import SPLITS, UNK, encode, load_sst
from ablation.tasks.tokenize import tokenize
from ablation.training.checkpoint import LoadedRun


@dataclass(frozen=True)
class Prediction:
    text: str
    tokens: list[str]
    unknown: list[str]  # tokens outside the run's vocabulary (read as <unk>)
    label: int
    name: str  # the label's name (data.LABEL_NAMES)
    probs: list[float]  # softmax over the classes
    gates: dict[str, list[float]]  # gate -> its activation at each token, mean over the hidden units


@torch.no_grad()
def predict(run: LoadedRun, texts: Sequence[str]) -> list[Prediction]:
    """Classify each text with the run's best-on-dev weights, one sentence at a time."""
    model, device = run.model, run.model.embedding.device
    spec = model.specs[0]
    out = []
    for text in texts:
        tokens = tokenize(text)
        if not tokens:
            raise ValueError(f"nothing to classify in {text!r}: no tokens")
        ids = torch.tensor([run.vocab.encode(tokens)], device=device)  # (1, T)
        hs, acts = model.hidden(model.embedding[:, ids.t()])  # as `model.logits`, keeping the gates
        probs = torch.softmax(model.classify(last_step(hs, None))[0, 0], -1)  # (C,); one sentence: no padding
        label = int(probs.argmax())
        gates = {g: acts[g][:, 0, 0].mean(-1).tolist() for g in spec.gates}  # (T, M, B, H) -> (T,)
        out.append(Prediction(text, tokens, [t for t, i in zip(tokens, ids[0].tolist()) if i == 1], label,
                              run.label_names[label], probs.tolist(), gates))
    return out


ECHO = 120  # characters of a sentence echoed back; a longer one is cut, with its length said
PLOT_TOKENS = 60  # tokens per sentence in a heat map; a longer sentence is cut (the figure says so)


def _echo(text: str) -> str:
    return text if len(text) <= ECHO else f"{text[:ECHO]}… ({len(text):,} characters)"


def format_prediction(p: Prediction, gates: bool = False) -> str:
    """One line per sentence (label, probability, unknown words); with ``gates`` a token table."""
    if p.unknown and len(p.unknown) == len(p.tokens):
        unk = f"; WARNING: every token is unknown ({UNK}): the prediction says nothing about this text"
    elif p.unknown:
        shown = " ".join(p.unknown[:20]) + (" …" if len(p.unknown) > 20 else "")
        unk = f"; {len(p.unknown)} of {len(p.tokens)} tokens unknown ({UNK}): {shown}"
    else:
        unk = ""
    lines = [f"{p.name}\t{p.probs[p.label]:.3f}\t{_echo(p.text)}{unk}"]
    if gates:
        names = list(p.gates)
        if not names:
            return lines[0] + "\n  (this cell has no gates)"
        width = max(len("token"), *(len(t) for t in p.tokens))
        lines.append("  " + "token".ljust(width) + "".join(f"{g:>8}" for g in names))
        for k, t in enumerate(p.tokens):
            lines.append("  " + t.ljust(width) + "".join(f"{p.gates[g][k]:8.3f}" for g in names))
    return "\n".join(lines)


def gate_figure(preds: Sequence[Prediction], cell: str = "lstm"):
    """Heat maps of the gate activations (rows: gates, columns: tokens), one panel per sentence; a
    sentence longer than PLOT_TOKENS shows its first PLOT_TOKENS tokens, and its title says so."""
    import matplotlib.pyplot as plt

    if not preds or not preds[0].gates:
        raise ValueError(f"no gates to plot: the run's {cell} cell has none")
    width = max(4.0, 0.45 * min(PLOT_TOKENS, max(len(p.tokens) for p in preds)) + 2)  # ~0.45 in per token
    height = len(preds) * (0.35 * len(preds[0].gates) + 1.4)  # gate rows plus title and rotated tokens
    fig, axes = plt.subplots(len(preds), 1, figsize=(width, height), squeeze=False, layout="constrained")
    for ax, p in zip(axes[:, 0], preds):
        tokens = p.tokens[:PLOT_TOKENS]
        grid = np.array([p.gates[g][:PLOT_TOKENS] for g in p.gates])  # (gates, T)
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(tokens)), tokens, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(p.gates)), list(p.gates), fontsize=8)
        cut = f"; its first {PLOT_TOKENS} of {len(p.tokens)} tokens" if len(p.tokens) > PLOT_TOKENS else ""
        ax.set_title(f"{p.name} ({p.probs[p.label]:.2f}){cut}", fontsize=9)
    fig.colorbar(im, ax=axes[:, 0].tolist(), label="mean activation")
    return fig, axes


@dataclass(frozen=True)
class Evaluation:
    split: str
    accuracy: float  # percent, as the trainer computes it (`train.accuracy`)
    sentences: int
    recorded: float | None  # the record's number for this split (summary.json), if any
    predictions: np.ndarray


def evaluate(run: LoadedRun, split: str = "test", data_dir: str | None = None) -> Evaluation:
    """Accuracy on the dev or test sentences, encoded with the checkpoint's own vocabulary.

    Dev and test are whole sentences whatever the training granularity (`inputs.load_data`),
    labelled as the run was (`data.labels`); ``data_dir`` defaults to the run's.
    """
    from ablation.training.trainer import accuracy

    if split not in SPLITS[1:]:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS[1:])}")
    cfg = run.config
    examples = load_sst(split, labels=cfg.data.labels, data_dir=data_dir or cfg.data.data_dir)
    data = encode(examples, run.vocab).to(run.model.embedding.device)
    pred = run.model.predict(data.ids, data.lengths, cfg.train.eval_batch_size)
    acc = float(accuracy(pred, data.labels)[0])
    recorded = run.summary.get(f"{split}_acc")
    return Evaluation(split, acc, len(data), recorded, pred[0].cpu().numpy())
