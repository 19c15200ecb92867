"""The vocabulary of an experiment, torch-free: what a cell can be and what data it reads.

The names and their valid values (gate sets, peephole kinds, GRU reset positions, the LSTM
variants of Greff et al. 2017; SST granularities, labelings and vocabulary sources) and
`CellSpec`, what one member of a pack computes. The cell (`models/cell.py`), the config
(`core/config.py`) and the analysis (`analysis/`) all read them from here, so reading
records, tables and figures never loads torch; `models/cell.py` re-exports
the cell's names (`ablation.cell.GATES`, `ablation.cell.CellSpec`, ...).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

GATES = ("input", "forget", "output")  # the LSTM's gate set; rows of weight_ih are i, f, g, o
CELL_GATES = {"lstm": GATES, "gru": ("reset", "update"), "rnn": ()}  # every cell kind's gates
PEEPHOLES = ("none", "diagonal", "full")
PEEPHOLE_NAMES = ("weight_ci", "weight_cf", "weight_co")  # into the input, forget, output gate
RESETS = ("before", "after")  # where a GRU's reset gate applies (see rnn.py)

@dataclass(frozen=True)
class Variant:
    """An LSTM variant of Greff et al. 2017 (sec. 3) and what the code reads from it.

    ``units`` in ``params`` are a parameter's shape in multiples of the hidden size H.
    """

    description: str
    flag: bool = True  # a per-member switch of the scan: `cell.ScanFlags` holds its (M, 1, 1) mask
    weightless_gate: str | None = None  # a gate computed from the others, no weights of its own (`CellSpec.mask`)
    params: tuple[tuple[str, tuple[int, ...]], ...] = ()  # (name, units): parameters it adds, drawn last

    def shapes(self, hidden_size: int) -> dict[str, tuple[int, ...]]:
        """{name: shape} of the parameters it adds, for hidden size H."""
        return {name: tuple(k * hidden_size for k in units) for name, units in self.params}

    def extra_parameters(self, hidden_size: int) -> int:
        """How many parameters it adds to the cell (FGR: 9H²)."""
        return sum(math.prod(shape) for shape in self.shapes(hidden_size).values())

    def __str__(self) -> str:
        return self.description


# The LSTM variants that change the equations (Greff et al. 2017, sec. 3). Adding one is an
# entry here, its case in `cell._Scan` (and the fused kernel), and its test.
VARIANTS = {
    "vanilla": Variant("the cell of cell.py, Graves 2013 eqs. 7-11 (Greff's V)", flag=False),
    "niaf": Variant("no input activation function: g_t = W_xc x_t + W_hc h_{t-1} + b_c, without tanh"),
    "noaf": Variant("no output activation function: h_t = o_t ⊙ c_t"),
    "cifg": Variant("coupled input and forget gate: f_t = 1 - i_t (the forget gate has no weights)",
                    weightless_gate="forget"),
    "fgr": Variant("full gate recurrence: i_t, f_t, o_t also read i, f, o of step t-1 (weight_gr, 3H x 3H)",
                   params=(("weight_gr", (3, 3)),)),  # rows i, f, o from columns i, f, o at t-1
}


def pack_params(variants: Iterable[str]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The variant parameters a pack of members with these variants carries: those of every
    variant a member uses, in registry order (members of other variants hold zeros)."""
    used = set(variants)
    return tuple(p for name, v in VARIANTS.items() if name in used for p in v.params)


# The lecture table's column order (none, o, i, i+o, f, i+f, f+o, i+f+o): the order of its rows
# in every table, figure and reading here.
LECTURE_ORDER = ("none", "output", "input", "input+output", "forget", "input+forget", "forget+output",
                 "input+forget+output")


def split_gates(value: str | Iterable[str], cell: str = "lstm") -> tuple[str, ...]:
    """'input+output', 'i+o', 'io' or 'none' -> ('input', 'output') as written, unchecked. A part
    that is not a gate's name but a run of the kind's gates' initials ('i', 'ifo') is expanded."""
    if not isinstance(value, str):
        return tuple(value)
    if value in ("", "none"):
        return ()
    initials = {g[0]: g for g in CELL_GATES.get(cell, GATES)}
    out: list[str] = []
    for part in value.split("+"):
        if part not in CELL_GATES.get(cell, GATES) and part and all(ch in initials for ch in part):
            out += [initials[ch] for ch in part]
        else:
            out.append(part)
    return tuple(out)


def parse_gates(value: str | Iterable[str], cell: str = "lstm") -> tuple[str, ...]:
    """'input+output', 'i+o', ['output', 'input'] or 'none' -> ('input', 'output') (canonical order)."""
    valid = CELL_GATES[cell]
    names = split_gates(value, cell)
    bad = [g for g in names if g not in valid]
    if bad:
        listed = (f"{', '.join(valid)} (or their initials, {'+'.join(g[0] for g in valid)}; or 'none')" if valid
                  else f"none (the {cell} cell has no gates)")
        raise ValueError(f"unknown {cell} gate {bad[0]!r}; valid gates: {listed}")
    return tuple(g for g in valid if g in names)


def gates_name(gates: Sequence[str]) -> str:
    """The lecture table's column name: 'none', 'output', 'input+forget+output', ..."""
    return "+".join(gates) if gates else "none"


