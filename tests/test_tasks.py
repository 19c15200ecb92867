"""The task layer: generated tasks (adding, temporal order), their config, the optimizers long-lag
tasks need, chrono initialisation, and records of a regression task."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ablation.core.config import RunConfig, apply
from ablation.core.errors import ConfigError, DataError
from ablation.core.records import check_record
from ablation.core.spec import TASKS
from ablation.models.cell import init_lstm
from ablation.tasks import adding, registry, temporal_order
from ablation.training.best_on_dev import no_learning
from ablation.training.optimizers import PackAdam, PackRMSprop
from ablation.training.trainer import build_pack, train_pack

ROOT = Path(__file__).resolve().parents[1]


def task(name="adding", **keys):
    return apply(RunConfig(), {"task.name": name, **{f"task.{k}": v for k, v in keys.items()}})


def small(name="adding", gates="input+forget+output", **train):
    """A quick run of a generated task: T = 10, 2,000 training sequences, Adam, batches of 10."""
    return apply(task(name, length=10, train_size=2000, eval_size=400),
                 {"model.gates": gates, "model.hidden_size": 16, "train.optimizer": "adam", "train.lr": 0.01,
                  "train.batch_size": 10, "train.clip_norm": 1.0, "train.epochs": 4,
                  **{f"train.{k}": v for k, v in train.items()}})


# --- generators ------------------------------------------------------------------------------------

def test_adding_sequences_by_hand():
    split = adding.generate(500, 20, np.random.default_rng(0))
    x, lengths, y = split.ids, split.lengths, split.labels
    assert x.shape == (500, 20, 2) and x.dtype == torch.float32 and (lengths == 20).all()
    markers = x[..., 1]
    assert (markers.sum(1) == 2).all()  # two markers, one in each half
    assert (markers[:, :10].sum(1) == 1).all() and (markers[:, 10:].sum(1) == 1).all()
    assert ((x[..., 0] >= 0) & (x[..., 0] < 1)).all()
    assert torch.equal(y, (x[..., 0] * markers).sum(1))  # the sum of the two marked values


def test_adding_baseline_is_the_variance_of_two_uniforms():
    """Predicting the mean of u1 + u2 costs Var(u1 + u2) = 2/12 ≈ 0.167 (the issue's 'predicting 1.0')."""
    s = registry.load(task(length=50, train_size=20000, eval_size=20000).task)
    train_loss, dev, test = s.baselines()
    mean = s.train.labels.double().mean()
    assert dev == pytest.approx(float(((s.dev.labels.double() - mean) ** 2).mean()))
    for v in (train_loss, dev, test):
        assert v == pytest.approx(1 / 6, abs=0.005)


def test_generated_splits_are_fixed_by_the_task_config():
    a, b = (registry.load(task(length=30, train_size=100, eval_size=50).task) for _ in range(2))
    assert torch.equal(a.train.ids, b.train.ids)
    registry.load.cache_clear()
    c = registry.load(task(length=30, train_size=100, eval_size=50).task)
    assert torch.equal(a.test.labels, c.test.labels)  # a new process draws the same data
    other = registry.load(task(length=30, train_size=100, eval_size=50, data_seed=1).task)
    assert not torch.equal(a.train.ids, other.train.ids)
    assert not torch.equal(a.train.ids, a.dev.ids[:50].expand_as(a.train.ids[:50]).clone().resize_(a.train.ids.shape))


def test_temporal_order_sequences_by_hand():
    T = 100
    split = temporal_order.generate(400, T, np.random.default_rng(1))
    ids, y = split.ids, split.labels
    sym = {s: k for k, s in enumerate(temporal_order.SYMBOLS)}
    assert ids.shape == (400, T) and (ids[:, 0] == sym["B"]).all() and (ids[:, -1] == sym["E"]).all()
    relevant = (ids == sym["X"]) | (ids == sym["Y"])
    assert (relevant.sum(1) == 2).all()
    (a, b), (c, d) = temporal_order.windows(T)
    assert (a, b, c, d) == (10, 20, 50, 60)  # the paper's windows at T = 100
    for row, label in zip(ids, y):
        t1, t2 = torch.nonzero((row == sym["X"]) | (row == sym["Y"])).flatten().tolist()
        assert a <= t1 <= b and c <= t2 <= d
        order = temporal_order.CLASSES[int(label)]
        assert temporal_order.SYMBOLS[row[t1]] + temporal_order.SYMBOLS[row[t2]] == order
    assert set(y.tolist()) == {0, 1, 2, 3}


# --- config ----------------------------------------------------------------------------------------

def test_sst_ids_ignore_the_task_layer_and_a_task_names_its_run():
    base = RunConfig()
    assert base.task.name == "sst" and base.run_id() == "ifo-diag-s1-4183bfa4b0"  # pinned in test_config
    run = task(length=100)
    assert run.run_id().startswith("adding100-ifo-diag-s1-")
    assert task(length=30).run_id() != run.run_id()
    assert apply(run, {"train.optimizer": "adam"}).run_id() != run.run_id()
    assert apply(run, {"model.forget_init": "chrono"}).run_id() != run.run_id()


@pytest.mark.parametrize("updates,message", [
    ({"task.length": 30}, "task.length: applies to adding, temporal-order; task.name is 'sst'"),
    ({"task.name": "mnist1d", "task.train_size": 9}, "task.train_size: applies to adding, temporal-order; "
                                                     "task.name is 'mnist1d'"),
    ({"task.name": "mnist"}, "task.name: unknown value 'mnist'; valid: sst, tsv, adding, temporal-order, lm, "
                             "chorales, mnist1d"),
    ({"task.name": "adding", "model.embeddings": "random"}, "model.embeddings and model.freeze_embeddings are for"),
    ({"task.name": "adding", "task.length": 1}, "task.length: must be an integer >= 2"),
    ({"task.name": "temporal-order", "task.length": 5}, "temporal-order needs >= 10"),
    ({"train.optimizer": "sgd"}, "train.optimizer: unknown value 'sgd'; valid: adagrad, adam, rmsprop"),
    ({"model.forget_init": "chrono"}, "task.name is 'sst'"),
    ({"task.name": "adding", "model.forget_init": "chrono", "model.cell": "gru"}, "model.cell is 'gru'"),
    ({"task.name": "adding", "data.granularity": "sentences"}, "the data.* keys"),
])
def test_bad_task_settings_are_refused_by_name(updates, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        apply(RunConfig(), updates)


# --- initialisation and optimizers ----------------------------------------------------------------

def test_chrono_initialisation():
    """Tallec & Ollivier 2018: b_f ~ log U(1, T - 1), b_i = -b_f; every other value as with a constant bias."""
    T, H = 50, 64
    p = init_lstm(torch.Generator().manual_seed(3), 4, H, "diagonal", 0.0, chrono=T)
    q = init_lstm(torch.Generator().manual_seed(3), 4, H, "diagonal", 0.0)
    b_f, b_i = p["bias_ih"][H : 2 * H], p["bias_ih"][:H]
    assert (b_f >= 0).all() and (b_f <= np.log(T - 1)).all() and b_f.std() > 0.5
    assert torch.equal(b_i, -b_f) and (p["bias_ih"][2 * H :] == 0).all()
    for name in q:  # drawn last: the weights and peepholes are the constant-bias member's
        if name != "bias_ih":
            assert torch.equal(p[name], q[name]), name


@pytest.mark.parametrize("ours,theirs,kwargs", [(PackAdam, torch.optim.Adam, {}),
                                                (PackRMSprop, torch.optim.RMSprop, {"alpha": 0.99})])
def test_pack_optimizers_match_torch(ours, theirs, kwargs):
    """A member's Adam / RMSprop steps are torch.optim's (float32 rounding apart), clipping included."""
    cfg = small()
    model, _ = build_pack([cfg], registry.load(cfg.task))
    ref = {n: p.detach().clone().requires_grad_(p.requires_grad) for n, p in model.named_parameters()}
    opt = ours(model, 0.01, clip_norm=0.5)
    torch_opt = theirs([p for p in ref.values() if p.requires_grad], lr=0.01, eps=1e-8, **kwargs)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        grads = {n: torch.randn(p.shape, generator=gen) for n, p in model.named_parameters() if p.requires_grad}
        for n, p in model.named_parameters():
            p.grad = grads.get(n)
        opt.step()
        for n, g in grads.items():
            ref[n].grad = g.clone()
        torch.nn.utils.clip_grad_norm_([p for p in ref.values() if p.requires_grad], 0.5)
        torch_opt.step()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), ref[n].detach(), rtol=1e-5, atol=1e-6)


