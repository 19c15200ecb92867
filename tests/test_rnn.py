"""GRU (reset before/after, gates toggleable) and Elman RNN: parity with torch.nn.GRU and
torch.nn.RNN, hand-computed steps, gradcheck, absent gates."""

import pytest
import torch
from _helpers import layer_gradcheck

from ablation.models.cell import CELL_GATES
from ablation.models.rnn import ElmanRNN, GatedGRU

GRU_COMBOS = [(), ("reset",), ("update",), ("reset", "update")]
NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def load_into(ref: torch.nn.Module, ours: torch.nn.Module) -> torch.nn.Module:
    ref.load_state_dict({f"{k}_l0": v for k, v in ours.state_dict().items()})
    return ref


def random_biases(m):
    with torch.no_grad():
        m.bias_ih.uniform_(-0.5, 0.5)
        m.bias_hh.uniform_(-0.5, 0.5)
    return m


@pytest.mark.parametrize("cls,ref_cls,kwargs", [(GatedGRU, torch.nn.GRU, {"reset": "after"}),
                                                 (ElmanRNN, torch.nn.RNN, {})], ids=["gru", "rnn"])
def test_parity_with_torch_on_a_padded_batch_with_gradients(cls, ref_cls, kwargs):
    torch.manual_seed(0)
    ours = random_biases(cls(3, 4, seed=1, **kwargs))
    ref = load_into(ref_cls(3, 4, batch_first=True), ours)
    lengths = torch.tensor([5, 2, 4, 1])
    x = torch.randn(4, 5, 3)
    out, h = ours(x, lengths)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    ref_out, ref_h = ref(packed)
    ref_out, _ = torch.nn.utils.rnn.pad_packed_sequence(ref_out, batch_first=True)
    for b, n in enumerate(lengths):
        torch.testing.assert_close(out[b, :n], ref_out[b, :n], atol=1e-6, rtol=0)
    torch.testing.assert_close(h, ref_h[0], atol=1e-6, rtol=0)
    (h * torch.arange(4.0)).sum().backward()
    (ref_h[0] * torch.arange(4.0)).sum().backward()
    for name in NAMES:
        torch.testing.assert_close(getattr(ours, name).grad, getattr(ref, f"{name}_l0").grad, atol=1e-5, rtol=1e-4)


def test_gru_reset_before_two_steps_by_hand():
    # H = I = 1; rows r, z, n. u = 1 - z is the lecture's update gate.
    gru = GatedGRU(1, 1, reset="before")
    with torch.no_grad():
        gru.weight_ih.copy_(torch.tensor([[1.0], [2.0], [3.0]]))
        gru.weight_hh.copy_(torch.tensor([[0.5], [-1.0], [2.0]]))
        gru.bias_ih.copy_(torch.tensor([0.1, 0.2, 0.3]))
        gru.bias_hh.copy_(torch.tensor([0.01, 0.02, 0.03]))
    s, h = torch.sigmoid, torch.tensor(0.0)
    for x in (0.5, -1.0):
        r = s(1 * x + 0.1 + 0.5 * h + 0.01)
        u = 1 - s(2 * x + 0.2 - 1.0 * h + 0.02)
        h_tilde = torch.tanh(2.0 * (r * h) + 0.03 + 3 * x + 0.3)  # W_h (r ⊙ h_{t-1}) + U_h x_t + b_h
        h = (1 - u) * h + u * h_tilde
    _, h_n = gru(torch.tensor([[[0.5], [-1.0]]]))
    torch.testing.assert_close(h_n[0, 0], h)


def test_reset_before_and_after_differ_only_through_the_reset():
    torch.manual_seed(2)
    x = torch.randn(2, 6, 3)
    before, after = (random_biases(GatedGRU(3, 4, reset=r, seed=0)) for r in ("before", "after"))
    after.load_state_dict(before.state_dict())
    assert not torch.allclose(before(x)[1], after(x)[1])
    for m in (before, after):  # without a reset gate (r = 1) the two forms are one
        m.spec = type(m.spec)(("update",), kind="gru", reset=m.spec.reset)
        m.on = torch.tensor([m.spec.mask()])
    torch.testing.assert_close(before(x)[1], after(x)[1], atol=1e-6, rtol=0)


