"""`records.check_record`, the one definition of a valid record: identity, types and ranges, classes;
and `checkpoint.load_run` on damaged checkpoints: one line naming the file, never a traceback."""

import json
import math
import re
import shutil

import numpy as np
import pytest
import torch

from ablation import cli
from ablation.analysis.aggregate import load_runs
from ablation.core.config import RunConfig, apply
from ablation.core.errors import DataError
from ablation.core.records import (
    CHECKPOINT,
    SUMMARY_CHECKS,
    SUMMARY_KEYS,
    Summary,
    check_record,
    is_complete,
    write_record,
)
from ablation.core.spec import gates_name
from ablation.models.classifier import PackedClassifier
from ablation.predict import predict
from ablation.tasks.sst import Vocab
from ablation.training.checkpoint import load_run, member_checkpoint

# A small model: 4-d embeddings, hidden size 8, a handful of tokens.
CONFIG = apply(RunConfig(), {"model.embeddings": "random", "model.embedding_dim": 4, "model.hidden_size": 8,
                             "model.gates": "input+output", "train.seed": 3, "train.epochs": 2})
TOKENS = ["good", "bad", "film", "a", "dull"]
N = 6  # test examples


def _summary(cfg: RunConfig, **changes) -> dict:
    """Every key the trainer and the job write (`Summary` but test_examples, which write_record adds)."""
    m = cfg.model
    return {"status": "complete", "gates": gates_name(m.gates), "seed": cfg.train.seed, "dev_acc": 75.0,
            "test_acc": 74.5, "best_epoch": 2, "active_params": 1234, "failure_reason": None,
            "diverged_epoch": None, "cell": m.cell, "peephole": m.peephole, "variant": m.variant,
            "embedding_params": 28, "num_classes": 2, "embedding_coverage": {"source": "random"},
            "pack_size": 1, "steps": 20, "device": "cpu", "threads": 1, "scan": "python", "cuda_graphs": False,
            "wall_seconds": 1.25, "train_examples": 100, "run_id": cfg.run_id(), "versions": {}, "machine": {},
            **changes}


def _checkpoint(cfg: RunConfig, hidden_size: int | None = None) -> dict:
    vocab = Vocab(TOKENS)
    model = PackedClassifier([cfg.model.spec()], [cfg.train.seed], vocab_size=len(vocab),
                             embedding_dim=cfg.model.embedding_dim,
                             hidden_size=hidden_size or cfg.model.hidden_size, num_classes=2)
    return member_checkpoint(model, 0, vocab)


def _record(out, cfg: RunConfig = CONFIG, *, diverged: bool = False, checkpoint: bool = True, **changes):
    labels = np.arange(N) % 2
    if diverged:
        changes = {"status": "diverged", "dev_acc": None, "test_acc": None, "best_epoch": None,
                   "diverged_epoch": 1, "failure_reason": "train loss not finite in epoch 1", **changes}
        metrics = []
    else:
        metrics = [{"epoch": e, "train_loss": 0.6 - e / 10, "dev_acc": 70.0 + e, "seconds": 0.5} for e in (1, 2)]
    return write_record(out, cfg.run_id(), cfg.to_dict(), metrics, _summary(cfg, **changes), labels,
                        None if diverged else labels[::-1].copy(),
                        checkpoint=_checkpoint(cfg) if checkpoint and not diverged else None)


def _edit_json(path, **changes):
    obj = json.loads(path.read_text())
    obj.update(changes)
    path.write_text(json.dumps(obj))


# --- check_record ---------------------------------------------------------------------------------

def test_a_record_as_written_is_valid(tmp_path):
    rec = _record(tmp_path)
    assert rec.name == CONFIG.run_id() and check_record(rec) is None and is_complete(rec)
    diverged = _record(tmp_path, apply(CONFIG, {"train.seed": 4}), diverged=True)
    assert check_record(diverged) is None  # null accuracies, no metrics, predictions -1


def test_every_summary_key_has_its_check():
    assert set(Summary.__annotations__) == set(SUMMARY_CHECKS)
    assert set(SUMMARY_KEYS) <= set(SUMMARY_CHECKS)


def test_newer_keys_may_be_absent_but_the_core_may_not(tmp_path):
    rec = _record(tmp_path)
    path = rec / "summary.json"
    full = json.loads(path.read_text())
    old = {k: full[k] for k in (*SUMMARY_KEYS, "test_examples")}  # older than the other keys (6 test examples)
    path.write_text(json.dumps(old))
    assert check_record(rec) is None
    path.write_text(json.dumps({k: v for k, v in old.items() if k != "test_acc"}))
    assert check_record(rec) == "summary.json lacks test_acc"


