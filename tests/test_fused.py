"""The fused C++ LSTM scan (ablation/kernels/cpp.py, csrc/): agreement with `cell._Scan` for every gate
set, peephole kind and variant (outputs, gate activations and every gradient, the probe's
included), float64 gradcheck, identical bits whatever the pack and whatever the vector ISA,
and the choice of scan (ABLATION_SCAN, the fallback notice, the record's name)."""

import shutil

import pytest
import torch
from _helpers import COMBOS, assert_agree, gate_ids, inputs, layer_gradcheck, run

from ablation.kernels import cpp, matmul, select
from ablation.models.cell import (
    GATES,
    PEEPHOLES,
    VARIANTS,
    CellSpec,
    FusedScan,
    GatedLSTM,
    ScanFlags,
    _Scan,
    gate_masks,
    lstm_scan,
)

# A machine without a C++ compiler runs the Python scan (with a notice); with one, the
# extension must build: a broken build fails here rather than skipping.
pytestmark = pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                reason="no C++ compiler: the fused scan cannot be built here")


@pytest.fixture(autouse=True)
def fused_scan(monkeypatch):
    monkeypatch.setenv("ABLATION_SCAN", "fused")
    assert cpp.load(), "the fused scan did not build"


@pytest.mark.parametrize("peephole", PEEPHOLES)
@pytest.mark.parametrize("gates", COMBOS, ids=gate_ids)
def test_agrees_with_python_scan(gates, peephole):
    """float32: outputs, gate activations and every gradient (the probe's too) to 1e-5."""
    specs = [CellSpec(gates, peephole), CellSpec(GATES, peephole)]  # a pack, so masks differ by member
    args = inputs(specs, peephole)
    assert_agree(run(FusedScan, *args), run(_Scan, *args))


@pytest.mark.parametrize("peephole", PEEPHOLES)
@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "vanilla"])
def test_variants_agree_with_python_scan(variant, peephole):
    specs = [CellSpec(GATES, peephole, variant), CellSpec(("input", "output"), peephole, variant),
             CellSpec(GATES, peephole)]
    args = inputs(specs, peephole)
    assert_agree(run(FusedScan, *args), run(_Scan, *args))


@pytest.mark.parametrize("peephole", PEEPHOLES)
def test_float64_agrees_to_rounding(peephole):
    """In double precision its exp, σ and tanh are accurate to a few ulp: 1e-11 after 6 steps."""
    specs = [CellSpec(g, peephole) for g in COMBOS] + [CellSpec(GATES, peephole, v) for v in VARIANTS]
    args = inputs(specs, peephole, torch.float64)
    assert_agree(run(FusedScan, *args), run(_Scan, *args), rtol=1e-11)


@pytest.mark.parametrize("peephole", PEEPHOLES)
@pytest.mark.parametrize("gates", COMBOS, ids=gate_ids)
def test_gradcheck(gates, peephole):
    layer = GatedLSTM(3, 2, gates=gates, peephole=peephole, forget_bias=0.5, seed=0)
    assert "FusedScan" in type(lstm_grad_fn(layer)).__name__  # the fused scan is what is checked
    assert layer_gradcheck(layer)


@pytest.mark.parametrize("peephole", PEEPHOLES)
@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "vanilla"])
def test_variant_gradcheck(variant, peephole):
    assert layer_gradcheck(GatedLSTM(3, 2, peephole=peephole, variant=variant, forget_bias=0.5, seed=0))


def lstm_grad_fn(layer):
    x = torch.randn(1, 2, layer.input_size, dtype=layer.weight_hh.dtype)
    xw = torch.nn.functional.linear(x, layer.weight_ih, layer.bias_ih + layer.bias_hh).transpose(0, 1).unsqueeze(1)
    peeps = [p.unsqueeze(0) if p is not None else None for p in layer.peepholes()]
    hs, _, _ = lstm_scan(xw, layer.weight_hh.unsqueeze(0), peeps, layer.on.to(x.dtype), ScanFlags([layer.spec]))
    return hs.grad_fn


