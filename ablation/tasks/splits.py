"""What a pack trains on: the encoded SST splits and each member's initial word vectors.

Built once per data config and cached (`load_data`, `data_for`), so the packs of a worker
share them; `initial_embeddings` gives a member's embedding table (GloVe rows, or None for
random from the seed) and its coverage of the vocabulary, for summary.json.
"""

from __future__ import annotations

import collections
import functools
from dataclasses import dataclass

import numpy as np

from ablation.core.config import RunConfig
from ablation.tasks.sst import Encoded, Vocab, encode, load_sst
from ablation.tasks.vectors import embedding_matrix, load_vectors


@dataclass(frozen=True)
class SSTData:
    vocab: Vocab
    train: Encoded
    dev: Encoded
    test: Encoded
    counts: dict[str, int]  # training-token counts, for embedding coverage
    label_names: tuple[str, ...] = ()  # a TSV task's labels by id (tasks/tsv.py); SST's: spec.LABEL_NAMES


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
