"""Hyperparameter search over a gate table: does the ordering survive tuning?

As Greff et al. 2017 (sec. 4) did for their variants: random search, then fANOVA (Hutter et al. 2014);
Dodge et al. 2019 showed that untuned comparisons can flip. `ablation tune EXPERIMENT`, resumable:
1. search (`run_study`): an Optuna study in SQLite in the results directory; each batch holds one trial per
   stratum value (the 8 gate sets) on one seed, trained as one pack by the grid runner as ordinary records
   under ``trials/``; the objective is best-on-dev accuracy, the test set plays no part;
2. selection (`best_trials`, `selected_toml`): each stratum's best trial retrained on fresh seeds;
3. importance (`importance`): fANOVA's share of dev-accuracy variance per hyperparameter and pair.
The "random" sampler is seeded by (seed, trial number, parameter), so a resumed search draws what an
uninterrupted one would; "tpe" (Optuna's TPE) is adaptive, so a resumed search may differ.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ablation.core.config import EXPERIMENT_COPY, Experiment, RunConfig, apply, flatten, load_experiment
from ablation.core.errors import need
from ablation.core.spec import GATES, gates_name, parse_gates

SAMPLERS = ("random", "tpe")
STUDY_FILE = "study.db"
TRIALS, SELECTED = "trials", "selected"  # subfolders of the results directory


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter: a config key and its range (log-uniform if ``log``)."""

    key: str
    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class TuneSpec:
    """The [tune] table of an experiment file."""

    params: tuple[Param, ...]
    strata: dict[str, list] = field(default_factory=dict)  # key -> values: one trial of each a batch
    sampler: str = "random"  # Greff et al. 2017 searched at random
    batches: int = 24  # batches of trials (24 x 8 gate sets: >= 24 trials per gate set)
    seed: int = 0  # the sampler's seed
    first_seed: int = 1001  # batch k trains with train.seed = first_seed + k (apart from the table's seeds)
    selection_seeds: tuple[int, ...] = tuple(range(101, 111))  # fresh seeds for the selected configurations

    @classmethod
    def from_mapping(cls, table: dict[str, Any], base: RunConfig, where: str = "[tune]") -> TuneSpec:
        """Check a [tune] table against the run config it tunes; errors name the key."""
        table = dict(table)
        if not table:
            raise ValueError(f"{where}: the experiment has no [tune] table (see experiments/tuning.toml)")
        raw_params = table.pop("params", None)
        if not raw_params:
            raise ValueError(f"{where}.params: give at least one parameter, e.g. "
                             '"train.lr" = { low = 0.005, high = 0.5, log = true }')
        params = []
        for key, rng in raw_params.items():
            if not isinstance(rng, dict) or set(rng) - {"low", "high", "log"} or not {"low", "high"} <= set(rng):
                raise ValueError(f"{where}.params.{key}: expected {{ low = .., high = .., log = true|false }}")
            low, high, log = float(rng["low"]), float(rng["high"]), bool(rng.get("log", False))
            if not low < high or (log and low <= 0):
                raise ValueError(f"{where}.params.{key}: need low < high (and low > 0 for log), got {low}, {high}")
            apply(base, {key: low})  # the key exists and takes the value
            params.append(Param(key, low, high, log))
        strata = {k: list(v) for k, v in table.pop("strata", {}).items()}
        for key, values in strata.items():
            if not values:
                raise ValueError(f"{where}.strata.{key}: empty")
            for v in values:
                apply(base, {key: v})
        if "selection_seeds" in table:
            table["selection_seeds"] = tuple(table["selection_seeds"])
        valid = {"sampler", "batches", "seed", "first_seed", "selection_seeds"}
        unknown = set(table) - valid
        if unknown:
            raise KeyError(f"{where}: unknown key {sorted(unknown)[0]!r}; "
                           f"valid: params, strata, {', '.join(sorted(valid))}")
        spec = cls(tuple(params), strata, **table)
        if spec.sampler not in SAMPLERS:
            raise ValueError(f"{where}.sampler: unknown value {spec.sampler!r}; valid: {', '.join(SAMPLERS)}")
        if spec.batches < 1:
            raise ValueError(f"{where}.batches: must be >= 1, got {spec.batches}")
        if len(spec.selection_seeds) < 2 or min(spec.selection_seeds) < 1:
            raise ValueError(f"{where}.selection_seeds: need >= 2 seeds, each >= 1")
        first = spec.trial_config(base, {}, 0, 1)
        tuned = [p.key for p in spec.params] + list(spec.strata)
        for key in tuned:  # a batch must be one pack: only per-member settings may vary in it
            from ablation.core.config import pack_key

            probe = spec.params[0].high if key == spec.params[0].key else None
            other = apply(first, {key: probe}) if probe is not None else first
            if pack_key(other) != pack_key(first):
                raise ValueError(f"{where}: {key!r} is not a per-member setting, so a batch could not train "
                                 "as one pack")
        return spec

    def sampler_object(self):
        import optuna

        return _SeededRandom(self.seed) if self.sampler == "random" else optuna.samplers.TPESampler(seed=self.seed)

    def stratum_points(self) -> list[dict[str, Any]]:
        """Every combination of the strata's values, in file order ([{}] without strata)."""
        points = [{}]
        for key, values in self.strata.items():
            points = [{**p, key: v} for p in points for v in values]
        return points

    def trial_config(self, base: RunConfig, values: dict[str, Any], batch: int, number: int) -> RunConfig:
        """The run config of trial ``number`` (0-based) in batch ``batch`` with its ``values``."""
        return apply(base, {**values, "train.seed": self.first_seed + batch, "train.trial": number + 1})