def _numbers(result):
    return ([(m["train_loss"], m["dev_metric"]) for m in result.metrics], result.summary["test_metric"],
            result.test_predictions.tolist())


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
def test_a_member_takes_the_same_steps_alone_and_in_a_pack(optimizer):
    """Per-member state, step size and clipping: bit for bit, whatever else is in the pack."""
    cfgs = [apply(small(gates=g, epochs=2), {"train.optimizer": optimizer, "train.lr": lr,
                                             "model.forget_init": init})
            for g, lr, init in (("input+forget+output", 0.01, "constant"), ("none", 0.003, "chrono"),
                                ("forget", 0.02, "chrono"))]
    pack, _ = train_pack(cfgs, max_steps=60)
    for c, in_pack in zip(cfgs, pack):
        (alone,), _ = train_pack([c], max_steps=60)
        assert _numbers(alone) == _numbers(in_pack)


def test_the_full_cell_solves_a_short_adding_problem():
    """T = 10: the full cell leaves the 0.167 plateau within 4 epochs of 2,000 sequences (~3 s)."""
    (r,), _ = train_pack([small()])
    s = r.summary
    assert s["status"] == "complete" and s["metric"] == "mse" and s["dev_acc"] is None
    assert s["baseline_test"] == pytest.approx(1 / 6, abs=0.03)
    assert s["test_metric"] < 0.1 * s["baseline_test"], s