# One value of each kind put in place of a field; per field, the kinds that are a valid value of it
# (and agree with config.json). Every other mutant must be refused with a reason naming the field.
MUTANTS = {"str": "x", "null": None, "bool": True, "float": 1.5, "int": 2, "negative": -1, "huge": 850,
           "nan": math.nan, "infinity": math.inf, "list": [1], "object": {}}
VALID = {
    "dev_acc": {"float", "int"}, "test_acc": {"float", "int"},  # null: not for a complete run
    "best_epoch": {"int"},  # 850: after the last epoch of 2
    "active_params": {"int", "huge"}, "embedding_params": {"int", "huge"}, "pack_size": {"int", "huge"},
    "steps": {"int", "huge"}, "threads": {"int", "huge"}, "train_examples": {"int", "huge"},
    "failure_reason": {"str", "null"}, "diverged_epoch": {"null", "int"},
    "device": {"str"}, "scan": {"str"}, "cuda_graphs": {"bool"}, "wall_seconds": {"float", "int", "huge"},
    "embedding_coverage": {"object"}, "versions": {"object"}, "machine": {"object"},
    "num_classes": {"int"},  # 2: the binary task's
    # a generated task's (an SST record has none: these hold only if present)
    "task": set(), "dev_metric": {"float", "int", "huge", "null"}, "test_metric": {"float", "int", "huge", "null"},
    "baseline_dev": {"float", "int", "huge"}, "baseline_test": {"float", "int", "huge"},
}
# A valid count of test examples that is not the file's: refused, by predictions.csv's row count.
SIZE_MISMATCH = {("test_examples", kind): "predictions.csv has 6 rows; the test set has" for kind in ("int", "huge")}


@pytest.mark.parametrize("field", sorted(SUMMARY_CHECKS))
def test_each_field_of_the_summary_has_its_type_and_range(tmp_path, field):
    rec = _record(tmp_path, checkpoint=False)
    path = rec / "summary.json"
    original = path.read_text()
    for kind, value in MUTANTS.items():
        _edit_json(path, **{field: value})
        reason = check_record(rec)  # never raises
        runs = load_runs(tmp_path)  # nor does the table: a record it refuses is skipped, with its reason
        assert (len(runs.runs), runs.skipped) == ((1, []) if reason is None else (0, [f"{rec.name} ({reason})"]))
        if kind in VALID.get(field, ()):
            assert reason is None, (field, kind, reason)
        elif (field, kind) in SIZE_MISMATCH:
            assert reason.startswith(SIZE_MISMATCH[field, kind]), (field, kind, reason)
        else:
            assert reason is not None and f"summary.json {field}" in reason, (field, kind, reason)
            assert "\n" not in reason
        path.write_text(original)
    assert check_record(rec) is None


def test_field_reasons_say_what_is_wanted(tmp_path):
    rec = _record(tmp_path, checkpoint=False)
    _edit_json(rec / "summary.json", test_acc=850)
    assert check_record(rec) == "summary.json test_acc: expected a finite number in [0, 100] or null, got int 850"
    _edit_json(rec / "summary.json", test_acc="85.0")
    assert check_record(rec) == "summary.json test_acc: expected a finite number in [0, 100] or null, got str '85.0'"
    _edit_json(rec / "summary.json", test_acc=None)
    assert check_record(rec) == "summary.json test_acc: null, but the status is complete"
    _edit_json(rec / "summary.json", test_acc=80.0, gates="input")
    assert check_record(rec) == ("summary.json gates 'input' disagrees with config.json's model.gates "
                                 "(which gives 'input+output')")


def test_an_edited_config_is_not_a_record_of_this_run(tmp_path):
    rec = _record(tmp_path)
    config = json.loads((rec / "config.json").read_text())
    assert config["train"]["lr"] == 0.05
    config["train"]["lr"] = 0.5
    (rec / "config.json").write_text(json.dumps(config))
    edited = apply(CONFIG, {"train.lr": 0.5}).run_id()
    assert check_record(rec) == (f"config.json hashes to run id {edited}, not this folder's name {rec.name} "
                                 "(edited or copied)")
    assert not is_complete(rec)  # so the grid trains it again (after moving it aside)


