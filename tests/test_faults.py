"""Nothing silently wrong: bad settings refused up front, one driver per results directory,
damaged records quarantined, workers that die with their driver, runs that learned nothing."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ablation import cli
from ablation.analysis.aggregate import load_runs
from ablation.analysis.render import write_tables
from ablation.core.config import RunConfig, apply, load_experiment
from ablation.core.records import BROKEN, TEST_EXAMPLES, check_record, clean_partial, write_record
from ablation.running.grid import run_grid
from ablation.running.lock import ResultsLock
from ablation.tasks.vectors import read_glove_text
from ablation.training.best_on_dev import label_baselines, no_learning
from ablation.training.trainer import train_pack

SMOKE = "experiments/smoke.toml"


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)  # two cores shared: more threads only spin
    yield
    torch.set_num_threads(old)

EMPTY, ONLY_SLURM = "", '[slurm]\npartition = "gpu"\n'


def _file(tmp_path: Path, text: str | bytes) -> str:
    path = tmp_path / "exp.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


# (argv after the subcommand, experiment-file text or None for smoke.toml) -> (message fragment, exit code).
# Each is refused before any folder is made.
GRID_CASES = {
    "pack-size -2": (["--pack-size", "-2"], None, "--pack-size: must be an integer >= 1, got -2"),
    "pack-size 0": (["--pack-size", "0"], None, "--pack-size: must be an integer >= 1, got 0"),
    "workers 0": (["--workers", "0"], None, "--workers: must be an integer >= 1, got 0"),
    "threads 0": (["--threads", "0"], None, "--threads: must be an integer >= 1, got 0"),
    "seeds 0": (["--seeds", "0"], None, "--seeds: must be an integer >= 1, got 0"),
    "seeds -1": (["--seeds", "-1"], None, "--seeds: must be an integer >= 1, got -1"),
    "epochs 0": (["--set", "train.epochs=0"], None, "train.epochs: must be an integer >= 1, got 0"),
    "epochs -1": (["--set", "train.epochs=-1"], None, "train.epochs: must be an integer >= 1, got -1"),
    "batch -5": (["--set", "train.batch_size=-5"], None, "train.batch_size: must be an integer >= 1, got -5"),
    "batch 0": (["--set", "train.batch_size=0"], None, "train.batch_size: must be an integer >= 1, got 0"),
    "train_limit -5": (["--set", "data.train_limit=-5"], None, "data.train_limit: must be an integer >= 0, got -5"),
    "hidden 0": (["--set", "model.hidden_size=0"], None, "model.hidden_size: must be an integer >= 1, got 0"),
    "embedding 0": (["--set", "model.embedding_dim=0"], None, "model.embedding_dim: must be an integer >= 1"),
    "seed -1": (["--set", "train.seed=-1"], None, "train.seed: must be an integer >= 0, got -1"),
    "lr 0": (["--set", "train.lr=0"], None, "train.lr: must be a finite number > 0, got 0.0"),
    "lr -1": (["--set", "train.lr=-1"], None, "train.lr: must be a finite number > 0"),
    "lr nan": (["--set", "train.lr=nan"], None, "train.lr: must be a finite number, got nan"),
    "lr inf": (["--set", "train.lr=inf"], None, "train.lr: must be a finite number, got inf"),
    "clip -1": (["--set", "train.clip_norm=-1"], None, "train.clip_norm: must be >= 0"),
    "eval batch 0": (["--set", "train.eval_batch_size=0"], None, "train.eval_batch_size: must be an integer >= 1"),
    "slurm time -5": (["--slurm.time", "-5"], None, "slurm.time: must be an integer >= 1, got -5"),
    "slurm cpus 0": (["--slurm.cpus", "0"], None, "slurm.cpus: must be an integer >= 1, got 0"),
    "slurm mem 0": (["--slurm.mem-gb", "0"], None, "slurm.mem_gb: must be an integer >= 1, got 0"),
    "slurm table time": ([], '[grid]\n"train.seed" = [1]\n[slurm]\ntime = "1h"\n',
                         "slurm.time: must be an integer >= 1, got '1h'"),
    "empty file": ([], EMPTY, "no [grid] or [variants] table"),
    "only [slurm]": ([], ONLY_SLURM, "no [grid] or [variants] table"),
    "toml syntax": ([], "[grid\n", "exp.toml: not a valid TOML experiment file"),
    "binary file": ([], b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "exp.toml: not a valid TOML experiment file"),
    "gates string": ([], '[grid]\n"model.gates" = "none"\n',
                     "grid axis 'model.gates' must be a list of values, got str 'none' "
                     """(write 'model.gates' = ["none"])"""),
    "variant int": ([], '[grid]\n"train.seed" = [1]\n[variants]\na = 3\n',
                    "variant 'a' must be a table of overrides"),
    "grid not a table": ([], "grid = 3\n", "[grid] must be a table, got int 3"),
    "vectors file": (["--set", "model.embeddings=/no/vectors.txt"], None, "model.embeddings: no file /no/vectors.txt"),
    "no slurm here": (["--executor", "slurm"], None,
                      "--executor slurm: no Slurm cluster here (sbatch and sacct not found"),
}


@pytest.mark.parametrize("name", list(GRID_CASES))
def test_bad_grid_inputs_are_one_line_errors_before_anything_starts(name, tmp_path, capsys, monkeypatch):
    argv, text, fragment = GRID_CASES[name]
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no sbatch: for "no slurm here"
    out = tmp_path / "out"
    experiment = SMOKE if text is None else _file(tmp_path, text)
    assert cli.main(["grid", experiment, "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert fragment in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()  # nothing made, nothing trained


def test_train_refuses_bad_values_and_accepts_an_empty_file(tmp_path, capsys):
    assert cli.main(["train", "--threads", "0", "--out", str(tmp_path / "o")]) == 2
    assert "--threads: must be an integer >= 1, got 0" in capsys.readouterr().err
    assert cli.main(["train", "--set", "train.epochs=0", "--out", str(tmp_path / "o")]) == 2
    assert "train.epochs: must be an integer >= 1" in capsys.readouterr().err
    assert load_experiment(_file(tmp_path, EMPTY)).base == RunConfig()  # `train` of an empty file: the defaults
    assert not (tmp_path / "o").exists()


def _fake_record(out: Path, cfg: RunConfig, n: int = 4, **summary) -> Path:
    base = {"status": "complete", "gates": "+".join(cfg.model.gates) or "none", "seed": cfg.train.seed,
            "test_acc": 80.0, "dev_acc": 80.0, "best_epoch": 1, "active_params": 10, "run_id": cfg.run_id()}
    labels = np.arange(n) % 2
    return write_record(out, cfg.run_id(), cfg.to_dict(), [{"epoch": 1, "train_loss": 0.3, "dev_acc": 80.0}],
                        {**base, **summary}, labels, labels)


def test_train_twice_keeps_the_record_and_says_so(tmp_path, capsys):
    cfg = apply(RunConfig(), {"train.epochs": 1})
    rec = _fake_record(tmp_path, cfg)
    before = (rec / "summary.json").read_bytes()
    assert cli.main(["train", "--set", "train.epochs=1", "--out", str(tmp_path)]) == 0
    assert f"record {rec} already exists and is kept; nothing trained" in capsys.readouterr().err
    assert (rec / "summary.json").read_bytes() == before


@pytest.mark.parametrize("where", ["SST_DIR", "--data-dir"])
@pytest.mark.parametrize("broken", ["missing folder", "no dev.txt"])
def test_a_named_data_folder_is_used_or_named_in_the_error(where, broken, tmp_path, capsys, monkeypatch, sst_dir):
    d = tmp_path / "sst"
    if broken == "no dev.txt":
        d.mkdir()
        for split in ("train", "test"):
            (d / f"{split}.txt").write_bytes((sst_dir / f"{split}.txt").read_bytes())
    args = ["--data-dir", str(d)] if where == "--data-dir" else []
    if where == "SST_DIR":
        monkeypatch.setenv("SST_DIR", str(d))
    assert cli.main(["train", "--set", "data.train_limit=10", "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err
    named = "data.data_dir (--data-dir)" if where == "--data-dir" else where  # the key, and its flag
    assert f"{named} {d} " + ("does not exist" if broken == "missing folder" else "has no dev.txt") in err
    assert not (tmp_path / "o").exists()
    # `ablation data` names the missing file instead of downloading over the user's folder
    assert cli.main(["data", *args, "--url", "http://127.0.0.1:9/never"]) == 2
    assert "dev.txt" in capsys.readouterr().err and (broken == "no dev.txt") == d.is_dir()


def test_unwritable_results_directory_is_found_before_training(tmp_path, capsys):
    assert cli.main(["grid", SMOKE, "--out", "/proc/ablation-results"]) == 2  # /proc: even root cannot write
    assert "cannot write into the results directory /proc/ablation-results" in capsys.readouterr().err
    afile = tmp_path / "file"
    afile.write_text("")
    assert cli.main(["train", "--set", "train.epochs=1", "--out", str(afile / "sub")]) == 2
    assert f"cannot write into the results directory {afile / 'sub'}" in capsys.readouterr().err


def test_nan_word_vectors_name_the_file_and_line(tmp_path):
    path = tmp_path / "vec.txt"
    path.write_text("the 0.1 0.2 0.3\ngood nan 0.1 0.2\n")
    with pytest.raises(ValueError, match=r"vec.txt:2: the vector of 'good' holds NaN or infinity"):
        read_glove_text(path)


def test_readme_without_end_marker_and_missing_results_dir(tmp_path, capsys):
    _fake_record(tmp_path / "res", RunConfig())
    readme = tmp_path / "README.md"
    readme.write_text(f"x\n<!-- table: {tmp_path / 'res'} -->\nold\n")
    assert cli.main(["table", str(tmp_path / "res"), "--readme", str(readme)]) == 2
    assert "has no '<!-- /table -->' after it" in capsys.readouterr().err
    assert cli.main(["table", str(tmp_path / "nowhere")]) == 2
    assert f"{tmp_path / 'nowhere'}: no such results directory" in capsys.readouterr().err


# --- records: verified on read, quarantined, never a crash of the table ---------------------------

def test_check_record_finds_each_damage(tmp_path):
    rec = _fake_record(tmp_path, RunConfig())
    assert check_record(rec) is None
    damages = {
        "summary.json": ("{}", "summary.json lacks status"),
        "config.json": ('{"data": {', "config.json does not parse"),
        "metrics.jsonl": ('{"epoch": 1}\n{"epo', "metrics.jsonl does not parse"),
        "predictions.csv": ("index,label,prediction\n0,0,0\n1,1,1\n2,0", "truncated"),
    }
    for name, (text, reason) in damages.items():
        original = (rec / name).read_text()
        (rec / name).write_text(text)
        assert reason in check_record(rec)
        (rec / name).write_text(original)
    (rec / "predictions.csv").write_text("index,label,prediction\n0,0,0\n1,1,1\n")  # cut at a line end
    assert check_record(rec) == "predictions.csv has 2 rows; the test set has 4"
    (rec / "metrics.jsonl").unlink()
    assert check_record(rec) == "missing metrics.jsonl"


def test_test_set_sizes_of_older_records(sst_dir):
    from ablation.tasks.sst import load_sst

    assert {k: len(load_sst("test", labels=k, data_dir=sst_dir, verify=False)) for k in TEST_EXAMPLES} == TEST_EXAMPLES


def test_table_skips_damaged_records_and_folders_that_are_not_records(tmp_path):
    res = tmp_path / "res"
    good = [_fake_record(res, apply(RunConfig(), {"train.seed": s})) for s in (1, 2)]
    empty = _fake_record(res, apply(RunConfig(), {"train.seed": 3}))
    (empty / "summary.json").write_text("{}")
    cut = _fake_record(res, apply(RunConfig(), {"train.seed": 4}))
    (cut / "predictions.csv").write_text("index,label,prediction\n0,0,0\n")
    stuck = _fake_record(res, apply(RunConfig(), {"train.seed": 5}), status="no_learning")
    for d in good:  # a backup copy of records in a subfolder, figures, a quarantine
        (res / "backup" / d.name).mkdir(parents=True)
        for f in d.iterdir():
            (res / "backup" / d.name / f.name).write_bytes(f.read_bytes())
    (res / "figures").mkdir()
    (res / BROKEN / "x").mkdir(parents=True)
    (res / BROKEN / "x" / "config.json").write_text("{")
    r = load_runs(res)
    assert sorted(r.runs["run_id"]) == sorted(d.name for d in good)
    assert list(r.diverged["run_id"]) == [stuck.name]
    assert sorted(r.skipped) == sorted([f"{empty.name} (summary.json lacks status, gates, seed, dev_acc, test_acc, "
                                        "best_epoch, active_params)",
                                        f"{cut.name} (predictions.csv has 1 rows; the test set has 4)",
                                        f"backup/ (holds 2 records of its own; records are {res}/<run_id>/)"])
    text = write_tables(res)
    assert "2 complete runs; 3 incomplete records skipped (" in text
    assert "; 0 diverged; 1 did not learn (not averaged in: input+forget+output (seed 5, no learning))." in text


@pytest.mark.slow
def test_grid_quarantines_damaged_records_and_trains_them_again(tmp_path, capsys):
    exp = load_experiment(SMOKE, ["train.epochs=1"])
    runs = exp.runs(seeds=1)
    for k, r in enumerate(runs[:2]):
        rec = _fake_record(tmp_path, r)
        (rec / ("summary.json" if k == 0 else "metrics.jsonl")).write_text("{" if k == 0 else "")
        if k == 1:
            (rec / "metrics.jsonl").unlink()
    p = run_grid(exp, tmp_path, seeds=1, workers=1)
    assert p.done == 0 and sum(map(len, p.todo)) == 3
    assert all(check_record(tmp_path / r.run_id()) is None for r in runs)
    moved = sorted((tmp_path / BROKEN).iterdir())
    assert [m.name.rsplit("-", 1)[0] for m in moved] == sorted(r.run_id() for r in runs[:2])
    reasons = sorted((m / "reason.txt").read_text() for m in moved)
    assert any(x.startswith("summary.json does not parse") for x in reasons) and "missing metrics.jsonl\n" in reasons
    assert "moved to" in capsys.readouterr().err
    assert load_runs(tmp_path).skipped == []  # .broken/ is not read as records


# --- one driver per results directory --------------------------------------------------------------

def test_second_driver_names_the_holder_and_exits_2(tmp_path, capsys):
    with ResultsLock(tmp_path):
        assert cli.main(["grid", SMOKE, "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert f"{tmp_path} is in use by another `ablation grid` (host " in err and f"pid {os.getpid()}," in err
    assert (tmp_path / ".lock").read_text() == ""  # released: the next driver may take it
    with ResultsLock(tmp_path):
        pass


def test_cleanup_removes_only_temporaries_whose_writer_is_gone(tmp_path):
    import socket

    host = socket.gethostname()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    names = {"mine-live": f".partial-a@{host}@{os.getpid()}@x1", "mine-dead": f".partial-b@{host}@{dead}@x2",
             "node-fresh": ".partial-c@node7@123@x3", "node-old": ".partial-d@node7@123@x4",
             "unnamed-old": ".partial-e-x5"}
    for name in names.values():
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    old = time.time() - 3600
    for key in ("node-old", "unnamed-old"):
        for p in (tmp_path / names[key], tmp_path / names[key] / "config.json"):
            os.utime(p, (old, old))
    assert clean_partial(tmp_path) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([names["mine-live"], names["node-fresh"]])


# --- runs that learned nothing -------------------------------------------------------------------------

def _m(*pairs):
    return [{"epoch": k, "train_loss": loss, "dev_acc": acc} for k, (loss, acc) in enumerate(pairs, 1)]


def test_no_learning_rule_hand_cases():
    prior, majority = 0.69, 50.92
    assert no_learning(_m((0.5, 70.0), (0.4, 75.0)), prior, majority) is None
    assert "the loss of predicting the label frequencies" in no_learning(_m((6e5, 52.8), (3e5, 52.8)), prior, majority)
    assert "never fell below its first epoch's" in no_learning(_m((0.5, 70.0), (0.5, 71.0), (0.6, 72.0)),
                                                               prior, majority)
    assert "never rose above the majority-class rate" in no_learning(_m((0.5, 50.92), (0.4, 49.1)), prior, majority)
    assert no_learning(_m((0.5, 51.03)), prior, majority, tolerance=0.057) is None  # one example above: learned
    assert no_learning(_m((0.5, 70.0)), prior, majority) is None  # one epoch: the loss trend says nothing
    assert no_learning([], prior, majority) is None  # nothing finished: that is "diverged"


def test_huge_learning_rate_is_recorded_as_no_learning():
    cfgs = [apply(RunConfig(), {"data.train_limit": 2000, "model.embeddings": "random", "model.hidden_size": 8,
                                "train.epochs": 1, "train.lr": lr}) for lr in (1e6, 0.05)]
    bad, good = (train_pack([c])[0][0].summary for c in cfgs)  # another lr: another pack
    assert bad["status"] == "no_learning" and "predicting the label frequencies" in bad["failure_reason"]
    assert good["status"] == "complete" and good["failure_reason"] is None


def test_label_baselines_hand_computed():
    import torch

    from ablation.tasks.splits import SSTData
    from ablation.tasks.sst import Encoded

    def split(labels):
        return Encoded(torch.zeros(len(labels), 1, dtype=torch.long), torch.ones(len(labels)), torch.tensor(labels))

    data = SSTData(None, split([0, 0, 0, 1]), split([1, 1, 0]), split([0]), {})
    prior, majority, half = label_baselines(data)
    assert prior == pytest.approx(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25)))  # 0.5623 nats
    assert majority == pytest.approx(200 / 3) and half == pytest.approx(50 / 3)


# --- the driver owns its workers -----------------------------------------------------------------------

def _descendants(root: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        found = kids.get(todo.pop(), [])
        out += found
        todo += found
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _start_grid(out: Path) -> subprocess.Popen:
    """A smoke grid of 2 workers, returned once training runs (its first epoch ended)."""
    args = [sys.executable, "-m", "ablation.cli", "grid", SMOKE, "--out", str(out), "--workers", "2",
            "--pack-size", "1", "--set", "train.epochs=40"]
    # Ctrl-C as at a terminal: SIGINT at its default, whatever this process inherited (a shell's
    # background job starts with it ignored, and Python keeps an ignored SIGINT ignored)
    proc = subprocess.Popen(args, start_new_session=True, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stderr:
        if "epoch" in line:
            return proc
    raise AssertionError(f"the grid ended before training: {proc.wait()}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("how", ["SIGKILL", pytest.param("SIGTERM", marks=pytest.mark.slow)])
def test_workers_die_with_their_driver(how, tmp_path):
    out = tmp_path / "out"
    proc = _start_grid(out)
    try:
        workers = _descendants(proc.pid)
        assert len(workers) >= 2
        os.kill(proc.pid, getattr(signal, how))  # the driver alone, as `kill PID` or a scheduler does
        proc.wait(timeout=30)
        deadline = time.time() + 10
        while time.time() < deadline and any(map(_alive, workers)):
            time.sleep(0.1)
        assert not any(map(_alive, workers)), "workers outlived their driver"
        records = sorted(p.name for p in out.iterdir())
        time.sleep(1.0)
        assert sorted(p.name for p in out.iterdir()) == records  # nobody writes on
        if how == "SIGTERM":
            assert proc.returncode == 143 and "terminated; " in proc.stderr.read()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_stops_the_grid_at_once_with_one_line(tmp_path):
    out = tmp_path / "out"
    proc = _start_grid(out)
    try:
        workers = _descendants(proc.pid)
        t0 = time.time()
        os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole process group
        err = proc.stderr.read()
        proc.wait(timeout=30)
        took = time.time() - t0
        assert proc.returncode == 130
        said = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("grid smoke: epoch")]  # progress
        assert len(said) == 1, err
        assert re.fullmatch(r"interrupted; \d of 6 runs finished, rerun to resume", said[0]), err
        assert took < 5, f"took {took:.1f} s"  # ~1.5 s here; slack for a loaded machine
        time.sleep(0.5)
        assert not any(map(_alive, workers))
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.slow
def test_a_file_where_a_record_should_be_is_moved_aside(tmp_path, capsys):
    """A file at a record's path (not a folder) is quarantined like a damaged record, and the run trains."""
    from ablation.core.records import is_complete

    run_id = load_experiment(SMOKE, ["data.train_limit=300", "train.epochs=1"]).runs(1)[0].run_id()
    out = tmp_path / "res"
    out.mkdir()
    (out / run_id).write_text("not a record")
    assert cli.main(["grid", SMOKE, "--out", str(out), "--seeds", "1", "--workers", "1",
                     "--set", "data.train_limit=300", "--set", "train.epochs=1"]) == 0
    assert "Not a directory" not in capsys.readouterr().err
    (moved,) = (out / BROKEN).iterdir()
    assert (moved / run_id).read_text() == "not a record" and "missing" in (moved / "reason.txt").read_text()
    assert is_complete(out / run_id)


def test_a_full_disk_is_an_os_error_naming_the_record(tmp_path, monkeypatch):
    import torch

    from ablation.core.records import TMP_PREFIX

    def full(*args, **kw):
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full)
    cfg = RunConfig()
    labels = np.array([0, 1])
    summary = {"status": "complete", "gates": "input+forget+output", "seed": 1, "test_acc": 50.0, "dev_acc": 50.0,
               "best_epoch": 1, "active_params": 1}
    with pytest.raises(OSError, match=f"cannot write .*{cfg.run_id()}/checkpoint.pt: .*is the disk full"):
        write_record(tmp_path, cfg.run_id(), cfg.to_dict(), [], summary, labels, labels, checkpoint={"x": 1})
    assert not list(tmp_path.glob(f"{TMP_PREFIX}*")) and not (tmp_path / cfg.run_id()).exists()
