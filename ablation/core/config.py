"""Run configuration: frozen dataclasses, TOML experiment files, dotted overrides, run ids.

A run's config is four sections (`TaskConfig`, `DataConfig`, `ModelConfig`, `TrainConfig`)
composed into `RunConfig`, whose defaults are the lecture's protocol on SST, so an experiment file
lists only what it changes. An experiment file's tables ([grid], [variants], [reference], [stats], [report], [slurm],
[tune]) are read by `load_experiment`; docs/config.md explains each with an example and lists every
key (`reference`). A run's identity is `RunConfig.run_id()`: a hash of `RUN_ID_KEYS`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablation.core.errors import ConfigError, DataError
from ablation.core.spec import (
    CELL_GATES,
    FORGET_INITS,
    GRANULARITIES,
    LABELINGS,
    OPTIMIZERS,
    PEEPHOLES,
    RESETS,
    TASKS,
    TSV_FILES,
    VARIANTS,
    VOCABS,
    CellSpec,
    gates_name,
    parse_gates,
)

# Sentences evaluated at once (dev, test, probes, predict): it bounds memory, a pack's
# (M, 256, T, 4H) activations; no recorded number depends on it (tested).
EVAL_BATCH = 256
# The equivalence margin in points (TOST) where an experiment's [stats] sets none: half a point,
# about the std of one run over seeds.
MARGIN = 0.5
# A generated task counts as solved below this fraction of its trivial baseline (an MSE 10% of
# predicting the mean), unless an experiment's [stats] solve says otherwise.
SOLVE = 0.1
# How a table's intervals of the mean are computed ([stats] interval; analysis/stats.mean_interval).
INTERVALS = ("t", "bootstrap-t", "bca")


MAX_SEED = 2**63 - 1


def tsv_checksum(path: str) -> str:
    """SHA-256 over the SHA-256s of a TSV task's three files, in `TSV_FILES` order (a missing one is named)."""
    digests = []
    for name in TSV_FILES:
        f = Path(path) / name
        if not f.is_file():
            raise DataError(f"task.path {path}: no {name} (a TSV task needs {', '.join(TSV_FILES)})")
        digests.append(hashlib.sha256(f.read_bytes()).hexdigest())
    return hashlib.sha256(" ".join(digests).encode()).hexdigest()


@dataclass(frozen=True)
class TaskConfig:
    name: str = "sst"  # what is learned (core/spec.TASKS; tasks/registry.py): the lecture's SST by default
    length: int = 100  # the sequence length T of a generated task (adding, temporal-order)
    train_size: int = 10000  # generated training sequences
    eval_size: int = 1000  # generated dev and test sequences, each
    data_seed: int = 0  # the generator's seed: with the keys above it names the data, as SST's checksums do
    path: str = ""  # tsv: the folder holding train.tsv, dev.tsv and test.tsv (text, a tab, a label per line)
    checksum: str = ""  # tsv: SHA-256 over the three files, filled in from task.path: the run id's name for them

    def __post_init__(self):
        _choice("task.name", self.name, tuple(TASKS))
        if self.name == "tsv":
            if not self.path:
                raise ConfigError(f"task.path: task 'tsv' needs the folder holding {', '.join(TSV_FILES)}")
            if not self.checksum:
                object.__setattr__(self, "checksum", tsv_checksum(self.path))
        # a key only some tasks read (`TaskInfo.keys`) stays at its default for the others
        for key, value in dataclasses.asdict(self).items():
            if key != "name" and value != TASK_DEFAULTS[key] and key not in TASKS[self.name].keys:
                users = ", ".join(t for t, info in TASKS.items() if key in info.keys)
                raise ConfigError(f"task.{key}: applies to {users}; task.name is {self.name!r}")
        _at_least("task.length", self.length, 2)
        _at_least("task.train_size", self.train_size, 1)
        _at_least("task.eval_size", self.eval_size, 1)
        _at_least("task.data_seed", self.data_seed, 0)
        if self.name == "temporal-order" and self.length < 10:
            raise ConfigError(f"task.length: temporal-order needs >= 10 (its X and Y lie in set windows), "
                              f"got {self.length}")