@pytest.mark.parametrize("peephole", PEEPHOLES)
def test_member_alone_equals_member_in_pack_bit_for_bit(peephole):
    """Every output and gradient of a member is the same bits in a pack of 12 as alone."""
    specs = [CellSpec(g, peephole) for g in COMBOS] + [CellSpec(GATES, peephole, v) for v in VARIANTS if v != "fgr"]
    xw, whh, peeps, w_gr, on, flags = inputs(specs, peephole, T=5, B=4, H=6)
    pack = run(FusedScan, xw, whh, peeps, w_gr, on, flags)
    for m, spec in enumerate(specs):
        own = [p if p is None else p[m : m + 1] for p in peeps]
        alone = run(FusedScan, xw[:, m : m + 1], whh[m : m + 1], own, None, on[m : m + 1], ScanFlags([spec]))
        member = [pack[0][:, m], pack[1][:, m], pack[2][:, m], pack[3][:, m], pack[4][:, m], pack[5][m],
                  *[g[m] for g in pack[6:-1]], pack[-1][:, m]]
        squeezed = [alone[0][:, 0], alone[1][:, 0], alone[2][:, 0], alone[3][:, 0], alone[4][:, 0], alone[5][0],
                    *[g[0] for g in alone[6:-1]], alone[-1][:, 0]]
        for k, (a, b) in enumerate(zip(member, squeezed)):
            assert torch.equal(a, b), (spec, k)


@pytest.mark.parametrize("peephole", PEEPHOLES)
def test_avx2_and_baseline_kernels_give_the_same_bits(peephole):
    """The element-wise kernels, compiled for AVX2 and for the baseline ISA, agree bit for bit
    (IEEE operations in the same order, no FMA): results do not depend on the machine's ISA."""
    specs = [CellSpec(g, peephole) for g in COMBOS] + [CellSpec(GATES, peephole, v) for v in VARIANTS]
    args = inputs(specs, peephole, T=7, B=3, H=37)  # H not a multiple of any vector width
    try:
        was = torch.ops.ablation_fused.set_avx2(True)
    except RuntimeError:
        pytest.skip("no AVX2 on this CPU")
    try:
        wide = run(FusedScan, *args)
        torch.ops.ablation_fused.set_avx2(False)
        narrow = run(FusedScan, *args)
    finally:
        torch.ops.ablation_fused.set_avx2(was)
    for k, (a, b) in enumerate(zip(wide, narrow)):
        assert torch.equal(a, b), k


def test_sigmoid_and_tanh_by_hand():
    """Saturation and symmetry exactly where the lecture needs them: σ(+inf) = 1 (an absent
    gate), a gateless member is c_t = c_{t-1} + tanh(pre_g), h_t = tanh(c_t), to float rounding."""
    specs = [CellSpec((), "none")]
    xw = torch.tensor([0.0, 0.0, 0.5, 0.0, 0.0, 0.0, -30.0, 0.0]).view(2, 1, 1, 4)  # H = 1, two steps
    hs, cs, S, o = FusedScan.apply(xw, torch.zeros(1, 4, 1), None, None, None, None, None,
                                         gate_masks(specs), ScanFlags(specs))
    assert S[..., :2].eq(1).all() and o.eq(1).all()
    c1 = torch.tanh(torch.tensor(0.5))
    torch.testing.assert_close(cs[:, 0, 0, 0], torch.stack([c1, c1 - 1]), rtol=2e-7, atol=0)
    torch.testing.assert_close(hs[:, 0, 0, 0], torch.tanh(cs[:, 0, 0, 0]), rtol=2e-7, atol=0)


def test_choice_and_record_name(monkeypatch):
    monkeypatch.setenv("ABLATION_SCAN", "auto")
    assert select.wanted(torch.zeros(1)) and select.scan_name("lstm", "cpu") == "fused-cpp"
    assert not select.wanted(torch.zeros(1, device="meta"))  # not on CPU: the Python scan
    assert not select.wanted(torch.zeros(1, dtype=torch.bfloat16))
    assert select.scan_name("gru", "cpu") == select.scan_name("lstm", "cuda", fgr=True) == "python"  # CUDA: test_triton
    monkeypatch.setenv("ABLATION_SCAN", "python")
    assert not select.wanted(torch.zeros(1)) and select.scan_name("lstm", "cpu") == "python"
    cell = GatedLSTM(2, 3, seed=0)
    out, _ = cell(torch.randn(1, 2, 2))
    monkeypatch.setenv("ABLATION_SCAN", "fast")
    with pytest.raises(ValueError, match="ABLATION_SCAN='fast'; valid: auto, fused, python"):
        cell(torch.randn(1, 2, 2))


