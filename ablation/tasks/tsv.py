"""The user's own sentences: `task.name = "tsv"`, `task.path = DIR`, where DIR holds train.tsv, dev.tsv
and test.tsv, one example a line: the text, a tab, its label (the last tab on the line separates them;
blank lines are skipped). Labels are any strings, given ids in sorted order (summary.json records them
as label_names); the text is tokenised as SST's sentences are (`tasks/tokenize.py`: Penn Treebank
rules, case kept), so GloVe's vectors apply as for SST (model.embeddings). The vocabulary is every
training token. The run id covers the files through task.checksum (`core/config.tsv_checksum`),
checked again here, before training.

Refused, naming the file and line, before anything trains: a line without a tab, an empty text or
label, an empty split, a dev or test label that train.tsv never has.
"""

from __future__ import annotations

import collections
from pathlib import Path

from ablation.core.config import TaskConfig, tsv_checksum
from ablation.core.errors import DataError
from ablation.core.spec import TSV_FILES
from ablation.tasks.splits import SSTData
from ablation.tasks.sst import Example, Vocab, encode
from ablation.tasks.tokenize import tokenize


def read(path: Path) -> list[tuple[list[str], str, int]]:
    """A TSV file -> (tokens, label, line number) per example."""
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        text, tab, label = line.rpartition("\t")
        where = f"{path}: line {n}"
        if not tab:
            raise DataError(f"{where}: no tab between the text and its label ({line[:60]!r})")
        tokens = tokenize(text)
        if not tokens or not label.strip():
            raise DataError(f"{where}: an empty {'text' if not tokens else 'label'}")
        rows.append((tokens, label.strip(), n))
    if not rows:
        raise DataError(f"{path}: no examples (one a line: text, a tab, a label)")
    return rows


def load(task: TaskConfig) -> SSTData:
    root = Path(task.path)
    now = tsv_checksum(task.path)
    if now != task.checksum:
        raise DataError(f"task.path {root}: {', '.join(TSV_FILES)} changed since this run's config was made "
                        f"(task.checksum {task.checksum[:12]}..., the files now {now[:12]}...)")
    splits = {name: read(root / name) for name in TSV_FILES}
    labels = sorted({label for _, label, _ in splits["train.tsv"]})
    ids = {label: k for k, label in enumerate(labels)}
    for name in TSV_FILES[1:]:
        for _, label, n in splits[name]:
            if label not in ids:
                raise DataError(f"{root / name}: line {n}: label {label!r} is not among train.tsv's "
                                f"({', '.join(map(repr, labels))})")
    examples = {name: [Example(tokens, ids[label]) for tokens, label, _ in rows] for name, rows in splits.items()}
    vocab = Vocab.from_examples(examples["train.tsv"])
    counts = collections.Counter(t for ex in examples["train.tsv"] for t in ex.tokens)
    train, dev, test = (encode(examples[name], vocab) for name in TSV_FILES)
    return SSTData(vocab, train, dev, test, dict(counts), tuple(labels))