def _distributions(spec: TuneSpec) -> dict:
    import optuna

    d = {p.key: optuna.distributions.FloatDistribution(p.low, p.high, log=p.log) for p in spec.params}
    d.update({k: optuna.distributions.CategoricalDistribution(_hashable(v)) for k, v in spec.strata.items()})
    return d


def _hashable(values: Sequence) -> list:
    return ["+".join(v) if isinstance(v, list | tuple) else v for v in values]


class _SeededRandom:
    """Optuna's random search with a generator per (seed, trial, parameter): a search that
    is killed and resumed draws exactly what an uninterrupted one would."""

    def __new__(cls, seed: int):
        import optuna

        class Sampler(optuna.samplers.RandomSampler):
            def sample_independent(self, study, trial, name, dist):
                rng = np.random.default_rng([seed, trial.number, zlib.crc32(name.encode())])
                if isinstance(dist, optuna.distributions.FloatDistribution):
                    if dist.log:
                        return float(math.exp(rng.uniform(math.log(dist.low), math.log(dist.high))))
                    return float(rng.uniform(dist.low, dist.high))
                if isinstance(dist, optuna.distributions.CategoricalDistribution):
                    return dist.choices[int(rng.integers(len(dist.choices)))]
                raise TypeError(f"{name}: unsupported distribution {dist!r}")

        return Sampler(seed=seed)


def open_study(exp: Experiment, out: str | os.PathLike, spec: TuneSpec):
    import optuna

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name=exp.name, storage=f"sqlite:///{out / STUDY_FILE}", load_if_exists=True,
                               direction="maximize", sampler=spec.sampler_object())


def _batch_trials(study, spec: TuneSpec, batch: int, base: RunConfig) -> list[tuple[Any, RunConfig]]:
    """The trials of batch ``batch`` with their configs, asking Optuna for them if the batch
    has none yet (one per stratum point: the stratum's values are enqueued, the rest sampled)."""
    mine = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("batch") == batch]
    if not mine:
        dists = _distributions(spec)
        for point in spec.stratum_points():
            study.enqueue_trial({k: _hashable([v])[0] for k, v in point.items()})
            trial = study.ask(dists)
            trial.set_user_attr("batch", batch)
        mine = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("batch") == batch]
    return [(t, spec.trial_config(base, t.params, batch, t.number)) for t in sorted(mine, key=lambda t: t.number)]


def run_study(exp: Experiment, out: str | os.PathLike, *, workers: int | None = None, device: str = "auto",
              threads: int = 1, show_progress: bool | None = None):
    """Every batch of the search, trained and told; returns the study. Resumes: batches whose
    trials are all finished are skipped, trials asked but never told are trained (or read
    from their records, if those landed before the kill) and told."""
    import optuna

    from ablation.core.records import is_complete
    from ablation.running.grid import run_grid

    spec = TuneSpec.from_mapping(exp.tune, exp.base, f"{exp.name}: [tune]")
    out = Path(out)
    study = open_study(exp, out, spec)
    workers = workers or os.cpu_count() or 1
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
    asked: dict[int, list] = {}
    for t in study.get_trials(deepcopy=False):
        asked.setdefault(t.user_attrs.get("batch"), []).append(t)
    # batches never asked (asked only when trained: an adaptive sampler sees every result
    # before it) or asked and not all told
    todo = [k for k in range(spec.batches) if not asked.get(k) or any(t.state not in finished for t in asked[k])]
    for start in range(0, len(todo), workers):  # one batch per worker at a time
        chunk = [pair for k in todo[start : start + workers] for pair in _batch_trials(study, spec, k, exp.base)]
        chunk = [(t, cfg) for t, cfg in chunk if t.state not in finished]
        runs = Experiment(exp.name, exp.base, variants={f"trial {t.number}": _overrides(cfg) for t, cfg in chunk},
                          has_grid=True)
        run_grid(runs, out / TRIALS, device=device, pack_size=max(len(spec.stratum_points()), 1), workers=workers,
                 threads=threads, show_progress=show_progress)
        for t, cfg in chunk:
            record = out / TRIALS / cfg.run_id()
            summary = _summary(record) if is_complete(record) else {}
            if summary.get("status") == "complete":
                study.tell(t.number, summary["dev_acc"])
            else:  # diverged or did not learn: not a point of the search's landscape
                study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    return study


