"""Probes: ∂J/∂h_k through every scan, checked against autograd; gate statistics by hand."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ablation.models.cell import CellSpec, last_step
from ablation.models.classifier import PackedClassifier
from ablation.tasks.sst import Encoded
from ablation.training.probes import CHECKPOINTS, LENGTH_BINS, gradient_decay, probe_gradients, probe_pack

SPECS = {
    "lstm": [CellSpec(("input", "forget", "output"), "diagonal"), CellSpec((), "diagonal"),
             CellSpec(("input", "forget", "output"), "diagonal", "fgr")],
    "gru-before": [CellSpec(("reset", "update"), kind="gru"), CellSpec(("update",), kind="gru")],
    "gru-after": [CellSpec(("reset", "update"), kind="gru", reset="after")],
    "rnn": [CellSpec((), kind="rnn")],
}


def pack(specs) -> PackedClassifier:
    model = PackedClassifier(specs, [3] * len(specs), vocab_size=12, embedding_dim=4, hidden_size=5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


@pytest.mark.parametrize("name", list(SPECS))
def test_probe_gradient_is_dJ_dh_through_the_recurrence(name):
    """The probe's ∂J/∂h_1 (first token) equals the Jacobian of J with respect to h_1 in an
    autograd-only unroll of steps 2..T from the cells' equations (`_step`), holding the rest
    of the state (c_1, FGR's gate activations) fixed, as the partial derivative does."""
    torch.manual_seed(0)
    model = pack(SPECS[name]).double()
    ids = torch.randint(1, 12, (3, 6))
    lengths = torch.tensor([6, 4, 5])
    labels = torch.tensor([0, 1, 1])
    x = model.embedding.detach()[:, ids.t()]  # (M, T, B, E)
    probe = torch.zeros(6, model.M, 3, model.hidden_size, dtype=torch.double, requires_grad=True)
    hs, acts = model.hidden(x, probe)
    loss = F.cross_entropy(model.classify(last_step(hs, lengths)).flatten(0, 1), labels.repeat(model.M),
                           reduction="sum")
    (dh,) = torch.autograd.grad(loss, probe)
    state = None
    if model.kind == "lstm":
        from ablation.models.cell import lstm_scan

        xw = (x @ model.weight_ih.transpose(1, 2).unsqueeze(1) + (model.bias_ih + model.bias_hh)[:, None, None]
              ).transpose(0, 1)
        w_gr = model.weight_gr if model.flags.fgr is not None else None
        _, cs, a = lstm_scan(xw, model.weight_hh, model.peepholes(), model.on, model.flags, w_gr)
        state = (cs[0].detach(), torch.cat([a["input"][0], a["forget"][0], a["output"][0]], -1).detach())

    def loss_from(h1):
        h, st, out = h1, state, [h1]
        for t in range(1, x.shape[1]):
            h, st = _step(model, x[:, t], h, st)
            out.append(h)
        logits = model.classify(last_step(torch.stack(out), lengths))
        return F.cross_entropy(logits.flatten(0, 1), labels.repeat(model.M), reduction="sum")

    ref = torch.autograd.functional.jacobian(loss_from, hs[0].detach())
    torch.testing.assert_close(dh[0], ref, rtol=1e-6, atol=1e-9)
    assert dh[4:, :, 1].abs().sum() == 0  # past the end of sentence 1 (length 4)
    assert dh[0].abs().sum() > 0


def _step(model, x, h, state):
    """One step of the pack's cell from its equations (the module docs), autograd only."""
    s = torch.sigmoid
    H = model.hidden_size
    if model.kind == "rnn":
        return torch.tanh(x @ model.weight_ih.transpose(1, 2) + model.bias_ih.unsqueeze(1)
                          + h @ model.weight_hh.transpose(1, 2) + model.bias_hh.unsqueeze(1)), None
    if model.kind == "gru":
        gx = x @ model.weight_ih.transpose(1, 2) + model.bias_ih.unsqueeze(1)
        on = model.on.unsqueeze(1)  # (M, 1, 2)
        W, b = model.weight_hh, model.bias_hh.unsqueeze(1)
        gh = h @ W.transpose(1, 2) + b
        r = torch.where(on[..., :1] > 0, s(gx[..., :H] + gh[..., :H]), 1.0)
        z = torch.where(on[..., 1:] > 0, s(gx[..., H : 2 * H] + gh[..., H : 2 * H]), 0.0)
        if model.reset == "after":
            n = torch.tanh(gx[..., 2 * H :] + r * gh[..., 2 * H :])
        else:
            n = torch.tanh(gx[..., 2 * H :] + (r * h) @ W[:, 2 * H :].transpose(1, 2) + b[..., 2 * H :])
        return (1 - z) * n + z * h, None
    c, a = state
    pre = x @ model.weight_ih.transpose(1, 2) + (model.bias_ih + model.bias_hh).unsqueeze(1)
    pre = pre + h @ model.weight_hh.transpose(1, 2)
    if model.flags.fgr is not None:
        gr = a @ model.weight_gr.transpose(1, 2)
        pre = pre + torch.cat([gr[..., : 2 * H], torch.zeros_like(h), gr[..., 2 * H :]], -1)
    on = model.on.unsqueeze(1)
    w_ci, w_cf, w_co = (p.unsqueeze(1) for p in model.peepholes())
    i = torch.where(on[..., :1] > 0, s(pre[..., :H] + w_ci * c), 1.0)
    f = torch.where(on[..., 1:2] > 0, s(pre[..., H : 2 * H] + w_cf * c), 1.0)
    g = torch.tanh(pre[..., 2 * H : 3 * H])
    c = f * c + i * g
    o = torch.where(on[..., 2:] > 0, s(pre[..., 3 * H :] + w_co * c), 1.0)
    return o * torch.tanh(c), (c, torch.cat([i, f, o], -1))


def test_gate_statistics_and_counts_by_hand():
    """A cell whose gates are constant: input gate σ(b) everywhere, so the mean is σ(b) at every
    position and saturation is 1 exactly when σ(b) > 0.95."""
    model = PackedClassifier([CellSpec(("input", "forget", "output"), "none")] * 2, [1, 1], vocab_size=5,
                             embedding_dim=2, hidden_size=3)
    with torch.no_grad():
        for p in (model.weight_ih, model.weight_hh):
            p.zero_()
        model.bias_ih.zero_()
        model.bias_ih[0, :3] = 0.0  # member 0: i = 0.5
        model.bias_ih[1, :3] = 4.0  # member 1: i = σ(4) = 0.982 > 0.95
    test = Encoded(ids=torch.tensor([[1, 2, 3], [1, 2, 0]]), lengths=torch.tensor([3, 2]),
                   labels=torch.tensor([0, 1]))
    p0, p1 = probe_pack(model, test, earlier={"init": probe_gradients(model, test)})
    assert p0["positions_n"] == [2, 2, 1]
    assert list(p0["gradient_decay"]["checkpoints"]) == ["init", "best"]
    first = p0["gradient_decay"]["checkpoints"]["best"]["bins"][0]  # lengths 1-10: both sentences
    assert first["lengths"] == [1, 10] and first["n"] == [2, 2, 1] and first["distance"] == [0, 1, 2]
    assert p0["gates"]["input"]["mean"] == [0.5, 0.5, 0.5] and p0["gates"]["input"]["saturated"] == [0, 0, 0]
    assert p1["gates"]["input"]["mean"] == [pytest.approx(torch.sigmoid(torch.tensor(4.0)).item(), rel=1e-5)] * 3
    assert p1["gates"]["input"]["saturated"] == [1, 1, 1]
    assert set(p0["gates"]) == {"input", "forget", "output"}
    # zero recurrent weights: no gradient reaches back a step (counted in "zero", its log at FLOOR)
    assert first["zero"] == [0, 2, 1]
    assert first["mean"][0] == 0 and first["q50"][1] < -30
    assert all(not b["n"] for b in p0["gradient_decay"]["checkpoints"]["best"]["bins"][1:])


def test_gradient_decay_is_each_sentences_own_log_ratio_by_length_bin():
    """Hand-made log10 norms: the ratio is taken against each sentence's own last token, so
    two sentences with different last-token norms but the same decay agree exactly."""
    lengths = torch.tensor([3, 3, 2, 12])
    nan = float("nan")
    log_norm = torch.full((1, 4, 12), nan, dtype=torch.float64)
    log_norm[0, 0, :3] = torch.tensor([0.0, -1.0, -2.0])  # decays 10x a step
    log_norm[0, 1, :3] = torch.tensor([5.0, 4.0, 3.0])  # the same decay from a larger start
    log_norm[0, 2, :2] = torch.tensor([1.0, 1.5])  # grows
    log_norm[0, 3, :] = torch.arange(12, dtype=torch.float64) * -0.5
    (member,) = gradient_decay(log_norm, lengths)
    short, mid = member["bins"][0], member["bins"][1]
    assert short["lengths"] == list(LENGTH_BINS[0]) and short["distance"] == [0, 1, 2]
    assert short["n"] == [3, 3, 2]
    assert short["mean"] == [0.0, pytest.approx((-1 - 1 + 0.5) / 3), -2.0]
    assert short["q50"][1] == -1.0 and short["q50"][2] == -2.0
    assert mid["n"] == [1] * 12 and mid["mean"][11] == -5.5
    assert member["bins"][2]["n"] == [] and member["bins"][3]["n"] == []
    assert np.isfinite(short["q10"][1]) and short["q10"][1] <= short["q50"][1] <= short["q90"][1]


def test_probe_checkpoints_are_the_documented_ones():
    assert CHECKPOINTS == ("init", "epoch1", "best")