def test_a_config_that_does_not_load_names_its_key(tmp_path):
    rec = _record(tmp_path, checkpoint=False)
    original = (rec / "config.json").read_text()
    for section, key, value in (("model", "hidden_size", "big"), ("model", "gates", ["bogus"]),
                                ("train", "lr", -1.0), ("train", "momentum", 0.9), ("data", "labels", "ternary")):
        config = json.loads(original)
        config[section][key] = value
        (rec / "config.json").write_text(json.dumps(config))
        reason = check_record(rec)
        assert reason.startswith("config.json") and f"{section}.{key}" in reason, reason
    config = json.loads(original)
    config["model"].update(cell="gru", gates=["reset"], peephole="diagonal")  # peepholes are LSTM-only
    (rec / "config.json").write_text(json.dumps(config))
    assert "model.peephole" in check_record(rec)


def test_a_record_copied_under_another_runs_id_is_refused(tmp_path):
    rec = _record(tmp_path)
    other = apply(CONFIG, {"train.seed": 9}).run_id()
    copy = shutil.copytree(rec, tmp_path / other)
    assert check_record(copy) == (f"config.json hashes to run id {rec.name}, not this folder's name {other} "
                                  "(edited or copied)")
    # a copy whose config was made to match: summary.json still names the run it came from
    config = apply(CONFIG, {"train.seed": 9}).to_dict()
    (copy / "config.json").write_text(json.dumps(config))
    _edit_json(copy / "summary.json", seed=9)
    assert check_record(copy) == f"summary.json run_id is {rec.name}, not this folder's name {other} (copied)"
    # load_run reads a copy kept anywhere, as long as its own files agree
    assert check_record(shutil.copytree(rec, tmp_path / "kept"), identity=False) is None
    assert check_record(copy, identity=False) == (f"config.json hashes to run id {other}, but summary.json run_id "
                                                  f"is {rec.name} (edited)")


def test_predictions_outside_the_tasks_classes_are_refused(tmp_path):
    rec = _record(tmp_path, checkpoint=False)
    path = rec / "predictions.csv"
    good = path.read_text()
    path.write_text(good.replace("\n1,1,0\n", "\n1,9,0\n"))  # a label of 9 in a binary task
    assert check_record(rec) == "predictions.csv row 2: label 9, prediction 0; the task's classes are 0..1"
    path.write_text(good.replace("\n1,1,0\n", "\n1,1,-1\n"))  # no prediction: only a diverged run has none
    assert check_record(rec).startswith("predictions.csv row 2: label 1, prediction -1;")
    path.write_text(good.replace("\n1,1,0\n", "\n1,1,x\n"))
    assert check_record(rec) == "predictions.csv row 2 is not '1,<label>,<prediction>'"
    path.write_text(good)
    _edit_json(rec / "summary.json", num_classes=5)  # disagrees with the config's binary labels
    assert check_record(rec).startswith("summary.json num_classes 5 disagrees with config.json's data.labels")


def test_fine_labels_allow_five_classes(tmp_path):
    cfg = apply(CONFIG, {"data.labels": "fine"})
    labels = np.arange(N) % 5
    rec = write_record(tmp_path, cfg.run_id(), cfg.to_dict(), [], _summary(cfg, num_classes=5), labels, labels)
    assert check_record(rec) is None
    summary = json.loads((rec / "summary.json").read_text())
    del summary["num_classes"]  # older records: the classes come from config.json's data.labels
    (rec / "summary.json").write_text(json.dumps(summary))
    assert check_record(rec) is None


def test_metrics_lines_have_their_types_and_ranges(tmp_path):
    rec = _record(tmp_path, checkpoint=False)
    path = rec / "metrics.jsonl"
    first, rest = path.read_text().split("\n", 1)
    wants = "expected a finite number in [0, 100]"
    bad = {("dev_acc", 150.0): f"metrics.jsonl line 1 dev_acc: {wants}, got float 150.0",
           ("dev_acc", None): f"metrics.jsonl line 1 dev_acc: {wants}, got NoneType None",
           ("train_loss", math.nan): "metrics.jsonl line 1 train_loss: expected a finite number, got float nan",
           ("epoch", 0): "metrics.jsonl line 1 epoch: expected an integer >= 1, got int 0",
           ("epoch", True): "metrics.jsonl line 1 epoch: expected an integer >= 1, got bool True",
           ("seconds", -1): "metrics.jsonl line 1 seconds: expected a finite number >= 0, got int -1"}
    for (key, value), reason in bad.items():
        path.write_text(json.dumps({**json.loads(first), key: value}) + "\n" + rest)
        assert check_record(rec) == reason
    path.write_text('{"epoch": 1, "dev_acc": 70.0}\n')
    assert check_record(rec) == "metrics.jsonl line 1 lacks train_loss"
    path.write_text("[1, 2]\n")
    assert check_record(rec) == "metrics.jsonl line 1 is not an object"


