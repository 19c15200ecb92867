"""Config: defaults, TOML files, overrides, errors that name the valid keys, grids."""

import dataclasses
import tempfile
from pathlib import Path

import pytest

from ablation.core.config import RunConfig, apply, load_experiment, parse_override
from ablation.core.errors import ConfigError
from ablation.core.spec import GATES


def test_defaults_are_the_lecture_protocol():
    c = RunConfig()
    assert c.model.gates == ("input", "forget", "output")
    assert (c.model.embedding_dim, c.model.hidden_size) == (25, 50)
    assert (c.train.batch_size, c.train.epochs) == (10, 10)
    assert c.data.granularity == "phrases"


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RunConfig().train.lr = 1.0


def test_overrides_parse_toml_literals():
    assert parse_override("train.lr=0.1") == ("train.lr", 0.1)
    assert parse_override("model.gates=input+output") == ("model.gates", "input+output")
    assert parse_override("data.bucket=false") == ("data.bucket", False)
    c = apply(RunConfig(), dict([parse_override("model.gates=none"), parse_override("train.epochs=3")]))
    assert c.model.gates == () and c.train.epochs == 3
    assert apply(RunConfig(), {"train.lr": 1}).train.lr == 1.0  # int accepted for float


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match="valid train keys: seed, lr, optimizer, batch_size"):
        apply(RunConfig(), {"train.learning_rate": 0.1})
    with pytest.raises(ConfigError, match="valid: task, data, model, train"):
        apply(RunConfig(), {"optim.lr": 0.1})


def test_unknown_gate_and_bad_values():
    with pytest.raises(ValueError, match="valid gates: input, forget, output"):
        apply(RunConfig(), {"model.gates": "input+remember"})
    with pytest.raises(ValueError, match="valid: none, diagonal, full"):
        apply(RunConfig(), {"model.peephole": "all"})
    with pytest.raises(ConfigError, match="train.epochs: expected int"):
        apply(RunConfig(), {"train.epochs": "ten"})