@dataclass(frozen=True)
class DataConfig:
    granularity: str = "phrases"  # the lecture trains on every labelled phrase
    labels: str = "binary"  # SST-2: neutral dropped
    data_dir: str | None = None  # None: SST_DIR, data/sst, ../shared/data/sst (tasks/sst.find_sst_dir)
    bucket: bool = True  # length-bucketed batches: less padding, order still seeded
    train_limit: int = 0  # >0 keeps the first N training examples (smoke tests only)
    vocab: str = "train"  # every token of the training split: phrases come from all its trees

    def __post_init__(self):
        _choice("data.granularity", self.granularity, GRANULARITIES)
        _choice("data.labels", self.labels, LABELINGS)
        _at_least("data.train_limit", self.train_limit, 0)
        _choice("data.vocab", self.vocab, VOCABS)


@dataclass(frozen=True)
class ModelConfig:
    gates: tuple[str, ...] | None = None  # None: every gate of the cell kind (the full cell); the grid ablates this
    peephole: str | None = None  # None: the kind's default, "diagonal" for the LSTM (the lecture's equations
    #                              have peepholes), "none" for GRU and RNN (which have none)
    embedding_dim: int = 25  # the lecture's 25-d word vectors
    hidden_size: int = 50  # the lecture's 50-d cell and hidden state
    embeddings: str = "glove-6b-50d"  # "random", "glove-6b-50d" (PCA to embedding_dim) or a GloVe file
    freeze_embeddings: bool = False  # the lecture fine-tunes its vectors
    forget_bias: float = 0.0  # forget-gate bias at init (Jozefowicz et al. 2015 suggest 1)
    forget_init: str = "constant"  # "constant" (forget_bias) or "chrono": b_f ~ log U(1, task.length - 1),
    #                                b_i = -b_f (Tallec & Ollivier 2018, sec. 3)
    cell: str = "lstm"  # "lstm", "gru" or "rnn" (Elman, tanh)
    variant: str = "vanilla"  # an LSTM variant of Greff et al. 2017 (core/spec.VARIANTS)
    gru_reset: str = "before"  # where the GRU's reset gate applies: the lecture's "before", or "after"

    def __post_init__(self):
        _choice("model.cell", self.cell, tuple(CELL_GATES))
        # An unset (None) gates or peephole takes the kind's default; a value set is checked
        # against the kind, never replaced (an LSTM gate or a peephole on a GRU is an error).
        for key, value in KIND_DEFAULTS[self.cell].items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        object.__setattr__(self, "gates", parse_gates(self.gates, self.cell))
        _choice("model.peephole", self.peephole, PEEPHOLES)
        if self.cell != "lstm" and self.peephole != "none":
            raise ConfigError(f"model.peephole {self.peephole!r}: peepholes are LSTM-only and model.cell is "
                             f"{self.cell!r}; valid for it: none")
        _choice("model.variant", self.variant, tuple(VARIANTS))
        _choice("model.gru_reset", self.gru_reset, RESETS)
        if self.variant != "vanilla" and self.cell != "lstm":
            raise ConfigError(f"model.variant {self.variant!r} is an LSTM variant; model.cell is {self.cell!r}")
        _at_least("model.embedding_dim", self.embedding_dim, 1)
        _at_least("model.hidden_size", self.hidden_size, 1)
        _finite("model.forget_bias", self.forget_bias)
        _choice("model.forget_init", self.forget_init, FORGET_INITS)
        if self.forget_init == "chrono" and (self.cell != "lstm" or self.variant == "cifg"):
            raise ConfigError("model.forget_init 'chrono' sets the LSTM's forget and input gate biases; "
                              f"model.cell is {self.cell!r}, model.variant {self.variant!r}; valid: constant")

    def spec(self) -> CellSpec:
        """What one member of a pack computes (`spec.CellSpec`), from these settings."""
        return CellSpec(self.gates, self.peephole, self.variant, self.cell, self.gru_reset)


