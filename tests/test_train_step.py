"""The whole training step as one C++ call (ablation/kernels/whole_step.py, csrc/train_step.h) against the
autograd path it replaces (`trainer.train_step` with ABLATION_STEP=autograd: the fused kernels op by op):
the same losses, parameters and AdaGrad state, bit for bit, after several steps, for every gate set,
peephole kind and variant, a pack of 1 and of 8, clipping on and off, frozen embeddings and float64;
its forward (`logits`) is the model's. Which packs it serves, and a clear error for a bad batch."""

import shutil

import numpy as np
import pytest
import torch

from ablation.core.config import ConfigError, RunConfig, apply
from ablation.core.spec import LECTURE_ORDER, VARIANTS
from ablation.kernels import cpp, select, whole_step
from ablation.training.adagrad import PackAdagrad
from ablation.training.optimizers import PackAdam
from ablation.training.trainer import build_pack, data_for, train_step

pytestmark = pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                reason="no C++ compiler: the kernels cannot be built here")
PEEPHOLES = ("none", "diagonal", "full")


@pytest.fixture(autouse=True)
def kernels(monkeypatch):
    monkeypatch.setenv(select.ENV, "fused")
    assert cpp.load(), "the C++ kernels did not build"


def cfg(**kw) -> RunConfig:
    base = {"data.train_limit": 200, "model.embeddings": "random", "model.hidden_size": 12}
    return apply(RunConfig(), {**base, **kw})


def pack_of(gates=LECTURE_ORDER, **kw) -> list[RunConfig]:
    return [cfg(**{"model.gates": g, **kw}) for g in gates]


def state(model, opt) -> dict[str, torch.Tensor]:
    out = {n: p.detach().clone() for n, p in model.named_parameters()}
    out |= {f"G[{k}]": G.clone() for k, G in enumerate(opt.state)}
    return out | {"G[embedding]": opt.emb_state.clone()}


def train_both(monkeypatch, cfgs, steps=4, dtype=torch.float32, lrs=None):
    """Train two copies of the pack on the same batches, one with the one-call step and one through
    autograd; returns their per-step losses and final states."""
    data = data_for(cfgs[0])
    out = {}
    for mode in ("auto", "autograd"):
        monkeypatch.setenv(select.STEP_ENV, mode)
        model, _ = build_pack(cfgs, data)
        model.to(dtype)
        opt = PackAdagrad(model, lrs or [c.train.lr for c in cfgs], cfgs[0].train.clip_norm)
        assert whole_step.applies(model) == (mode == "auto" and select.choice() != "python")
        losses = [train_step(model, opt, *data.train.batch(np.arange(10 * k, 10 * k + 10))) for k in range(steps)]
        out[mode] = torch.stack(losses), state(model, opt)
    return out["auto"], out["autograd"]


def assert_same_bits(got, want):
    assert got[0].dtype == want[0].dtype and torch.equal(got[0], want[0]), (got[0] - want[0]).abs().max()
    for name, value in want[1].items():
        assert torch.equal(got[1][name], value), f"{name}: {(got[1][name] - value).abs().max()}"


@pytest.mark.parametrize("peephole", PEEPHOLES)
@pytest.mark.parametrize("clip", [0.0, 0.5])
def test_the_lecture_pack_of_8_takes_the_autograd_steps_bit_for_bit(monkeypatch, peephole, clip):
    """The 8 gate sets in one pack, per-member learning rates; clip 0.5 makes clipping bite."""
    cfgs = pack_of(**{"model.peephole": peephole, "train.clip_norm": clip})
    got, want = train_both(monkeypatch, cfgs, lrs=[0.05 + 0.01 * m for m in range(8)])
    assert_same_bits(got, want)


@pytest.mark.parametrize("peephole", PEEPHOLES)
@pytest.mark.parametrize("gates", LECTURE_ORDER)
def test_a_pack_of_one_takes_the_autograd_steps_bit_for_bit(monkeypatch, peephole, gates):
    assert_same_bits(*train_both(monkeypatch, pack_of([gates], **{"model.peephole": peephole}), steps=2))


@pytest.mark.parametrize("peephole", PEEPHOLES)
def test_every_variant_takes_the_autograd_steps_bit_for_bit(monkeypatch, peephole):
    """One member per variant (FGR's R zero in the others), with two gate sets, clipped."""
    cfgs = [cfg(**{"model.variant": v, "model.gates": g, "model.peephole": peephole, "train.clip_norm": 0.5})
            for v in VARIANTS for g in ("input+forget+output", "input+output")]
    assert_same_bits(*train_both(monkeypatch, cfgs, steps=3))


