"""Every subcommand: a user error is one line on stderr and exit 2, never a traceback."""

import sys

import pytest
import torch

from ablation import cli
from ablation.running.lock import ResultsLock

SMOKE = "experiments/smoke.toml"


def one_line_error(capsys, argv: list[str]) -> str:
    rc = cli.main(argv)
    err = capsys.readouterr().err
    assert rc == 2, (rc, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and lines[-1].startswith("ablation: error: "), err
    return lines[-1]


def test_data(capsys, tmp_path):
    assert "does not exist" in one_line_error(capsys, ["data", "--data-dir", str(tmp_path / "nowhere"),
                                                       "--url", "http://127.0.0.1:9/never"])


def test_train(capsys, tmp_path):
    assert "unknown lstm gate 'inputt'" in one_line_error(capsys, ["train", "--set", "model.gates=inputt"])
    assert "--data-dir: empty" in one_line_error(capsys, ["train", "--data-dir", "", "--out", str(tmp_path)])
    assert "train.seed: must be an integer in [0, " in one_line_error(
        capsys, ["train", "--set", "train.seed=99999999999999999999", "--out", str(tmp_path)])
    assert not any(tmp_path.iterdir())  # refused before anything was made


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_train_on_a_cuda_device_that_is_not_there(capsys, tmp_path):
    msg = one_line_error(capsys, ["train", "--config", SMOKE, "--device", "cuda", "--out", str(tmp_path)])
    assert "--device cuda: torch sees no CUDA device here" in msg


def test_grid(capsys, tmp_path):
    out = tmp_path / "res"
    out.mkdir()
    with ResultsLock(out):  # another driver holds it
        assert "is in use by another `ablation grid`" in one_line_error(capsys, ["grid", SMOKE, "--out", str(out)])
    afile = tmp_path / "file"
    afile.write_text("")
    assert "cannot write into the results directory" in one_line_error(capsys, ["grid", SMOKE, "--out", str(afile)])
    dup = tmp_path / "dup.toml"
    dup.write_text('[grid]\n"train.seed" = [1, 2, 1]\n')
    msg = one_line_error(capsys, ["grid", str(dup), "--out", str(tmp_path / "d")])
    assert "grid axis 'train.seed' repeats 1" in msg
    assert not (tmp_path / "d").exists()


def test_tune(capsys, tmp_path, monkeypatch):
    out = tmp_path / "tuned"
    (out / "trials").mkdir(parents=True)
    with ResultsLock(out / "trials"):
        assert "is in use by another" in one_line_error(capsys, ["tune", "experiments/tuning.toml", "--out", str(out)])
    monkeypatch.setitem(sys.modules, "optuna", None)  # the `tune` extra not installed
    assert "needs the `tune` extra" in one_line_error(capsys, ["tune", "experiments/tuning.toml", "--out", str(out)])


@pytest.mark.parametrize("command", ["table", "plot", "tensorboard"])
def test_results_commands(capsys, tmp_path, command):
    assert "no such results directory" in one_line_error(capsys, [command, str(tmp_path / "nowhere")]) or \
        command == "tensorboard"
    afile = tmp_path / "file"
    afile.write_text("")
    one_line_error(capsys, [command, str(afile)])


def test_tensorboard_without_its_extra(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    assert "needs the `tensorboard` extra" in one_line_error(capsys, ["tensorboard", "results/single"])


def test_compare_and_config(capsys, tmp_path):
    assert "no such results directory" in one_line_error(capsys, ["compare", str(tmp_path / "a"), "results/single"])
    assert "unknown config section 'bad'" in one_line_error(capsys, ["config", "--set", "bad.key=1"])


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_run_commands(capsys, tmp_path, command):
    extra = ["a fine film"] if command == "predict" else []
    one_line_error(capsys, [command, str(tmp_path / "nowhere"), *extra])


def test_predict_plot_format_is_refused_before_predicting(capsys):
    run = "results/single/ifo-diag-s1-4183bfa4b0"
    assert "unknown image format .txt" in one_line_error(capsys, ["predict", run, "good", "--plot", "g.txt"])
