"""Training: determinism, pack equivalence, divergence, run records, the `train` command."""

import json

import numpy as np
import pytest
import torch

from ablation import cli
from ablation.core.config import RunConfig, apply
from ablation.core.records import CHECKPOINT, FILES, PROBES
from ablation.core.spec import LECTURE_ORDER
from ablation.kernels import cuda_graphs, select
from ablation.running.job import train_and_record
from ablation.training.adagrad import PackAdagrad
from ablation.training.trainer import build_pack, data_for, train_pack, train_step

COMBOS = list(LECTURE_ORDER)


def small(**kw) -> RunConfig:
    base = {"data.train_limit": 400, "model.embeddings": "random", "model.hidden_size": 12,
            "train.epochs": 2}
    return apply(RunConfig(), {**base, **kw})


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_same_seed_same_metrics_bit_for_bit():
    cfgs = [small(**{"model.gates": g}) for g in ("none", "input+forget+output")]
    a, _ = train_pack(cfgs)
    b, _ = train_pack(cfgs)
    for x, y in zip(a, b):
        assert [(m["train_loss"], m["dev_acc"]) for m in x.metrics] == \
               [(m["train_loss"], m["dev_acc"]) for m in y.metrics]
        assert x.summary["test_acc"] == y.summary["test_acc"]
        np.testing.assert_array_equal(x.test_predictions, y.test_predictions)
    c, _ = train_pack([small(**{"model.gates": "none", "train.seed": 2})])
    assert c[0].metrics[0]["train_loss"] != a[0].metrics[0]["train_loss"]


@pytest.mark.slow
@pytest.mark.parametrize("peephole", ["none", "diagonal", "full"])
def test_member_of_pack_of_8_equals_pack_of_1_after_50_steps(peephole):
    cfgs = [small(**{"model.gates": g, "model.peephole": peephole, "train.clip_norm": 1.0,
                     "model.hidden_size": 50}) for g in COMBOS]  # the lecture's shapes
    _, pack = train_pack(cfgs, max_steps=50)
    for m in (0, 3, 7):
        _, alone = train_pack([cfgs[m]], max_steps=50)
        for name, p in alone.member_state(0).items():
            torch.testing.assert_close(pack.member_state(m)[name], p, atol=1e-5, rtol=0, msg=name)
            # stronger than the 1e-5 asked for: bit for bit, so a grid's record retrains
            # to the same numbers with `ablation train`, alone
            assert torch.equal(pack.member_state(m)[name], p), name


@pytest.mark.slow
def test_variants_and_forget_biases_share_a_pack_bit_for_bit():
    """Odyssey and cells members that share a pack train exactly as they would alone."""
    cfgs = [small(**{"model.hidden_size": 50, **kw}) for kw in (
        {}, {"model.variant": "niaf"}, {"model.variant": "noaf"}, {"model.variant": "cifg"},
        {"model.variant": "fgr"}, {"model.forget_bias": 1.0}, {"model.gates": "forget+output"})]
    _, pack = train_pack(cfgs, max_steps=30)
    for m in (0, 2, 3, 4, 5):
        _, alone = train_pack([cfgs[m]], max_steps=30)
        for name, p in alone.member_state(0).items():
            assert torch.equal(pack.member_state(m)[name], p), (cfgs[m].model.variant, name)


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_baseline_cells_train_and_record(cell, tmp_path):
    gates = ("none", "reset+update") if cell == "gru" else ("none",)
    cfgs = [small(**{"model.cell": cell, "model.gates": g, "data.train_limit": 2000}) for g in gates]
    paths = train_and_record(cfgs, tmp_path, "cpu")
    for path in paths:
        summary = json.loads((path / "summary.json").read_text())
        assert summary["status"] == "complete" and summary["cell"] == cell and 40 < summary["test_acc"] < 80
        probes = json.loads((path / PROBES).read_text())
        assert set(probes["gates"]) == set(cfgs[paths.index(path)].model.gates)
        decay = probes["gradient_decay"]["checkpoints"]
        assert set(decay) == {"init", "epoch1", "best"}  # written with sorted keys
        assert sum(sum(b["n"]) for b in decay["best"]["bins"]) == sum(probes["positions_n"])