def test_a_diverged_run_may_record_a_loss_that_is_not_finite(tmp_path):
    rec = _record(tmp_path, diverged=True)
    (rec / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": Infinity, "dev_acc": null}\n')
    assert check_record(rec) is None
    _edit_json(rec / "summary.json", status="complete", dev_acc=50.0, test_acc=50.0, best_epoch=1)
    assert check_record(rec).startswith("metrics.jsonl line 1 train_loss: expected a finite number")


# --- load_run: damaged checkpoints ----------------------------------------------------------------

def test_a_tiny_record_loads_and_predicts(tmp_path):
    run = load_run(_record(tmp_path))
    assert run.model.hidden_size == 8 and len(run.vocab) == len(TOKENS) + 2
    (p,) = predict(run, ["good film"])
    assert p.unknown == [] and list(p.gates) == ["input", "output"]


@pytest.mark.parametrize("changes", [{"model.cell": "gru", "model.gates": "reset+update"},
                                     {"model.cell": "rnn", "model.gates": "none"}, {"model.variant": "fgr"},
                                     {"model.peephole": "full", "model.gates": "forget"}])
def test_every_kind_of_cell_loads_its_own_tensors(tmp_path, changes):
    cfg = apply(CONFIG, changes)
    run = load_run(_record(tmp_path, cfg))
    assert run.config == cfg and predict(run, ["a dull film"])[0].name in ("negative", "positive")


def _damage(rec, how: str) -> None:
    path = rec / CHECKPOINT
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "not a torch file":
        path.write_text("hello\n")
    elif how == "hidden size 9":
        torch.save(_checkpoint(CONFIG, hidden_size=9), path)
    elif how == "missing tensor":
        blob = torch.load(path, weights_only=True)
        del blob["state"]["cls_bias"]
        torch.save(blob, path)
    elif how == "not a checkpoint":
        torch.save({"format": 1, "state": [1, 2], "vocab": TOKENS}, path)


DAMAGES = {"empty": "damaged (truncated or not a torch file): ",
           "truncated": "damaged (truncated or not a torch file): ",
           "not a torch file": "damaged (truncated or not a torch file): ",
           "hidden size 9": "has shape (",  # e.g. "cls_weight has shape (2, 9), the record's config gives (2, 8)"
           "missing tensor": "its tensors are not those of the record's config: missing cls_bias",
           "not a checkpoint": "damaged: needs 'state'"}


@pytest.mark.parametrize("how", list(DAMAGES))
def test_a_damaged_checkpoint_is_one_line_naming_the_file(tmp_path, how, capsys):
    rec = _record(tmp_path)
    _damage(rec, how)
    with pytest.raises(DataError) as e:
        load_run(rec)
    message = str(e.value)
    assert message.startswith(f"{rec / CHECKPOINT}: ") and DAMAGES[how] in message and "\n" not in message
    if how == "hidden size 9":  # the first tensor that differs: cls_weight (2, 9), weight_hh (36, 9), ...
        shapes = re.search(r"checkpoint\.pt: \w+ has shape (\(.*\)), the record's config gives (\(.*\))$", message)
        assert shapes and "9" in shapes[1] and "8" in shapes[2], message
    for argv in (["evaluate", str(rec)], ["predict", str(rec), "good film"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err == f"ablation: error: {message}\n" and "Traceback" not in err


def test_load_run_says_which_folder_is_missing_or_incomplete(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="nowhere: no such run directory$"):
        load_run(tmp_path / "nowhere")
    assert cli.main(["evaluate", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err == f"ablation: error: {tmp_path / 'nowhere'}: no such run directory\n"
    rec = _record(tmp_path)
    (rec / "summary.json").unlink()
    with pytest.raises(FileNotFoundError, match="not a complete run record \\(missing summary.json;"):
        load_run(rec)
    rec = _record(tmp_path, apply(CONFIG, {"train.seed": 5}))
    _edit_json(rec / "summary.json", test_acc=850)
    with pytest.raises(DataError, match="not a complete run record \\(summary.json test_acc: expected"):
        load_run(rec)