# The values an unset model.gates / model.peephole takes, by cell kind. An experiment's LSTM has
# the lecture's diagonal peepholes (Graves 2013, eqs. 7-10); `CellSpec` and `GatedLSTM` default
# to none on purpose, so the single layer is `torch.nn.LSTM` unless asked otherwise.
KIND_DEFAULTS = {kind: {"gates": gates, "peephole": "diagonal" if kind == "lstm" else "none"}
                 for kind, gates in CELL_GATES.items()}


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 1  # fixes initial values and the order of batches
    lr: float = 0.05  # the optimizer's step size
    optimizer: str = "adagrad"  # "adagrad" (the lecture's), "adam" or "rmsprop" (long-lag tasks), per member
    batch_size: int = 10  # the lecture's mini-batch
    epochs: int = 10  # the lecture's 10 epochs; the best-on-dev epoch is kept
    clip_norm: float = 0.0  # max gradient norm per model; 0 = no clipping (the lecture's)
    eval_batch_size: int = EVAL_BATCH  # dev/test evaluation only; does not change results
    trial: int = 0  # a tuning run's Optuna trial number (`ablation tune`); 0: not a tuning run

    def __post_init__(self):
        _at_least("train.seed", self.seed, 0)
        if self.seed > MAX_SEED:  # torch's generators take a signed 64-bit seed
            raise ConfigError(f"train.seed: must be an integer in [0, {MAX_SEED}], got {self.seed!r}")
        _finite("train.lr", self.lr)
        if not self.lr > 0:
            raise ConfigError(f"train.lr: must be a finite number > 0, got {self.lr!r}")
        _choice("train.optimizer", self.optimizer, OPTIMIZERS)
        _at_least("train.batch_size", self.batch_size, 1)
        _at_least("train.epochs", self.epochs, 1)
        _finite("train.clip_norm", self.clip_norm)
        if self.clip_norm < 0:
            raise ConfigError(f"train.clip_norm: must be >= 0 (0 = no clipping), got {self.clip_norm!r}")
        _at_least("train.eval_batch_size", self.eval_batch_size, 1)
        _at_least("train.trial", self.trial, 0)


@dataclass(frozen=True)
class RunConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def __post_init__(self):
        t, m = self.task, self.model
        if m.forget_init == "chrono" and "length" not in TASKS[t.name].keys:
            users = ", ".join(name for name, info in TASKS.items() if "length" in info.keys)
            raise ConfigError(f"model.forget_init 'chrono' spans a task's lags up to task.length ({users}); "
                              f"task.name is {t.name!r}; valid for it: constant")
        if t.name != "sst" and self.data != DataConfig():
            raise ConfigError(f"task.name {t.name!r}: the data.* keys are SST's (leave them at their defaults)")
        if not TASKS[t.name].words and (m.embeddings != "glove-6b-50d" or m.freeze_embeddings):
            raise ConfigError(f"task.name {t.name!r}: model.embeddings and model.freeze_embeddings are for word "
                              "tasks (sst, tsv); a generated task's inputs are its own (leave them at their defaults)")

    def run_id(self) -> str:
        """Readable prefix plus a hash of the keys that define a run (`RUN_ID_KEYS`, seed included;
        a `LATER_KEYS` key only when it is not at its default, so older runs keep their ids)."""
        flat = flatten(self.to_dict())
        defining = {k: flat[k] for k in RUN_ID_KEYS}
        defining.update({k: flat[k] for k in LATER_KEYS if not _same(flat[k], SECTION_DEFAULTS[k])})
        digest = hashlib.sha256(json.dumps(defining, sort_keys=True).encode()).hexdigest()[:10]
        m = self.model
        short = "".join(g[0] for g in m.gates) or "none"
        kind = m.peephole[:4] if m.cell == "lstm" else m.cell + (f"-{m.gru_reset}" if m.cell == "gru" else "")
        variant = "" if m.variant == "vanilla" else f"-{m.variant}"
        t = self.task
        task = "" if t.name == "sst" else f"{t.name}{t.length if 'length' in TASKS[t.name].keys else ''}-"
        return f"{task}{short}-{kind}{variant}-s{self.train.seed}-{digest}"


# What a pack's members may differ in (each has its own; everything else the pack shares, so its
# members see the same batches and start from the same shared weights). Every RUN_ID_KEYS key is
# either here or shared (tests/test_config.py checks `pack_key` against this list).
PER_MEMBER_KEYS = ("model.gates", "model.variant", "model.forget_bias", "model.forget_init", "model.embeddings",
                   "train.lr", "train.trial")


def pack_key(cfg: RunConfig) -> RunConfig:
    """What the members of one pack must share: ``cfg`` with every `PER_MEMBER_KEYS` key at its
    default. The grid packs runs by it; `training.trainer.build_pack` checks it."""
    per_section: dict[str, dict[str, Any]] = {}
    for key in PER_MEMBER_KEYS:
        section, name = key.split(".")
        per_section.setdefault(section, {})[name] = SECTION_DEFAULTS[key]
    return dataclasses.replace(cfg, **{s: dataclasses.replace(getattr(cfg, s), **v) for s, v in per_section.items()})


