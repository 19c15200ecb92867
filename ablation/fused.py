"""The fused C++ kernels of a CPU training step (csrc/lstm_scan.cpp): build, choice, autograd.

`cell._Scan` issues ~20 small ATen ops per time step; on a CPU the step's time goes to
dispatching them, not to arithmetic. The fused scan runs the same equations with one matmul
and one element-wise C++ pass per step (forward and backward through time). Its matmuls,
and those around it (`bmm`: input projection, classifier, weight gradients), are our own,
summed in a fixed order, so results do not depend on the CPU (MKL's do, and its portable
branch is 3.5x slower); AdaGrad's update is one C++ pass a parameter (`optim.PackAdagrad`).
Inputs, outputs, saved tensors and gradients are `_Scan`'s; results agree with it to ~1e-6
of each tensor's scale in float32 (σ and tanh are its own, see the .cpp), and it passes the
same gradchecks and pack-size bit-identity tests (tests/test_fused.py).
`benchmarks/bench_grid.py` measures the whole training step against the Python scan.

Which scan runs: the environment variable ``ABLATION_SCAN``:
- ``auto`` (default): on CPU in float32/float64, the fused scan for LSTM packs (GRU and
  Elman RNN keep their Python scans) and `bmm` and the AdaGrad pass for every kind; torch's
  ops elsewhere (CUDA). If the extension cannot be built (no compiler): torch's ops, with a
  one-line notice. On CUDA, LSTM packs without an FGR member run the Triton scan
  (`cell.TritonScan`, triton_scan.py) where triton is installed (the ``triton`` extra);
- ``fused``: as auto, but a failed build is an error;
- ``python``: always `cell._Scan`, torch's matmuls and optimizer ops (benchmarks, or to compare).

The extension is compiled once per source version by `torch.utils.cpp_extension` (g++ and
ninja) into ``TORCH_EXTENSIONS_DIR`` (default ~/.cache/torch_extensions), in a folder named
by a hash of the source, flags, torch version and the checkout's path, so checkouts never
rebuild or overwrite each other's build; `make setup` builds it (`python -m ablation.fused`).
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
from pathlib import Path

import torch

from . import triton_scan

SCANS = ("auto", "fused", "python")
ENV = "ABLATION_SCAN"
SOURCE = Path(__file__).with_name("csrc") / "lstm_scan.cpp"
SOURCES = (SOURCE, SOURCE.with_name("lstm_kernels.h"))  # the .cpp includes the kernels twice
# Portable numerics (see the .cpp's header): no FMA contraction, no fast-math (an explicit
# -fno-fast-math would turn trapping math back on and stop the vectoriser). -O3 vectorises
# the element-wise kernels, compiled for the baseline ISA (SSE2 on x86-64) and for AVX2,
# which cannot change a result (lane-wise IEEE operations, nothing reassociated; a test
# compares the two bit for bit); -fno-trapping-math only lets it if-convert the clamps
# (FP exception flags, which nothing reads, may differ).
CFLAGS = ["-O3", "-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno"]  # fast-math is off by default


def choice() -> str:
    """The ``ABLATION_SCAN`` setting; anything else is an error naming the valid values."""
    value = os.environ.get(ENV, "auto") or "auto"
    if value not in SCANS:
        raise ValueError(f"unknown {ENV}={value!r}; valid: {', '.join(SCANS)}")
    return value


def _build_name() -> str:
    # The checkout's path too: ninja rebuilds a folder whenever another path's sources load it.
    key = b"".join(p.read_bytes() for p in SOURCES) + repr((CFLAGS, torch.__version__, str(SOURCE))).encode()
    return f"ablation_lstm_scan_{hashlib.sha256(key).hexdigest()[:12]}"


@functools.cache
def load() -> bool:
    """Build (once per source version) and load the extension; False, with one notice on
    stderr, if it cannot be built and the scan was not asked for by name."""
    try:
        from torch.utils import cpp_extension

        name = _build_name()
        root = os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()
        build = Path(root) / f"py{sys.version_info.major}{sys.version_info.minor}_cpu" / name
        build.mkdir(parents=True, exist_ok=True)
        cpp_extension.load(name=name, sources=[str(SOURCE)], extra_cflags=CFLAGS, build_directory=str(build),
                           is_python_module=False, verbose=False)
        return True
    except Exception as e:  # no compiler, no ninja, a compile error: say which, then fall back
        if choice() == "fused":
            raise RuntimeError(f"{ENV}=fused, but the fused C++ LSTM scan could not be built: {e}") from e
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        print(f"ablation: the fused C++ LSTM scan could not be built ({first}); using the Python scan", flush=True,
              file=sys.stderr)
        return False


def _scan(device: str, dtype: torch.dtype, fgr: bool = False) -> str:
    """The one place that decides which LSTM scan runs (the module doc): 'fused-cpp', 'triton' or 'python'
    for tensors of this device type and dtype; ``fgr``: the pack has an FGR member (the Triton scan has none).
    float64 runs `_Scan` on CUDA (for gradchecks; `triton_scan.COMPILED_DTYPES`)."""
    if choice() == "python" or dtype not in (torch.float32, torch.float64):
        return "python"
    if device == "cpu":
        return "fused-cpp" if load() else "python"
    if device == "cuda" and not fgr and dtype in triton_scan.COMPILED_DTYPES and triton_scan.available():
        return "triton"
    return "python"


def wanted(xw: torch.Tensor) -> bool:
    """Whether the fused C++ kernels (scan, `bmm`, AdaGrad) run on tensors like ``xw``."""
    return _scan(xw.device.type, xw.dtype) == "fused-cpp"


def triton_wanted(xw: torch.Tensor, fgr: bool = False) -> bool:
    """Whether `cell.lstm_scan` runs the Triton scan (`cell.TritonScan`) on these inputs."""
    return _scan(xw.device.type, xw.dtype, fgr) == "triton"


def scan_name(kind: str = "lstm", device: str | torch.device = "cpu", fgr: bool = False) -> str:
    """The scan a pack of this cell kind runs on this device in training (float32), for records."""
    return _scan(torch.device(device).type, torch.float32, fgr) if kind == "lstm" else "python"


def bmm(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """bias + a @ b for a (M, N, K), b (M, K, P), bias (M, P) or None -> (M, N, P), with
    autograd: the matmuls around the scan (input projection, classifier) in the fused scan's
    fixed summation order (`mm` in csrc/lstm_kernels.h), so no MKL kernel, whose order
    follows the CPU, touches a training step. Elsewhere (CUDA, ABLATION_SCAN=python, no
    compiler) `torch.baddbmm`."""
    if not wanted(a):
        return torch.bmm(a, b) if bias is None else torch.baddbmm(bias.unsqueeze(1), a, b)
    return _Bmm.apply(a, b, bias)


def fixed_order_bmm(a, b, bias=None):
    """bias + a @ b by the C++ kernel, without autograd (a backward pass's products)."""
    return torch.ops.ablation_fused.bmm(a, b, bias)


class _Bmm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, bias):
        ctx.save_for_backward(a, b)
        ctx.bias = bias is not None
        return fixed_order_bmm(a, b, bias)

    @staticmethod
    def backward(ctx, dc):
        a, b = ctx.saved_tensors
        need_a, need_b, need_bias = ctx.needs_input_grad
        da = fixed_order_bmm(dc, b.transpose(1, 2)) if need_a else None  # (M, N, P) @ (M, P, K)
        db = fixed_order_bmm(a.transpose(1, 2), dc) if need_b else None  # (M, K, N) @ (M, N, P)
        dbias = None
        if ctx.bias and need_bias:  # Σ_n dc[n], n ascending, as a (1, N) @ (N, P) product
            dbias = fixed_order_bmm(dc.new_ones(dc.shape[0], 1, dc.shape[1]), dc).squeeze(1)
        return da, db, dbias


@functools.cache
def keep_heap() -> bool:
    """Make glibc keep freed memory for reuse (mallopt); True where it could.

    A step allocates and frees tensors of a few hundred KiB (saved activations of a pack).
    Above 128 KiB glibc serves them by mmap and unmaps them on free, so each step page-faults
    its memory back in (measured: a 20-step forward scan 2.2x slower than 2 x 10 steps).
    Raising the mmap threshold and the trim threshold keeps them in the heap; numbers are
    unchanged, only speed."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # malloc.h
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20) and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):  # not glibc
        return False


if __name__ == "__main__":  # `make setup`: build it now, rather than at the first training step
    ok = load()
    print(f"ablation: LSTM scan on CPU: {'fused-cpp' if ok else 'python'}")