def _overrides(cfg: RunConfig) -> dict[str, Any]:
    """``cfg`` as the overrides of the keys a trial sets (what differs from the defaults)."""
    default = flatten(RunConfig().to_dict())
    return {k: v for k, v in flatten(cfg.to_dict()).items() if v != default[k] and k != "data.data_dir"}


def _summary(record: Path) -> dict:
    import json

    return json.loads((record / "summary.json").read_text())


def best_trials(study, spec: TuneSpec) -> list[tuple[dict[str, Any], Any]]:
    """For each stratum point (file order), the complete trial with the best dev accuracy
    (ties: the earliest); a point with no complete trial is left out."""
    import optuna

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    out = []
    for point in spec.stratum_points():
        want = {k: _hashable([v])[0] for k, v in point.items()}
        mine = [t for t in complete if all(t.params.get(k) == v for k, v in want.items())]
        if mine:
            out.append((point, max(mine, key=lambda t: (t.value, -t.number))))
    return out


def selected_toml(exp: Experiment, study, spec: TuneSpec, source: str) -> str:
    """The selection as an experiment file: one variant per stratum point with its best
    trial's values, crossed with the fresh seeds; the last point (the full cell, in the
    lecture's order) first, as the table's reference."""
    best = best_trials(study, spec)
    if not best:
        raise ValueError(f"{exp.name}: no complete trial to select from")
    best = [best[-1], *best[:-1]]
    lines = [f"# Written by `ablation tune` from {source}: for each gate set, the trial with the best",
             "# dev accuracy (the test set played no part), retrained on fresh seeds.", ""]
    sections: dict[str, list[str]] = {}
    for key, value in _fixed(exp).items():
        section, name = key.split(".", 1)
        sections.setdefault(section, []).append(f"{name} = {_toml(value)}")
    for section, entries in sections.items():
        lines += [f"[{section}]", *entries, ""]
    lines += ["[grid]", f'"train.seed" = {_toml(list(spec.selection_seeds))}', "", "[variants]"]
    for point, trial in best:
        name = ", ".join(gates_name(parse_gates(v)) if k == "model.gates" else str(v) for k, v in point.items())
        values = {**{k: _hashable([v])[0] for k, v in point.items()},
                  **{p.key: float(f"{trial.params[p.key]:.6g}") for p in spec.params}}
        body = ", ".join(f'"{k}" = {_toml(v)}' for k, v in values.items())
        lines.append(f'"{name}" = {{ {body} }}  # trial {trial.number}, dev {trial.value:.2f}')
    return "\n".join(lines) + "\n"


def _fixed(exp: Experiment) -> dict[str, Any]:
    """The settings an experiment file changes from the defaults (what the selection keeps)."""
    return {k: v for k, v in _overrides(exp.base).items() if k != "train.trial"}


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


# --- importance: functional ANOVA (Hutter et al. 2014) -----------------------------------------

def importance(study, spec: TuneSpec, *, n_trees: int = 64, seed: int = 0) -> list[dict[str, Any]]:
    """The share of the variance of dev accuracy over the search space explained by each
    hyperparameter alone and by each pair beyond its two parts (fANOVA on a random forest
    fitted to every complete trial; gate sets as their three on/off bits, learning rates on
    a log scale). Rows: {"term", "share", "std"} (std over the forest's trees)."""
    import itertools

    import optuna
    from optuna.importance._fanova._fanova import _Fanova

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    X, columns, spaces = _design(complete, spec)
    y = np.array([t.value for t in complete], dtype=float)
    if len(complete) < 4 or np.ptp(y) == 0:
        raise ValueError("importance needs at least 4 complete trials with different dev accuracies")
    fan = _Fanova(n_trees=n_trees, max_depth=64, min_samples_split=2, min_samples_leaf=1, seed=seed)
    fan.fit(X, y, spaces, [np.array(c) for c in columns.values()])
    trees = [t for t in fan._trees if t.variance > 0]

    def share(cols) -> np.ndarray:  # per tree, the variance of the marginal over ``cols``, as a fraction
        return np.array([tree.get_marginal_variance(np.array(cols)) / tree.variance for tree in trees])

    names = list(columns)
    single = {n: share(columns[n]) for n in names}
    rows = [{"term": n, "share": float(v.mean()), "std": float(v.std())} for n, v in single.items()]
    for a, b in itertools.combinations(names, 2):
        v = np.clip(share(columns[a] + columns[b]) - single[a] - single[b], 0, None)
        rows.append({"term": f"{a} x {b}", "share": float(v.mean()), "std": float(v.std())})
    return rows