# A run's identity: the config keys that change its numbers. Every config key is in exactly one
# of these two (tests/test_config.py checks), so a new key is classified when it is added.
RUN_ID_KEYS = (
    "data.granularity", "data.labels", "data.bucket", "data.train_limit", "data.vocab",
    "model.gates", "model.peephole", "model.embedding_dim", "model.hidden_size", "model.embeddings",
    "model.freeze_embeddings", "model.forget_bias", "model.cell", "model.variant", "model.gru_reset",
    "train.seed", "train.lr", "train.batch_size", "train.epochs", "train.clip_norm", "train.trial",
)
# Keys added after records were committed: in the hash only when set to something other than their
# default, so every SST record keeps its id (tests/test_config.py pins them) and a run that uses one
# gets an id of its own.
LATER_KEYS = ("task.name", "task.length", "task.train_size", "task.eval_size", "task.data_seed", "task.checksum",
              "model.forget_init", "train.optimizer")
NOT_IN_RUN_ID = {
    "task.path": "where a TSV task's files lie: task.checksum, in the id, names their content",
    "data.data_dir": "where the trees lie: every copy is checked against the official SHA-256 sums",
    "train.eval_batch_size": "evaluation only: predictions are identical for any size (tests/test_train.py)",
}


SECTION_TYPES = {"task": TaskConfig, "data": DataConfig, "model": ModelConfig, "train": TrainConfig}
SECTION_DEFAULTS = {f"{name}.{f.name}": f.default
                    for name, cls in SECTION_TYPES.items() for f in dataclasses.fields(cls)}
TASK_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TaskConfig)}


def _choice(key: str, value: Any, valid: tuple) -> None:
    if value not in valid:
        raise ConfigError(f"{key}: unknown value {value!r}; valid: {', '.join(map(str, valid))}")


def _at_least(key: str, value: int, low: int) -> None:
    """Integer settings with a floor: a bad value is refused here, not found mid-grid in a worker."""
    if value < low:
        raise ConfigError(f"{key}: must be an integer >= {low}, got {value!r}")


def _finite(key: str, value: float) -> None:
    if not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number, got {value!r}")


# Each key's valid values in words, for the reference (`reference`); the checks above enforce them.
VALID = {
    "task.name": " | ".join(TASKS), "task.length": ">= 2 (temporal-order: >= 10)", "task.train_size": ">= 1",
    "task.eval_size": ">= 1", "task.data_seed": ">= 0", "task.path": "a folder holding " + ", ".join(TSV_FILES),
    "task.checksum": "64 hex digits, or empty (computed from task.path)",
    "data.granularity": " | ".join(GRANULARITIES), "data.labels": " | ".join(LABELINGS),
    "data.data_dir": "a folder holding train.txt, dev.txt, test.txt", "data.train_limit": ">= 0 (0: all)",
    "data.vocab": " | ".join(VOCABS),
    "model.gates": "any of the kind's gates joined by + (input+forget, or by initials i+f, ifo), or none",
    "model.peephole": " | ".join(PEEPHOLES) + " (LSTM only)", "model.embedding_dim": ">= 1",
    "model.hidden_size": ">= 1", "model.embeddings": "random | glove-6b-50d | a GloVe text file",
    "model.forget_bias": "finite", "model.forget_init": " | ".join(FORGET_INITS) + " (chrono: LSTM only)",
    "model.cell": " | ".join(CELL_GATES), "model.variant": " | ".join(VARIANTS),
    "model.gru_reset": " | ".join(RESETS),
    "train.seed": f"0 .. {MAX_SEED}", "train.lr": "> 0, finite", "train.optimizer": " | ".join(OPTIMIZERS),
    "train.batch_size": ">= 1", "train.epochs": ">= 1",
    "train.clip_norm": ">= 0 (0: no clipping)", "train.eval_batch_size": ">= 1", "train.trial": ">= 0",
}