def test_temporal_order_trains_as_a_classifier():
    (r,), _ = train_pack([small("temporal-order", epochs=1)])
    s = r.summary
    assert s["metric"] == "accuracy" and s["test_acc"] == s["test_metric"] and s["num_classes"] == 4
    assert 0 <= s["test_acc"] <= 100 and s["baseline_test"] == pytest.approx(25, abs=6)


# --- the no-learning rule and records --------------------------------------------------------------

def _lines(*pairs):
    return [{"epoch": k, "train_loss": loss, "dev_metric": dev} for k, (loss, dev) in enumerate(pairs, 1)]


def test_no_learning_with_a_regression_metric():
    prior, mean_mse = 0.167, 0.165
    rule = {"key": "dev_metric", "higher": False, "baseline": "mean"}
    assert no_learning(_lines((0.17, 0.17), (0.169, 0.168)), prior, mean_mse, **rule).startswith(
        "train loss never fell below 0.167, the loss of predicting the training targets' mean")
    stuck = no_learning(_lines((0.16, 0.17), (0.15, 0.166)), prior, mean_mse, **rule)
    assert "dev MSE never fell below 0.165, that of predicting the training targets' mean" in stuck
    assert no_learning(_lines((0.16, 0.17), (0.01, 0.004)), prior, mean_mse, **rule) is None


def test_a_regression_record_is_valid_and_its_predictions_are_real(tmp_path):
    from ablation.running.job import train_and_record

    (path,) = train_and_record([small(epochs=1)], tmp_path, "cpu")
    assert check_record(path) is None
    summary = json.loads((path / "summary.json").read_text())
    assert summary["task"] == "adding" and summary["num_classes"] == 1
    rows = (path / "predictions.csv").read_text().splitlines()[1:]
    target, output = map(float, rows[0].split(",")[1:])
    assert 0 <= target < 2 and output == output  # a float, not a class
    line = json.loads((path / "metrics.jsonl").read_text().splitlines()[0])
    assert "dev_metric" in line and "dev_acc" not in line
    summary["test_metric"] = -1.0  # an MSE is never negative
    (path / "summary.json").write_text(json.dumps(summary))
    assert "test_metric: expected a finite number >= 0 or null" in check_record(path)


