"""`ablation tensorboard`: run records written as event files, read back with TensorBoard's reader."""

import numpy as np
import pytest

from ablation import cli
from ablation.analysis.tensorboard import export
from ablation.core.config import RunConfig, apply
from ablation.core.records import TEST_EXAMPLES, write_record

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402

CURVES = {"none": [(0.61, 70.25), (0.52, 74.5), (0.47, 73.125)], "input+output": [(0.58, 71.0), (0.44, 77.75)]}


@pytest.fixture
def results(tmp_path):
    """Two fake records (hand-made metrics) and a stray temporary that is not a record."""
    out = tmp_path / "lecture"
    for gates, curve in CURVES.items():
        cfg = apply(RunConfig(), {"model.gates": gates, "train.seed": 3})
        metrics = [{"epoch": e, "train_loss": loss, "dev_acc": acc, "seconds": 1.5 * e}
                   for e, (loss, acc) in enumerate(curve, 1)]
        best = max(range(len(curve)), key=lambda k: curve[k][1])
        summary = {"status": "complete", "gates": gates, "seed": 3, "best_epoch": best + 1,
                   "dev_acc": curve[best][1], "test_acc": 80.0 + len(curve), "active_params": 10}
        labels = np.zeros(TEST_EXAMPLES["binary"], dtype=int)  # a complete record covers the test set
        write_record(out, cfg.run_id(), cfg.to_dict(), metrics, summary, labels, labels)
    (out / ".partial-x").mkdir()
    return out


def read(run_dir):
    ea = EventAccumulator(str(run_dir))
    ea.Reload()
    return ea


def test_every_record_becomes_one_run_with_its_curves_and_config(results, tmp_path):
    logdir = tmp_path / "tb"
    written = export(results, logdir)
    assert len(written) == 2 and sorted(p.parent for p in written) == [logdir, logdir]
    for run in written:
        ea = read(run)
        gates = "input+output" if run.name.startswith("io-") else "none"
        curve = CURVES[gates]
        assert [s.step for s in ea.Scalars("dev_acc")] == list(range(1, len(curve) + 1))
        np.testing.assert_allclose([s.value for s in ea.Scalars("train_loss")], [c[0] for c in curve], rtol=1e-6)
        np.testing.assert_allclose([s.value for s in ea.Scalars("dev_acc")], [c[1] for c in curve], rtol=1e-6)
        (best,) = ea.Scalars("best_dev_acc")
        assert best.value == max(c[1] for c in curve) and best.step == 1 + int(np.argmax([c[1] for c in curve]))
        assert ea.Scalars("test_acc")[0].value == 80.0 + len(curve)
        content = ea.PluginTagToContent("hparams")
        start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
        hp = start.session_start_info.hparams
        assert hp["model.gates"].string_value == gates and hp["train.seed"].number_value == 3
        assert hp["model.peephole"].string_value == "diagonal" and hp["data.data_dir"].string_value == "None"
        experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
        assert [m.name.tag for m in experiment.experiment.metric_infos] == ["best_dev_acc", "test_acc"]


def test_a_rerun_replaces_the_event_files(results, tmp_path):
    export(results, tmp_path / "tb")
    (run, *_) = export(results, tmp_path / "tb")
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    assert len(read(run).Scalars("dev_acc")) in (2, 3)


def test_tensorboard_command(results, tmp_path, capsys):
    assert cli.main(["tensorboard", str(results.parent), "--logdir", str(tmp_path / "tb")]) == 0
    assert capsys.readouterr().out.startswith(f"2 runs -> {tmp_path / 'tb'}")
    assert sorted(p.parent.name for p in (tmp_path / "tb").glob("*/*")) == ["lecture", "lecture"]
    assert cli.main(["tensorboard", str(tmp_path / "empty"), "--logdir", str(tmp_path / "tb2")]) == 2
    assert "no complete run records" in capsys.readouterr().err