def test_python_env_runs_the_python_scan(monkeypatch):
    cell = GatedLSTM(2, 3, seed=0)
    x = torch.randn(2, 4, 2)
    monkeypatch.setenv("ABLATION_SCAN", "python")
    assert "_Scan" in type(lstm_grad_fn(cell)).__name__ and "Fused" not in type(lstm_grad_fn(cell)).__name__
    slow, _ = cell(x)
    monkeypatch.setenv("ABLATION_SCAN", "fused")
    fast, _ = cell(x)
    assert not torch.equal(fast, slow)  # two implementations (σ and tanh differ in the last bits) ...
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)  # ... of the same cell


def test_a_failed_build_falls_back_with_one_notice(monkeypatch, capsys, tmp_path):
    from torch.utils import cpp_extension

    def no_compiler(**kw):
        raise RuntimeError("Ninja is required to load C++ extensions\nmore detail")

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))  # nothing is built there
    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    monkeypatch.setenv("ABLATION_SCAN", "auto")
    cpp.load.cache_clear()
    try:
        assert not select.wanted(torch.zeros(1)) and not select.wanted(torch.zeros(1))
        assert select.scan_name() == "python"
        err = capsys.readouterr().err
        assert err == ("ablation: compiling the C++ kernels (once per source version; about 30-40 s)\n"
                       "ablation: the C++ kernels could not be built (Ninja is required to load C++ "
                       "extensions); using the Python scan\n")  # once
        monkeypatch.setenv("ABLATION_SCAN", "fused")  # asked for by name: an error, not a fallback
        with pytest.raises(cpp.BuildError, match="ABLATION_SCAN=fused, but the C\\+\\+ kernels could not"):
            select.wanted(torch.zeros(1))
    finally:
        monkeypatch.undo()
        cpp.load.cache_clear()
    assert cpp.load()


def test_bmm_by_hand_and_against_torch():
    """bias + a @ b: a hand-computed case, then random shapes (rows and columns not multiples
    of the kernel's block, a transposed a and b) against torch in float64, with gradients."""
    a = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    b = torch.tensor([[[5.0, 6.0, 7.0], [8.0, 9.0, 10.0]]])
    got = matmul.bmm(a, b, torch.tensor([[0.5, 0.0, -1.0]]))
    assert torch.equal(got, torch.tensor([[[21.5, 24.0, 26.0], [47.5, 54.0, 60.0]]]))
    gen = torch.Generator().manual_seed(0)
    for M, N, K, P in [(1, 1, 1, 1), (3, 7, 5, 19), (2, 13, 40, 37), (2, 6, 3, 64)]:
        r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64, requires_grad=True)  # noqa: E731
        a, b, bias = r(M, K, N), r(M, P, K), r(M, P)
        torch.testing.assert_close(matmul.bmm(a.transpose(1, 2), b.transpose(1, 2), bias),
                                   torch.baddbmm(bias.unsqueeze(1), a.transpose(1, 2), b.transpose(1, 2)))
        assert torch.autograd.gradcheck(lambda a, b, c: matmul.bmm(a.transpose(1, 2), b.transpose(1, 2), c),
                                        (a, b, bias))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bmm_is_the_fixed_order_sum_bit_for_bit(dtype):
    """Every element of bias + a @ b is bias, then + a[n, k]·b[k, p] for k = 0, 1, ..., K-1, one IEEE
    multiply and one add each (here one torch op at a time, so nothing fused or reordered), whatever the
    kernel's blocks: widths of whole and partial vectors of columns (one, two, three and more) and row
    counts around its 4- and 6-row blocks."""
    gen = torch.Generator().manual_seed(4)
    for N, K, P in [(1, 3, 1), (7, 9, 2), (5, 4, 9), (6, 11, 18), (13, 5, 24), (4, 6, 25), (11, 7, 50),
                    (3, 2, 41), (9, 5, 64), (2, 3, 200)]:
        a, b = torch.randn(2, N, K, generator=gen, dtype=dtype), torch.randn(2, K, P, generator=gen, dtype=dtype)
        bias = torch.randn(2, P, generator=gen, dtype=dtype)
        want = bias.unsqueeze(1).expand(2, N, P).clone()
        for k in range(K):
            want = want + a[:, :, k:k + 1] * b[:, k:k + 1, :]
        assert torch.equal(cpp.fixed_order_bmm(a, b, bias), want), (N, K, P)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_transposed_b_is_copied_exactly(dtype):
    """A transposed b (a weight Wᵀ) is copied to contiguous rows in 8x8 tiles (shuffled, for float32) and
    edge pieces: the product is the one of its contiguous copy, bit for bit, at shapes with both."""
    gen = torch.Generator().manual_seed(1)
    for M, N, K, P in [(2, 5, 50, 200), (3, 4, 25, 200), (1, 3, 19, 13), (2, 7, 8, 8)]:
        a, w = torch.randn(M, N, K, generator=gen, dtype=dtype), torch.randn(M, P, K, generator=gen, dtype=dtype)
        wt = w.transpose(1, 2)
        assert torch.equal(cpp.fixed_order_bmm(a, wt), cpp.fixed_order_bmm(a, wt.contiguous()))