def test_every_task_has_a_module_with_a_loader():
    for name in TASKS:
        if name != "sst":
            assert callable(registry.module(name).load), name


@pytest.mark.slow
def test_the_cli_trains_one_adding_model(tmp_path):
    sets = ["task.name=adding", "task.length=10", "task.train_size=2000", "task.eval_size=400", "model.hidden_size=16",
            "train.optimizer=adam", "train.lr=0.01", "train.epochs=3", "train.batch_size=10", "train.clip_norm=1.0"]
    r = subprocess.run([sys.executable, "-m", "ablation", "train", *[a for s in sets for a in ("--set", s)],
                        "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "dev mse" in r.stderr and "test mse" in r.stdout and "predicting the training targets' mean: 0.1" in r.stdout
    (run,) = tmp_path.iterdir()
    assert run.name.startswith("adding10-ifo-diag-s1-") and check_record(run) is None


# --- the user's own sentences (tsv) and MNIST-1D -------------------------------------------------

POSITIVE, NEGATIVE = "good great superb lovely excellent".split(), "bad awful poor dull terrible".split()
FILLER = "the a film movie story of and it was is with plot actors scene this that".split()


def write_tsv(root: Path, n_train=3000, n_eval=400, noise=0.1, seed=0) -> Path:
    """Sentiment words among filler words; a ``noise`` share of labels flipped, so ~90% is what the data allow."""
    import random

    r = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("dev", n_eval), ("test", n_eval)):
        lines = []
        for _ in range(n):
            y = r.choice(["pos", "neg"])
            words = [r.choice(FILLER) for _ in range(r.randint(4, 12))]
            words.insert(r.randrange(len(words) + 1), r.choice(POSITIVE if y == "pos" else NEGATIVE))
            flipped = {"pos": "neg", "neg": "pos"}[y] if r.random() < noise else y
            lines.append(" ".join(words) + "\t" + flipped)
        (root / f"{name}.tsv").write_text("\n".join(lines) + "\n")
    return root


def test_a_tsv_dataset_trains_to_what_its_labels_allow(tmp_path):
    root = write_tsv(tmp_path / "data")
    cfg = apply(RunConfig(), {"task.name": "tsv", "task.path": str(root), "model.embeddings": "random",
                              "train.epochs": 2})
    assert cfg.run_id().startswith("tsv-ifo-diag-s1-") and len(cfg.task.checksum) == 64
    (r,), _ = train_pack([cfg])
    s = r.summary
    assert s["label_names"] == ["neg", "pos"] and s["num_classes"] == 2 and s["task"] == "tsv"
    assert 84 <= s["test_acc"] <= 96, s["test_acc"]  # 10% of labels flipped: ~90% is the ceiling


def test_tsv_files_name_the_run(tmp_path):
    root = write_tsv(tmp_path / "a", n_train=20, n_eval=5)
    a = apply(RunConfig(), {"task.name": "tsv", "task.path": str(root)})
    moved = write_tsv(tmp_path / "b", n_train=20, n_eval=5)  # the same bytes elsewhere: the same run
    assert apply(a, {"task.path": str(moved)}).run_id() == a.run_id()
    other = write_tsv(tmp_path / "c", n_train=20, n_eval=5, seed=1)
    assert apply(a, {"task.path": str(other)}).run_id() != a.run_id()
    with (root / "dev.tsv").open("a") as f:
        f.write("one more line\tpos\n")
    with pytest.raises(DataError, match="changed since this run's config was made"):
        registry.load(a.task)


@pytest.mark.parametrize("line,message", [
    ("no tab here", "train.tsv: line 3: no tab between the text and its label"),
    ("\tpos", "train.tsv: line 3: an empty text"),
    ("good film\t ", "train.tsv: line 3: an empty label"),
])
def test_a_malformed_tsv_line_is_refused_naming_file_and_line(tmp_path, line, message):
    root = write_tsv(tmp_path, n_train=2, n_eval=2)
    with (root / "train.tsv").open("a") as f:
        f.write(line + "\n")
    with pytest.raises(DataError, match=message):
        registry.load(apply(RunConfig(), {"task.name": "tsv", "task.path": str(root)}).task)


def test_tsv_refuses_unseen_labels_empty_splits_and_missing_files(tmp_path):
    root = write_tsv(tmp_path, n_train=5, n_eval=2)
    (root / "test.tsv").write_text("good film\tpos\ndull film\tmeh\n")
    with pytest.raises(DataError, match=r"test.tsv: line 2: label 'meh' is not among train.tsv's \('neg', 'pos'\)"):
        registry.load(apply(RunConfig(), {"task.name": "tsv", "task.path": str(root)}).task)
    (root / "dev.tsv").write_text("\n")
    with pytest.raises(DataError, match="dev.tsv: no examples"):
        registry.load(apply(RunConfig(), {"task.name": "tsv", "task.path": str(root)}).task)
    (root / "dev.tsv").unlink()
    with pytest.raises(DataError, match="no dev.tsv"):
        apply(RunConfig(), {"task.name": "tsv", "task.path": str(root)})
    with pytest.raises(ConfigError, match="task.path: task 'tsv' needs the folder"):
        apply(RunConfig(), {"task.name": "tsv"})


def test_mnist1d_is_the_packages_dataset_split_for_dev():
    pytest.importorskip("mnist1d")
    s = registry.load(apply(RunConfig(), {"task.name": "mnist1d"}).task)
    assert (len(s.train), len(s.dev), len(s.test)) == (3500, 500, 1000)
    assert s.train.ids.shape == (3500, 40, 1) and s.num_outputs == 10 and set(s.test.labels.tolist()) == set(range(10))
    state = np.random.get_state()[1].copy()
    registry.load.cache_clear()
    again = registry.load(apply(RunConfig(), {"task.name": "mnist1d"}).task)
    assert torch.equal(again.test.ids, s.test.ids)  # the package's seed: the same signals every time
    assert (np.random.get_state()[1] == state).all()  # and numpy's global generator left as it was


# --- language modelling --------------------------------------------------------------------------

def test_every_step_loss_counts_real_tokens_only():
    """Next-token cross-entropy by hand: two sequences of 2 and 1 real tokens, padding ignored."""
    from ablation.core.spec import CellSpec
    from ablation.models.classifier import PackedClassifier

    model = PackedClassifier([CellSpec()], [1], vocab_size=5, embedding_dim=3, hidden_size=4, num_classes=5,
                             readout="every")
    logits = torch.randn(1, 2, 2, 5, generator=torch.Generator().manual_seed(0))  # (M, T, B, C)
    targets = torch.tensor([[3, 4], [2, 0]])  # (B, T): the second sequence has one real token
    logp = logits.log_softmax(-1)
    by_hand = -(logp[0, 0, 0, 3] + logp[0, 1, 0, 4] + logp[0, 0, 1, 2])
    torch.testing.assert_close(model.loss(logits, targets, reduction="sum"), by_hand.view(1))
    torch.testing.assert_close(model.loss(logits, targets), (by_hand / 3).view(1))


def test_the_unigram_baseline_by_hand():
    train = torch.tensor([[4, 4, 5, 0], [5, 4, 0, 0]])  # next tokens; 0 is padding: 4 x3, 5 x2
    dev = torch.tensor([[4, 5, 0]])
    entropy, dev_ppl, _ = registry.baselines(train, dev, dev, 6)
    p4, p5 = 3 / 5, 2 / 5
    assert entropy == pytest.approx(-(p4 * np.log(p4) + p5 * np.log(p5)))
    assert dev_ppl == pytest.approx(np.exp(-(np.log(p4) + np.log(p5)) / 2))


@pytest.mark.slow
def test_a_language_model_record_holds_perplexity(tmp_path):
    """A few steps on SST's sentences: perplexity below the unigram model's is not asked of 20 steps,
    only a valid record whose metric, baseline and per-sentence NLL agree."""
    from ablation.running.job import train_and_record

    cfg = apply(RunConfig(), {"task.name": "lm", "model.hidden_size": 8, "train.optimizer": "adam",
                              "train.lr": 0.01, "train.batch_size": 20, "train.epochs": 1})
    (r,), _ = train_pack([cfg], max_steps=20)
    s = r.summary
    assert s["metric"] == "perplexity" and s["dev_acc"] is None and s["num_classes"] == s["embedding_params"] // 25
    nll, tokens = r.test_predictions, r.test_labels
    assert s["test_metric"] == pytest.approx(float(np.exp(nll.astype(float).sum() / tokens.sum())), rel=1e-5)
    assert 100 < s["baseline_test"] < 1000 and r.probes is None
    (path,) = train_and_record([cfg], tmp_path, "cpu")
    assert check_record(path) is None


# --- Bach chorales as piano rolls ----------------------------------------------------------------

def test_a_piano_roll_by_hand():
    """Frame k holds the pitches sounding at beat k: a half note spans two frames, an eighth on the off-beat
    is not seen, a chord's pitches all are; the roll's columns start at MIDI 36."""
    music21 = pytest.importorskip("music21")
    from ablation.tasks import chorales

    score = music21.stream.Score()
    soprano, bass = music21.stream.Part(), music21.stream.Part()
    soprano.insert(0, music21.note.Note(72, quarterLength=2))  # C5 on beats 0 and 1
    soprano.insert(2.5, music21.note.Note(74, quarterLength=0.5))  # D5 between beats 2 and 3: unseen
    soprano.insert(3, music21.note.Note(76, quarterLength=1))  # E5 on beat 3
    bass.insert(0, music21.chord.Chord([36, 43], quarterLength=4))  # C2 and G2 throughout
    score.insert(0, soprano)
    score.insert(0, bass)
    roll = chorales.roll(score)
    on = {k: sorted(int(j) + chorales.LOW for j in np.flatnonzero(roll[k])) for k in range(len(roll))}
    assert roll.shape == (4, chorales.NOTES) and chorales.NOTES == 46
    assert on == {0: [36, 43, 72], 1: [36, 43, 72], 2: [36, 43], 3: [36, 43, 76]}
    bass.insert(4, music21.note.Note(30, quarterLength=1))
    with pytest.raises(ValueError, match="MIDI 30 outside the roll's 36-81"):
        chorales.roll(score)


def test_chorale_splits_and_encoding_by_hand():
    from ablation.tasks import chorales

    parts = chorales.split_names([f"bwv{k}.mxl" for k in range(10, 20)])
    assert parts == {"train": ["bwv10.mxl", "bwv11.mxl", "bwv12.mxl", "bwv15.mxl", "bwv16.mxl", "bwv17.mxl"],
                     "dev": ["bwv13.mxl", "bwv18.mxl"], "test": ["bwv14.mxl", "bwv19.mxl"]}
    a = np.eye(chorales.NOTES, dtype=np.float32)[[0, 1, 2]]  # 3 frames: 2 steps
    b = np.eye(chorales.NOTES, dtype=np.float32)[[5, 6]]  # 2 frames: 1 step
    enc = chorales.encode([a, b])
    assert enc.lengths.tolist() == [2, 1]
    assert torch.equal(enc.ids[0], torch.from_numpy(a[:2])) and torch.equal(enc.labels[0], torch.from_numpy(a[1:]))
    assert (enc.labels[1, 1] == chorales.PAD).all() and (enc.ids[1, 1] == 0).all()


def test_the_notes_baseline_and_the_frame_loss_by_hand():
    """Each note's training frequency (add-one smoothed) scores the NLL per frame; a model's loss is the
    per-note Bernoulli NLL summed over notes, averaged over the real frames only."""
    from ablation.core.spec import CellSpec
    from ablation.models.classifier import PackedClassifier

    train = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [-1.0, -1.0]]])  # (N, T, notes): 2 real frames
    dev = torch.tensor([[[0.0, 1.0]]])
    p = torch.tensor([3 / 4, 2 / 4], dtype=torch.float64)  # (count + 1) / (frames + 2)
    nll = lambda y: float(-(y * p.log() + (1 - y) * (1 - p).log()).sum())  # noqa: E731
    base = registry.baselines(train, dev, dev, 2)
    assert base == pytest.approx(((nll(train[0, 0].double()) + nll(train[0, 1].double())) / 2,
                                  nll(dev[0, 0].double()), nll(dev[0, 0].double())))
    model = PackedClassifier([CellSpec()], [1], vocab_size=1, embedding_dim=2, hidden_size=3, num_classes=2,
                             vectors=True, readout="frames")
    logits = torch.randn(1, 3, 1, 2, generator=torch.Generator().manual_seed(0))  # (M, T, B, notes)
    q = logits.sigmoid()
    y = train[0, :2]
    by_hand = -(y * q[0, :2, 0].log() + (1 - y) * (1 - q[0, :2, 0]).log()).sum()
    torch.testing.assert_close(model.loss(logits, train, reduction="sum"), by_hand.view(1))
    torch.testing.assert_close(model.loss(logits, train), (by_hand / 2).view(1))


