"""Checkpoints, `ablation predict` and `ablation evaluate`, SST-5, and SST's tokenisation."""

import csv
import json

import numpy as np
import pytest
import torch

from ablation import cli
from ablation.core.config import apply, load_experiment
from ablation.core.records import CHECKPOINT, FILES, PROBES, is_complete
from ablation.predict import evaluate, predict, tokenize
from ablation.running.job import train_and_record
from ablation.tasks.sst import LABEL_NAMES, load_sst
from ablation.training.checkpoint import FORMAT, load_run

GATES = ("none", "input+output", "input+forget+output")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One pack of three smoke runs (2,000 phrases, 2 epochs), as the grid trains them."""
    torch.set_num_threads(1)
    base = load_experiment("experiments/smoke.toml").base
    cfgs = [apply(base, {"model.gates": g}) for g in GATES]
    return train_and_record(cfgs, tmp_path_factory.mktemp("runs"), "cpu")


def recorded_predictions(run) -> np.ndarray:
    with open(run / "predictions.csv") as f:
        return np.array([int(row["prediction"]) for row in csv.DictReader(f)])


# --- tokenisation --------------------------------------------------------------------------

@pytest.mark.parametrize("text, tokens", [
    ("a gripping, funny film", ["a", "gripping", ",", "funny", "film"]),
    ('It isn\'t (quite) "great".', ["It", "is", "n't", "-LRB-", "quite", "-RRB-", "``", "great", "''", "."]),
    ("I can't say it's not the film's best... or is it?",
     ["I", "ca", "n't", "say", "it", "'s", "not", "the", "film", "'s", "best", "...", "or", "is", "it", "?"]),
    ("The writer/director's *best* -- well-made; 9/11, 1,000 times!",
     ["The", "writer\\/director", "'s", "\\*best\\*", "--", "well-made", ";", "9\\/11", ",", "1,000", "times", "!"]),
    ("\u201cSmart\u201d and wry \u2014 we\u2019ll see", ["``", "Smart", "''", "and", "wry", "--", "we", "'ll", "see"]),
    ("Mr. Smith won't: I'm gonna cry", ["Mr.", "Smith", "wo", "n't", ":", "I", "'m", "gon", "na", "cry"]),
])
def test_tokenize_writes_sst_tokens(text, tokens):
    assert tokenize(text) == tokens


def test_tokenize_keeps_case_because_the_vocabulary_does(sst_dir):
    vocab = {t for ex in load_sst("train", data_dir=sst_dir) for t in ex.tokens}
    assert {"The", "the", "-LRB-", "n't", "ca", "``", "''", "writer\\/director"} <= vocab
    assert "(" not in vocab and "can't" not in vocab and '"' not in vocab
    assert tokenize("The the") == ["The", "the"]


def test_tokenize_leaves_sst_tokens_as_they_are(sst_dir):
    """SST's own dev sentences, joined by spaces, come back as SST tokenised them."""
    dev = load_sst("dev", labels="fine", data_dir=sst_dir)
    same = sum(tokenize(" ".join(ex.tokens)) == ex.tokens for ex in dev)
    assert same / len(dev) > 0.99


# --- checkpoints -----------------------------------------------------------------------------

def test_every_record_keeps_its_checkpoint_of_plain_tensors(runs):
    for run in runs:
        assert sorted(p.name for p in run.iterdir()) == sorted([*FILES, PROBES, CHECKPOINT])
        blob = torch.load(run / CHECKPOINT, weights_only=True)  # nothing pickled but tensors and lists
        assert blob["format"] == FORMAT and blob["vocab"][:2] == ["<pad>", "<unk>"]
        assert len(blob["vocab"]) == blob["state"]["embedding"].shape[0] == len(set(blob["vocab"]))
        assert blob["state"]["cls_weight"].shape == (2, 8) and blob["state"]["weight_hh"].shape == (32, 8)
        assert all(isinstance(t, torch.Tensor) and t.device.type == "cpu" for t in blob["state"].values())