PARAM_NAMES = {"model.gates": "gate set", "train.lr": "learning rate", "model.forget_bias": "forget bias"}


def _design(trials, spec: TuneSpec):
    """(X, {name: its columns}, search-space bounds per column) for fANOVA."""
    cols, spaces, names = [], [], {}
    for key in spec.strata:
        if key == "model.gates":
            for g in GATES:
                cols.append([float(g in t.params[key].split("+")) for t in trials])
                spaces.append([0.0, 1.0])
            names[PARAM_NAMES[key]] = list(range(len(cols) - len(GATES), len(cols)))
        else:
            choices = _hashable(spec.strata[key])
            cols.append([float(choices.index(t.params[key])) for t in trials])
            spaces.append([0.0, float(len(choices))])
            names[PARAM_NAMES.get(key, key)] = [len(cols) - 1]
    for p in spec.params:
        f = math.log10 if p.log else float
        cols.append([f(t.params[p.key]) for t in trials])
        spaces.append([f(p.low), f(p.high)])
        names[PARAM_NAMES.get(p.key, p.key)] = [len(cols) - 1]
    return np.array(cols, dtype=float).T, names, np.array(spaces, dtype=float)


def trials_frame(study):
    """Every trial, one row: number, batch, state, dev accuracy and its parameters."""
    import pandas as pd

    return pd.DataFrame([{"trial": t.number, "batch": t.user_attrs.get("batch"), "state": t.state.name,
                          "dev_acc": t.value, **t.params} for t in study.get_trials(deepcopy=False)])


# --- the whole job: search, selection, tables, importance, figures -----------------------------

def run_tuning(exp_path: str | os.PathLike, out: str | os.PathLike, *, untuned: str | os.PathLike | None = None,
               workers: int | None = None, device: str = "auto", threads: int = 1,
               show_progress: bool | None = None, paired: str | os.PathLike | None = None) -> list[Path]:
    """Search, select, retrain on fresh seeds, and write the tables, importance and figures
    into ``out``; ``untuned``: the results directory of the same gate table at its default
    settings (e.g. results/lecture), for the tuned-vs-untuned table. Returns the files written."""
    from ablation.analysis.render import write_tables
    from ablation.running.grid import keep_experiment, run_grid

    need("optuna", "tune", "ablation tune")
    exp = load_experiment(exp_path)
    spec = TuneSpec.from_mapping(exp.tune, exp.base, f"{exp_path}: [tune]")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    keep_experiment(exp, out)
    study = run_study(exp, out, workers=workers, device=device, threads=threads, show_progress=show_progress)
    sel_path = out / "selected.toml"
    sel_path.write_text(selected_toml(exp, study, spec, str(exp_path)), encoding="utf-8")
    selected = load_experiment(sel_path)
    run_grid(selected, out / SELECTED, device=device, workers=workers, threads=threads, show_progress=show_progress)
    write_tables(out / SELECTED, experiment=sel_path)
    written = [sel_path, *(out / SELECTED / f"table.{ext}" for ext in ("md", "csv", "tex"))]
    written += write_tuned_table(out, sel_path, untuned, paired)
    imp = importance(study, spec)
    (out / "importance.csv").write_text(_csv(imp, ["term", "share", "std"]), encoding="utf-8")
    trials = trials_frame(study)
    (out / "trials.csv").write_text(trials.to_csv(index=False, float_format="%.6g", lineterminator="\n"),
                                    encoding="utf-8")
    written += [out / "importance.csv", out / "trials.csv"]
    from ablation.analysis.plots import plot_importance, plot_tuning_landscape, save

    written += save(plot_tuning_landscape(trials, spec)[0], out / "figures" / "dev_vs_lr")
    written += save(plot_importance(imp)[0], out / "figures" / "importance")
    write_tables(out)  # the page, README.md
    return [*written, out / "README.md"]


