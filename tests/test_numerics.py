"""Portable numerics: the pins take effect, records say where they ran, and a run retrains byte for byte."""

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _helpers import epoch_numbers

from ablation.training import numerics

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra) -> dict:
    """This interpreter's environment without any numerics pin, with this checkout first on the path."""
    env = {k: v for k, v in os.environ.items() if k not in numerics.PORTABLE_ENV and k != numerics.MODE_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return {**env, **extra}


def _python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(**env),
                          cwd=ROOT, timeout=300)


def test_this_test_process_runs_the_portable_pins():
    """conftest asks for portable mode before torch is imported, as the command line does."""
    assert torch.backends.cpu.get_cpu_capability() == "AVX2"
    assert numerics.mkl_branch() == "COMPATIBLE"
    assert numerics.portable_problems() == []
    d = numerics.describe("cpu")
    assert d["numerics"] == "portable" and d["gpu"] is None and d["cpu_model"]
    assert set(d) == {"numerics", "cpu_model", "cpu_capability", "mkl_cbwr", "threads", "gpu", "deterministic"}


def test_unknown_mode_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown mode 'exact'; valid: portable, fast"):
        numerics.request("exact")


def test_a_cpu_without_avx2_is_refused_naming_the_opt_out(monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")  # what torch says there
    monkeypatch.setattr(numerics, "cpu_flags", lambda: {"sse2", "avx"})
    monkeypatch.setattr(numerics.platform, "machine", lambda: "x86_64")
    with pytest.raises(numerics.NumericsError, match=r"capability is DEFAULT, not AVX2 \(this CPU lacks AVX2\)"
                                                     r".*--fast-numerics"):
        numerics.enforce("cpu")
    numerics.enforce("cpu", "fast")  # the opt-out trains, and its record says so
    assert numerics.describe("cpu")["numerics"] == "fast"


@pytest.mark.slow
def test_the_variables_reach_torch_and_mkl():
    """Each pin changes what torch reports, so the records' fields are read, not assumed."""
    code = ("import torch; from ablation.training import numerics; "
            "torch.bmm(torch.ones(2, 30, 30), torch.ones(2, 30, 30)); "
            "print(torch.backends.cpu.get_cpu_capability(), numerics.mkl_branch())")
    assert _python(code).stdout.split() == ["AVX2", "OFF"]  # this machine's own paths (an AVX2 CPU)
    assert _python(code, ATEN_CPU_CAPABILITY="default", MKL_CBWR="COMPATIBLE").stdout.split() == \
        ["DEFAULT", "COMPATIBLE"]


def test_portable_mode_refuses_a_torch_that_already_computed():
    """A notebook that used torch before asking for portable mode gets an error, not a wrong record."""
    code = ("import torch; torch.bmm(torch.ones(2, 30, 30), torch.ones(2, 30, 30)); "  # MKL and ATen both ran
            "from ablation.training import numerics; numerics.enforce('cpu')")
    r = _python(code, ATEN_CPU_CAPABILITY="default")
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert "NumericsError" in last and "capability is DEFAULT, not AVX2" in last and "--fast-numerics" in last
    assert "MKL runs its OFF branch, not COMPATIBLE" in last
    # asked before torch's first kernel, the same library call takes effect and passes
    ok = _python("import torch; from ablation.training import numerics; numerics.enforce('cpu'); "
                 "print(numerics.describe('cpu')['numerics'])", ATEN_CPU_CAPABILITY="default")
    assert ok.stdout.strip() == "portable", ok.stderr


@pytest.mark.slow
def test_fast_mode_records_what_it_ran():
    code = ("from ablation.training import numerics; import torch; numerics.enforce('cpu', 'fast'); "
            "print(numerics.describe('cpu'))")
    out = _python(code, MKL_CBWR="AUTO").stdout
    assert "'numerics': 'fast'" in out and "'mkl_cbwr': 'AUTO'" in out


def _train_smoke(out: Path, launcher: tuple[str, ...] = (), timeout: int = 300) -> Path:
    """`python -m ablation train` of the smoke config in a fresh process (under `launcher`, if any); its record."""
    r = subprocess.run([*launcher, sys.executable, "-m", "ablation", "train", "--config", "experiments/smoke.toml",
                        "--set", "model.hidden_size=16", "--out", str(out)],
                       capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=timeout)
    assert r.returncode == 0, r.stderr
    (run,) = out.iterdir()
    return run


def _assert_same_record(a: Path, b: Path) -> None:
    assert a.name == b.name
    for name in ("predictions.csv", "probes.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ma, mb = (epoch_numbers(r) for r in (a, b))
    assert ma == mb and len(ma) == 2
    sa, sb = (json.loads((r / "summary.json").read_text()) for r in (a, b))
    assert (sa["dev_acc"], sa["test_acc"]) == (sb["dev_acc"], sb["test_acc"])


@pytest.mark.slow
def test_train_twice_in_fresh_processes_gives_the_same_record_byte_for_byte(tmp_path):
    """The done-when of the portable records: `python -m ablation train` in two fresh processes."""
    a, b = (_train_smoke(tmp_path / f"try{k}") for k in (1, 2))
    _assert_same_record(a, b)
    machine = json.loads((a / "summary.json").read_text())["machine"]
    assert machine == json.loads((b / "summary.json").read_text())["machine"]
    assert machine["numerics"] == "portable" and machine["cpu_capability"] == "AVX2"
    assert machine["mkl_cbwr"] == "COMPATIBLE" and machine["threads"] == 1 and machine["gpu"] is None
    assert machine["cpu_model"] == numerics.cpu_model()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("qemu-x86_64") is None or platform.machine() != "x86_64",
                    reason="needs qemu-x86_64 (Debian's qemu-user; .ci/run installs it) on an x86-64 host")
def test_an_emulated_intel_cpu_trains_the_same_record_byte_for_byte(tmp_path):
    """Another machine within reach of every run of the suite: the smoke config trained here and on QEMU's
    software x86-64 announcing an Intel Haswell (GenuineIntel, AVX2 and FMA, no AVX-512) gives the same
    losses, dev accuracies, predictions and probes. Code that dispatches on the CPU's vendor or on features
    beyond the pinned AVX2, or whose results the hardware leaves implementation-defined (the rcpps/rsqrtps
    approximations differ between Intel, AMD and QEMU), would fail here. QEMU runs torch's vector kernels
    up to ~280x slower (a bmm loop), so the smoke config (~130 CPU-s emulated, ~11 natively) is what fits;
    a committed lecture record on real silicon is what scripts/gpu_check.sh checks on a GPU machine's CPU."""
    native = _train_smoke(tmp_path / "native")
    emulated = _train_smoke(tmp_path / "emulated", ("qemu-x86_64", "-cpu", "Haswell"), timeout=1800)
    _assert_same_record(native, emulated)


def test_fast_numerics_flag_and_threads(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ablation", "train", "--threads", "2", "--out", str(tmp_path)],
                       capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=300)
    assert r.returncode == 2 and "--threads 2 needs --fast-numerics" in r.stderr


@pytest.mark.slow
def test_a_committed_record_retrains_byte_for_byte(tmp_path):
    """What a user does with a record, on whatever machine runs the suite (CI's; a GPU machine's CPU through
    scripts/gpu_check.sh): the committed protocol record of the full cell, seed 1, trained on sentences with
    random vectors (in a pack of 4), retrained alone from its experiment file gives the same run id, the
    same loss and dev accuracy every epoch and the same predictions.csv, byte for byte."""
    record = ROOT / "results/protocol/ifo-diag-s1-7b86affef7"
    flags = ["data.granularity=sentences", "model.embeddings=random", "model.gates=input+forget+output", "train.seed=1"]
    r = subprocess.run([sys.executable, "-m", "ablation", "train", "--config", "experiments/protocol.toml",
                        *[a for f in flags for a in ("--set", f)], "--out", str(tmp_path)],
                       capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr
    (run,) = tmp_path.iterdir()
    assert run.name == record.name
    where = (json.loads((record / "summary.json").read_text())["machine"]["cpu_model"],
             json.loads((run / "summary.json").read_text())["machine"]["cpu_model"])
    epochs = [epoch_numbers(d) for d in (record, run)]
    assert epochs[1] == epochs[0], f"recorded on {where[0]}, retrained on {where[1]}"
    assert (run / "predictions.csv").read_bytes() == (record / "predictions.csv").read_bytes(), where
