"""Config: defaults, TOML files, overrides, errors that name the valid keys, grids."""

import dataclasses

import pytest

from ablation.config import RunConfig, apply, load_experiment, parse_override


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
    with pytest.raises(KeyError, match="valid train keys: seed, lr, batch_size"):
        apply(RunConfig(), {"train.learning_rate": 0.1})
    with pytest.raises(KeyError, match="valid: data, model, train"):
        apply(RunConfig(), {"optim.lr": 0.1})


def test_unknown_gate_and_bad_values():
    with pytest.raises(ValueError, match="valid gates: input, forget, output"):
        apply(RunConfig(), {"model.gates": "input+remember"})
    with pytest.raises(ValueError, match="valid: none, diagonal, full"):
        apply(RunConfig(), {"model.peephole": "all"})
    with pytest.raises(TypeError, match="train.epochs: expected int"):
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


def test_experiment_file_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[modle]\ngates = 'none'\n")
    with pytest.raises(KeyError, match="unknown table"):
        load_experiment(bad)
    bad.write_text('[grid]\n"model.gates" = ["none", "inputt"]\n')
    with pytest.raises(ValueError, match="valid gates"):
        load_experiment(bad)


def test_committed_experiments_load():
    lecture = load_experiment("experiments/lecture.toml")
    assert len(lecture.runs()) == 40
    assert lecture.reference["input+forget+output"] == 85.3
    assert load_experiment("experiments/lecture_random.toml").base.model.embeddings == "random"
    assert len(load_experiment("experiments/smoke.toml").runs()) == 6
