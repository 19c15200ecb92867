"""LSTM variants of Greff et al. 2017 (NIAF, NOAF, CIFG, FGR): a hand-computed step each,
gradcheck with every peephole kind, and equality with the vanilla cell where they must agree."""

import pytest
import torch
from _helpers import layer_gradcheck

from ablation.models.cell import (
    GATES,
    PEEPHOLES,
    VARIANTS,
    CellSpec,
    GatedLSTM,
    ScanFlags,
    Variant,
    active_lstm_params,
    init_lstm,
)

s, tanh = torch.sigmoid, torch.tanh
X1, X2 = 0.5, -1.0


def one_unit(variant: str, peephole: str = "none") -> GatedLSTM:
    """H = I = 1 with W_ih rows (i, f, g, o) = 1, 2, 3, 4, W_hh rows 0.5, -0.5, 1, 0.25, biases 0.1..0.4."""
    cell = GatedLSTM(1, 1, peephole=peephole, variant=variant, seed=0)
    with torch.no_grad():
        cell.weight_ih.copy_(torch.tensor([[1.0], [2.0], [3.0], [4.0]]))
        cell.weight_hh.copy_(torch.tensor([[0.5], [-0.5], [1.0], [0.25]]))
        cell.bias_ih.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))
        cell.bias_hh.zero_()
        if variant == "fgr":  # rows i, f, o from columns i, f, o at t-1
            cell.weight_gr.copy_(torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [-0.7, -0.8, -0.9]]))
    return cell


def by_hand(variant: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Two steps of the variant's equations, written out (h_0 = c_0 = 0)."""
    h = c = torch.tensor(0.0)
    a = torch.zeros(3)  # [i, f, o] of the step before
    R = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [-0.7, -0.8, -0.9]])
    for x in (X1, X2):
        gr = R @ a if variant == "fgr" else torch.zeros(3)
        i = s(1 * x + 0.5 * h + 0.1 + gr[0])
        f = 1 - i if variant == "cifg" else s(2 * x - 0.5 * h + 0.2 + gr[1])
        pre_g = 3 * x + 1.0 * h + 0.3
        g = pre_g if variant == "niaf" else tanh(pre_g)
        c = f * c + i * g
        o = s(4 * x + 0.25 * h + 0.4 + gr[2])
        h = o * (c if variant == "noaf" else tanh(c))
        a = torch.stack([i, f, o])
    return h, c


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_two_steps_by_hand(variant):
    cell = one_unit(variant)
    _, (h, c) = cell(torch.tensor([[[X1], [X2]]]))
    want_h, want_c = by_hand(variant)
    torch.testing.assert_close(h[0, 0], want_h)
    torch.testing.assert_close(c[0, 0], want_c)


@pytest.mark.parametrize("peephole", PEEPHOLES)
@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "vanilla"])
def test_gradcheck(variant, peephole):
    assert layer_gradcheck(GatedLSTM(3, 2, peephole=peephole, variant=variant, forget_bias=0.5, seed=0))


def test_cifg_forget_rows_take_no_gradient_and_do_not_count():
    H = 3
    cell = GatedLSTM(2, H, peephole="diagonal", variant="cifg", seed=1)
    out, (h, c) = cell(torch.randn(2, 5, 2))
    (out.sum() + c.sum()).backward()
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        assert getattr(cell, name).grad[H : 2 * H].abs().sum() == 0
        assert getattr(cell, name).grad[:H].abs().sum() > 0
    assert cell.weight_cf.grad.abs().sum() == 0
    I = 25
    full = active_lstm_params(CellSpec(GATES, "diagonal"), I, 50)
    assert active_lstm_params(CellSpec(GATES, "diagonal", "cifg"), I, 50) == full - 50 * (I + 50 + 2) - 50
    assert active_lstm_params(CellSpec(GATES, "none", "fgr"), I, 50) == active_lstm_params(
        CellSpec(GATES, "none"), I, 50) + 9 * 50 * 50


def test_variants_share_a_pack_exactly():
    """A pack holding every variant gives each member what it computes alone, bit for bit
    (the FGR weights of the others are zero and stay zero)."""
    from ablation.models.cell import gate_masks, lstm_scan

    torch.manual_seed(0)
    T, B, H = 5, 3, 4
    specs = [CellSpec(GATES, "diagonal", v) for v in VARIANTS]
    M = len(specs)
    xw = torch.randn(T, M, B, 4 * H, requires_grad=True)
    whh = torch.randn(M, 4 * H, H, requires_grad=True)
    peeps = [torch.randn(M, H, requires_grad=True) for _ in range(3)]
    fgr = torch.tensor([v == "fgr" for v in VARIANTS], dtype=torch.float32).view(M, 1, 1)
    w_gr = (torch.randn(M, 3 * H, 3 * H) * fgr).requires_grad_()
    hs, cs, _ = lstm_scan(xw, whh, peeps, gate_masks(specs), ScanFlags(specs), w_gr)
    (hs.square().sum() + cs.sum()).backward()
    assert w_gr.grad[fgr.view(-1) == 0].abs().sum() == 0
    for m, spec in enumerate(specs):
        xm = xw.detach()[:, m : m + 1].clone().requires_grad_()
        alone_gr = w_gr.detach()[m : m + 1] if spec.variant == "fgr" else None
        hm, cm, _ = lstm_scan(xm, whh.detach()[m : m + 1], [p.detach()[m : m + 1] for p in peeps],
                              gate_masks([spec]), ScanFlags([spec]), alone_gr)
        (hm.square().sum() + cm.sum()).backward()
        assert torch.equal(hm[:, 0], hs[:, m]) and torch.equal(cm[:, 0], cs[:, m]), spec.variant
        torch.testing.assert_close(xm.grad[:, 0], xw.grad[:, m], rtol=1e-6, atol=1e-7)


