"""The aggregator: statistics on hand-computed cases, messy results directories, rendering."""

import math
from pathlib import Path

import numpy as np
import pytest
from _helpers import LECTURE, fake_grid

from ablation.analysis.aggregate import effects_table, gate_table, load_runs
from ablation.analysis.plots import plot_accuracy, plot_learning_curves, save_figures
from ablation.analysis.render import write_tables
from ablation.analysis.stats import fidelity
from ablation.core.config import RunConfig, apply
from ablation.core.errors import ConfigError
from ablation.core.records import write_record


def test_fidelity_known_orderings():
    f = fidelity([1, 2, 3, 4], [1, 2, 4, 3])
    assert f["kendall_tau"] == pytest.approx(4 / 6)  # 5 concordant, 1 discordant pair
    assert f["spearman_rho"] == pytest.approx(0.8)  # 1 - 6·2 / (4·15)
    assert f["mean_abs_diff"] == 0.5 and f["within"] == 4
    assert fidelity([80.0, 85.0, math.nan], [83.0, 85.5, 90.0])["within"] == 1


def _record(out: Path, gates: str, seed: int, acc: float | None, preds: np.ndarray, status="complete"):
    cfg = apply(RunConfig(), {"model.gates": gates, "train.seed": seed})
    summary = {"status": status, "gates": gates, "seed": seed, "test_acc": acc, "dev_acc": acc,
               "best_epoch": 2, "active_params": 100}
    metrics = [{"epoch": 1, "train_loss": 0.5, "dev_acc": 70.0}, {"epoch": 2, "train_loss": 0.4, "dev_acc": acc}]
    labels = np.array([0, 1, 1, 0])
    return write_record(out, cfg.run_id(), cfg.to_dict(), metrics, summary, labels, preds)


@pytest.fixture
def messy(tmp_path):
    full = np.array([0, 1, 1, 0])
    for seed, acc in ((1, 84.0), (2, 86.0), (3, 85.0)):
        _record(tmp_path, "input+forget+output", seed, acc, full)
    for seed, acc in ((1, 80.0), (2, 81.0)):  # seed 3 missing
        _record(tmp_path, "none", seed, acc, np.array([1, 1, 1, 0]))
    _record(tmp_path, "none", 4, None, None, status="diverged")
    half = _record(tmp_path, "output", 1, 82.0, full)
    (half / "summary.json").unlink()  # half-written by hand
    partial = tmp_path / ".partial-xyz"
    partial.mkdir()
    (partial / "config.json").write_text("{}")
    return tmp_path


def test_messy_results_directory(messy):
    r = load_runs(messy)
    assert len(r.runs) == 5 and len(r.diverged) == 1 and len(r.skipped) == 2
    table = gate_table(r, {"none": 80.6, "input+forget+output": 85.3})
    assert list(table["gates"]) == ["none", "input+forget+output"]
    none = table.iloc[0]
    assert none["n"] == 2 and none["mean"] == 80.5 and none["std"] == pytest.approx(math.sqrt(0.5))
    assert none["diff_vs_full"] == -4.5  # paired over seeds 1 and 2 only: (80-84 + 81-86)/2
    # t-interval over 2 seeds: 80.5 ± t_{1,.975}·s/√2 = 80.5 ± 12.706·0.5
    assert (none["ci_low"], none["ci_high"]) == (pytest.approx(80.5 - 6.353, abs=1e-3),
                                                 pytest.approx(80.5 + 6.353, abs=1e-3))
    # differences -4, -5: mean -4.5, sd √0.5, t = -9 on 1 df: p = 2·P(T > 9) = 1 - (2/π)·atan(9)
    assert none["p_paired"] == pytest.approx(1 - 2 / math.pi * math.atan(9))
    assert none["p_holm"] == none["p_paired"]  # a family of one
    assert none["verdict"] == "inconclusive"  # p = 0.070 > 0.05, and Δ is far outside ±0.5
    assert table.iloc[1]["n"] == 3 and table.iloc[1]["mean"] == 85.0 and table.iloc[1]["verdict"] == "reference"
    assert not any("mcnemar" in c for c in table.columns)
    text = write_tables(messy)
    assert ("5 complete runs; 2 incomplete records skipped (.partial-xyz (an unfinished temporary); "
            f"{r.skipped[1].split()[0]} (missing summary.json)); 1 diverged (not averaged in: none (seed 4))") in text
    assert "Warning: fewer than 3 seeds in none (n = 2)" in text
    assert "paired t-test over seeds of each row against i+f+o" in text and "±0.5 points" in text
    assert "| −4.5 | [" in text  # a minus sign, not a hyphen
    assert "$-$4.5" in (messy / "table.tex").read_text()
    assert not (messy / "effects.csv").exists()  # no full gate grid here