@dataclass(frozen=True)
class CellSpec:
    """What one member of a pack computes: cell kind, gates, and the kind's options."""

    gates: tuple[str, ...] = GATES
    peephole: str = "none"  # LSTM only
    variant: str = "vanilla"  # LSTM only: a key of VARIANTS
    kind: str = "lstm"  # a key of CELL_GATES
    reset: str = "before"  # GRU only: RESETS

    def __post_init__(self):
        if self.kind not in CELL_GATES:
            raise ValueError(f"unknown cell {self.kind!r}; valid: {', '.join(CELL_GATES)}")
        object.__setattr__(self, "gates", parse_gates(self.gates, self.kind))
        if self.peephole not in PEEPHOLES:
            raise ValueError(f"unknown peephole {self.peephole!r}; valid: {', '.join(PEEPHOLES)}")
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; valid: {', '.join(VARIANTS)}")
        if self.reset not in RESETS:
            raise ValueError(f"unknown reset position {self.reset!r}; valid: {', '.join(RESETS)}")
        if self.kind != "lstm" and (self.peephole != "none" or self.variant != "vanilla"):
            raise ValueError(f"peepholes and LSTM variants need cell 'lstm', not {self.kind!r}")

    def mask(self) -> list[float]:
        """1.0 for each gate with weights of its own, in the kind's gate order (a variant's
        `Variant.weightless_gate`, CIFG's f, has none)."""
        weightless = VARIANTS[self.variant].weightless_gate
        return [float(g in self.gates and g != weightless) for g in CELL_GATES[self.kind]]


# The data: which sentences, which labels, which words (see tasks/sst.py).
GRANULARITIES = ("sentences", "phrases")
LABELINGS = ("binary", "fine")
# Class names by label id: binary drops the neutral 2 (`binary_label`); fine keeps SST's five.
LABEL_NAMES = {"binary": ("negative", "positive"),
               "fine": ("very negative", "negative", "neutral", "positive", "very positive")}
# Which training sentences give the vocabulary: every training tree ("train"), or only those
# whose root carries a label under data.labels ("train-labelled": the first releases' rule, which
# left words of neutral sentences <unk> in the phrases they also train on). Dev/test never do.
VOCABS = ("train", "train-labelled")
# Random word vectors, and the rows of words GloVe lacks, start from U(-0.05, 0.05).
OOV_SCALE = 0.05


@dataclass(frozen=True)
class TaskInfo:
    """What a task is, torch-free (the config checks it, the analysis reads its metric); its data and
    batches are `module`'s (`tasks/registry.py` loads it). Adding a task: an entry of `TASKS`, its module
    under ablation/tasks/ and its tests."""

    description: str
    module: str  # the module under ablation/tasks/ that builds its splits (`load(cfg)`)
    inputs: str  # "tokens" (ids through the embedding) or "vectors" (real values straight into W_ih)
    metric: str  # "accuracy" (%, higher is better), "mse", "perplexity" or "nll" (per frame; lower is better)
    # the trivial baseline the no-learning rule and the readings use: the majority class's accuracy,
    # the MSE of predicting the training targets' mean, the unigram model, or each note's frequency
    baseline: str = "majority"
    outputs: int | None = None  # classes, or 1 for a real-valued target; None: SST's, by data.labels; 0: the
    #                             labels its files hold (tsv)
    keys: tuple[str, ...] = ()  # the task.* keys it reads (the others must stay at their defaults)
    words: bool = False  # sentences of words: a vocabulary and word vectors (model.embeddings) apply
    # "final": the last hidden state to the output; "every": each step's, to the next token (softmax);
    # "frames": each step's, to the next frame's notes (one sigmoid each)
    readout: str = "final"

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "accuracy"

    def num_outputs(self, labels: str) -> int | None:
        """The readout's outputs: the task's, SST's classes under ``labels`` (data.labels), or None where
        its data say (tsv's labels, lm's vocabulary)."""
        return None if self.outputs == 0 else self.outputs or len(LABEL_NAMES[labels])


GENERATED = ("length", "train_size", "eval_size", "data_seed")  # a generator's keys
TASKS = {
    "sst": TaskInfo("the Stanford Sentiment Treebank (Socher et al. 2013): the lecture's task", "sst",
                    "tokens", "accuracy", words=True),
    "tsv": TaskInfo("the user's own sentences: train.tsv, dev.tsv, test.tsv in task.path, a text, a tab and a "
                    "label per line", "tsv", "tokens", "accuracy", outputs=0, keys=("path", "checksum"), words=True),
    "adding": TaskInfo("the adding problem (Hochreiter & Schmidhuber 1997, exp. 4): T pairs (value, marker), "
                       "the sum of the two marked values", "adding", "vectors", "mse", "mean", 1, GENERATED),
    "temporal-order": TaskInfo("temporal order (Hochreiter & Schmidhuber 1997, exp. 6a): the order of two "
                               "symbols X/Y among distractors, 4 classes", "temporal_order", "tokens", "accuracy",
                               outputs=4, keys=GENERATED),
    "lm": TaskInfo("word-level language modelling of SST's sentences (lowercased, rare words <unk>), "
                   "perplexity", "lm", "tokens", "perplexity", "unigram", outputs=0, readout="every"),
    "chorales": TaskInfo("Bach chorales as piano rolls (music21's corpus, Greff et al. 2017's JSB task): the next "
                         "frame's 46 notes, NLL per frame", "chorales", "vectors", "nll", "bernoulli", outputs=0,
                         readout="frames"),
    "mnist1d": TaskInfo("MNIST-1D (Greydanus 2020): 40-step 1-d signals of the 10 digits' templates, "
                        "transformed; 4,000 train (the last 500 held out as dev) and 1,000 test", "mnist1d",
                        "vectors", "accuracy", outputs=10, keys=("data_seed",)),
}
TSV_FILES = ("train.tsv", "dev.tsv", "test.tsv")  # a TSV task's folder (task.path)
OPTIMIZERS = ("adagrad", "adam", "rmsprop")  # training/optimizers.py
FORGET_INITS = ("constant", "chrono")  # models/cell.py's init_lstm
