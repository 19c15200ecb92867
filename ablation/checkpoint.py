"""Checkpoints: a run's best-on-dev weights, kept in its record and loaded back as a model.

    <run>/checkpoint.pt   torch.save of {"format": 1,
                                         "state": {name: tensor},   one member's weights
                                         "vocab": [token, ...]}     the embedding rows' tokens

``state`` is the member's slice of the pack's stacked parameters (`PackedClassifier.member_state`:
embedding (V, E), weight_ih (G·H, E), weight_hh (G·H, H), biases, peepholes, cls_weight (C, H),
cls_bias (C,)), as plain CPU tensors. ``vocab`` is the token list the embedding rows are
indexed by (`data.Vocab.itos`, a few hundred KB): with it a checkpoint predicts on raw text
without the SST files, and it stays right if the way the vocabulary is built changes later.
Only tensors, strings and numbers: `torch.load(weights_only=True)` reads it, and nothing
pickled is ever run. The architecture is the record's config.json beside it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import RunConfig, apply, flatten
from .data import LABEL_NAMES, Vocab
from .model import PackedClassifier
from .records import CHECKPOINT, FILES, is_complete

FORMAT = 1  # bumped when the layout above changes; `load_run` refuses other formats


def member_checkpoint(model: PackedClassifier, m: int, vocab: Vocab) -> dict:
    """Member m's current weights and the vocabulary, in the layout of the module doc."""
    return {"format": FORMAT, "state": {n: t.cpu() for n, t in model.member_state(m).items()},
            "vocab": list(vocab.itos)}


def config_from_dict(config: dict) -> RunConfig:
    """A record's config.json back into a RunConfig (keys added since take their defaults)."""
    return apply(RunConfig(), flatten(config))


@dataclass(frozen=True)
class LoadedRun:
    """A run record with its model rebuilt: a pack of one, on ``device``."""

    path: Path
    config: RunConfig
    summary: dict
    model: PackedClassifier
    vocab: Vocab

    @property
    def label_names(self) -> tuple[str, ...]:
        return LABEL_NAMES[self.config.data.labels]


def load_run(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild the classifier of one run record from config.json and checkpoint.pt."""

    run_dir = Path(run_dir)
    if not is_complete(run_dir):
        raise FileNotFoundError(f"{run_dir}: not a complete run record (needs {', '.join(FILES)})")
    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint (records written before checkpoints, diverged runs "
                                "and grids whose checkpoints stayed out of git have none); retrain the run "
                                "with `ablation train` or `ablation grid`")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        got = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise ValueError(f"{path}: checkpoint format {got!r}; this code reads format {FORMAT}")
    cfg = config_from_dict(json.loads((run_dir / "config.json").read_text()))
    summary = json.loads((run_dir / "summary.json").read_text())
    vocab = Vocab(blob["vocab"])
    state = blob["state"]
    if list(vocab.itos) != list(blob["vocab"]) or len(vocab) != state["embedding"].shape[0]:
        raise ValueError(f"{path}: {len(blob['vocab'])} vocabulary tokens for {state['embedding'].shape[0]} "
                         "embedding rows")
    m = cfg.model
    model = PackedClassifier([cfg.model.spec()], [cfg.train.seed], vocab_size=len(vocab),
                             embedding_dim=m.embedding_dim, hidden_size=m.hidden_size,
                             num_classes=len(LABEL_NAMES[cfg.data.labels]))
    model.load_state_dict({n: t.unsqueeze(0) for n, t in state.items()})  # strict: every name, every shape
    model.requires_grad_(False)
    return LoadedRun(run_dir, cfg, summary, model.to(device), vocab)