def test_frozen_embeddings_and_float64_bit_for_bit(monkeypatch):
    frozen = pack_of(("none", "input+forget+output"), **{"model.freeze_embeddings": True})
    assert_same_bits(*train_both(monkeypatch, frozen))
    cfgs = pack_of(("f+o", "input+forget+output"), **{"model.peephole": "diagonal", "model.variant": "cifg",
                                                     "train.clip_norm": 0.5})
    got, want = train_both(monkeypatch, cfgs, dtype=torch.float64)
    assert got[0].dtype == torch.float64
    assert_same_bits(got, want)


@pytest.mark.parametrize("peephole", PEEPHOLES)
def test_agrees_with_the_python_scan_to_rounding(monkeypatch, peephole):
    """Against torch's own ops (ABLATION_SCAN=python, MKL's matmuls): the same losses up to float32 rounding.
    (Not the parameters: AdaGrad's first step moves each by about lr·sign(g), so a gradient within rounding
    of 0 may move either way.)"""
    cfgs = pack_of(**{"model.peephole": peephole})
    got, _ = train_both(monkeypatch, cfgs)
    monkeypatch.setenv(select.ENV, "python")
    _, want = train_both(monkeypatch, cfgs)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)


def test_logits_are_the_models_forward(monkeypatch):
    cfgs = pack_of(**{"model.peephole": "full"}) + [cfg(**{"model.variant": "fgr", "model.peephole": "full"})]
    data = data_for(cfgs[0])
    model, _ = build_pack(cfgs, data)
    ids, lengths, _ = data.dev.batch(np.arange(25))
    monkeypatch.setenv(select.STEP_ENV, "autograd")
    want = model(ids, lengths)
    assert torch.equal(whole_step.logits(model, ids, lengths), want)
    monkeypatch.setenv(select.STEP_ENV, "auto")
    with torch.no_grad():
        assert torch.equal(model(ids, lengths), want)  # evaluation takes the one call


def test_which_packs_it_serves(monkeypatch):
    data = data_for(cfg())
    model, _ = build_pack(pack_of(("none",)), data)
    assert whole_step.applies(model)
    gru, _ = build_pack([cfg(**{"model.cell": "gru", "model.gates": "reset+update"})], data)
    assert not whole_step.applies(gru)

    def refuse(*_):
        raise AssertionError("the one-call step ran")

    monkeypatch.setattr(whole_step, "train_step", refuse)
    train_step(model, PackAdam(model, 0.1), *data.train.batch(np.arange(10)))  # Adam: through autograd
    monkeypatch.setenv(select.ENV, "python")
    assert not whole_step.applies(model)
    monkeypatch.setenv(select.ENV, "fused")
    extra, _ = build_pack(pack_of(("none",)), data)  # a parameter the C++ step would not know: refused, not dropped
    extra.register_parameter("weight_extra", torch.nn.Parameter(torch.zeros(1, 3)))
    with pytest.raises(ValueError, match="this pack has cls_weight, .*, weight_extra .*ABLATION_STEP=autograd"):
        whole_step.applies(extra)
    monkeypatch.setenv(select.STEP_ENV, "autograd")
    assert not whole_step.applies(model)
    monkeypatch.setenv(select.STEP_ENV, "fast")
    with pytest.raises(ConfigError, match="ABLATION_STEP='fast'; valid: auto, autograd"):
        whole_step.applies(model)


def test_a_bad_batch_is_refused_before_anything_changes(monkeypatch):
    data = data_for(cfg())
    model, _ = build_pack(pack_of(("none", "input")), data)
    opt = PackAdagrad(model, 0.1)
    before = state(model, opt)
    ids, lengths, labels = data.train.batch(np.arange(10))
    bad_ids = ids.clone()
    bad_ids[0, 0] = model.vocab_size
    with pytest.raises(RuntimeError, match=f"token id {model.vocab_size} not in \\[0, {model.vocab_size}\\)"):
        whole_step.train_step(model, opt, bad_ids, lengths, labels)
    with pytest.raises(RuntimeError, match="length 0 not in \\[1, "):
        whole_step.train_step(model, opt, ids, torch.zeros_like(lengths), labels)
    assert all(torch.equal(v, state(model, opt)[k]) for k, v in before.items())
