"""Run configuration: frozen dataclasses, TOML experiment files, dotted overrides, grids.

A run's config is three sections composed into `RunConfig`. The defaults are the lecture's
protocol (AdaGrad, batch 10, 10 epochs, best-on-dev), so an experiment file lists only what
it changes. An experiment file may also hold:

    [grid]                      # axes, crossed: every combination is one run
    "model.gates" = ["none", "output", ...]
    "train.seed" = [1, 2, 3, 4, 5]

    [reference]                 # numbers to compare against, by gate combination
    source = "..."
    values = { none = 80.6, ... }

    [variants]                  # named points, each crossed with the grid axes; the
    vanilla = {}                # first is the baseline the table compares the others with
    NIG = { "model.gates" = "forget+output" }

    [slurm]                     # job resources for `ablation grid --executor slurm`
    partition = "gpu"           # (where runs train is not part of what they are)

    [tune]                      # a hyperparameter search for `ablation tune` (tune.TuneSpec)
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cell import CELL_GATES, GATES, PEEPHOLES, RESETS, VARIANTS, gates_name, parse_gates, split_gates
from .data import GRANULARITIES, LABELINGS


@dataclass(frozen=True)
class DataConfig:
    granularity: str = "phrases"  # the lecture trains on every labelled phrase
    labels: str = "binary"  # SST-2: neutral dropped
    data_dir: str | None = None  # None: SST_DIR, data/sst, ../shared/data/sst (data.find_sst_dir)
    bucket: bool = True  # length-bucketed batches: less padding, order still seeded
    train_limit: int = 0  # >0 keeps the first N training examples (smoke tests only)

    def __post_init__(self):
        _choice("data.granularity", self.granularity, GRANULARITIES)
        _choice("data.labels", self.labels, LABELINGS)


@dataclass(frozen=True)
class ModelConfig:
    gates: tuple[str, ...] = GATES  # the full cell (of any kind: see __post_init__); the grid ablates this
    peephole: str = "diagonal"  # the lecture's gate equations have peepholes (LSTM only)
    embedding_dim: int = 25  # the lecture's 25-d word vectors
    hidden_size: int = 50  # the lecture's 50-d cell and hidden state
    embeddings: str = "glove-6b-50d"  # "random", "glove-6b-50d" (PCA to embedding_dim) or a GloVe file
    freeze_embeddings: bool = False  # the lecture fine-tunes its vectors
    forget_bias: float = 0.0  # forget-gate bias at init (Jozefowicz et al. 2015 suggest 1)
    cell: str = "lstm"  # "lstm", "gru" or "rnn" (Elman, tanh)
    variant: str = "vanilla"  # an LSTM variant of Greff et al. 2017: cell.VARIANTS
    gru_reset: str = "before"  # where the GRU's reset gate applies: the lecture's "before", or "after"

    def __post_init__(self):
        _choice("model.cell", self.cell, tuple(CELL_GATES))
        gates = self.gates
        if self.cell != "lstm":
            # the default names the LSTM's gates; for another kind it means all of that kind's
            gates = CELL_GATES[self.cell] if tuple(gates) == GATES else gates
            object.__setattr__(self, "peephole", "none")  # the LSTM's default has no meaning here
        object.__setattr__(self, "gates", parse_gates(gates, self.cell))
        _choice("model.peephole", self.peephole, PEEPHOLES)
        _choice("model.variant", self.variant, tuple(VARIANTS))
        _choice("model.gru_reset", self.gru_reset, RESETS)
        if self.variant != "vanilla" and self.cell != "lstm":
            raise ValueError(f"model.variant {self.variant!r} is an LSTM variant; model.cell is {self.cell!r}")


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 1  # fixes initial values and the order of batches
    lr: float = 0.05  # AdaGrad step size
    batch_size: int = 10  # the lecture's mini-batch
    epochs: int = 10  # the lecture's 10 epochs; the best-on-dev epoch is kept
    clip_norm: float = 0.0  # max gradient norm per model; 0 = no clipping (the lecture's)
    eval_batch_size: int = 256  # dev/test evaluation only; does not change results
    trial: int = 0  # a tuning run's Optuna trial number (`ablation tune`); 0: not a tuning run


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def run_id(self) -> str:
        """Readable prefix plus a hash of the whole resolved config (seed included).

        Keys added after the first release enter the hash only when they differ from their
        default (`LATER_KEYS`), so the ids of earlier records stay valid.
        """
        d = self.to_dict()
        for dotted, default in LATER_KEYS.items():
            section, key = dotted.split(".")
            if d[section][key] == default:
                del d[section][key]
        digest = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]
        m = self.model
        short = "".join(g[0] for g in m.gates) or "none"
        kind = m.peephole[:4] if m.cell == "lstm" else m.cell + (f"-{m.gru_reset}" if m.cell == "gru" else "")
        variant = "" if m.variant == "vanilla" else f"-{m.variant}"
        return f"{short}-{kind}{variant}-s{self.train.seed}-{digest}"


LATER_KEYS = {"model.cell": "lstm", "model.variant": "vanilla", "model.gru_reset": "before", "train.trial": 0}


SECTION_TYPES = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


def _choice(key: str, value: Any, valid: tuple) -> None:
    if value not in valid:
        raise ValueError(f"{key}: unknown value {value!r}; valid: {', '.join(map(str, valid))}")


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Check a TOML value against a dataclass field type (and turn ints into floats)."""
    if key == "model.gates":  # checked against the cell kind's gates in ModelConfig
        return split_gates(value)
    hints = typing.get_args(typ) if isinstance(typ, types.UnionType) else (typ,)
    for t in hints:
        if t is type(None) and value is None:
            return None
        if t is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if t in (int, str, bool) and type(value) is t:
            return value
    names = " | ".join(getattr(t, "__name__", str(t)) for t in hints)
    raise TypeError(f"{key}: expected {names}, got {type(value).__name__} {value!r}")