@pytest.mark.parametrize("reset", ["before", "after"])
@pytest.mark.parametrize("gates", GRU_COMBOS, ids=lambda g: "+".join(g) or "none")
def test_gru_gradcheck_and_absent_gates(gates, reset):
    gru = GatedGRU(3, 2, gates=gates, reset=reset, seed=0)
    assert layer_gradcheck(gru)
    out, h = gru(torch.randn(3, 4, 3, dtype=torch.double), torch.tensor([4, 2, 3]))
    out.sum().backward()
    H = 2
    for k, gate in enumerate(CELL_GATES["gru"]):
        rows = gru.weight_ih.grad[k * H : (k + 1) * H]
        assert (rows.abs().sum() == 0) == (gate not in gates), gate


def test_gru_without_update_gate_is_h_tilde():
    # u = 1: h_t = h̃_t, an Elman-like cell with a reset gate
    gru = random_biases(GatedGRU(2, 3, gates=("reset",), reset="after", seed=4))
    x = torch.randn(1, 1, 2)
    out, _ = gru(x)
    r = torch.sigmoid(gru.weight_ih[:3] @ x[0, 0] + gru.bias_ih[:3] + gru.bias_hh[:3])
    h_tilde = torch.tanh(gru.weight_ih[6:] @ x[0, 0] + gru.bias_ih[6:] + r * gru.bias_hh[6:])
    torch.testing.assert_close(out[0, 0], h_tilde)


def test_rnn_gradcheck():
    assert layer_gradcheck(ElmanRNN(3, 2, seed=0))


def test_gru_gate_names_are_checked():
    with pytest.raises(ValueError, match="valid gates: reset, update"):
        GatedGRU(2, 2, gates=("input",))
    from ablation.models.cell import CellSpec

    with pytest.raises(ValueError, match="valid gates: none"):
        CellSpec(("input",), kind="rnn")


@pytest.mark.parametrize("kind,reset", [("lstm", "before"), ("gru", "before"), ("gru", "after"), ("rnn", "before")])
def test_each_kind_entry_runs_its_single_layer_inside_the_pack_classifier(kind, reset):
    """`model.KINDS` holds one entry per cell kind, and a pack built from it (initial values,
    bias join, scan, parameter count) computes what the kind's own layer does with the same weights."""
    from ablation.models.cell import CellSpec, GatedLSTM
    from ablation.models.classifier import KINDS, PackedClassifier

    assert set(KINDS) == set(CELL_GATES)
    E, H = 3, 4
    spec = CellSpec(CELL_GATES[kind], "diagonal" if kind == "lstm" else "none", kind=kind, reset=reset)
    layer = {"lstm": lambda: GatedLSTM(E, H, peephole="diagonal"), "gru": lambda: GatedGRU(E, H, reset=reset),
             "rnn": lambda: ElmanRNN(E, H)}[kind]()
    pack = PackedClassifier([spec], [3], vocab_size=9, embedding_dim=E, hidden_size=H)
    random_biases(pack)
    state = pack.member_state(0)
    layer.load_state_dict({n: state[n] for n in layer.state_dict()})  # same names and shapes, all present
    assert state.keys() - layer.state_dict().keys() == {"embedding", "cls_weight", "cls_bias"}
    x = torch.randn(1, 5, 2, E)  # (M, T, B, E)
    hs, _ = pack.hidden(x)
    out = layer(x[0].transpose(0, 1))[0]  # (B, T, H)
    torch.testing.assert_close(hs[:, 0].transpose(0, 1), out, atol=1e-6, rtol=1e-5)
    cls = pack.num_classes * (H + 1)
    assert pack.active_parameters(0) - cls == KINDS[kind].active_params(spec, E, H) == sum(
        p.numel() for p in layer.parameters())
