"""The C++ kernels of a CPU training step (csrc/): building them once, loading them by path.

csrc/lstm_scan.cpp registers ``torch.ops.ablation_fused.*``: the LSTM scan's two time loops, a matmul
summed in one fixed order (`fixed_order_bmm`) and AdaGrad's update; `select.py` decides which run.
They are built once per source version (`make setup`, or the first process that needs them) into
``TORCH_EXTENSIONS_DIR``, marked whole (`READY`), and then loaded by path with no lock, so a process
killed while loading leaves nothing behind. A build holds our own `flock` (released by the kernel
however its holder dies): a build that must wait says whose it waits for, and a torch `lock` file
left by a killed build is known stale and removed (docs/reproducibility.md).
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import sys
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("csrc") / "lstm_scan.cpp"
SOURCES = (SOURCE, SOURCE.with_name("lstm_kernels.h"), SOURCE.with_name("train_step.h"))  # the .cpp includes them
# Portable numerics (see the .cpp's header): no FMA contraction, no fast-math (an explicit
# -fno-fast-math would turn trapping math back on and stop the vectoriser). -O3 vectorises the
# element-wise kernels, compiled for the baseline ISA and for AVX2, which cannot change a result
# (lane-wise IEEE operations, nothing reassociated; tested bit for bit); -fno-trapping-math only
# lets it if-convert the clamps.
CFLAGS = ["-O3", "-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno"]
READY = "READY"  # written last, atomically: the folder's library is whole
BUILD_LOCK = "ablation.build.lock"  # our flock; torch's own FileBaton file is "lock"


class BuildError(RuntimeError):
    """The C++ kernels could not be built (no compiler, no ninja, a compile error)."""


def _build_name() -> str:
    # The checkout's path too: ninja rebuilds a folder whenever another path's sources load it.
    key = b"".join(p.read_bytes() for p in SOURCES) + repr((CFLAGS, torch.__version__, str(SOURCE))).encode()
    return f"ablation_lstm_scan_{hashlib.sha256(key).hexdigest()[:12]}"


def build_dir() -> Path:
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if not root:
        from torch.utils import cpp_extension

        root = cpp_extension.get_default_build_root()
    return Path(root) / f"py{sys.version_info.major}{sys.version_info.minor}_cpu" / _build_name()


def library() -> Path:
    """Where the built library lies (whether or not it is built yet)."""
    return build_dir() / f"{_build_name()}.so"


def is_built() -> bool:
    return (build_dir() / READY).is_file() and library().is_file()


def build(say=print) -> Path:
    """Build the library unless it is built; returns its path. Safe against concurrent builders and
    against builders killed half way (see the module doc); ``say`` gets the one-line notices."""
    d = build_dir()
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d / BUILD_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            say(f"ablation: waiting for the C++ kernels to be built by {holder} ({d / BUILD_LOCK})")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        if not is_built():
            stale = d / "lock"  # torch's FileBaton: no builder of ours holds the flock, so nobody holds it
            if stale.exists():
                say(f"ablation: removing a stale build lock {stale} (its builder was killed)")
                stale.unlink()
            say("ablation: compiling the C++ kernels (once per source version; about 30-40 s)")
            from torch.utils import cpp_extension

            try:
                cpp_extension.load(name=_build_name(), sources=[str(SOURCE)], extra_cflags=CFLAGS,
                                   build_directory=str(d), is_python_module=False, verbose=False)
            except Exception as e:  # no compiler, no ninja, a compile error
                first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
                raise BuildError(first) from e
            tmp = d / f".{READY}.{os.getpid()}"
            tmp.write_text(f"{library().name}\n")
            os.replace(tmp, d / READY)
    finally:
        os.close(fd)  # releases the flock
    return library()


@functools.cache
def load(strict: bool = False) -> bool:
    """Load the kernels into torch (building them first if they are not built); False, with one
    notice on stderr, if they cannot be built and ``strict`` is off."""
    try:
        path = library() if is_built() else build(lambda s: print(s, file=sys.stderr, flush=True))
        torch.ops.load_library(str(path))
        return True
    except (BuildError, OSError) as e:
        if strict:
            raise BuildError(f"ABLATION_SCAN=fused, but the C++ kernels could not be built or loaded: {e}") from e
        print(f"ablation: the C++ kernels could not be built ({e}); using the Python scan", flush=True,
              file=sys.stderr)
        return False


def fixed_order_bmm(a, b, bias=None):
    """bias + a @ b by the C++ kernel, without autograd (a backward pass's products)."""
    return torch.ops.ablation_fused.bmm(a, b, bias)


@functools.cache
def keep_heap() -> bool:
    """Make glibc keep freed memory for reuse (mallopt); True where it could.

    A step allocates and frees tensors of a few hundred KiB; above 128 KiB glibc serves them by
    mmap and unmaps them on free, so each step would page-fault its memory back in. Raising the
    mmap and trim thresholds keeps them in the heap; numbers are unchanged, only speed."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # malloc.h
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20) and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):  # not glibc
        return False


if __name__ == "__main__":  # `make setup`: build them now, rather than at the first training step
    try:
        print(f"ablation: C++ kernels at {build()}")
    except BuildError as e:
        print(f"ablation: the C++ kernels could not be built ({e}); training will use the Python scan")