def test_experiment_file_grid_and_reference(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text('[train]\nepochs = 2\n[grid]\n"model.gates" = ["none", "input+output"]\n'
                    '"train.seed" = [1, 2, 3]\n[reference]\nvalues = { "output+input" = 80.0 }\n')
    exp = load_experiment(path)
    runs = exp.runs()
    assert len(runs) == 6 and all(r.train.epochs == 2 for r in runs)
    assert [r.model.gates for r in runs[:3]] == [()] * 3
    assert exp.reference == {"input+output": 80.0}
    assert len(exp.runs(seeds=2)) == 4
    assert len({r.run_id() for r in runs}) == 6
    assert runs[0].run_id() == load_experiment(path).runs()[0].run_id()  # stable
    fixed = load_experiment(path, ["train.seed=7"])
    assert [r.train.seed for r in fixed.runs()] == [7, 7]


BAD_FILES = {
    "table": ("[modle]\ngates = 'none'\n", ConfigError, "unknown table"),
    "gate": ('[grid]\n"model.gates" = ["none", "inputt"]\n', ValueError, "valid gates"),
    "variant-on-an-axis": ('[grid]\n"model.gates" = ["none"]\n[variants]\nNIG = { "model.gates" = "forget+output" }\n',
                           ValueError, "also a grid axis"),
    "variant-key": ('[variants]\nbad = { "model.cel" = "gru" }\n', ConfigError, "valid model keys"),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_experiment_file_errors(tmp_path, name):
    text, error, match = BAD_FILES[name]
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(error, match=match):
        load_experiment(bad)


def test_committed_experiments_load():
    lecture = load_experiment("experiments/lecture.toml")
    assert len(lecture.runs()) == 160  # 8 gate sets x 20 seeds
    assert lecture.reference["input+forget+output"] == 85.3
    assert load_experiment("experiments/lecture_random.toml").base.model.embeddings == "random"
    assert len(load_experiment("experiments/smoke.toml").runs()) == 6


def test_variants_cross_the_axes_and_label_runs(tmp_path):
    path = tmp_path / "v.toml"
    path.write_text('[grid]\n"train.seed" = [1, 2]\n[variants]\nbase = {}\n'
                    'NIG = { "model.gates" = "forget+output" }\nGRU = { "model.cell" = "gru" }\n')
    exp = load_experiment(path)
    runs = exp.runs()
    assert len(runs) == 6 and [exp.label(r.to_dict()) for r in runs] == ["base"] * 2 + ["NIG"] * 2 + ["GRU"] * 2
    assert runs[4].model.gates == ("reset", "update")  # the default gates mean all of the kind's
    assert runs[4].model.peephole == "none"
    other = apply(RunConfig(), {"model.gates": "input"})
    assert exp.label(other.to_dict()) is None


def test_cell_kinds_check_their_options():
    with pytest.raises(ValueError, match="valid: lstm, gru, rnn"):
        apply(RunConfig(), {"model.cell": "lstmx"})
    with pytest.raises(ValueError, match="LSTM variant"):
        apply(RunConfig(), {"model.cell": "gru", "model.variant": "cifg"})
    with pytest.raises(ValueError, match="valid gates: reset, update"):
        apply(RunConfig(), {"model.cell": "gru", "model.gates": "input"})
    with pytest.raises(ValueError, match="valid: before, after"):
        apply(RunConfig(), {"model.cell": "gru", "model.gru_reset": "middle"})


def test_a_value_set_is_never_rewritten():
    """Unset gates and peepholes take the cell kind's defaults; a value the user set is kept or
    refused, never replaced (an LSTM value on a GRU used to become the GRU's silently)."""
    gru = apply(RunConfig(), {"model.cell": "gru"})
    assert gru.model.gates == ("reset", "update") and gru.model.peephole == "none"
    assert RunConfig().model.peephole == "diagonal" and RunConfig().model.gates == GATES
    with pytest.raises(ValueError, match="model.peephole 'full': peepholes are LSTM-only .* valid for it: none"):
        apply(RunConfig(), {"model.cell": "gru", "model.peephole": "full"})
    with pytest.raises(ValueError, match="unknown gru gate 'input'"):
        apply(RunConfig(), {"model.cell": "gru", "model.gates": "input+forget+output"})
    full = apply(RunConfig(), {"model.peephole": "full"})  # set earlier, then another kind: refused
    with pytest.raises(ValueError, match="peepholes are LSTM-only"):
        apply(full, {"model.cell": "gru"})
    some = apply(RunConfig(), {"model.gates": "input"})
    with pytest.raises(ValueError, match="unknown rnn gate 'input'"):
        apply(some, {"model.cell": "rnn"})
    back = apply(gru, {"model.cell": "lstm"})  # GRU defaults back to the LSTM's
    assert back == RunConfig() and back.run_id() == RunConfig().run_id()
    assert gru.model.spec().kind == "gru" and gru.model.spec().gates == ("reset", "update")


def test_run_ids_are_pinned():
    """The rule that names every record: readable prefix + hash of `RUN_ID_KEYS`. Changing it
    orphans every committed record, so these literals change only with a regeneration."""
    assert RunConfig().run_id() == "ifo-diag-s1-4183bfa4b0"  # the lecture's full cell, seed 1
    assert apply(RunConfig(), {"model.gates": "none", "train.seed": 3}).run_id() == "none-diag-s3-891a69bdcf"
    assert apply(RunConfig(), {"model.cell": "gru"}).run_id() == "ru-gru-before-s1-45fccd373b"
    exp = load_experiment("experiments/lecture.toml")
    assert RunConfig().run_id() in {r.run_id() for r in exp.runs()}


def test_every_config_key_is_classified_for_the_run_id():
    """A new key must say whether it changes a run's numbers, or ids would change (or fail to) silently."""
    from ablation.core.config import LATER_KEYS, NOT_IN_RUN_ID, RUN_ID_KEYS, flatten

    keys = set(flatten(RunConfig().to_dict()))
    assert len(RUN_ID_KEYS) == len(set(RUN_ID_KEYS))
    assert not set(RUN_ID_KEYS) & set(NOT_IN_RUN_ID) and not set(LATER_KEYS) & (set(RUN_ID_KEYS) | set(NOT_IN_RUN_ID))
    assert set(RUN_ID_KEYS) | set(NOT_IN_RUN_ID) | set(LATER_KEYS) == keys
    assert all(reason.strip() for reason in NOT_IN_RUN_ID.values())


@pytest.mark.parametrize("key,value", [("data.vocab", "train-labelled"), ("train.lr", 0.1),
                                       ("model.forget_bias", 1.0), ("data.train_limit", 10)])
def test_keys_of_the_run_id_change_it(key, value):
    assert apply(RunConfig(), {key: value}).run_id() != RunConfig().run_id()


def test_where_the_data_lie_and_the_eval_batch_leave_the_id_alone(tmp_path):
    moved = apply(RunConfig(), {"data.data_dir": str(tmp_path), "train.eval_batch_size": 7})
    assert moved.run_id() == RunConfig().run_id()


def test_vocab_source_is_checked():
    with pytest.raises(ValueError, match="data.vocab: unknown value 'all'; valid: train, train-labelled"):
        apply(RunConfig(), {"data.vocab": "all"})


# A value for each key other than its default, valid for the lecture's LSTM (a task.* key other than
# task.name and model.forget_init on a generated task: `ON_ADDING`).
OTHER = {"task.name": "adding", "task.path": "(a second TSV folder: `_tsv_folder`)", "task.checksum": "0" * 64,
         "task.length": 30, "task.train_size": 50, "task.eval_size": 20, "task.data_seed": 1,
         "model.forget_init": "chrono", "train.optimizer": "adam",
         "data.granularity": "sentences", "data.labels": "fine", "data.data_dir": "/x", "data.bucket": False,
         "data.train_limit": 5, "data.vocab": "train-labelled", "model.gates": "i+f", "model.peephole": "full",
         "model.embedding_dim": 7, "model.hidden_size": 9, "model.embeddings": "random",
         "model.freeze_embeddings": True, "model.forget_bias": 1.0, "model.cell": "gru", "model.variant": "cifg",
         "model.gru_reset": "after", "train.seed": 5, "train.lr": 0.1, "train.batch_size": 3, "train.epochs": 2,
         "train.clip_norm": 1.0, "train.eval_batch_size": 16, "train.trial": 3}


def _tsv_folder() -> str:
    root = Path(tempfile.mkdtemp())
    for name in ("train", "dev", "test"):
        (root / f"{name}.tsv").write_text("a good film\tpos\na dull film\tneg\n")
    return str(root)


NEEDS_A_TASK = {"task.length", "task.train_size", "task.eval_size", "task.data_seed", "model.forget_init"}
ON_ADDING = apply(RunConfig(), {"task.name": "adding"})
ON_TSV = {"task.path", "task.checksum"}


def test_every_key_is_classified_per_member_or_shared_by_a_pack():
    """`pack_key` ignores exactly the PER_MEMBER_KEYS: every other key (in the run id or not, like where the
    data lie) is one a pack's members share."""
    from ablation.core.config import LATER_KEYS, PER_MEMBER_KEYS, RUN_ID_KEYS, flatten, pack_key

    keys = list(flatten(RunConfig().to_dict()))
    assert sorted(OTHER) == sorted(keys) and set(PER_MEMBER_KEYS) <= set(RUN_ID_KEYS) | set(LATER_KEYS)
    for key in keys:
        base = ON_ADDING if key in NEEDS_A_TASK else RunConfig()
        value = OTHER[key]
        if key in ON_TSV:
            base = apply(RunConfig(), {"task.name": "tsv", "task.path": _tsv_folder()})
            value = _tsv_folder() if key == "task.path" else value
        changed = apply(base, {key: value})
        same_pack = pack_key(changed) == pack_key(base)
        assert same_pack == (key in PER_MEMBER_KEYS), key


def test_the_config_reference_covers_every_key():
    from ablation.core.config import reference

    rows = {r["key"]: r for r in reference()}
    assert sorted(rows) == sorted(OTHER)
    assert all(r["reason"] for r in rows.values()), [k for k, r in rows.items() if not r["reason"]]
    assert all(r["valid"] for k, r in rows.items() if r["type"] != "bool"), "a key without its valid values"


def test_gate_sets_by_initials():
    assert apply(RunConfig(), {"model.gates": "i+f"}).model.gates == ("input", "forget")
    assert apply(RunConfig(), {"model.gates": "ifo"}).run_id() == RunConfig().run_id()
    assert apply(RunConfig(), {"model.cell": "gru", "model.gates": "r"}).model.gates == ("reset",)
    with pytest.raises(ValueError, match="unknown lstm gate 'x'"):
        apply(RunConfig(), {"model.gates": "i+x"})