def test_unknown_variant_names_the_valid_ones():
    with pytest.raises(ValueError, match="valid: vanilla, niaf, noaf, cifg, fgr"):
        CellSpec(variant="coupled")


def test_the_registry_holds_what_the_code_reads():
    """Every entry's description, flag, weightless gate and parameters, as the paper has them."""
    assert [v for v in VARIANTS if VARIANTS[v].flag] == ["niaf", "noaf", "cifg", "fgr"]  # vanilla is the cell itself
    assert {v: VARIANTS[v].weightless_gate for v in VARIANTS if VARIANTS[v].weightless_gate} == {"cifg": "forget"}
    assert VARIANTS["fgr"].shapes(4) == {"weight_gr": (12, 12)} and VARIANTS["fgr"].extra_parameters(4) == 144
    assert str(VARIANTS["noaf"]) == VARIANTS["noaf"].description == "no output activation function: h_t = o_t ⊙ c_t"
    for v in VARIANTS.values():
        assert v.weightless_gate in (None, *GATES)


@pytest.mark.parametrize("peephole", PEEPHOLES)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_masks_flags_and_parameters_follow_the_entry(variant, peephole):
    """A variant's gate mask, scan flag, parameters and their count come from its entry alone."""
    I, H = 3, 4
    entry, spec, vanilla = VARIANTS[variant], CellSpec(GATES, peephole, variant), CellSpec(GATES, peephole)
    assert spec.mask() == [float(g != entry.weightless_gate) for g in GATES]
    flags = ScanFlags([vanilla, spec])
    assert set(flags.masks) == {v for v in VARIANTS if VARIANTS[v].flag}
    for name, mask in flags.masks.items():
        assert getattr(flags, name) is mask
        assert (mask is None) if name != variant else mask.view(-1).tolist() == [False, True]
    cell = GatedLSTM(I, H, peephole=peephole, variant=variant, seed=0)
    plain = GatedLSTM(I, H, peephole=peephole, seed=0)
    extra = {n: tuple(p.shape) for n, p in cell.named_parameters()} - plain.state_dict().keys()
    assert {n: tuple(cell.get_parameter(n).shape) for n in extra} == entry.shapes(H)
    per_gate = H * (I + H + 2) + {"none": 0, "diagonal": H, "full": H * H}[peephole]  # rows and peephole of a gate
    lost = per_gate if entry.weightless_gate else 0
    assert active_lstm_params(spec, I, H) == active_lstm_params(vanilla, I, H) - lost + entry.extra_parameters(H)


def test_a_new_entry_is_all_the_bookkeeping_a_variant_needs(monkeypatch):
    """Registering a variant gives it a scan flag, its gate mask, its parameters (drawn last,
    zero in the pack's other members) and their count, with no other code touched."""
    from ablation.models.classifier import PackedClassifier

    monkeypatch.setitem(VARIANTS, "toy", Variant("a test entry", weightless_gate="output",
                                                 params=(("weight_toy", (1, 2)),)))
    I, H = 3, 4
    spec, vanilla = CellSpec(GATES, "diagonal", "toy"), CellSpec(GATES, "diagonal")
    assert spec.mask() == [1.0, 1.0, 0.0]
    flags = ScanFlags([vanilla, spec, vanilla])
    assert flags.toy.view(-1).tolist() == [False, True, False] and flags.niaf is None
    assert active_lstm_params(spec, I, H) == active_lstm_params(vanilla, I, H) - H * (I + H + 2) - H + 2 * H * H
    own = init_lstm(torch.Generator().manual_seed(0), I, H, "diagonal", 0.0, "toy")
    base = init_lstm(torch.Generator().manual_seed(0), I, H, "diagonal", 0.0)
    assert list(own) == [*base, "weight_toy"] and own["weight_toy"].shape == (H, 2 * H)
    assert all(torch.equal(own[n], base[n]) for n in base)  # drawn after everything else
    pack = PackedClassifier([vanilla, spec], [0, 0], vocab_size=5, embedding_dim=I, hidden_size=H)
    assert pack.variant_params == (("weight_toy", (1, 2)),)
    assert pack.weight_toy.shape == (2, H, 2 * H)
    assert pack.weight_toy[0].abs().sum() == 0 and pack.weight_toy[1].abs().min() > 0
