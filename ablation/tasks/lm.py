"""Word-level language modelling on SST's sentences (the lecture's first task: its RNN-LM slides and
perplexity). Each sentence of the official train/dev/test trees is one sequence, lowercased, between
begin and end markers: the input is `<s> w1 .. wn`, the target at each step the next token,
`w1 .. wn </s>`. The vocabulary is every lowercased training token seen at least `MIN_COUNT` times;
the rest read as `<unk>` (8.4% of training tokens). The metric is perplexity, exp of the mean
per-token cross-entropy over a split's targets (the lecture's definition); the trivial baseline is
the unigram model of the training targets.
"""

from __future__ import annotations

import collections

import torch

from ablation.core.config import TaskConfig
from ablation.tasks.registry import Splits
from ablation.tasks.sst import PAD, UNK, Encoded, load_sst

MIN_COUNT = 3  # a word seen fewer times in the training sentences is <unk>: 5,559 words stay
BOS, EOS = "<s>", "</s>"


def _encode(sentences: list[list[str]], stoi: dict[str, int]) -> Encoded:
    """ids (N, T) of `<s> w1 .. wn`, targets (N, T) of `w1 .. wn </s>`, 0 (<pad>) past each length n + 1."""
    lengths = torch.tensor([len(s) + 1 for s in sentences])
    ids = torch.zeros(len(sentences), int(lengths.max()), dtype=torch.long)
    targets = torch.zeros_like(ids)
    for k, s in enumerate(sentences):
        words = [stoi.get(w, stoi[UNK]) for w in s]
        ids[k, : len(s) + 1] = torch.tensor([stoi[BOS], *words])
        targets[k, : len(s) + 1] = torch.tensor([*words, stoi[EOS]])
    return Encoded(ids, lengths, targets)


def load(task: TaskConfig) -> Splits:
    text = {split: [[t.lower() for t in ex.tokens] for ex in load_sst(split, labels="fine")]
            for split in ("train", "dev", "test")}
    counts = collections.Counter(w for s in text["train"] for w in s)
    words = sorted(w for w, n in counts.items() if n >= MIN_COUNT)  # sorted: ids do not depend on dict order
    itos = [PAD, UNK, BOS, EOS, *words]
    stoi = {w: k for k, w in enumerate(itos)}
    train, dev, test = (_encode(text[s], stoi) for s in ("train", "dev", "test"))
    return Splits(train, dev, test, vocab_size=len(itos), input_size=0, num_outputs=len(itos))
