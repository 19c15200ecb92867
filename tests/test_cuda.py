"""The same code on CUDA: every cell kind and variant computes there what it computes on the
CPU. Skips cleanly without a GPU (CI has none); run on a GPU machine with `pytest -m gpu`.

Compared on one batch from the same initial weights (losses, every gradient, the probes),
not after training: AdaGrad's first step moves each weight by ±lr·g/|g|, so a gradient of
1e-9 on one device and -1e-9 on the other would differ by 2·lr however correct both are."""

import copy

import pytest
import torch
from _helpers import epoch_numbers

from ablation.core.config import RunConfig, apply
from ablation.kernels import select, triton_scan
from ablation.models import cell
from ablation.training.probes import probe_pack
from ablation.training.trainer import build_pack, data_for

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

PACKS = {
    "lstm-variants": [{"model.variant": v} for v in ("vanilla", "niaf", "noaf", "cifg", "fgr")]
    + [{"model.gates": "none"}, {"model.forget_bias": 1.0}],
    "lstm-full-peepholes": [{"model.peephole": "full"}, {"model.peephole": "full", "model.gates": "forget"}],
    "gru-before": [{"model.cell": "gru"}, {"model.cell": "gru", "model.gates": "update"}],
    "gru-after": [{"model.cell": "gru", "model.gru_reset": "after"}],
    "rnn": [{"model.cell": "rnn"}],
}


@pytest.mark.parametrize("name", list(PACKS))
def test_pack_computes_on_cuda_what_it_computes_on_cpu(name, monkeypatch):
    """On CUDA, LSTM packs without an FGR member run the Triton scan where triton is installed (checked:
    it is called, and the record names it); the others, and every pack on CPU, the scans they ran before."""
    base = {"data.train_limit": 300, "model.embeddings": "random", "model.hidden_size": 16}
    cfgs = [apply(RunConfig(), {**base, **kw}) for kw in PACKS[name]]
    data = data_for(cfgs[0])
    cpu, _ = build_pack(cfgs, data)
    gpu = copy.deepcopy(cpu).cuda()
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # the compiled kernels
    triton_runs = cfgs[0].model.cell == "lstm" and not hasattr(gpu, "weight_gr") and triton_scan.available()
    assert select.scan_name(cfgs[0].model.cell, "cuda", fgr=hasattr(gpu, "weight_gr")) == (
        "triton" if triton_runs else "python")
    calls = []
    apply_triton = cell.TritonScan.apply
    monkeypatch.setattr(cell.TritonScan, "apply", lambda *a: calls.append(a[0].device.type) or apply_triton(*a))
    ids, lengths, labels = data.train.batch(torch.arange(40))
    results = []
    for model, dev in ((cpu, "cpu"), (gpu, "cuda")):
        loss = model.loss(model(ids.to(dev), lengths.to(dev)), labels.to(dev))
        loss.sum().backward()
        results.append((loss.detach().cpu(), {n: p.grad.cpu() for n, p in model.named_parameters()},
                        probe_pack(model, data.dev.to(dev))))
    (l_cpu, g_cpu, p_cpu), (l_gpu, g_gpu, p_gpu) = results
    assert set(calls) == ({"cuda"} if triton_runs else set())  # training step and probes; never on CPU
    torch.testing.assert_close(l_gpu, l_cpu, atol=1e-5, rtol=1e-5)
    for n in g_cpu:  # relative to the tensor's largest gradient: the gateless cell's run to ~10
        scale = g_cpu[n].abs().max().item()
        assert (g_gpu[n] - g_cpu[n]).abs().max().item() <= 1e-4 * scale + 1e-7, n
    for a, b in zip(p_cpu, p_gpu):
        for bin_a, bin_b in zip(a["gradient_decay"]["checkpoints"]["best"]["bins"],
                                b["gradient_decay"]["checkpoints"]["best"]["bins"]):
            assert bin_b["n"] == bin_a["n"]
            assert bin_b["mean"] == pytest.approx(bin_a["mean"], abs=1e-4)
        for gate in a["gates"]:
            assert b["gates"][gate]["mean"] == pytest.approx(a["gates"][gate]["mean"], abs=1e-4)


def test_portable_mode_on_cuda_is_deterministic_and_names_the_gpu(tmp_path):
    """Portable numerics on CUDA: deterministic algorithms, the GPU in the record, the same bytes twice
    (on the same GPU model; CPU and GPU runs are not bit-identical to each other)."""
    import json

    from ablation.running.job import train_and_record

    cfg = apply(RunConfig(), {"data.train_limit": 300, "model.embeddings": "random", "model.hidden_size": 16,
                              "train.epochs": 1})
    try:
        a, b = (train_and_record([cfg], tmp_path / k, "cuda")[0] for k in ("a", "b"))
    finally:
        torch.use_deterministic_algorithms(False)  # the CPU tests after this one run as before
    assert (a / "predictions.csv").read_bytes() == (b / "predictions.csv").read_bytes()
    machine = json.loads((a / "summary.json").read_text())["machine"]
    assert machine["gpu"] == torch.cuda.get_device_name() and machine["deterministic"]
    assert machine["numerics"] == "portable"


def test_cuda_graphs_train_what_eager_steps_train(tmp_path, monkeypatch):
    """kernels/cuda_graphs.py: a pack trained by replaying per-shape CUDA graphs (ABLATION_CUDA_GRAPHS=1) gets the
    numbers of eager steps, bit for bit (every epoch's loss and dev accuracy, the predictions), and its
    record says so. Two epochs: the first steps each shape eagerly and captures the repeated ones."""
    import json

    from ablation.kernels import cuda_graphs
    from ablation.running.job import train_and_record

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # the compiled kernels
    cfgs = [apply(RunConfig(), {"data.train_limit": 300, "model.embeddings": "random", "model.gates": g,
                                "train.epochs": 2}) for g in ("none", "input+forget+output")]
    runs = {}
    try:
        for value in ("0", "1"):
            monkeypatch.setenv(cuda_graphs.ENV, value)
            runs[value] = train_and_record(cfgs, tmp_path / value, "cuda")
    finally:
        torch.use_deterministic_algorithms(False)  # the CPU tests after this one run as before
    for eager, graphed in zip(runs["0"], runs["1"]):
        assert epoch_numbers(graphed) == epoch_numbers(eager)
        assert (graphed / "predictions.csv").read_bytes() == (eager / "predictions.csv").read_bytes()
        flags = [json.loads((d / "summary.json").read_text())["cuda_graphs"] for d in (eager, graphed)]
        assert flags == [False, True]