def test_tables_are_byte_identical_on_regeneration(messy, tmp_path):
    write_tables(messy)
    first = {ext: (messy / f"table.{ext}").read_bytes() for ext in ("md", "csv", "tex")}
    write_tables(messy)
    assert first == {ext: (messy / f"table.{ext}").read_bytes() for ext in ("md", "csv", "tex")}
    header = first["csv"].decode().splitlines()[0].split(",")
    assert header[:7] == ["gates", "lecture", "mean", "std", "ci_low", "ci_high", "n"]
    assert {"p_paired", "p_holm", "verdict", "diff_ci_low", "mdd"} <= set(header) and "p_mcnemar" not in header
    assert first["tex"].startswith(b"\\begin{tabular}") and b"\\toprule" in first["tex"]


def test_plots_return_figures_and_save(messy):
    r = load_runs(messy)
    fig, ax = plot_accuracy(gate_table(r, {"none": 80.6}), r.runs)
    assert ax.get_ylabel() == "test accuracy (%)" and len(ax.get_xticklabels()) == 2
    fig, ax = plot_learning_curves(r.curves)
    assert len(ax.get_lines()) == 2
    paths = save_figures(messy)
    assert sorted(p.name for p in paths) == ["accuracy.pdf", "accuracy.png", "learning_curves.pdf",
                                             "learning_curves.png"]
    pdf = (messy / "figures" / "accuracy.pdf").read_bytes()
    save_figures(messy)
    assert (messy / "figures" / "accuracy.pdf").read_bytes() == pdf