def test_bmm_rows_do_not_depend_on_their_neighbours():
    """A row of a @ b has the same bits computed with 1, 5 or 23 rows around it, and a member
    the same bits alone as in a pack: the summation order is fixed per element."""
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(3, 23, 50, generator=gen), torch.randn(3, 50, 200, generator=gen)
    full = matmul.bmm(a, b)
    for rows in (slice(0, 1), slice(4, 9), slice(22, 23)):
        assert torch.equal(matmul.bmm(a[:, rows], b), full[:, rows])
    assert torch.equal(matmul.bmm(a[1:2], b[1:2]), full[1:2])
    assert torch.equal(matmul.bmm(a[..., :48], b[:, :48, :16]),
                       matmul.bmm(a[..., :48], b[:, :48])[..., :16])  # nor a column's on P


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adagrad_step_is_torch_adagrad(dtype):
    """The C++ AdaGrad step equals torch.optim.Adagrad's update to rounding (dense, and on
    the rows of an embedding table), each member at its own learning rate."""
    gen = torch.Generator().manual_seed(2)
    p, g, G = (torch.randn(3, 7, 5, generator=gen, dtype=dtype) for _ in range(3))
    G = G.abs()
    lrs = torch.tensor([0.05, 0.1, 0.5], dtype=dtype)
    want_G = G + g * g
    want = p - lrs.view(3, 1, 1) * g / (want_G.sqrt() + 1e-10)
    p1, G1 = p.clone(), G.clone()
    torch.ops.ablation_fused.adagrad_(p1, g, G1, -lrs, 1e-10, None)
    torch.testing.assert_close(G1, want_G, rtol=0, atol=0)
    torch.testing.assert_close(p1, want)
    rows = torch.tensor([4, 0])
    p2, G2 = p.clone(), G.clone()
    torch.ops.ablation_fused.adagrad_(p2, g[:, rows], G2, -lrs, 1e-10, rows)
    torch.testing.assert_close(p2[:, rows], want[:, rows])
    untouched = [r for r in range(7) if r not in (0, 4)]
    assert torch.equal(p2[:, untouched], p[:, untouched]) and torch.equal(G2[:, untouched], G[:, untouched])
    with pytest.raises(RuntimeError, match="out of range"):
        torch.ops.ablation_fused.adagrad_(p.clone(), g[:, :1], G.clone(), -lrs, 1e-10, torch.tensor([7]))


def test_avx2_and_baseline_matmul_and_adagrad_give_the_same_bits():
    gen = torch.Generator().manual_seed(3)
    a, b, bias = torch.randn(2, 11, 37, generator=gen), torch.randn(2, 37, 45, generator=gen), torch.randn(2, 45)
    p, g, G = (torch.randn(2, 301, generator=gen) for _ in range(3))
    lrs = -torch.tensor([0.05, 0.2])
    try:
        was = torch.ops.ablation_fused.set_avx2(True)
    except RuntimeError:
        pytest.skip("no AVX2 on this CPU")
    out = {}
    try:
        for wide in (True, False):
            torch.ops.ablation_fused.set_avx2(wide)
            q, S = p.clone(), G.abs()
            torch.ops.ablation_fused.adagrad_(q, g, S, lrs, 1e-10, None)
            out[wide] = (matmul.bmm(a, b, bias), q, S)
    finally:
        torch.ops.ablation_fused.set_avx2(was)
    for x, y in zip(out[True], out[False]):
        assert torch.equal(x, y)