def test_a_record_without_checkpoint_is_complete_but_cannot_predict(runs, tmp_path, capsys):
    import shutil

    old = shutil.copytree(runs[0], tmp_path / runs[0].name)
    (old / CHECKPOINT).unlink()
    assert is_complete(old)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_run(old)
    assert cli.main(["predict", str(old), "a film"]) == 2
    assert "checkpoint.pt: no checkpoint" in capsys.readouterr().err
    assert cli.main(["evaluate", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such run directory" in capsys.readouterr().err


def test_a_foreign_checkpoint_format_is_refused(runs, tmp_path):
    import shutil

    run = shutil.copytree(runs[0], tmp_path / "run")
    blob = torch.load(run / CHECKPOINT, weights_only=True)
    torch.save({**blob, "format": FORMAT + 1}, run / CHECKPOINT)
    with pytest.raises(ValueError, match=f"format {FORMAT + 1}"):
        load_run(run)


# --- evaluate ------------------------------------------------------------------------------

@pytest.mark.parametrize("member", range(len(GATES)))
def test_evaluate_recomputes_the_recorded_accuracy_exactly(runs, member):
    run = load_run(runs[member])
    summary = json.loads((runs[member] / "summary.json").read_text())
    test = evaluate(run, "test")
    assert test.accuracy == summary["test_acc"] == test.recorded and test.sentences == 1821
    np.testing.assert_array_equal(test.predictions, recorded_predictions(runs[member]))
    assert evaluate(run, "dev").accuracy == summary["dev_acc"]  # the best epoch's dev accuracy


def test_evaluate_command(runs, capsys):
    assert cli.main(["evaluate", str(runs[2]), "--split", "dev"]) == 0
    out = capsys.readouterr().out
    dev = json.loads((runs[2] / "summary.json").read_text())["dev_acc"]
    assert out == f"dev accuracy {dev:.2f}% on 872 sentences; the record says {dev:.2f}% (equal)\n"
    with pytest.raises(SystemExit):
        cli.main(["evaluate", str(runs[2]), "--split", "train"])


# --- predict -------------------------------------------------------------------------------

def test_predict_on_raw_text_agrees_with_the_recorded_test_predictions(runs, sst_dir):
    """Test sentences given as text get the class the record holds for them."""
    test = load_sst("test", data_dir=sst_dir)
    recorded = recorded_predictions(runs[2])
    picks = [k for k in range(0, len(test), 37) if tokenize(" ".join(test[k].tokens)) == test[k].tokens][:25]
    preds = predict(load_run(runs[2]), [" ".join(test[k].tokens) for k in picks])
    assert [p.label for p in preds] == [int(recorded[k]) for k in picks]
    for p in preds:
        assert abs(sum(p.probs) - 1) < 1e-5 and p.probs[p.label] == max(p.probs) and p.name in LABEL_NAMES["binary"]


def test_predict_reports_unknown_words_and_the_gates_present(runs):
    (p,) = predict(load_run(runs[1]), ["a Zyxqwv film , not Qwzzy"])  # input+output: no forget gate
    assert p.tokens == ["a", "Zyxqwv", "film", ",", "not", "Qwzzy"] and p.unknown == ["Zyxqwv", "Qwzzy"]
    assert list(p.gates) == ["input", "output"]
    for values in p.gates.values():
        assert len(values) == 6 and all(0 < v < 1 for v in values)
    (q,) = predict(load_run(runs[0]), ["a film"])
    assert q.gates == {}  # the gateless cell
    with pytest.raises(ValueError, match="no tokens"):
        predict(load_run(runs[0]), ["   "])


def test_predict_command_prints_label_probability_gates_and_plots(runs, tmp_path, capsys):
    lines = tmp_path / "sentences.txt"
    lines.write_text("a gripping , funny film\n\nIt isn't (quite) great.\n")
    plot = tmp_path / "fig" / "gates.png"
    assert cli.main(["predict", str(runs[2]), "a dull mess", "--file", str(lines), "--gates",
                     "--plot", str(plot)]) == 0
    out = capsys.readouterr().out.splitlines()
    heads = [line for line in out if not line.startswith("  ")]
    assert len(heads) == 3
    for head, text in zip(heads, ["a dull mess", "a gripping , funny film", "It isn't (quite) great."]):
        name, prob, rest = head.split("\t")
        assert name in LABEL_NAMES["binary"] and 0.5 <= float(prob) <= 1 and rest.startswith(text)
    assert out[1].split() == ["token", "input", "forget", "output"]
    assert [line.split()[0] for line in out[2:5]] == ["a", "dull", "mess"]
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert cli.main(["predict", str(runs[0]), "a film", "--plot", str(tmp_path / "none.png")]) == 2
    assert "no gates to plot" in capsys.readouterr().err
    assert cli.main(["predict", str(runs[0])]) == 2
    assert "nothing to predict" in capsys.readouterr().err


# --- SST-5 ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_fine_labels_train_a_five_class_model(tmp_path, capsys, monkeypatch):
    torch.set_num_threads(1)
    assert cli.main(["train", "--config", "experiments/smoke.toml", "--set", "data.labels=fine",
                     "--set", "data.train_limit=1500", "--set", "train.epochs=2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    (run,) = tmp_path.iterdir()
    assert out.startswith("test ") and out.endswith(f"record: {run}\n") and out.count("\n") == 1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["num_classes"] == 5 and summary["status"] == "complete"
    with open(run / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2210  # fine keeps the neutral test sentences
    assert {int(r["label"]) for r in rows} == set(range(5))
    assert {int(r["prediction"]) for r in rows} <= set(range(5))
    loaded = load_run(run)
    assert loaded.model.num_classes == 5 and loaded.label_names == LABEL_NAMES["fine"]
    assert evaluate(loaded).accuracy == summary["test_acc"]
    (p,) = predict(loaded, ["a gripping , funny film"])
    assert len(p.probs) == 5 and p.name == LABEL_NAMES["fine"][p.label]
    from ablation.analysis import plots

    titles = []
    real = plots.plot_accuracy
    monkeypatch.setattr(plots, "plot_accuracy", lambda *a, **kw: titles.append(kw["title"]) or real(*a, **kw))
    plots.save_figures(tmp_path, experiment="experiments/fine.toml")
    assert titles == ["SST-5 test accuracy"]


def test_fine_experiment_is_the_lecture_grid_on_five_classes():
    fine, lecture = load_experiment("experiments/fine.toml"), load_experiment("experiments/lecture.toml")
    assert fine.base.data.labels == "fine" and not fine.reference
    assert apply(fine.base, {"data.labels": "binary"}) == lecture.base
    # the lecture's 8 gate sets on its first 5 seeds (the SST-5 grid is twice SST-2's data)
    assert fine.axes["model.gates"] == lecture.axes["model.gates"]
    assert fine.axes["train.seed"] == lecture.axes["train.seed"][:5] and len(fine.runs()) == 40
