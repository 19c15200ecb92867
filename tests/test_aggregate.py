"""The aggregator: statistics on hand-computed cases, messy results directories, rendering."""

import math
from pathlib import Path

import numpy as np
import pytest

from ablation.aggregate import bootstrap_ci, fidelity, gate_table, load_runs, mcnemar, paired_test, write_tables
from ablation.config import RunConfig, apply
from ablation.plots import plot_accuracy, plot_learning_curves, save_figures
from ablation.records import write_record


def test_bootstrap_ci_hand_computed():
    # n=2: the resampled mean of [0, 10] is 0, 5 or 10 with probability 1/4, 1/2, 1/4,
    # so the 2.5% and 97.5% quantiles are 0 and 10.
    assert bootstrap_ci([0.0, 10.0]) == (0.0, 10.0)
    # [1, 2, 3]: P(mean = 1) = P(mean = 3) = 1/27 > 2.5%, so the bounds are 1 and 3.
    assert bootstrap_ci([1.0, 2.0, 3.0]) == (1.0, 3.0)
    assert bootstrap_ci([84.0] * 5) == (84.0, 84.0)
    lo, hi = bootstrap_ci(np.arange(20.0))
    assert 6.5 < lo < 9.5 < 10.5 < hi < 12.5  # around the mean 9.5, about ±2 standard errors
    assert bootstrap_ci([85.0]) == (pytest.approx(math.nan, nan_ok=True),) * 2
    assert bootstrap_ci(np.arange(20.0)) == (lo, hi)  # fixed seed: same bounds every time


def test_paired_t_test_hand_computed():
    # differences 1, 2, 3: mean 2, sd 1, t = 2√3 with 2 df; P(|T| > t) = 1 - t/√(2 + t²) = 0.0742
    diff, p = paired_test([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    assert diff == 2.0
    assert p == pytest.approx(1 - 2 * math.sqrt(3) / math.sqrt(14), rel=1e-9)
    assert paired_test([1.0, 2.0], [1.0, 2.0]) == (0.0, 1.0)


def test_mcnemar_known_table():
    # 10 cases only A gets right, 2 only B gets right: exact p = 2·P(X ≤ 2 | 12, ½) = 158/4096
    y = np.ones(30, dtype=int)
    a = np.array([1] * 10 + [0] * 2 + [1] * 8 + [0] * 10)
    b = np.array([0] * 10 + [1] * 2 + [1] * 8 + [0] * 10)
    n01, n10, p = mcnemar(y, a, b)
    assert (n01, n10) == (10, 2)
    assert p == pytest.approx(158 / 4096, rel=1e-12)
    assert mcnemar(y, a, a)[2] == 1.0


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
    assert (none["mcnemar_b"], none["mcnemar_c"]) == (0, 2)  # label 0 at index 0, both seeds
    assert table.iloc[1]["n"] == 3 and table.iloc[1]["mean"] == 85.0
    text = write_tables(messy)
    assert ("5 complete runs; 2 incomplete records skipped (.partial-xyz (an unfinished temporary); "
            f"{r.skipped[1].split()[0]} (missing summary.json)); 1 diverged (not averaged in: none (seed 4))") in text


def test_tables_are_byte_identical_on_regeneration(messy, tmp_path):
    write_tables(messy)
    first = {ext: (messy / f"table.{ext}").read_bytes() for ext in ("md", "csv", "tex")}
    write_tables(messy)
    assert first == {ext: (messy / f"table.{ext}").read_bytes() for ext in ("md", "csv", "tex")}
    header = first["csv"].decode().splitlines()[0].split(",")
    assert header[:7] == ["gates", "lecture", "mean", "std", "ci_low", "ci_high", "n"]
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
    from ablation.aggregate import probe_frames
    from ablation.config import load_experiment
    from ablation.plots import plot_gate_statistics, plot_gradient_norms

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
        probes = {"grad_norm": {"distance": [0, 1], "mean": [1.0, 0.1], "log10_mean": [0.0, -1.0], "n": [60, 60]},
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
    assert "| variant |" in text and "Δ vs LSTM" in text and "compare each row with LSTM" in text
    grads, gate_stats = probe_frames(r)
    assert len(grads) == 12 and set(gate_stats["gate"]) == {"input", "forget", "output", "reset", "update"}
    _, ax = plot_gradient_norms(grads)
    assert ax.get_yscale() == "log" and len(ax.get_lines()) == 3
    fig, _ = plot_gate_statistics(gate_stats)
    assert len(fig.axes) == 5
    paths = save_figures(out, experiment=exp_path)
    assert {p.stem for p in paths} == {"accuracy", "learning_curves", "gradient_norms", "gate_statistics"}
