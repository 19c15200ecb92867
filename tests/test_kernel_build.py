"""The C++ kernels' build and load never wedge: a stale lock, a build or a load killed half way."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ablation.kernels import cpp

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                reason="no C++ compiler: the kernels cannot be built here")
LOAD = "from ablation.kernels import cpp; assert cpp.load(strict=True); print('loaded')"


def _python(code: str, env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env={**os.environ, **env})


@pytest.fixture
def built_copy(tmp_path) -> dict:
    """A private TORCH_EXTENSIONS_DIR holding a copy of this checkout's built kernels."""
    assert cpp.load(), "the kernels did not build"
    dest = tmp_path / "ext" / cpp.build_dir().relative_to(cpp.build_dir().parents[1])
    shutil.copytree(cpp.build_dir(), dest)
    return {"TORCH_EXTENSIONS_DIR": str(tmp_path / "ext")}


def test_a_stale_torch_lock_does_not_block_loading(built_copy):
    """torch's `lock` file left by a killed process: the built kernels load by path, without it."""
    d = Path(built_copy["TORCH_EXTENSIONS_DIR"]) / cpp.build_dir().relative_to(cpp.build_dir().parents[1])
    (d / "lock").write_text("")
    start = time.monotonic()
    out = _python(LOAD, built_copy, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "loaded", out.stderr
    assert time.monotonic() - start < 30 and out.stderr == ""


@pytest.mark.slow
def test_loads_killed_at_random_moments_leave_nothing_behind(built_copy):
    """SIGKILL to processes while they import and load the kernels; the next load works at once."""
    d = Path(built_copy["TORCH_EXTENSIONS_DIR"]) / cpp.build_dir().relative_to(cpp.build_dir().parents[1])
    before = sorted(p.name for p in d.iterdir())
    for delay in (0.5, 1.0, 1.5, 2.0, 2.5, 3.0):
        proc = subprocess.Popen([sys.executable, "-c", LOAD], cwd=ROOT, env={**os.environ, **built_copy},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert sorted(p.name for p in d.iterdir()) == before  # no lock, no partial file
    out = _python(LOAD, built_copy, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "loaded", out.stderr


@pytest.mark.slow
def test_a_build_killed_half_way_is_recovered_with_one_line(tmp_path):
    """A first build SIGKILLed mid-compile leaves torch's `lock` file; the next build says it is stale,
    removes it and builds (two compiles, ~1-2 min)."""
    env = {"TORCH_EXTENSIONS_DIR": str(tmp_path / "ext")}
    proc = subprocess.Popen([sys.executable, "-m", "ablation.kernels.cpp"], cwd=ROOT, env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    folder = tmp_path / "ext" / cpp.build_dir().relative_to(cpp.build_dir().parents[1])
    deadline = time.monotonic() + 60
    while not (folder / "lock").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (folder / "lock").exists(), "the build never took torch's lock"
    time.sleep(2)  # mid-compile
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (folder / "lock").exists() and not (folder / cpp.READY).exists()  # what used to wedge every later job
    out = _python(LOAD, env, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "loaded", out.stderr
    assert f"removing a stale build lock {folder / 'lock'} (its builder was killed)" in out.stderr
    assert (folder / cpp.READY).exists()
