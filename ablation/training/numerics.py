"""Portable numerics: which CPU code paths a training process runs, so a record retrains bit for bit.

"portable" pins ATen's vectorised kernels (AVX2), MKL's branch (COMPATIBLE) and the thread count before
torch's first use; "fast" (`--fast-numerics`) leaves them to the machine. The mode is part of a run's record,
not of its run id. This module imports no torch at its top, so the CLI can call `request` first. Why, and
what is promised: docs/reproducibility.md.

    request(mode)    before torch is imported (the CLI does it): sets the environment workers inherit
    enforce(device)  in the training process: threads, CUDA's deterministic algorithms; fails, naming
                     --fast-numerics, if torch does not run the requested paths
    describe(device) the record's `machine` block: what this process actually runs
"""

from __future__ import annotations

import ctypes
import os
import platform
from pathlib import Path

from ablation.core.errors import AblationError

MODES = ("portable", "fast")
DEFAULT_MODE = "portable"  # a record that retrains to the same numbers anywhere is the harness's promise
MODE_ENV = "ABLATION_NUMERICS"  # the mode asked for; spawned workers and Slurm tasks inherit it
PORTABLE_ENV = {
    # MKL's vendor-neutral branch (SSE2 without rcpps/rsqrtps): the same bits on Intel and AMD.
    # Its AVX2 branch is for Intel CPUs only; on AMD, MKL_CBWR=AVX2 silently runs AUTO (measured:
    # mkl_cbwr_get reports AUTO on an AMD EPYC), which is this machine's path, not a portable one.
    "MKL_CBWR": "COMPATIBLE",
    "ATEN_CPU_CAPABILITY": "avx2",  # ATen's vectorised kernels: AVX2 even where AVX-512 exists
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN capped alike (no training op reaches it today: ONEDNN_VERBOSE)
    "OMP_NUM_THREADS": "1",  # one intra-op thread: how a reduction is split depends on the count
    "MKL_NUM_THREADS": "1",
    "CUBLAS_WORKSPACE_CONFIG": ":4096:8",  # what cuBLAS needs to be deterministic (torch's reproducibility notes)
}
CAPABILITY = "AVX2"  # what torch.backends.cpu.get_cpu_capability() must say in portable mode
# MKL's code branches as mkl_cbwr_get reports them (mkl_cbwr.h)
MKL_BRANCHES = {1: "OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3", 7: "SSE4_1", 8: "SSE4_2",
                9: "AVX", 10: "AVX2", 11: "AVX512_MIC", 12: "AVX512", 13: "AVX512_MIC_E1", 14: "AVX512_E1"}
MKL_STRICT = 0x10000


class NumericsError(AblationError, RuntimeError):
    """The process cannot train in the numerics mode it was asked for."""


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"numerics: unknown mode {mode!r}; valid: {', '.join(MODES)}")
    return mode


def request(mode: str) -> None:
    """Ask for ``mode`` in this process and every process it starts; call before torch is imported.

    Portable mode overwrites the variables in `PORTABLE_ENV`; fast mode leaves the
    environment as the user set it (and the record says what ran).
    """
    os.environ[MODE_ENV] = check_mode(mode)
    if mode == "portable":
        os.environ.update(PORTABLE_ENV)


def requested() -> str:
    """The mode this process was asked for (`DEFAULT_MODE` when nobody asked)."""
    return check_mode(os.environ.get(MODE_ENV, DEFAULT_MODE))


def enforce(device=None, mode: str | None = None) -> None:
    """Make this training process run ``mode`` (default: `requested()`), or fail saying why.

    Called after torch is imported and before training. The environment variables work
    only if they were set before torch's first kernel (ATen and MKL read them once), so a
    process that computed before asking for portable mode is refused, not recorded wrongly.
    """
    mode = check_mode(mode or requested())
    if mode != "portable":
        return
    request("portable")  # a library caller who asked nobody: still in time if torch has not computed yet
    import torch

    torch.set_num_threads(1)
    if _is_cuda(device):
        torch.use_deterministic_algorithms(True)
    problems = portable_problems(device)
    if problems:
        raise NumericsError("portable numerics are not in effect: " + "; ".join(problems)
                            + ". Set them before torch's first use (the `ablation` command does), "
                            "or train with --fast-numerics (its records retrain bit for bit only on this machine)")


