"""Tuning: a tiny search end to end, its resume after a kill, the selection, importance."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

optuna = pytest.importorskip("optuna")

from ablation import tune  # noqa: E402
from ablation.core.config import RunConfig, apply, load_experiment  # noqa: E402
from ablation.training.trainer import train_pack  # noqa: E402

TINY = """
[data]
train_limit = 200
[model]
embeddings = "random"
hidden_size = 8
[train]
epochs = 2
[tune]
batches = 2
first_seed = 11
selection_seeds = [21, 22]
[tune.strata]
"model.gates" = ["none", "input+forget+output"]
[tune.params]
"train.lr" = { low = 0.01, high = 0.3, log = true }
"model.forget_bias" = { low = 0.0, high = 2.0 }
"""


def tiny(tmp_path, text=TINY):
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    return path


def test_per_member_learning_rates_train_as_they_would_alone():
    """A pack whose members have their own learning rate (the tuner's batches) gives each
    member exactly the weights it gets alone: AdaGrad's update is per member (one thread,
    as grid workers train: see test_train)."""
    torch.set_num_threads(1)
    from ablation.core.config import apply

    cfgs = [apply(RunConfig(), {"data.train_limit": 150, "model.embeddings": "random", "model.hidden_size": 12,
                                "train.lr": lr, "model.gates": g})
            for lr, g in ((0.05, "input+forget+output"), (0.2, "none"), (0.013, "input"))]
    _, pack = train_pack(cfgs, max_steps=20)
    for m, cfg in enumerate(cfgs):
        _, alone = train_pack([cfg], max_steps=20)
        for name, p in alone.member_state(0).items():
            assert np.array_equal(pack.member_state(m)[name].numpy(), p.numpy()), (cfg.train.lr, name)


@pytest.mark.parametrize("table, message", [
    ("", "has no [tune] table"),
    ('[tune]\nbatches = 2\n', "give at least one parameter"),
    ('[tune.params]\n"train.lr" = { low = 0.5, high = 0.1 }\n', "need low < high"),
    ('[tune.params]\n"train.lrr" = { low = 0.1, high = 0.5 }\n', "unknown config key 'train.lrr'"),
    ('[tune]\nsampler = "grid"\n[tune.params]\n"train.lr" = { low = 0.1, high = 0.5 }\n', "valid: random, tpe"),
    ('[tune.params]\n"train.clip_norm" = { low = 1, high = 5 }\n', "not a per-member setting"),
    ('[tune]\nbogus = 1\n[tune.params]\n"train.lr" = { low = 0.1, high = 0.5 }\n', "unknown key 'bogus'"),
])
def test_bad_tune_tables_are_refused_with_the_key(tmp_path, table, message):
    exp = load_experiment(tiny(tmp_path, table))
    with pytest.raises((ValueError, KeyError, TypeError), match=message.replace("[", r"\[").replace("]", r"\]")):
        tune.TuneSpec.from_mapping(exp.tune, exp.base)


def test_seeded_random_search_draws_the_same_values_after_a_resume(tmp_path):
    exp = load_experiment(tiny(tmp_path))
    spec = tune.TuneSpec.from_mapping(exp.tune, exp.base)
    a = tune.open_study(exp, tmp_path / "a", spec)
    first = [(t.params) for t, _ in tune._batch_trials(a, spec, 0, exp.base)]
    b = tune.open_study(exp, tmp_path / "b", spec)  # a new study: trial numbers restart, as after a resume
    again = [(t.params) for t, _ in tune._batch_trials(b, spec, 0, exp.base)]
    assert first == again and len(first) == 2
    assert {p["model.gates"] for p in first} == {"none", "input+forget+output"}
    assert all(0.01 <= p["train.lr"] <= 0.3 and 0 <= p["model.forget_bias"] <= 2 for p in first)


@pytest.mark.slow
def test_tiny_search_resumes_selects_and_tabulates(tmp_path):
    """A killed search (one batch asked but never told) resumes: the batch is trained and
    told; the selection retrains the best trial of each gate set on fresh seeds."""
    path = tiny(tmp_path)
    exp = load_experiment(path)
    spec = tune.TuneSpec.from_mapping(exp.tune, exp.base)
    out = tmp_path / "tuning"
    study = tune.open_study(exp, out, spec)
    asked = tune._batch_trials(study, spec, 0, exp.base)  # then "killed": never trained nor told
    assert all(t.state == optuna.trial.TrialState.RUNNING for t, _ in asked)
    study = tune.run_study(exp, out, workers=1, show_progress=False)
    trials = study.get_trials()
    assert len(trials) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    for t in trials:  # each trial's value is its record's best dev accuracy
        cfg = spec.trial_config(exp.base, t.params, t.user_attrs["batch"], t.number)
        assert cfg.train.trial == t.number + 1 and cfg.train.seed == 11 + t.user_attrs["batch"]
        summary = json.loads((out / tune.TRIALS / cfg.run_id() / "summary.json").read_text())
        assert t.value == summary["dev_acc"]
    text = tune.selected_toml(exp, study, spec, str(path))
    (tmp_path / "selected.toml").write_text(text)
    selected = load_experiment(tmp_path / "selected.toml")
    assert list(selected.variants) == ["input+forget+output", "none"]
    assert selected.axes == {"train.seed": [21, 22]}
    for name, (_, best) in zip(["none", "input+forget+output"], tune.best_trials(study, spec)):
        assert math.isclose(selected.variants[name]["train.lr"], best.params["train.lr"], rel_tol=1e-5)
        assert best.value == max(t.value for t in trials if t.params["model.gates"] == name)
    assert selected.base.data.train_limit == 200 and selected.base.train.epochs == 2


def test_importance_finds_the_parameter_that_matters():
    """fANOVA on made-up trials whose value depends on the learning rate only."""
    rng = np.random.default_rng(0)
    spec = tune.TuneSpec((tune.Param("train.lr", 0.001, 1.0, log=True), tune.Param("model.forget_bias", 0.0, 2.0)),
                         {"model.gates": ["none", "input+forget+output"]})
    dists = tune._distributions(spec)
    study = optuna.create_study(direction="maximize")
    for _ in range(60):
        lr, fb = 10 ** rng.uniform(-3, 0), rng.uniform(0, 2)
        gates = str(rng.choice(["none", "input+forget+output"]))
        value = 80 - 5 * (math.log10(lr) + 1.5) ** 2
        study.add_trial(optuna.trial.create_trial(params={"train.lr": lr, "model.forget_bias": fb,
                                                           "model.gates": gates},
                                                   distributions=dists, value=value))
    rows = {r["term"]: r["share"] for r in tune.importance(study, spec, n_trees=32)}
    assert rows["learning rate"] > 0.8
    assert rows["gate set"] < 0.05 and rows["forget bias"] < 0.05
    assert set(rows) >= {"gate set x learning rate", "learning rate x forget bias"}


@pytest.mark.slow
def test_run_tuning_writes_the_tuned_table_importance_and_figures(tmp_path):
    """The whole job on the tiny search, against a hand-made untuned table of the same gate sets."""
    from ablation.core.records import TEST_EXAMPLES, write_record

    path = tiny(tmp_path, TINY.replace("train_limit = 200", "train_limit = 2000"))
    untuned = tmp_path / "untuned"
    labels = np.zeros(TEST_EXAMPLES["binary"], dtype=int)
    for gates, acc in (("none", (70.0, 72.0)), ("input+forget+output", (80.0, 81.0))):
        for seed, a in enumerate(acc, 1):
            cfg = apply(RunConfig(), {"model.gates": gates, "train.seed": seed})
            summary = {"status": "complete", "gates": gates, "seed": seed, "test_acc": a, "dev_acc": a,
                       "best_epoch": 1, "active_params": 1}
            write_record(untuned, cfg.run_id(), cfg.to_dict(), [{"epoch": 1, "train_loss": 0.5, "dev_acc": a}],
                         summary, labels, labels)
    written = tune.run_tuning(path, tmp_path / "out", untuned=untuned, workers=1, show_progress=False)
    assert {p.name for p in written} >= {"selected.toml", "tuned_table.md", "tuned_table.csv", "importance.csv",
                                         "trials.csv", "dev_vs_lr.png", "importance.png"}
    tuned = pd.read_csv(tmp_path / "out" / "tuned_table.csv").set_index("gates")
    assert list(tuned.index) == ["input+forget+output", "none"] and (tuned["n"] == 2).all()
    assert tuned.loc["none", "untuned_mean"] == 71.0 and tuned.loc["input+forget+output", "verdict"] == "reference"
    importance = pd.read_csv(tmp_path / "out" / "importance.csv")
    assert set(importance["term"]) >= {"gate set", "learning rate", "forget bias", "gate set x learning rate"}
    page = (tmp_path / "out" / "README.md").read_text()  # the page's reading comes from those files
    assert "\n- Tuned (each gate set's best-on-dev configuration of " in page and "fANOVA attributes" in page
    assert "![dev vs lr](figures/dev_vs_lr.png)" in page