def test_eval_batch_size_changes_nothing_recorded():
    """Why train.eval_batch_size is not part of the run id: every recorded number is bitwise the same."""
    a, b = (train_pack([small(**{"model.gates": g, "train.eval_batch_size": n})
                        for g in ("none", "input+forget+output")])[0] for n in (256, 7))
    for x, y in zip(a, b):
        assert x.metrics and [(m["train_loss"], m["dev_acc"]) for m in x.metrics] == \
               [(m["train_loss"], m["dev_acc"]) for m in y.metrics]
        np.testing.assert_array_equal(x.test_predictions, y.test_predictions)
        assert json.dumps(x.probes) == json.dumps(y.probes)
        assert x.summary["test_acc"] == y.summary["test_acc"]


def test_same_seed_shares_initial_weights_across_gates_and_peepholes():
    data = data_for(small())
    a, _ = build_pack([small(**{"model.gates": "none"}), small(**{"model.gates": "input"})], data)
    b, _ = build_pack([small(**{"model.peephole": "full"})], data)
    for name in ("embedding", "weight_ih", "weight_hh", "cls_weight"):
        assert torch.equal(a.member_state(0)[name], a.member_state(1)[name])
        assert torch.equal(a.member_state(0)[name], b.member_state(0)[name])


def test_sparse_embedding_update_equals_dense_adagrad():
    """Updating only the batch's rows is torch.optim.Adagrad on the full table."""
    cfg = small()
    data = data_for(cfg)
    model, _ = build_pack([cfg], data)
    ref_emb = model.embedding.detach().clone().requires_grad_()
    ref_opt = torch.optim.Adagrad([ref_emb], lr=cfg.train.lr, eps=1e-10)
    opt = PackAdagrad(model, cfg.train.lr)
    for k in range(3):
        ids, lengths, labels = data.train.batch(np.arange(10 * k, 10 * k + 10))
        frozen = {n: p.detach().clone() for n, p in model.named_parameters() if n != "embedding"}
        logits = torch.func.functional_call(model, {**frozen, "embedding": ref_emb}, (ids, lengths))
        loss = torch.nn.functional.cross_entropy(logits[0], labels)
        ref_opt.zero_grad()
        loss.backward()
        ref_opt.step()
        train_step(model, opt, ids, lengths, labels)
        torch.testing.assert_close(model.embedding.detach(), ref_emb.detach(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("scan", ["fused", "python"])
def test_whole_table_step_equals_the_rows_step_bit_for_bit(scan, monkeypatch):
    """train_step(whole_table=True), the step a CUDA graph holds (kernels/cuda_graphs.py), gives the numbers
    of the usual step, which updates only the batch's rows, on either scan. (Not with clipping:
    the norm's sum then meets the zero rows in another order; cuda_graphs.wanted refuses it.)"""
    monkeypatch.setenv(select.ENV, scan)
    cfgs = [small(**{"model.gates": g, "model.peephole": "diagonal"}) for g in ("none", "input+forget+output")]
    data = data_for(cfgs[0])
    models = [build_pack(cfgs, data)[0] for _ in range(2)]
    opts = [PackAdagrad(m, [0.05, 0.2]) for m in models]
    for k in range(30):
        batch = data.train.batch(np.arange(10 * k, 10 * k + 10))
        losses = [train_step(m, o, *batch, whole_table=w) for m, o, w in zip(models, opts, (False, True))]
        assert torch.equal(*losses), k
    for (name, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        assert torch.equal(a, b), name
    assert torch.equal(opts[0].emb_state, opts[1].emb_state)


def test_cuda_graphs_are_opt_in_unclipped_and_cuda_only(monkeypatch):
    """cuda_graphs.wanted: ABLATION_CUDA_GRAPHS=1 asks for them; they serve CUDA packs without clipping
    (whose norm would differ in the last bit: see above); a bad value names the valid ones."""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.delenv(cuda_graphs.ENV, raising=False)
    assert not cuda_graphs.wanted(cuda, 0.0)
    monkeypatch.setenv(cuda_graphs.ENV, "1")
    assert cuda_graphs.wanted(cuda, 0.0) and not cuda_graphs.wanted(cuda, 1.0) and not cuda_graphs.wanted(cpu, 0.0)
    monkeypatch.setenv(cuda_graphs.ENV, "yes")
    with pytest.raises(ValueError, match="ABLATION_CUDA_GRAPHS='yes'.*valid values are 0 .* and 1"):
        cuda_graphs.wanted(cuda, 0.0)


def test_diverged_run_is_recorded_as_diverged(tmp_path):
    (alone,) = train_and_record([small(**{"train.lr": 1e38})], tmp_path / "lr", "cpu")
    summary = json.loads((alone / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["test_acc"] is None
    assert not (alone / CHECKPOINT).exists()  # no best-on-dev weights to keep
    assert summary["steps"] == 40  # stopped after the epoch it diverged in (400 examples / 10)


def test_a_diverged_member_leaves_its_pack_mates_alone(tmp_path, monkeypatch):
    import ablation.training.trainer as T

    def poisoned(cfgs, data):
        model, cov = build_pack(cfgs, data)
        with torch.no_grad():
            model.weight_hh[0].fill_(float("inf"))  # member 0 produces NaN from its first step
        return model, cov

    monkeypatch.setattr(T, "build_pack", poisoned)
    cfgs = [small(**{"model.gates": "none"}), small(**{"model.gates": "input"})]
    paths = train_and_record(cfgs, tmp_path, "cpu")
    bad = json.loads((paths[0] / "summary.json").read_text())
    good = json.loads((paths[1] / "summary.json").read_text())
    assert bad["status"] == "diverged" and bad["test_acc"] is None and bad["diverged_epoch"] == 1
    assert good["status"] == "complete" and good["test_acc"] > 0  # its pack-mate is unharmed
    monkeypatch.undo()
    (ref,) = train_and_record(cfgs[1:], tmp_path / "alone", "cpu")
    assert json.loads((ref / "summary.json").read_text())["test_acc"] == good["test_acc"]


def test_train_command_writes_a_complete_record(tmp_path, capsys):
    rc = cli.main(["train", "--config", "experiments/smoke.toml", "--set", "model.gates=input+output",
                   "--out", str(tmp_path)])
    assert rc == 0
    (run,) = [p for p in tmp_path.iterdir()]
    assert sorted(p.name for p in run.iterdir()) == sorted([*FILES, PROBES, CHECKPOINT])
    summary = json.loads((run / "summary.json").read_text())
    config = json.loads((run / "config.json").read_text())
    assert summary["gates"] == "input+output" and config["model"]["gates"] == ["input", "output"]
    assert summary["seed"] == 1 and summary["device"] == "cpu" and summary["versions"]["torch"]
    assert summary["num_classes"] == 2
    assert capsys.readouterr().out == (f"test {summary['test_acc']:.2f}%, dev {summary['dev_acc']:.2f}% "
                                       f"(best epoch {summary['best_epoch']}); record: {run}\n")
    assert 0 <= summary["test_acc"] <= 100
    assert summary["active_params"] == 3 * 8 * (25 + 8 + 2) + 2 * 8 + 2 * 9
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]
    preds = (run / "predictions.csv").read_text().splitlines()
    assert preds[0] == "index,label,prediction" and len(preds) == 1822
    # the same record retrains to the same numbers from its config alone
    again = tmp_path / "again"
    sets = [f"{s}.{k}={json.dumps(v) if v is not None else chr(34) * 2}" for s, sec in config.items()
            for k, v in sec.items() if v is not None]
    assert cli.main(["train", *sum((["--set", s] for s in sets), []), "--out", str(again)]) == 0
    (run2,) = list(again.iterdir())
    assert run2.name == run.name
    assert json.loads((run2 / "summary.json").read_text())["test_acc"] == summary["test_acc"]


def test_bad_config_is_a_clear_error(capsys):
    assert cli.main(["train", "--set", "model.gates=input+memory"]) == 2
    assert "valid gates: input, forget, output" in capsys.readouterr().err


@pytest.mark.slow
def test_vocabulary_is_every_token_of_the_training_split(sst_dir):
    """data.vocab = "train": no training phrase holds an <unk>; dev/test words stay unknown."""
    from ablation.tasks.splits import load_data

    full = load_data("phrases", "binary", str(sst_dir), 0)
    old = load_data("phrases", "binary", str(sst_dir), 0, "train-labelled")  # the first releases' rule
    assert (len(full.vocab), len(old.vocab)) == (18282, 16286)  # 1,996 types of neutral sentences only
    assert int((full.train.ids == 1).sum()) == 0
    assert int((old.train.ids == 1).sum()) == 6780  # tokens of 4,520 training phrases
    assert int((full.dev.ids == 1).sum()) > 0
    assert set(full.counts) == set(full.vocab.itos[2:]) and sum(full.counts.values()) == 163563