def reference() -> list[dict[str, str]]:
    """Every config key: its type, default, valid values and the one-line reason its dataclass gives
    (the comment on its field), and whether it is part of the run id. `ablation config keys` prints
    it; docs/config.md is generated from it (tests/test_config.py keeps the two in step)."""
    import inspect
    import re

    rows = []
    for section, cls in SECTION_TYPES.items():
        reasons: dict[str, str] = {}
        last = None
        for line in inspect.getsource(cls).splitlines():
            m = re.match(r"\s+(\w+): [^=]+= .*?#\s*(.*)$", line)
            if m:
                last, reasons[m[1]] = m[1], m[2]
            elif last and re.match(r"\s+#\s+", line):  # a reason continued on the next line
                reasons[last] += " " + line.strip().lstrip("#").strip()
            else:
                last = None
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            key = f"{section}.{f.name}"
            typ = str(hints[f.name]).replace("typing.", "").replace("<class '", "").replace("'>", "")
            rows.append({"key": key, "type": typ, "default": json.dumps(f.default), "valid": VALID.get(key, ""),
                         "run id": "yes" if key in RUN_ID_KEYS else "no", "reason": reasons.get(f.name, "")})
    return rows


def reference_markdown() -> str:
    """`reference` as the Markdown table of docs/config.md."""
    rows = reference()
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(f"`{r[k]}`" if k == "key" else r[k].replace("|", "\\|") for k in head) + " |"
              for r in rows]
    return "\n".join(lines) + "\n"


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Check a TOML value against a dataclass field type (and turn ints into floats)."""
    if key == "model.gates":  # read and checked against the cell kind's gates in ModelConfig
        if not isinstance(value, str | list | tuple) or not all(isinstance(g, str) for g in value):
            raise ConfigError(f"{key}: expected gate names like 'input+forget', 'i+f' or a list, got {value!r}")
        return value if isinstance(value, str) else tuple(value)
    hints = typing.get_args(typ) if isinstance(typ, types.UnionType) else (typ,)
    for t in hints:
        if t is type(None) and value is None:
            return None
        if t is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if t in (int, str, bool) and type(value) is t:
            return value
    names = " | ".join(getattr(t, "__name__", str(t)) for t in hints)
    raise ConfigError(f"{key}: expected {names}, got {type(value).__name__} {value!r}")


@functools.cache
def _hints(section: str) -> dict[str, Any]:
    return typing.get_type_hints(SECTION_TYPES[section])


def apply(cfg: RunConfig, updates: dict[str, Any]) -> RunConfig:
    """Apply {'section.key': value} updates; unknown keys are errors naming the valid ones."""
    sections = {name: dataclasses.asdict(getattr(cfg, name)) for name in SECTION_TYPES}
    for dotted, value in updates.items():
        section, _, key = dotted.partition(".")
        if section not in SECTION_TYPES:
            raise ConfigError(f"unknown config section {section!r} in {dotted!r}; valid: {', '.join(SECTION_TYPES)}")
        types_ = _hints(section)
        if key not in types_:
            raise ConfigError(f"unknown config key {dotted!r}; valid {section} keys: {', '.join(types_)}")
        sections[section][key] = _coerce(dotted, value, types_[key])
    if "task.path" in updates and "task.checksum" not in updates:  # other files: their checksum, not the old
        sections["task"]["checksum"] = ""
    model, old = sections["model"], cfg.model
    if model["cell"] != old.cell:  # another kind: keys still at the old kind's defaults take the new kind's
        for key, default in KIND_DEFAULTS[old.cell].items():
            if f"model.{key}" not in updates and _same(model[key], default):
                model[key] = None
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
        raise ConfigError(f"--set expects section.key=value, got {text!r}")
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
    margin: float = MARGIN  # [stats] margin
    interval: str = "t"  # [stats] interval: Student t, the one that covers at 5 seeds
    solve: float = SOLVE  # [stats] solve: a run solves a generated task when its test metric is below
    #                       solve x the task's trivial baseline (declared before training)
    has_grid: bool = False  # the file has a [grid] or [variants] table (`ablation grid` needs one)
    tune: dict[str, Any] = field(default_factory=dict)  # the [tune] table, checked by tune.TuneSpec
    report: dict[str, str] = field(default_factory=dict)  # the [report] table (REPORT_KEYS), checked
    path: str | None = None  # the file it was read from (the grid keeps a copy beside the records)

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
            try:
                raw = tomllib.load(f)
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:  # neither names the file
                raise ConfigError(f"{path}: not a valid TOML experiment file: {e}") from None
    for table in ("grid", "reference", "slurm", "variants", "report", *SECTION_TYPES):
        if not isinstance(raw.get(table, {}), dict):
            raise ConfigError(f"{path}: [{table}] must be a table, got {type(raw[table]).__name__} {raw[table]!r}")
    grid = raw.pop("grid", {})
    ref = raw.pop("reference", {})
    slurm = raw.pop("slurm", {})
    variants = raw.pop("variants", {})
    for k, v in grid.items():  # list("none") would be the axis ['n', 'o', 'n', 'e']
        if not isinstance(v, list):
            raise ConfigError(f"{path}: grid axis {k!r} must be a list of values, got {type(v).__name__} {v!r} "
                            f"(write {k!r} = [{json.dumps(v)}])")
    for name, v in variants.items():
        if not isinstance(v, dict):
            raise ConfigError(f"{path}: variant {name!r} must be a table of overrides like "
                            f"{{ \"model.gates\" = \"none\" }} (or {{}}), got {type(v).__name__} {v!r}")
    margin, interval, solve = _stats_table(path, raw.pop("stats", {}))
    tune = raw.pop("tune", {})
    report = _report_table(path, raw.pop("report", {}))
    unknown = set(raw) - set(SECTION_TYPES)
    if unknown:
        valid = ", ".join([*SECTION_TYPES, "grid", "reference", "report", "slurm", "stats", "tune", "variants"])
        raise ConfigError(f"{path}: unknown table [{sorted(unknown)[0]}]; valid: {valid}")
    updates = flatten(raw)
    sets = dict(parse_override(o) for o in overrides)
    base = apply(RunConfig(), {**updates, **sets})
    axes = {k: list(v) for k, v in grid.items() if k not in sets}
    for k, v in axes.items():  # validate every axis value now, not mid-grid
        if not v:
            raise ConfigError(f"{path}: grid axis {k!r} is empty")
        for value in v:
            try:
                apply(base, {k: value})
            except (ValueError, TypeError) as e:
                raise type(e)(f"{path}: grid axis {k!r}, value {value!r}: {e}") from None
    for name, overrides in variants.items():  # validate each variant now, and against the axes
        clash = set(overrides) & set(axes)
        if clash:
            raise ConfigError(f"{path}: variant {name!r} sets {sorted(clash)[0]!r}, which is also a grid axis")
        apply(base, overrides)
    values = ref.get("values", {})
    reference = {k if variants else gates_name(parse_gates(k)): float(v) for k, v in values.items()}
    name = Path(path).stem if path is not None else "default"
    return Experiment(name, base, axes, reference, ref.get("source", ""), slurm, variants, margin, interval, solve,
                      has_grid=bool(grid or variants), tune=tune, report=report,
                      path=str(path) if path is not None else None)


STATS_KEYS = ("margin", "interval", "solve")
EXPERIMENT_COPY = "experiment.toml"  # the grid's copy of its experiment file, beside the records
# [report]: how `ablation table` presents a results directory. ``reading`` names the reading
# (analysis/readings.READINGS); ``title`` heads its page; ``summary`` says in one line what varies.
REPORT_KEYS = ("title", "summary", "reading")
READINGS = ("gates", "lecture", "peepholes", "variants", "odyssey", "protocol", "generic", "lag", "likelihood")


def _report_table(path, table: dict) -> dict[str, str]:
    unknown = set(table) - set(REPORT_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key {sorted(unknown)[0]!r} in [report]; valid: {', '.join(REPORT_KEYS)}")
    for k, v in table.items():
        if not isinstance(v, str):
            raise ConfigError(f"{path}: [report] {k} must be a string, got {type(v).__name__} {v!r}")
    _choice(f"{path}: [report] reading", table.get("reading", "generic"), READINGS)
    return dict(table)


def _stats_table(path, table: dict) -> tuple[float, str, float]:
    """The [stats] table: (margin, interval, solve), checked."""
    unknown = set(table) - set(STATS_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key {sorted(unknown)[0]!r} in [stats]; valid: {', '.join(STATS_KEYS)}")
    margin = table.get("margin", MARGIN)
    if isinstance(margin, bool) or not isinstance(margin, int | float) or not 0 < margin < 100:
        raise ConfigError(f"{path}: [stats] margin must be a number in (0, 100) (accuracy points; for the likelihood "
                          f"reading, percent of perplexity or nats per frame), got {margin!r}")
    interval = table.get("interval", Experiment.interval)
    _choice("[stats] interval", interval, INTERVALS)
    solve = table.get("solve", SOLVE)
    if isinstance(solve, bool) or not isinstance(solve, int | float) or not 0 < solve < 1:
        raise ConfigError(f"{path}: [stats] solve must be a fraction of the task's baseline in (0, 1), got {solve!r}")
    return float(margin), interval, float(solve)