def apply(cfg: RunConfig, updates: dict[str, Any]) -> RunConfig:
    """Apply {'section.key': value} updates; unknown keys are errors naming the valid ones."""
    sections = {name: dataclasses.asdict(getattr(cfg, name)) for name in SECTION_TYPES}
    for dotted, value in updates.items():
        section, _, key = dotted.partition(".")
        if section not in SECTION_TYPES:
            raise KeyError(f"unknown config section {section!r} in {dotted!r}; valid: {', '.join(SECTION_TYPES)}")
        types_ = typing.get_type_hints(SECTION_TYPES[section])
        if key not in types_:
            raise KeyError(f"unknown config key {dotted!r}; valid {section} keys: {', '.join(types_)}")
        sections[section][key] = _coerce(dotted, value, types_[key])
    return RunConfig(**{name: SECTION_TYPES[name](**vals) for name, vals in sections.items()})


def flatten(table: dict, prefix: str = "") -> dict[str, Any]:
    """{'model': {'gates': ...}} -> {'model.gates': ...}"""
    out = {}
    for k, v in table.items():
        if isinstance(v, dict) and not prefix:
            out.update(flatten(v, f"{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def parse_override(text: str) -> tuple[str, Any]:
    """'train.lr=0.1' -> ('train.lr', 0.1); values are TOML literals, bare words are strings."""
    key, sep, raw = text.partition("=")
    if not sep:
        raise ValueError(f"--set expects section.key=value, got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip(), value


@dataclass(frozen=True)
class Experiment:
    """An experiment file: fixed settings, grid axes, reference numbers."""

    name: str
    base: RunConfig
    axes: dict[str, list] = field(default_factory=dict)
    reference: dict[str, float] = field(default_factory=dict)
    reference_source: str = ""
    slurm: dict[str, Any] = field(default_factory=dict)  # executor options; not part of any run
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> overrides
    tune: dict[str, Any] = field(default_factory=dict)  # the [tune] table, checked by tune.TuneSpec

    def runs(self, seeds: int | None = None) -> list[RunConfig]:
        """Every point of the grid (variants x axes crossed, in file order); ``seeds`` keeps the first N seeds."""
        axes = dict(self.axes)
        if seeds is not None:
            axes["train.seed"] = list(axes.get("train.seed", [self.base.train.seed]))[:seeds]
        keys = list(axes)
        return [apply(self.base, {**overrides, **dict(zip(keys, combo))})
                for overrides in (self.variants or {"": {}}).values()
                for combo in itertools.product(*axes.values())]

    def label(self, config: dict) -> str | None:
        """The name of the variant a run's config (``RunConfig.to_dict()``) belongs to, if any."""
        keys = {k for overrides in self.variants.values() for k in overrides}
        flat = flatten(config)
        for name, overrides in self.variants.items():
            expected = flatten(apply(self.base, overrides).to_dict())
            if all(_same(flat.get(k), expected[k]) for k in keys):
                return name
        return None


def _same(a, b) -> bool:
    return (list(a) if isinstance(a, list | tuple) else a) == (list(b) if isinstance(b, list | tuple) else b)


def load_experiment(path: str | Path | None, overrides: list[str] = ()) -> Experiment:
    """Read an experiment file (None: the defaults) and apply --set overrides.

    An override of a grid axis replaces that axis with the single value.
    """
    raw: dict = {}
    if path is not None:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    grid = raw.pop("grid", {})
    ref = raw.pop("reference", {})
    slurm = raw.pop("slurm", {})
    variants = raw.pop("variants", {})
    tune = raw.pop("tune", {})
    unknown = set(raw) - set(SECTION_TYPES)
    if unknown:
        valid = ", ".join([*SECTION_TYPES, "grid", "reference", "slurm", "tune", "variants"])
        raise KeyError(f"{path}: unknown table [{sorted(unknown)[0]}]; valid: {valid}")
    updates = flatten(raw)
    sets = dict(parse_override(o) for o in overrides)
    base = apply(RunConfig(), {**updates, **sets})
    axes = {k: list(v) for k, v in grid.items() if k not in sets}
    for k, v in axes.items():  # validate every axis value now, not mid-grid
        if not v:
            raise ValueError(f"{path}: grid axis {k!r} is empty")
        for value in v:
            apply(base, {k: value})
    for name, overrides in variants.items():  # validate each variant now, and against the axes
        clash = set(overrides) & set(axes)
        if clash:
            raise ValueError(f"{path}: variant {name!r} sets {sorted(clash)[0]!r}, which is also a grid axis")
        apply(base, overrides)
    values = ref.get("values", {})
    reference = {k if variants else gates_name(parse_gates(k)): float(v) for k, v in values.items()}
    name = Path(path).stem if path is not None else "default"
    return Experiment(name, base, axes, reference, ref.get("source", ""), slurm, variants, tune)