@pytest.mark.slow
def test_a_chorales_record_holds_the_nll_per_frame(tmp_path):
    """The whole corpus parsed (or read from its cache): 368 chorales, 222 / 73 / 73; a few steps of training
    give a valid record whose NLL per frame agrees with its per-chorale NLL."""
    pytest.importorskip("music21")
    from ablation.running.job import train_and_record

    cfg = apply(RunConfig(), {"task.name": "chorales", "train.optimizer": "adam", "train.lr": 0.01,
                              "train.batch_size": 10, "train.epochs": 4})
    s = registry.load(cfg.task)
    assert (len(s.train), len(s.dev), len(s.test)) == (222, 73, 73) and s.num_outputs == 46
    (r,), _ = train_pack([cfg])
    summary = r.summary
    assert summary["metric"] == "nll" and summary["dev_acc"] is None and r.probes is None
    nll, frames = r.test_predictions, r.test_labels
    assert summary["test_metric"] == pytest.approx(float(nll.astype(float).sum() / frames.sum()), rel=1e-5)
    assert summary["test_metric"] < summary["baseline_test"] < 12
    (path,) = train_and_record([cfg], tmp_path, "cpu")
    assert check_record(path) is None


@pytest.mark.slow
def test_a_committed_lag_record_retrains_byte_for_byte(tmp_path):
    """The committed lag grid's full cell at T = 10, seed 1 (trained in a pack of 8), retrained alone from
    the experiment file: the same run id, metrics and predictions.csv, byte for byte."""
    record = ROOT / "results/lag/adding10-ifo-diag-s1-2fd375d2cf"
    if not record.is_dir():
        pytest.skip("results/lag holds no record of the full cell at T = 10, seed 1")
    flags = ["task.length=10", "model.gates=input+forget+output", "train.seed=1"]
    r = subprocess.run([sys.executable, "-m", "ablation", "train", "--config", "experiments/lag.toml",
                        *[a for f in flags for a in ("--set", f)], "--out", str(tmp_path)],
                       capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stderr
    (run,) = tmp_path.iterdir()
    assert run.name == record.name
    new, old = ((d / "metrics.jsonl").read_text().splitlines() for d in (run, record))
    strip = lambda lines: [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in lines]  # noqa: E731
    assert strip(new) == strip(old)
    assert (run / "predictions.csv").read_bytes() == (record / "predictions.csv").read_bytes()