def _csv(rows: list[dict], cols: list[str]) -> str:
    import pandas as pd

    return pd.DataFrame(rows, columns=cols).to_csv(index=False, float_format="%.4f", lineterminator="\n")


def tuned_table(selected: Path, sel_path: Path, untuned: Path | None, paired: Path | None = None):
    """Per gate set: the selected learning rate and forget bias, the test accuracy of the
    selection on fresh seeds (mean, t-interval, n, verdict against the full cell), and the
    untuned table's mean and interval beside it; and Kendall's τ between the two orderings."""
    import pandas as pd
    from scipy import stats

    from ablation.analysis.aggregate import load_table

    exp = load_experiment(sel_path)
    _, table, _ = load_table(selected, sel_path)
    rows = []
    for _, t in table.iterrows():
        values = exp.variants[t["variant"]]
        rows.append({"gates": t["variant"], "lr": values.get("train.lr", exp.base.train.lr),
                     "forget_bias": values.get("model.forget_bias", exp.base.model.forget_bias),
                     **{k: t[k] for k in ("mean", "ci_low", "ci_high", "n", "p_holm", "verdict") if k in t}})
    tuned = pd.DataFrame(rows)
    tau = math.nan
    if untuned is not None:
        _, base, _ = load_table(untuned)
        base = base.set_index("gates")[["mean", "ci_low", "ci_high", "n", "verdict"]].add_prefix("untuned_")
        tuned = tuned.join(base, on="gates")
        both = tuned.dropna(subset=["mean", "untuned_mean"])
        if len(both) >= 2:
            tau = float(stats.kendalltau(both["mean"], both["untuned_mean"]).statistic)
        if paired is not None:  # the selections retrained on the untuned table's seeds: tuning, tested paired
            from ablation.analysis.aggregate import load_runs, tuning_change

            runs = load_runs(paired, load_experiment(paired / EXPERIMENT_COPY))
            change = tuning_change(runs.runs.assign(gates=runs.runs["variant"]), load_runs(untuned).runs)
            tuned = tuned.merge(change, on="gates", how="left")
    return tuned, tau


def write_tuned_table(out: Path, sel_path: Path, untuned: str | os.PathLike | None,
                      paired: str | os.PathLike | None = None) -> list[Path]:
    from ablation.analysis.aggregate import SHORT

    tuned, tau = tuned_table(out / SELECTED, sel_path, Path(untuned) if untuned else None,
                             Path(paired) if paired else None)
    csv_path, md_path = out / "tuned_table.csv", out / "tuned_table.md"
    csv_path.write_text(tuned.to_csv(index=False, float_format="%.4f", lineterminator="\n"), encoding="utf-8")
    head = ["gates", "lr", "forget bias", "tuned mean", "95% CI", "n", "verdict", "untuned mean", "95% CI"]
    if "delta_change" in tuned:  # paired on the untuned seeds: the change of each gap to the full cell
        head += ["gap change [95% CI]", "change"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for _, t in tuned.iterrows():
        untuned_cells = ([f"{t['untuned_mean']:.1f}", f"[{t['untuned_ci_low']:.1f}, {t['untuned_ci_high']:.1f}]"]
                         if "untuned_mean" in t and not _missing(t["untuned_mean"]) else ["–", "–"])
        change = ([f"{t['delta_change']:+.2f} [{t['delta_change_ci_low']:+.2f}, {t['delta_change_ci_high']:+.2f}]",
                   str(t["delta_change_verdict"])] if "delta_change" in t and not _missing(t["delta_change"])
                  else ["–", "–"]) if "delta_change" in tuned else []
        lines.append("| " + " | ".join([SHORT.get(t["gates"], t["gates"]), f"{t['lr']:.3g}", f"{t['forget_bias']:.2f}",
                                         f"{t['mean']:.1f}", f"[{t['ci_low']:.1f}, {t['ci_high']:.1f}]",
                                         str(int(t["n"])), str(t.get("verdict", "")), *untuned_cells,
                                         *change]) + " |")
    # τ describes two orderings of means; it is no test that any gap changed (that is the paired column)
    test = ("the gap change column tests each gap, paired by seed" if "delta_change" in tuned
            else "no gap's change is tested without a paired grid (`make tuned-paired`)")
    note = (f"Kendall's τ between the tuned and untuned orderings over {len(tuned)} gate sets: {tau:.2f} "
            f"(a description of two orderings, not a test; {test})."
            if not math.isnan(tau) else "No untuned table to compare with.")
    md_path.write_text("\n".join(lines) + "\n\n" + note + "\n", encoding="utf-8")
    return [csv_path, md_path]


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))
