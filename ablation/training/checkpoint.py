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

from ablation.core.config import RunConfig, apply, flatten
from ablation.core.errors import DataError
from ablation.core.records import CHECKPOINT, FILES, check_record
from ablation.models.classifier import PackedClassifier
from ablation.tasks.sst import LABEL_NAMES, Vocab

FORMAT = 1  # bumped when the layout above changes; `load_run` refuses other formats


def member_checkpoint(model: PackedClassifier, m: int, vocab: Vocab | None) -> dict:
    """Member m's current weights and the vocabulary (None: a generated task's, whose symbols its module
    names), in the layout of the module doc."""
    return {"format": FORMAT, "state": {n: t.cpu() for n, t in model.member_state(m).items()},
            "vocab": list(vocab.itos) if vocab is not None else []}


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
    """Rebuild the classifier of one run record from config.json and checkpoint.pt.

    A record kept under another folder name (a copy) loads: only its files must agree
    (`records.check_record` with ``identity=False``). A missing folder or file is a
    FileNotFoundError; a damaged record or checkpoint, or one whose tensors are not the model
    its config.json describes, a `DataError`: one line naming the file and what is wrong.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise FileNotFoundError(f"{run_dir}: no such run directory")
    if not run_dir.is_dir():
        raise NotADirectoryError(f"{run_dir}: not a run directory (a run record is a folder of {', '.join(FILES)})")
    reason = check_record(run_dir, identity=False)
    if reason is not None:
        error = FileNotFoundError if reason.startswith("missing ") else DataError
        raise error(f"{run_dir}: not a complete run record ({reason}; a record holds {', '.join(FILES)})")
    path = run_dir / CHECKPOINT
    if not path.is_file():
        parent = run_dir.resolve().parent
        raise FileNotFoundError(f"{path}: no checkpoint (records written before checkpoints, diverged runs "
                                "and grids whose checkpoints stayed out of git have none); retrain it into a folder "
                                f"of its own, e.g. `ablation grid {parent / 'experiment.toml'} "
                                f"--out runs/{parent.name}` (a grid skips complete records, so not into {parent})")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 - empty (EOFError), truncated (RuntimeError), pickled objects, ...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DataError(f"{path}: damaged (truncated or not a torch file): {first}") from e
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        got = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise DataError(f"{path}: checkpoint format {got!r}; this code reads format {FORMAT}")
    state, tokens = blob.get("state"), blob.get("vocab")
    if not (isinstance(state, dict) and all(isinstance(t, torch.Tensor) for t in state.values())
            and isinstance(tokens, list) and all(isinstance(t, str) for t in tokens)):
        raise DataError(f"{path}: damaged: needs 'state' (name -> tensor) and 'vocab' (a list of tokens)")
    cfg = config_from_dict(json.loads((run_dir / "config.json").read_text()))
    summary = json.loads((run_dir / "summary.json").read_text())
    vocab = Vocab(tokens)
    embedding = state.get("embedding")  # if it is missing, _check_tensors says so
    rows = embedding.shape[0] if embedding is not None and embedding.dim() else len(vocab)
    if list(vocab.itos) != tokens or len(vocab) != rows:
        raise DataError(f"{path}: {len(tokens)} vocabulary tokens for {rows} embedding rows")
    m = cfg.model
    model = PackedClassifier([cfg.model.spec()], [cfg.train.seed], vocab_size=len(vocab),
                             embedding_dim=m.embedding_dim, hidden_size=m.hidden_size,
                             num_classes=len(LABEL_NAMES[cfg.data.labels]))
    _check_tensors(path, state, {n: tuple(t.shape[1:]) for n, t in model.state_dict().items()})
    model.load_state_dict({n: t.unsqueeze(0) for n, t in state.items()})  # strict: every name, every shape
    model.requires_grad_(False)
    return LoadedRun(run_dir, cfg, summary, model.to(device), vocab)


def _check_tensors(path: Path, state: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]]) -> None:
    """A `DataError` unless ``state`` has exactly the tensors, of exactly the shapes, of ``expected``
    (one member of the model the record's config.json describes)."""
    missing, extra = [n for n in expected if n not in state], [n for n in state if n not in expected]
    if missing or extra:
        said = [f"missing {', '.join(missing)}"] * bool(missing) + [f"unexpected {', '.join(extra)}"] * bool(extra)
        raise DataError(f"{path}: its tensors are not those of the record's config: {'; '.join(said)}")
    for name, shape in expected.items():
        if tuple(state[name].shape) != shape:
            raise DataError(f"{path}: {name} has shape {tuple(state[name].shape)}, the record's config gives {shape}")
