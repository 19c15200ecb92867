"""The cell: parity with torch.nn.LSTM, gradcheck for every gate x peephole, hand-computed steps."""

import itertools

import pytest
import torch
from _helpers import layer_gradcheck

from ablation.models.cell import GATES, PEEPHOLES, CellSpec, GatedLSTM, active_lstm_params, parse_gates

COMBOS = [c for r in range(4) for c in itertools.combinations(GATES, r)]


def copy_to_lstm(cell: GatedLSTM) -> torch.nn.LSTM:
    ref = torch.nn.LSTM(cell.input_size, cell.hidden_size, batch_first=True)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(ref, f"{name}_l0").copy_(getattr(cell, name))
    return ref


def randomize_biases(cell):
    with torch.no_grad():
        cell.bias_ih.uniform_(-0.5, 0.5)
        cell.bias_hh.uniform_(-0.5, 0.5)


def test_all_gates_no_peepholes_equals_nn_lstm():
    torch.manual_seed(0)
    cell = GatedLSTM(7, 5, seed=3)
    randomize_biases(cell)
    ref = copy_to_lstm(cell)
    x = torch.randn(4, 6, 7)
    out, (h, c) = cell(x)
    ref_out, (ref_h, ref_c) = ref(x)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=0)
    torch.testing.assert_close(h, ref_h[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(c, ref_c[0], atol=1e-5, rtol=0)


def test_padded_batch_with_lengths_equals_packed_nn_lstm_and_gradients():
    torch.manual_seed(1)
    cell = GatedLSTM(3, 4, seed=5)
    randomize_biases(cell)
    ref = copy_to_lstm(cell)
    lengths = torch.tensor([5, 2, 4, 1])
    x = torch.randn(4, 5, 3)
    out, (h, c) = cell(x, lengths)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    ref_out, (ref_h, ref_c) = ref(packed)
    ref_out, _ = torch.nn.utils.rnn.pad_packed_sequence(ref_out, batch_first=True)
    for b, n in enumerate(lengths):
        torch.testing.assert_close(out[b, :n], ref_out[b, :n], atol=1e-5, rtol=0)
    torch.testing.assert_close(h, ref_h[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(c, ref_c[0], atol=1e-5, rtol=0)
    # gradients of a loss on the final states agree parameter by parameter
    (h.sum() + (c * c).sum()).backward()
    (ref_h.sum() + (ref_c * ref_c).sum()).backward()
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        torch.testing.assert_close(getattr(cell, name).grad, getattr(ref, f"{name}_l0").grad,
                                   atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("peephole", PEEPHOLES)
@pytest.mark.parametrize("gates", COMBOS, ids=lambda g: "+".join(g) or "none")
def test_gradcheck(gates, peephole):
    assert layer_gradcheck(GatedLSTM(3, 2, gates=gates, peephole=peephole, forget_bias=0.5, seed=0))


@pytest.mark.parametrize("peephole", PEEPHOLES)
@pytest.mark.parametrize("gates", COMBOS, ids=lambda g: "+".join(g) or "none")
def test_absent_gate_rows_take_no_gradient(gates, peephole):
    H = 3
    cell = GatedLSTM(2, H, gates=gates, peephole=peephole, seed=1)
    out, (h, c) = cell(torch.randn(2, 4, 2))
    (out.sum() + c.sum()).backward()
    rows = {"input": slice(0, H), "forget": slice(H, 2 * H), "output": slice(3 * H, 4 * H)}
    peep = {"input": "weight_ci", "forget": "weight_cf", "output": "weight_co"}
    for gate in GATES:
        absent = gate not in gates
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            g = getattr(cell, name).grad[rows[gate]]
            assert (g.abs().sum() == 0) == absent, (gate, name)
        if peephole != "none":
            assert (getattr(cell, peep[gate]).grad.abs().sum() == 0) == absent
    assert cell.weight_ih.grad[2 * H : 3 * H].abs().sum() > 0  # g rows always learn


def test_gateless_one_step_by_hand():
    # c_1 = c_0 + tanh(W_xc x + W_hc h_0 + b_c) with h_0 = c_0 = 0; h_1 = tanh(c_1);
    # step 2: c_2 = c_1 + tanh(W_xc x_2 + W_hc h_1 + b_c)
    cell = GatedLSTM(1, 1, gates=(), seed=0)
    with torch.no_grad():
        cell.weight_ih.copy_(torch.tensor([[9.0], [9.0], [0.5], [9.0]]))
        cell.weight_hh.copy_(torch.tensor([[9.0], [9.0], [2.0], [9.0]]))
        cell.bias_ih.copy_(torch.tensor([9.0, 9.0, 0.1, 9.0]))
        cell.bias_hh.zero_()
    out, (h, c) = cell(torch.tensor([[[1.0], [-2.0]]]))
    c1 = torch.tanh(torch.tensor(0.5 + 0.1))
    h1 = torch.tanh(c1)
    c2 = c1 + torch.tanh(-1.0 + 2.0 * h1 + 0.1)
    torch.testing.assert_close(out[0, :, 0], torch.stack([h1, torch.tanh(c2)]))
    torch.testing.assert_close(c[0, 0], c2)


def test_one_step_all_gates_diagonal_peepholes_by_hand():
    cell = GatedLSTM(1, 1, peephole="diagonal", seed=0)
    with torch.no_grad():
        cell.weight_ih.copy_(torch.tensor([[1.0], [2.0], [3.0], [4.0]]))
        cell.weight_hh.zero_()
        cell.bias_ih.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))
        cell.bias_hh.zero_()
        cell.weight_ci.fill_(5.0)
        cell.weight_cf.fill_(6.0)
        cell.weight_co.fill_(0.7)
    x = 0.5
    s = torch.sigmoid
    i, f, g = s(torch.tensor(x * 1 + 0.1)), s(torch.tensor(x * 2 + 0.2)), torch.tanh(torch.tensor(x * 3 + 0.3))
    c = f * 0 + i * g  # c_0 = 0, so the i/f peepholes see 0
    o = s(x * 4 + 0.4 + 0.7 * c)  # the output peephole sees c_1
    _, (h, cn) = cell(torch.tensor([[[x]]]))
    torch.testing.assert_close(cn[0, 0], c)
    torch.testing.assert_close(h[0, 0], o * torch.tanh(c))


def test_names_and_shapes_match_nn_lstm_and_load_both_ways():
    cell = GatedLSTM(6, 4, peephole="full", seed=0)
    ref = torch.nn.LSTM(6, 4)
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        assert getattr(cell, name).shape == getattr(ref, f"{name}_l0").shape
    assert cell.weight_ci.shape == (4, 4)
    assert GatedLSTM(6, 4, peephole="diagonal").weight_co.shape == (4,)
    sd = {k.removesuffix("_l0"): v for k, v in ref.state_dict().items()}
    GatedLSTM(6, 4).load_state_dict(sd)


def test_active_parameter_count():
    I, H = 25, 50
    full = CellSpec(GATES, "none")
    assert active_lstm_params(full, I, H) == sum(p.numel() for p in torch.nn.LSTM(I, H).parameters())
    assert active_lstm_params(CellSpec((), "none"), I, H) == H * (I + H + 2)
    assert active_lstm_params(CellSpec(("input",), "diagonal"), I, H) == 2 * H * (I + H + 2) + H
    assert active_lstm_params(CellSpec(GATES, "full"), I, H) == 4 * H * (I + H + 2) + 3 * H * H


@pytest.mark.parametrize("bad", ["inptu", "input+bogus"])
def test_unknown_gate_names_the_valid_ones(bad):
    with pytest.raises(ValueError, match="valid gates: input, forget, output"):
        parse_gates(bad)
    with pytest.raises(ValueError, match="valid: none, diagonal, full"):
        CellSpec(peephole="diag")


def test_forget_bias_initialisation():
    cell = GatedLSTM(2, 3, forget_bias=1.0, seed=0)
    assert torch.equal(cell.bias_ih[3:6], torch.ones(3))
    assert cell.bias_ih[:3].abs().sum() == 0 and cell.bias_ih[6:].abs().sum() == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    cell = GatedLSTM(3, 4, peephole="diagonal", seed=0)
    x = torch.randn(2, 5, 3)
    out, _ = cell(x)
    out_cuda, _ = cell.cuda()(x.cuda())
    torch.testing.assert_close(out_cuda.cpu(), out, atol=1e-5, rtol=1e-4)
