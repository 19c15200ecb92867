"""The Triton LSTM scan (ablation/triton_scan.py, cell.TritonScan), run on CPU through Triton's
interpreter: agreement with `cell._Scan` for every gate set, peephole kind and flag variant (outputs,
gate activations and every gradient, the probe's included), float64 to rounding, H not a power of two
and batches over one block, members independent of their pack, and the choice of scan on CUDA.

The interpreter flag: Triton (3.9: `triton.knobs.runtime.interpret`, from TRITON_INTERPRET) reads it when
`triton.jit` wraps a kernel, and triton_scan wraps its kernels at the first launch, once per setting of
the flag. So each test here sets TRITON_INTERPRET=1 for itself (monkeypatch), whatever was imported
before and in whatever order the tests run, and it does not leak into the GPU tests, which must run the
compiled kernels. Skips cleanly without triton (the ``triton`` extra)."""

import pytest
import torch
from _helpers import COMBOS, assert_agree, inputs, run

from ablation.kernels import select, triton_scan
from ablation.models.cell import GATES, PEEPHOLES, TRITON_FLAGS, CellSpec, ScanFlags, TritonScan, _Scan, gate_masks

pytest.importorskip("triton", reason="triton is not installed (pip install -e '.[triton]')")
pytestmark = pytest.mark.triton



@pytest.fixture(autouse=True)
def interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.delenv("ABLATION_SCAN", raising=False)
    if not triton_scan.interpreting():  # only if someone set triton.knobs.runtime.interpret in code
        pytest.skip("Triton's interpreter flag was set off through triton.knobs; TRITON_INTERPRET=1 cannot apply")


@pytest.mark.parametrize("peephole", PEEPHOLES)
def test_gate_sets_agree_with_python_scan(peephole):
    """float32, one pack holding the 8 gate sets: outputs, S, o and every gradient to 1e-5; H = 5 pads to 16."""
    specs = [CellSpec(g, peephole) for g in COMBOS]
    args = inputs(specs, peephole, T=5, B=3, H=5)
    got = run(TritonScan, *args)
    assert_agree(got, run(_Scan, *args))
    H, on = 5, args[4]
    S, o, dxw = got[2], got[3], got[4]
    acts = [S[..., :H], S[..., H : 2 * H], o]  # i, f, o
    rows = [slice(0, H), slice(H, 2 * H), slice(3 * H, 4 * H)]  # their rows of the 4H pre-activations
    for k in range(3):  # an absent gate is exactly 1, and its rows take exactly zero gradient
        absent = on[:, k] == 0
        assert acts[k][:, absent].eq(1).all() and dxw[:, absent][..., rows[k]].eq(0).all(), k


@pytest.mark.parametrize("peephole", PEEPHOLES)
def test_flag_variants_agree_with_python_scan(peephole):
    """NIAF, NOAF and CIFG members, with all gates and with input+output only, beside a vanilla member."""
    specs = ([CellSpec(GATES, peephole, v) for v in TRITON_FLAGS] + [CellSpec(("input", "output"), peephole, v)
                                                                 for v in TRITON_FLAGS] + [CellSpec(GATES, peephole)])
    args = inputs(specs, peephole, T=5, B=3, H=5)
    assert_agree(run(TritonScan, *args), run(_Scan, *args))


@pytest.mark.parametrize("peephole", PEEPHOLES)
def test_float64_agrees_to_rounding(peephole):
    """float64, every gate set and flag variant in one pack, H = 17 (pads to 32) and B = 19 (two batch
    blocks, the second mostly padding): to 1e-10 of each tensor's scale."""
    specs = [CellSpec(g, peephole) for g in COMBOS] + [CellSpec(GATES, peephole, v) for v in TRITON_FLAGS]
    args = inputs(specs, peephole, torch.float64, T=4, B=19, H=17)
    assert_agree(run(TritonScan, *args), run(_Scan, *args), rtol=1e-10)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("peephole", PEEPHOLES)