def portable_problems(device=None) -> list[str]:
    """What in this process differs from the portable pins (empty: portable)."""
    import torch

    problems = []
    cap = torch.backends.cpu.get_cpu_capability()
    if cap != CAPABILITY:
        flags = cpu_flags()
        if platform.machine().lower() not in ("x86_64", "amd64"):
            why = f"this is a {platform.machine()} CPU, not x86-64"
        elif flags is not None and "avx2" not in flags:
            why = "this CPU lacks AVX2"
        else:
            why = "torch ran kernels before ATEN_CPU_CAPABILITY=avx2 was set"
        problems.append(f"torch's CPU capability is {cap}, not {CAPABILITY} ({why})")
    mkl = mkl_branch()
    if not torch.backends.mkl.is_available():
        problems.append("this torch has no MKL, whose COMPATIBLE branch portable mode pins")
    elif mkl is not None and mkl != PORTABLE_ENV["MKL_CBWR"]:
        problems.append(f"MKL runs its {mkl} branch, not COMPATIBLE (MKL_CBWR was set after its first call)")
    elif mkl is None and os.environ.get("MKL_CBWR") != PORTABLE_ENV["MKL_CBWR"]:
        problems.append(f"MKL_CBWR is {os.environ.get('MKL_CBWR')!r}, not COMPATIBLE")
    if torch.get_num_threads() != 1:
        problems.append(f"torch runs {torch.get_num_threads()} threads, not 1")
    if _is_cuda(device) and not torch.are_deterministic_algorithms_enabled():
        problems.append("CUDA without torch.use_deterministic_algorithms(True)")
    return problems


def describe(device=None) -> dict:
    """Where and how this process trains: the record's `machine` block (beside `versions`)."""
    import torch

    cuda = _is_cuda(device)
    return {
        "numerics": "fast" if portable_problems(device) else "portable",  # what ran, not what was asked
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl_cbwr": mkl_branch() if torch.backends.mkl.is_available() else None,
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(torch.device(device)) if cuda else None,
        "deterministic": torch.are_deterministic_algorithms_enabled(),
    }


def _is_cuda(device) -> bool:
    return device is not None and str(device).startswith("cuda")


def mkl_branch() -> str | None:
    """The code branch MKL runs ("COMPATIBLE", "AUTO", "OFF", ...), as MKL itself reports it.

    Falls back to the MKL_CBWR variable (suffixed " (env)") where this torch build exports
    no way to ask MKL.
    """
    import torch

    get = None
    for lib in (Path(torch.__file__).parent / "lib" / "libtorch_cpu.so", None):
        try:
            handle = ctypes.CDLL(str(lib) if lib is not None else None)
        except (OSError, TypeError):  # no such library; no process handle (Windows)
            continue
        get = getattr(handle, "mkl_cbwr_get", None) or getattr(handle, "mkl_serv_cbwr_get", None)
        if get is not None:
            break
    if get is None:
        env = os.environ.get("MKL_CBWR")
        return f"{env} (env)" if env else None
    code = get(1)  # MKL_CBWR_BRANCH
    name = MKL_BRANCHES.get(code & ~MKL_STRICT, f"branch {code & ~MKL_STRICT}")
    return name + (",STRICT" if code & MKL_STRICT else "")


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (None where there is none)."""
    text = _cpuinfo()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), None) if text else None
    return set(line.split(":", 1)[1].split()) if line else None


def cpu_model() -> str | None:
    text = _cpuinfo()
    line = next((ln for ln in text.splitlines() if ln.startswith("model name")), None) if text else None
    return line.split(":", 1)[1].strip() if line else (platform.processor() or None)


def _cpuinfo() -> str | None:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
