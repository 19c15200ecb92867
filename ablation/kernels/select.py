"""Which LSTM scan runs where: the one place that decides (`select_scan`).

    CPU, float32/float64        'fused-cpp'   the C++ kernels (cpp.py): scan, fixed-order matmuls, AdaGrad
    CUDA, float32, no FGR       'triton'      the Triton kernels (triton_scan.py), where triton is installed
    anything else               'python'      `models.cell._Scan` and torch's ops

``ABLATION_SCAN`` overrides it: ``auto`` (the table above; if the C++ kernels cannot be built,
'python' with a one-line notice), ``fused`` (as auto, but a failed build is an error) or
``python`` (always `_Scan` and torch's ops: benchmarks, comparisons). GRU and Elman RNN packs
always run their Python scans; the matmuls and AdaGrad around them still follow this choice.

Where the C++ kernels run, ``ABLATION_STEP`` says how a training step reaches them: ``auto`` (an LSTM
classifier pack trained by AdaGrad takes the whole step as one call, `whole_step.py`; other packs autograd)
or ``autograd`` (every step through autograd, op by op: the reference the one call is tested against).
"""

from __future__ import annotations

import os

import torch

from ablation.core.errors import ConfigError
from ablation.kernels import cpp, triton_scan

SCANS = ("auto", "fused", "python")
ENV = "ABLATION_SCAN"
STEPS = ("auto", "autograd")
STEP_ENV = "ABLATION_STEP"


def _setting(env: str, valid: tuple[str, ...]) -> str:
    value = os.environ.get(env, "auto") or "auto"
    if value not in valid:
        raise ConfigError(f"unknown {env}={value!r}; valid: {', '.join(valid)}")
    return value


def choice() -> str:
    """The ``ABLATION_SCAN`` setting; anything else is an error naming the valid values."""
    return _setting(ENV, SCANS)


def step_choice() -> str:
    """The ``ABLATION_STEP`` setting (the module doc); anything else is an error naming the valid values."""
    return _setting(STEP_ENV, STEPS)


def select_scan(device: str, dtype: torch.dtype, fgr: bool = False) -> str:
    """'fused-cpp', 'triton' or 'python' for an LSTM pack's tensors of this device type and dtype
    (the module doc); ``fgr``: the pack has an FGR member, which the Triton scan does not compute.
    float64 runs `_Scan` on CUDA (gradchecks; `triton_scan.COMPILED_DTYPES`)."""
    mode = choice()
    if mode == "python" or dtype not in (torch.float32, torch.float64):
        return "python"
    if device == "cpu":
        return "fused-cpp" if cpp.load(strict=mode == "fused") else "python"
    if device == "cuda" and not fgr and dtype in triton_scan.COMPILED_DTYPES and triton_scan.available():
        return "triton"
    return "python"


def wanted(x: torch.Tensor) -> bool:
    """Whether the C++ kernels (scan, matmuls, AdaGrad) run on tensors like ``x``."""
    return select_scan(x.device.type, x.dtype) == "fused-cpp"


def triton_wanted(xw: torch.Tensor, fgr: bool = False) -> bool:
    """Whether `models.cell.lstm_scan` runs the Triton scan on these inputs."""
    return select_scan(xw.device.type, xw.dtype, fgr) == "triton"


def scan_name(kind: str = "lstm", device: str | torch.device = "cpu", fgr: bool = False) -> str:
    """The scan a pack of this cell kind runs on this device in training (float32), for records."""
    return select_scan(torch.device(device).type, torch.float32, fgr) if kind == "lstm" else "python"