def test_table_command_formats(messy, capsys):
    from ablation import cli

    assert cli.main(["table", str(messy), "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("gates,lecture,mean,std,ci_low,ci_high,n")
    assert out.splitlines()[1].startswith("none,,80.5000,")


def test_variant_experiment_table_groups_and_probe_figures(tmp_path):
    """An experiment with [variants]: rows are the variants in file order, Δ against the first;
    a record matching no variant is skipped and counted; probes give their figures."""
    from ablation.analysis.aggregate import probe_frames
    from ablation.analysis.plots import plot_gate_statistics, plot_gradient_norms
    from ablation.core.config import load_experiment

    exp_path = tmp_path / "cellsx.toml"
    exp_path.write_text('[grid]\n"train.seed" = [1, 2]\n[variants]\nLSTM = {}\n'
                        'GRU = { "model.cell" = "gru" }\nNIG = { "model.gates" = "forget+output" }\n')
    exp = load_experiment(exp_path)
    out = tmp_path / "results"
    labels = np.array([0, 1, 1, 0])
    accs = {"LSTM": (84.0, 86.0), "GRU": (83.0, 84.0), "NIG": (80.0, 82.0)}
    for cfg in exp.runs():
        name = exp.label(cfg.to_dict())
        acc = accs[name][cfg.train.seed - 1]
        gates = {g: {"mean": [0.5, 0.6], "saturated": [0.0, 0.1]} for g in cfg.model.gates}
        bins = [{"lengths": [1, 10], "distance": [0, 1], "n": [60, 60], "mean": [0.0, -1.0], "q10": [0.0, -1.5],
                 "q50": [0.0, -1.0], "q90": [0.0, -0.5]},
                {"lengths": [11, None], "distance": [0, 1], "n": [60, 40], "mean": [0.0, -1.0], "q10": [0.0, -1.5],
                 "q50": [0.0, -1.0], "q90": [0.0, -0.5]}]
        probes = {"version": 2, "gradient_decay": {"checkpoints": {"init": {"bins": bins}, "best": {"bins": bins}}},
                  "gates": gates, "positions_n": [60, 60]}
        summary = {"status": "complete", "gates": "+".join(cfg.model.gates), "seed": cfg.train.seed,
                   "test_acc": acc, "dev_acc": acc, "best_epoch": 1, "active_params": 10}
        write_record(out, cfg.run_id(), cfg.to_dict(), [{"epoch": 1, "train_loss": 0.4, "dev_acc": acc}],
                     summary, labels, labels, probes)
    stray = apply(RunConfig(), {"model.gates": "input"})
    write_record(out, stray.run_id(), stray.to_dict(), [], {"status": "complete", "gates": "input", "seed": 1,
                 "test_acc": 1.0, "dev_acc": 1.0, "best_epoch": 1, "active_params": 1}, labels, labels)
    r = load_runs(out, exp)
    assert len(r.runs) == 6 and len(r.skipped) == 1
    table = gate_table(r)
    assert list(table["variant"]) == ["LSTM", "GRU", "NIG"]
    assert table.set_index("variant").loc["GRU", "diff_vs_full"] == -1.5
    text = write_tables(out, experiment=exp_path)
    assert "| variant |" in text and "Δ vs LSTM" in text and "of each row against LSTM" in text
    grads, gate_stats = probe_frames(r)
    # 6 runs x 2 checkpoints x (2 distances in the first bin + 1 with >= 50 sentences in the second)
    assert len(grads) == 36 and set(gate_stats["gate"]) == {"input", "forget", "output", "reset", "update"}
    fig, ax = plot_gradient_norms(grads)
    assert ax.get_yscale() == "log" and len(ax.get_lines()) == 3
    assert len([a for a in fig.axes if a.get_yscale() == "log"]) == 4  # 2 length bins x 2 checkpoints
    fig, _ = plot_gate_statistics(gate_stats)
    assert len(fig.axes) == 5
    paths = save_figures(out, experiment=exp_path)
    assert {p.stem for p in paths} == {"accuracy", "learning_curves", "gradient_norms", "gate_statistics"}




def test_full_gate_grid_gives_effects_holm_and_verdicts(tmp_path):
    """8 gate sets x 3 seeds: accuracy = 80 + 2·[input] + 1·[forget] + seed noise in the input
    gate's worth: the effects come out as built, Holm is over the 7 comparisons, and the
    verdicts follow the adjusted p and TOST."""
    noise = [-0.1, 0.0, 0.1]
    accs = {g: [80 + 2 * ("input" in g) + 1 * ("forget" in g) + (e if "input" in g else 0) for e in noise]
            for g in LECTURE}
    accs["input+forget"] = [a + d for a, d in zip(accs["input+forget+output"], (0.01, -0.01, 0.0))]
    fake_grid(tmp_path, accs)
    r = load_runs(tmp_path)
    table = gate_table(r, margin=0.5)
    t = table.set_index("gates")
    from ablation.analysis.stats import holm
    assert list(table["p_holm"].dropna()) == pytest.approx(list(holm(table["p_paired"].dropna())))
    assert t.loc["input+forget", "verdict"] == "equivalent"  # Δ ≈ 0, tiny spread
    assert t.loc["none", "verdict"] == "worse" and t.loc["input+forget+output", "verdict"] == "reference"
    assert table.attrs["family"] == 7
    e = effects_table(r).set_index("term")
    assert list(e.columns) == ["effect", "ci_low", "ci_high", "p", "p_holm", "n"]
    assert e.loc["input", "effect"] == pytest.approx(2.0, abs=0.01) and e.loc["forget", "effect"] == pytest.approx(1.0)
    assert e.loc["output", "effect"] == pytest.approx(0.0, abs=0.01)
    write_tables(tmp_path)
    assert (tmp_path / "effects.csv").read_text().startswith("term,effect,ci_low,ci_high,p,p_holm,n\ninput,")
    assert "Factorial effects of the gates" in (tmp_path / "table.md").read_text()
    del accs["output"]  # seven gate sets: no 2^3 design
    fake_grid(tmp_path / "seven", accs)
    assert effects_table(load_runs(tmp_path / "seven")).empty


def test_margin_from_the_experiment_file(tmp_path):
    from ablation.core.config import load_experiment

    exp = tmp_path / "x.toml"
    exp.write_text("[stats]\nmargin = 2.0\n")
    assert load_experiment(exp).margin == 2.0 and load_experiment(None).margin == 0.5
    exp.write_text("[stats]\nmargin = -1\n")
    with pytest.raises(ValueError, match="margin must be a number"):
        load_experiment(exp)
    exp.write_text("[stats]\nmargins = 1\n")
    with pytest.raises(ConfigError, match="unknown key 'margins' in \\[stats\\]; valid: margin, interval"):
        load_experiment(exp)
    exp.write_text('[stats]\ninterval = "percentile"\n')
    with pytest.raises(ValueError, match="valid: t, bootstrap-t, bca"):
        load_experiment(exp)


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_table_command_on_missing_or_empty_directory(tmp_path, capsys, make):
    from ablation import cli

    path = tmp_path / "results"
    if make == "empty":
        path.mkdir()
    assert cli.main(["table", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ablation: error: ") and str(path) in err
    assert ("no such results directory" if make == "missing" else "no run records") in err


def test_figures_name_groups_in_words_and_keep_legends_off_the_data(tmp_path):
    from ablation.analysis.aggregate import group_label
    from ablation.analysis.plots import plot_interactions

    assert group_label(["config.model.peephole"], ["diagonal"]) == "diagonal peepholes"
    assert group_label(["config.data.granularity", "config.model.embeddings"],
                       ["sentences", "random"]) == "trained on sentences, random vectors"
    assert group_label(["config.train.lr"], [0.1]) == "lr: 0.1"
    accs = {g: [80 + len(g) / 10 + s for s in (0.0, 0.3, -0.2)] for g in LECTURE}
    for kind in ("none", "diagonal"):
        fake_grid(tmp_path, accs, peephole=kind)
    r = load_runs(tmp_path)
    table = gate_table(r)
    fig, ax = plot_accuracy(table, r.runs)
    fig.canvas.draw()
    legend = ax.get_legend()
    texts = [t.get_text() for t in legend.get_texts()]
    assert "no peepholes: mean, 95% t-interval of the mean" in texts and "one seed (one dot each)" in texts
    assert legend.get_window_extent().x0 >= ax.get_window_extent().x1  # right of the data, not on it
    fig, _ = plot_interactions(table)
    assert len(fig.axes) == 4  # 2 groups x output gate off/on
    assert {a.get_title() for a in fig.axes} >= {"diagonal peepholes\noutput gate on"}
    fig, ax = plot_learning_curves(r.curves)
    assert "line: mean over seeds\nband: ±1 std" in [t.get_text() for t in fig.legends[0].get_texts()]
    assert "interactions" in {p.stem for p in save_figures(tmp_path)}


def test_interactions_test_the_change_of_a_gap_directly(tmp_path):
    """Two peephole kinds, 3 seeds: `o`'s gap to the full cell is −1 with no peepholes and −3 with full
    peepholes on every seed but one (−2.5): with no peepholes against full (the kinds in sorted order, without
    an experiment file) the gap changes by +1.833, paired by seed."""
    from ablation.analysis.aggregate import interaction_table

    for kind, gap in (("none", [-1.0, -1.0, -1.0]), ("full", [-3.0, -3.0, -2.5])):
        fake_grid(tmp_path, {"output": [80 + g for g in gap], "input+forget+output": [80.0, 80.0, 80.0]},
                  peephole=kind)
    r = load_runs(tmp_path)
    (row,) = interaction_table(r).to_dict("records")
    assert (row["gates"], row["a"], row["b"], row["n"]) == ("output", "full", "none", 3)
    assert row["change"] == pytest.approx(11 / 6)
    assert row["p_holm"] == row["p"] < 0.01


def test_tuning_change_is_tested_paired_by_seed():
    """Tuned and untuned runs on the same 4 seeds. `o`'s gap to the full cell is −2 untuned and −1 tuned on
    every seed but one (−1.2): a change of +0.95, paired; `i`'s gap is the same ±0.05, so unchanged within ±0.5;
    the full cell gains 0.1 over its default settings."""
    import pandas as pd

    from ablation.analysis.aggregate import tuning_change

    seeds = [1, 2, 3, 4]
    noise = [0.0, 0.3, -0.2, 0.1]
    untuned = pd.DataFrame([{"gates": g, "seed": s, "test_acc": 80 + z + off} for g, off in
                            (("input+forget+output", 0), ("output", -2), ("input", -1)) for s, z in zip(seeds, noise)])
    tuned = untuned.copy()
    tuned.loc[tuned["gates"] == "input+forget+output", "test_acc"] += 0.1
    tuned.loc[tuned["gates"] == "output", "test_acc"] += [1.1, 1.1, 1.1, 0.9]
    tuned.loc[tuned["gates"] == "input", "test_acc"] += [0.15, 0.05, 0.1, 0.1]
    c = tuning_change(tuned, untuned).set_index("gates")
    assert c.loc["output", "delta_change"] == pytest.approx(0.95)
    assert c.loc["output", "delta_change_verdict"] == "changed"
    assert c.loc["input", "delta_change"] == pytest.approx(0.0, abs=1e-9)
    assert c.loc["input", "delta_change_verdict"] == "unchanged"
    assert c.loc["input+forget+output", "vs_default"] == pytest.approx(0.1)
    assert pd.isna(c.loc["input+forget+output", "delta_change"]) and (c["n_paired"] == 4).all()