def test_compiled_on_cuda_agrees_with_python_scan_on_cpu(peephole, monkeypatch):
    """The compiled kernels on a GPU, at the lecture's sizes: every gate set and flag variant in one pack,
    H = 50 (pads to 64), B = 25 (two batch blocks), T = 30, in float32 against `_Scan` on the CPU in
    float64, to 1e-5 of each tensor's scale (no TF32: `input_precision="ieee"`). float64 is refused with
    a clear error (its tiles outgrow shared memory), and `lstm_scan` runs `_Scan` for it."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    dtype = torch.float32
    specs = [CellSpec(g, peephole) for g in COMBOS] + [CellSpec(GATES, peephole, v) for v in TRITON_FLAGS]
    xw, whh, peeps, _, on, flags = inputs(specs, peephole, torch.float64, T=30, B=25, H=50)
    whh, peeps = whh * 0.2, [p if p is None else p * 0.2 for p in peeps]  # a contracting recurrence at H = 50
    want = run(_Scan, xw, whh, peeps, None, on, flags)
    to = lambda t: None if t is None else t.to("cuda", dtype)  # noqa: E731
    got = run(TritonScan, to(xw), to(whh), [to(p) for p in peeps], None, to(on), ScanFlags(specs, "cuda"))
    assert_agree([g.cpu().double() for g in got], want, rtol=1e-5)
    assert not select.triton_wanted(xw.cuda()) and select.triton_wanted(to(xw))
    with pytest.raises(ValueError, match="compiled Triton LSTM scan takes float32, got torch.float64"):
        TritonScan.apply(xw.cuda(), whh.cuda(), *[p if p is None else p.cuda() for p in peeps], None, None,
                         on.cuda(), ScanFlags(specs, "cuda"))


@pytest.mark.parametrize("peephole", ["diagonal", "full"])
def test_member_alone_equals_member_in_pack(peephole):
    """A member's outputs, ∂J/∂xw and probe are the same bits alone as in its pack (one program per member)."""
    specs = [CellSpec(g, peephole) for g in (GATES, ("forget",), ())] + [CellSpec(GATES, peephole, "cifg")]
    xw, whh, peeps, w_gr, on, flags = inputs(specs, peephole, T=4, B=3, H=5)
    pack = run(TritonScan, xw, whh, peeps, w_gr, on, flags)
    for m, spec in enumerate(specs):
        own = [p[m : m + 1] for p in peeps]
        alone = run(TritonScan, xw[:, m : m + 1], whh[m : m + 1], own, None, on[m : m + 1], ScanFlags([spec]))
        for k in (0, 1, 2, 3, 4, -1):  # hs, cs, S, o, ∂J/∂xw, ∂J/∂probe: all (T, M, ...)
            assert torch.equal(pack[k][:, m], alone[k][:, 0]), (spec, k)


def test_without_probe_and_without_a_loss_on_h():
    """No probe: no probe gradient; a loss on c alone (∂J/∂h_t = 0 from outside) still agrees."""
    specs = [CellSpec(GATES, "diagonal"), CellSpec(("input",), "diagonal", "noaf")]
    xw, whh, peeps, _, on, flags = inputs(specs, "diagonal", T=4, B=2, H=3)
    grads = []
    for scan in (TritonScan, _Scan):
        leaf = xw.clone().requires_grad_()
        _, cs, _, _ = scan.apply(leaf, whh, *peeps, None, None, on, flags)
        grads.append(torch.autograd.grad(cs.square().sum(), leaf)[0])
    assert_agree(grads[:1], grads[1:])


def test_fgr_and_cpu_without_the_interpreter_are_refused(monkeypatch):
    specs = [CellSpec(GATES, "none", "fgr")]
    xw, whh, peeps, w_gr, on, flags = inputs(specs, "none", T=2, B=1, H=2)
    with pytest.raises(ValueError, match="Triton LSTM scan has no FGR"):
        TritonScan.apply(xw, whh, *peeps, w_gr, None, on, flags)
    with pytest.raises(ValueError, match="the Triton LSTM scan has no variant fgr; it has niaf, noaf, cifg"):
        TritonScan.apply(xw, whh, *peeps, None, None, on, flags)  # a flag it does not compute is refused
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match=r"runs cpu tensors only under Triton's interpreter \(TRITON_INTERPRET=1\)"):
        TritonScan.apply(xw, whh, *peeps, None, None, on, ScanFlags([CellSpec(GATES, "none")]))
    with pytest.raises(ValueError, match="float32 or float64, got torch.bfloat16"):
        triton_scan.lstm_forward(xw.bfloat16(), whh.bfloat16(), None, None, None, None, on)


def test_choice_on_cuda_and_record_name(monkeypatch):
    """LSTM packs without FGR run (and record) the Triton scan on CUDA; FGR, GRU, RNN, ABLATION_SCAN=python
    and a machine without triton the Python scan; CPU keeps the fused C++ scan's choice."""
    assert select.scan_name("lstm", "cuda") == "triton"
    assert select.scan_name("lstm", "cuda", fgr=True) == select.scan_name("gru", "cuda") == "python"
    assert select.scan_name("rnn", "cuda") == "python"
    assert not select.triton_wanted(torch.zeros(1))  # CPU tensors: never (the fused C++ scan or _Scan)
    assert not select.triton_wanted(torch.zeros(1, device="meta"))
    monkeypatch.setenv("ABLATION_SCAN", "python")
    assert select.scan_name("lstm", "cuda") == "python"
    monkeypatch.delenv("ABLATION_SCAN")
    monkeypatch.setattr(triton_scan, "available", lambda: False)
    assert select.scan_name("lstm", "cuda") == "python"  # the choice itself is checked on a GPU: tests/test_cuda.py


def test_gateless_cell_by_hand():
    """No gates: c_t = c_{t-1} + tanh(pre_g), h_t = tanh(c_t), and every i, f, o exactly 1 (σ of nothing)."""
    specs = [CellSpec((), "none")]
    xw = torch.tensor([0.0, 0.0, 0.5, 0.0, 0.0, 0.0, -30.0, 0.0]).view(2, 1, 1, 4)  # H = 1, two steps
    hs, cs, S, o = TritonScan.apply(xw, torch.zeros(1, 4, 1), None, None, None, None, None, gate_masks(specs),
                                    ScanFlags(specs))
    assert S[..., :2].eq(1).all() and o.eq(1).all()
    c1 = torch.tanh(torch.tensor(0.5))
    torch.testing.assert_close(cs[:, 0, 0, 0], torch.stack([c1, c1 - 1]), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(hs[:, 0, 0, 0], torch.tanh(cs[:, 0, 0, 0]), rtol=1e-6, atol=1e-7)
