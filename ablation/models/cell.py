"""The configurable gated LSTM cell for a pack of M models: gates on/off, peepholes, Greff et al.'s variants.

Graves 2013 eqs. 7-11, peepholes after Gers & Schmidhuber 2000 (gate sets and variants: `core/spec.py`):
    i_t = σ(W_xi x_t + W_hi h_{t-1} + w_ci ⊙ c_{t-1} + b_i),  f_t likewise with w_cf, b_f        (7, 8)
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ tanh(W_xc x_t + W_hc h_{t-1} + b_c)                              (9)
    o_t = σ(W_xo x_t + W_ho h_{t-1} + w_co ⊙ c_t + b_o)      c_t, not c_{t-1}                     (10)
    h_t = o_t ⊙ tanh(c_t)                                                                         (11)
An absent gate is the constant 1: a per-member mask shifts its pre-activation to +inf, and σ(+inf) = 1 and
σ' = 0 exactly (no gates at all is the lecture's c_t = c_{t-1} + g_t). Shapes: xw (T, M, B, 4H), whh (M, 4H, H),
hs, cs (T, M, B, H). `lstm_scan` has a hand-written backward through time (Python `_Scan`, C++ `FusedScan`,
Triton `TritonScan`); `GatedLSTM` is the single-model layer (M = 1) with `torch.nn.LSTM`'s parameter names.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from ablation.core.spec import (  # noqa: F401  (the cell's vocabulary, re-exported: ablation.cell.GATES, ...)
    CELL_GATES,
    GATES,
    PEEPHOLE_NAMES,
    PEEPHOLES,
    RESETS,
    VARIANTS,
    CellSpec,
    Variant,
    gates_name,
    pack_params,
    parse_gates,
    split_gates,
)
from ablation.kernels import cpp, select, triton_scan


def gate_masks(specs: Sequence[CellSpec], device=None, dtype=torch.float32) -> torch.Tensor:
    """(M, number of gates) gate-presence masks in the kind's gate order."""
    return torch.tensor([s.mask() for s in specs], device=device, dtype=dtype)


def uniform(gen: torch.Generator, hidden_size: int):
    """Draws from U(-1/√H, 1/√H), the initialisation of torch.nn.LSTM/GRU/RNN."""
    k = 1.0 / math.sqrt(hidden_size)
    return lambda *shape: torch.rand(*shape, generator=gen) * (2 * k) - k


def init_lstm(gen: torch.Generator, input_size: int, hidden_size: int, peephole: str,
              forget_bias: float, variant: str = "vanilla",
              params: Sequence[tuple[str, tuple[int, ...]]] | None = None,
              chrono: int = 0) -> dict[str, torch.Tensor]:
    """Initial values of one member, drawn from ``gen`` in a fixed order.

    Weights ~ U(-1/√H, 1/√H) as `torch.nn.LSTM`; biases 0 except the forget gate's
    (Jozefowicz et al. 2015 argue for 1; the lecture's default is 0). Peepholes, then the
    variants' parameters (`Variant.params`, FGR's weight_gr), are drawn last, so members
    with the same seed share every other initial value whatever their peephole kind, gates
    or variant. ``params``: the variant parameters the member's pack carries
    (`spec.pack_params`; default its own variant's); those of another variant than
    ``variant`` are drawn and zeroed (0 adds exactly nothing). ``chrono`` > 0 replaces the constant
    forget bias by chrono initialisation for lags up to ``chrono`` steps (Tallec & Ollivier 2018,
    eq. 11: b_f ~ log U(1, chrono - 1), b_i = -b_f), drawn after everything else for the same reason.
    """
    H, u = hidden_size, uniform(gen, hidden_size)
    p = {"weight_ih": u(4 * H, input_size), "weight_hh": u(4 * H, H),
         "bias_ih": torch.zeros(4 * H), "bias_hh": torch.zeros(4 * H)}
    p["bias_ih"][H : 2 * H] = forget_bias
    if peephole != "none":
        shape = (H,) if peephole == "diagonal" else (H, H)
        for name in PEEPHOLE_NAMES:
            p[name] = u(*shape)
    own = dict(VARIANTS[variant].params)
    for name, units in VARIANTS[variant].params if params is None else params:
        p[name] = u(*(k * H for k in units)) * float(name in own)
    if chrono:
        b_f = torch.log(1 + torch.rand(H, generator=gen) * (chrono - 2))  # (H,): log U(1, chrono - 1)
        p["bias_ih"][H : 2 * H], p["bias_ih"][:H] = b_f, -b_f
    return p


def active_lstm_params(spec: CellSpec, input_size: int, hidden_size: int) -> int:
    """Parameters that exist for this spec: the g rows plus the rows of gates with weights."""
    H, n = hidden_size, sum(spec.mask())
    per_row = input_size + H + 2  # weight_ih row, weight_hh row, two biases
    peep = {"none": 0, "diagonal": H, "full": H * H}[spec.peephole]
    return int((1 + n) * H * per_row + n * peep + VARIANTS[spec.variant].extra_parameters(H))


class ScanFlags:
    """Per-member switches of a pack, as broadcastable (M, 1, 1) bool masks, one attribute per
    flag variant of the registry (`Variant.flag`: .niaf, .noaf, .cifg, .fgr); None where no
    member of the pack uses the variant (then its ops are skipped)."""

    def __init__(self, specs: Sequence[CellSpec], device=None):
        self.device = torch.device(device or "cpu")

        def mask(name):
            on = [s.variant == name for s in specs]
            return torch.tensor(on, device=device).view(-1, 1, 1) if any(on) else None

        self.masks = {name: mask(name) for name, v in VARIANTS.items() if v.flag}  # {variant: (M, 1, 1) or None}
        vars(self).update(self.masks)

    def kernel_args(self) -> tuple:
        """niaf, noaf, cifg as the C++ and Triton kernels take them: (M,) masks or None."""
        return tuple(None if f is None else f.view(-1) for f in (self.niaf, self.noaf, self.cifg))


class NoPeephole:
    """The peephole terms of `_Scan` and `weight_grads`, for a pack's peephole kind: none
    (Greff's NP). Each method adds its terms in place; here there are none.

    Built from the pack's w_ci, w_cf, w_co: None, (M, H) diagonal or (M, H, H) full."""

    def __init__(self, w_ci, w_cf, w_co):
        pass

    def into_if(self, pre, c):
        """pre (M, B, 4H): the i, f pre-activations += their peephole terms of c_{t-1} (M, B, H) (eqs. 7-8)."""

    def into_o(self, po, c):
        """po (M, B, H): the o pre-activation += its peephole term of c_t (M, B, H) (eq. 10)."""

    def dc_from_o(self, dc, dpo):
        """dc (M, B, H) += ∂J/∂c_t through the output peephole, for dpo (M, B, H)."""

    def dc_from_if(self, dc, dpif):
        """dc (M, B, H) += ∂J/∂c_{t-1} through the i, f peepholes, for dpif (M, B, ≥2H): dpi, dpf first."""

    @staticmethod
    def grads(flat, cs, bmm):
        """dci, dcf, dco from the pre-activation gradients flat (M, T·B, 4H), member-major,
        and the cell states cs (T+1, M, B, H); needs no weights (`FusedScan` passes the class)."""
        return None, None, None


class DiagonalPeephole(NoPeephole):
    """Diagonal peepholes w_c· ⊙ c (Gers & Schmidhuber 2000): w_ci, w_cf, w_co (M, H)."""

    def __init__(self, w_ci, w_cf, w_co):
        self.H = w_ci.shape[-1]
        self.w_cif = torch.stack([w_ci, w_cf], 1).unsqueeze(1)  # (M, 1, 2, H)
        self.w_co = w_co.unsqueeze(1)  # (M, 1, H)

    def into_if(self, pre, c):
        M, B, H = c.shape
        pre[..., : 2 * H].view(M, B, 2, H).addcmul_(c.unsqueeze(2), self.w_cif)

    def into_o(self, po, c):
        po.addcmul_(c, self.w_co)

    def dc_from_o(self, dc, dpo):
        dc.addcmul_(dpo, self.w_co)

    def dc_from_if(self, dc, dpif):
        M, B, H = dc.shape
        dc += (dpif[..., : 2 * H].view(M, B, 2, H) * self.w_cif).sum(2)

    @staticmethod
    def grads(flat, cs, bmm):
        T1, M, B, H = cs.shape
        cp = cs[:-1].transpose(0, 1).reshape(M, (T1 - 1) * B, H)  # c_{t-1}, (M, T·B, H)
        cc = cs[1:].transpose(0, 1).reshape(M, (T1 - 1) * B, H)  # c_t
        # Sum over steps and batch along the middle axis of member-major (M, T·B, H)
        # products: each member's additions come in the same order whatever M is, so
        # its gradient does not depend on its pack (summing the time-major tensor over
        # (0, 2) reorders them with M).
        return (flat[..., :H] * cp).sum(1), (flat[..., H : 2 * H] * cp).sum(1), (flat[..., 3 * H :] * cc).sum(1)


class FullPeephole(NoPeephole):
    """Full peepholes W_c· c: w_ci, w_cf, w_co (M, H, H)."""

    def __init__(self, w_ci, w_cf, w_co):
        self.H = w_ci.shape[-1]
        self.w_cif = torch.cat([w_ci, w_cf], 1)  # (M, 2H, H)
        self.w_cif_t = self.w_cif.transpose(1, 2)  # (M, H, 2H)
        self.w_co, self.w_co_t = w_co, w_co.transpose(1, 2)  # (M, H, H)

    def into_if(self, pre, c):
        pre[..., : 2 * self.H].baddbmm_(c, self.w_cif_t)

    def into_o(self, po, c):
        po.baddbmm_(c, self.w_co_t)

    def dc_from_o(self, dc, dpo):
        dc.baddbmm_(dpo, self.w_co)

    def dc_from_if(self, dc, dpif):
        dc.baddbmm_(dpif[..., : 2 * self.H], self.w_cif)

    @staticmethod
    def grads(flat, cs, bmm):
        T1, M, B, H = cs.shape
        cp = cs[:-1].transpose(0, 1).reshape(M, (T1 - 1) * B, H)  # c_{t-1}, (M, T·B, H)
        cc = cs[1:].transpose(0, 1).reshape(M, (T1 - 1) * B, H)  # c_t
        return (bmm(flat[..., :H].transpose(1, 2), cp), bmm(flat[..., H : 2 * H].transpose(1, 2), cp),
                bmm(flat[..., 3 * H :].transpose(1, 2), cc))


def peephole_kind(w_ci: torch.Tensor | None) -> type[NoPeephole]:
    """The peephole class of a pack from its w_ci: None, (M, H) or (M, H, H)."""
    return NoPeephole if w_ci is None else (DiagonalPeephole if w_ci.dim() == 2 else FullPeephole)


class _Scan(torch.autograd.Function):
    """Run the cell over T steps for a pack; hand-written backward through time.

    Shapes (time-major, so every step's slice is contiguous): xw (T, M, B, 4H) =
    W_ih x_t + b_ih + b_hh; whh (M, 4H, H); peepholes None, (M, H) diagonal or (M, H, H)
    full; w_gr None or (M, 3H, 3H) (FGR); on (M, 3) gate masks; flags a `ScanFlags`;
    probe None or a zero (T, M, B, H) tensor whose gradient comes back as ∂J/∂h_t (the
    total derivative through the recurrence: the vanishing-gradient probe). Returns hs, cs
    (T, M, B, H) and, not differentiable, the gate activations S (T, M, B, 3H: i, f, and
    σ(2·pre_g)) and o (T, M, B, H); the initial state is zero.

    Two exact identities keep the step short:
    - an absent gate gets pre-activation +inf, and σ(+inf) == 1.0 exactly in floating
      point, so it is the constant 1 with no mask op per step; its σ' = o(1-o) is exactly
      0, so its rows and peephole take exactly zero gradient;
    - tanh(x) = 2σ(2x) - 1, so i, f and g share one sigmoid call (the g rows are scaled
      by 2 once, outside the loop; not for NIAF members, whose g is the pre-activation).
    """

    @staticmethod
    def forward(ctx, xw, whh, w_ci, w_cf, w_co, w_gr, probe, on, flags):
        T, M, B, G = xw.shape
        H = G // 4
        peep = peephole_kind(w_ci)(w_ci, w_cf, w_co)
        rows = torch.cat([on, on.new_ones(M, 1)], 1)[:, [0, 1, 3, 2]]  # (M, 4) in i, f, g, o order
        rows = rows.repeat_interleave(H, 1)  # (M, 4H)
        scale = torch.ones_like(rows)
        scale[:, 2 * H : 3 * H] = 2.0  # g rows: tanh(x) = 2σ(2x) - 1
        if flags.niaf is not None:
            scale[:, 2 * H : 3 * H] = torch.where(flags.niaf.view(M, 1), 1.0, 2.0)
        shift = torch.where(rows > 0, 0.0, math.inf).view(1, M, 1, G)  # absent gate: σ(+inf) = 1
        xs = torch.addcmul(shift, xw, scale.view(1, M, 1, G))  # (T, M, B, 4H)
        whh_t = (whh * scale.unsqueeze(2)).transpose(1, 2)  # (M, H, 4H)
        if w_gr is not None:  # FGR: pre_{i,f,o} += R [i, f, o]_{t-1}, R (3H, 3H)
            r_if_t, r_o_t = w_gr[:, : 2 * H].transpose(1, 2), w_gr[:, 2 * H :].transpose(1, 2)  # (M, 3H, ·)
            acts = xw.new_zeros(M, B, 3 * H)  # [i, f, o] of step t-1; zero before the first step
        S = xw.new_empty(T, M, B, 3 * H)  # σ of the i, f and (doubled) g pre-activations
        gs = xw.new_empty(T, M, B, H)  # g_t = 2σ(2·pre_g) - 1 = tanh(pre_g)
        os_ = xw.new_empty(T, M, B, H)  # o_t
        hs = xw.new_zeros(T + 1, M, B, H)  # hs[0] = h_0 = 0
        cs = xw.new_zeros(T + 1, M, B, H)  # cs[0] = c_0 = 0
        tcs = xw.new_empty(T, M, B, H)  # tanh(c_t) (c_t for NOAF), reused by the backward
        for t in range(T):
            c = cs[t]
            pre = torch.baddbmm(xs[t], hs[t], whh_t)  # (M, B, 4H)
            if w_gr is not None:
                pre[..., : 2 * H].baddbmm_(acts, r_if_t)
                pre[..., 3 * H :].baddbmm_(acts, r_o_t)
            peep.into_if(pre, c)  # eqs. 7-8: + w_c· ⊙ c_{t-1}
            s = torch.sigmoid(pre[..., : 3 * H], out=S[t])
            g = torch.mul(s[..., 2 * H :], 2, out=gs[t]).sub_(1)
            if flags.niaf is not None:  # NIAF: g_t is the pre-activation itself
                torch.where(flags.niaf, pre[..., 2 * H : 3 * H], g, out=g)
            if flags.cifg is not None:  # CIFG: f_t = 1 - i_t (its own f is σ(+inf) = 1, unused)
                torch.where(flags.cifg, 1 - s[..., :H], s[..., H : 2 * H], out=s[..., H : 2 * H])
            c_new = torch.mul(s[..., H : 2 * H], c, out=cs[t + 1]).addcmul_(s[..., :H], g)  # eq. 9
            po = pre[..., 3 * H :]
            peep.into_o(po, c_new)  # eq. 10 peeks at c_t
            o = torch.sigmoid(po, out=os_[t])
            tc = torch.tanh(c_new, out=tcs[t])
            if flags.noaf is not None:  # NOAF: h_t = o_t ⊙ c_t
                torch.where(flags.noaf, c_new, tc, out=tc)
            torch.mul(o, tc, out=hs[t + 1])  # eq. 11
            if w_gr is not None:
                acts = torch.cat([s[..., : 2 * H], o], -1)
        ctx.save_for_backward(whh, w_ci, w_cf, w_co, w_gr, S, gs, os_, hs, cs, tcs)
        ctx.peep, ctx.flags, ctx.probe = type(peep), flags, probe is not None
        ctx.mark_non_differentiable(S, os_)
        return hs[1:], cs[1:], S, os_

    @staticmethod
    def backward(ctx, dhs, dcs, _dS, _dos):
        whh, w_ci, w_cf, w_co, w_gr, S, g, o, hs, cs, tcs = ctx.saved_tensors
        peep, flags = ctx.peep(w_ci, w_cf, w_co), ctx.flags
        T, M, B, H = g.shape
        i, f = S[..., :H], S[..., H : 2 * H]
        c_prev = cs[:-1]
        # Per-step factors, for all steps at once (σ' = s(1-s), tanh' = 1 - tanh²):
        #   dpo = dh_t ⊙ tanh(c_t) ⊙ σ'(po)          dc_t += dh_t ⊙ o ⊙ (1 - tanh²c_t)
        #   (dpi, dpf, dpg) = dc_t ⊙ (g σ'(pi), c_{t-1} σ'(pf), i (1 - g²))
        k_o = tcs * o * (1 - o)  # (T, M, B, H)
        k_c = o * (1 - tcs * tcs)
        k_ifg = torch.cat([g, c_prev, i], -1).mul_(S).mul_(1 - S)  # (T, M, B, 3H)
        k_ifg[..., 2 * H :] *= 4  # i·(1 - g²) = i·4σ(2x)(1 - σ(2x)), with S's g part σ(2x)
        if flags.noaf is not None:  # h = o ⊙ c: dc_t += dh_t ⊙ o
            torch.where(flags.noaf, o, k_c, out=k_c)
        if flags.niaf is not None:  # g = pre_g: dpg = dc_t ⊙ i
            torch.where(flags.niaf, i, k_ifg[..., 2 * H :], out=k_ifg[..., 2 * H :])
        if flags.cifg is not None:  # f = 1 - i: dpi = dc_t ⊙ (g - c_{t-1}) σ'(pi); f has no weights
            torch.where(flags.cifg, (g - c_prev) * i * (1 - i), k_ifg[..., :H], out=k_ifg[..., :H])
            k_ifg[..., H : 2 * H].masked_fill_(flags.cifg, 0.0)
        if w_gr is not None:  # σ' of i, f, o, the path through the next step's gates
            sp = torch.cat([S[..., : 2 * H], o], -1)
            sp = sp * (1 - sp)  # (T, M, B, 3H)
            if flags.cifg is not None:
                sp[..., H : 2 * H].masked_fill_(flags.cifg, 0.0)
            da = g.new_zeros(M, B, 3 * H)  # ∂J/∂[i, f, o]_t through step t+1
        dprobe = g.new_empty(T, M, B, H) if ctx.probe else None
        dpre = g.new_empty(T, M, B, 4 * H)
        dh = g.new_zeros(M, B, H)
        dc = g.new_zeros(M, B, H)
        for t in range(T - 1, -1, -1):
            d = dpre[t]
            if dhs is not None:
                dh = dh + dhs[t]
            if dprobe is not None:
                dprobe[t] = dh
            dc = dc.addcmul(dh, k_c[t]) if dcs is None else dc.add(dcs[t]).addcmul_(dh, k_c[t])
            dpo = torch.mul(dh, k_o[t], out=d[..., 3 * H :])
            if w_gr is not None:
                dpo.addcmul_(da[..., 2 * H :], sp[t, ..., 2 * H :])
            peep.dc_from_o(dc, dpo)
            dpifg = torch.mul(dc.repeat(1, 1, 3), k_ifg[t], out=d[..., : 3 * H])
            if w_gr is not None:
                dpifg[..., : 2 * H].addcmul_(da[..., : 2 * H], sp[t, ..., : 2 * H])
            dc = dc * f[t]  # ∂c_t/∂c_{t-1} through eq. 9
            peep.dc_from_if(dc, dpifg)
            dh = torch.bmm(d, whh)  # (M, B, 4H) @ (M, 4H, H)
            if w_gr is not None:
                da = torch.bmm(torch.cat([d[..., : 2 * H], dpo], -1), w_gr)  # (M, B, 3H) @ (M, 3H, 3H)
        dwhh, dci, dcf, dco, dgr = weight_grads(dpre, hs, cs, S, o, peep, flags, w_gr is not None)
        return dpre, dwhh, dci, dcf, dco, dgr, dprobe, None, None


def weight_grads(dpre, hs, cs, S, o, peep: type[NoPeephole] | NoPeephole, flags: ScanFlags, fgr: bool,
                 bmm=torch.bmm):
    """The gradients of W_hh, the peepholes (``peep``, see `NoPeephole.grads`) and FGR's R
    from the pre-activation gradients dpre (T, M, B, 4H) and the forward's saved hs, cs
    (T+1, M, B, H), S, o: the part of the backward after the time loop, shared by `_Scan`
    and `FusedScan` (which passes its own fixed-order ``bmm``)."""
    T, M, B, G = dpre.shape
    H = G // 4
    flat = dpre.transpose(0, 1).reshape(M, T * B, 4 * H)
    dwhh = bmm(flat.transpose(1, 2), hs[:-1].transpose(0, 1).reshape(M, T * B, H))  # (M, 4H, H)
    dci, dcf, dco = peep.grads(flat, cs, bmm)
    dgr = None
    if fgr:  # dR = Σ_t dpre_{i,f,o}(t)ᵀ [i, f, o]_{t-1}
        a_prev = torch.cat([S.new_zeros(1, M, B, 3 * H), torch.cat([S[:-1, ..., : 2 * H], o[:-1]], -1)])
        d_ifo = torch.cat([flat[..., : 2 * H], flat[..., 3 * H :]], -1)  # (M, T·B, 3H)
        dgr = bmm(d_ifo.transpose(1, 2), a_prev.transpose(0, 1).reshape(M, T * B, 3 * H))
        dgr = dgr * flags.fgr  # members without FGR keep their zero weights
    return dwhh, dci, dcf, dco, dgr


def _kernel_forward(ctx, ops, xw, whh, w_ci, w_cf, w_co, w_gr, probe, on, flags):
    """The forward of a scan whose two time loops are compiled kernels: ``ops``' lstm_forward
    (the C++ op's signature and outputs), saving what ``ops``' lstm_backward takes."""
    hs, cs, S, gs, os_, tcs = ops.lstm_forward(xw, whh, w_ci, w_cf, w_co, w_gr, on, *flags.kernel_args())
    ctx.save_for_backward(whh, w_ci, w_cf, w_co, w_gr, S, gs, os_, hs, cs, tcs, on)
    ctx.peep = peephole_kind(w_ci)
    ctx.flags, ctx.probe = flags, probe is not None
    ctx.mark_non_differentiable(S, os_)
    return hs[1:], cs[1:], S, os_


def _kernel_backward(ctx, ops, bmm, dhs, dcs):
    """dpre and dprobe from ``ops``' lstm_backward, the weight gradients by `weight_grads` with ``bmm``."""
    whh, w_ci, w_cf, w_co, w_gr, S, gs, os_, hs, cs, tcs, on = ctx.saved_tensors
    dhs = torch.zeros_like(gs) if dhs is None else dhs
    dcs = torch.zeros_like(gs) if dcs is None else dcs
    dpre, dprobe = ops.lstm_backward(dhs, dcs, whh, w_ci, w_cf, w_co, w_gr, S, gs, os_, cs, tcs, on,
                                     *ctx.flags.kernel_args(), ctx.probe)
    dwhh, dci, dcf, dco, dgr = weight_grads(dpre, hs, cs, S, os_, ctx.peep, ctx.flags, w_gr is not None, bmm)
    return dpre, dwhh, dci, dcf, dco, dgr, dprobe if ctx.probe else None, None, None


class FusedScan(torch.autograd.Function):
    """`_Scan` with its two time loops in C++ (`kernels/cpp.py`, csrc/lstm_scan.cpp); same arguments,
    outputs and gradients."""

    @staticmethod
    def forward(ctx, *args):
        return _kernel_forward(ctx, torch.ops.ablation_fused, *args)

    @staticmethod
    def backward(ctx, dhs, dcs, _dS, _dos):
        return _kernel_backward(ctx, torch.ops.ablation_fused, cpp.fixed_order_bmm, dhs, dcs)


TRITON_FLAGS = ("niaf", "noaf", "cifg")  # the flag variants triton_scan computes (`ScanFlags.kernel_args` order)


class TritonScan(torch.autograd.Function):
    """`FusedScan` on CUDA: its two time loops as Triton kernels, one launch per direction
    (`triton_scan.py`); same arguments, outputs and gradients (the weight gradients by
    `weight_grads` with torch.bmm). Not FGR (w_gr must be None): packs with an FGR member run
    `_Scan` (`lstm_scan` chooses). Lives here beside `FusedScan`, not in triton_scan.py,
    because it shares `weight_grads` and the peephole classes, and cell imports triton_scan."""

    @staticmethod
    def forward(ctx, xw, whh, w_ci, w_cf, w_co, w_gr, probe, on, flags):
        triton_scan.refuse_fgr(w_gr)
        unknown = [n for n, f in flags.masks.items() if f is not None and n not in TRITON_FLAGS]
        if unknown:  # a flag variant added to VARIANTS after the kernels: they would compute the vanilla cell
            raise ValueError(f"the Triton LSTM scan has no variant {', '.join(unknown)}; "
                             f"it has {', '.join(TRITON_FLAGS)}")
        return _kernel_forward(ctx, triton_scan, xw, whh, w_ci, w_cf, w_co, w_gr, probe, on, flags)

    @staticmethod
    def backward(ctx, dhs, dcs, _dS, _dos):
        return _kernel_backward(ctx, triton_scan, torch.bmm, dhs, dcs)


SCANS = {"fused-cpp": FusedScan, "triton": TritonScan, "python": _Scan}  # kernels.select's names


def lstm_scan(xw: torch.Tensor, whh: torch.Tensor, peepholes: Sequence[torch.Tensor | None],
              on: torch.Tensor, flags: ScanFlags | None = None, w_gr: torch.Tensor | None = None,
              probe: torch.Tensor | None = None):
    """hs, cs (T, M, B, H) and the gate activations {name: (T, M, B, H)} for pre-projected
    inputs xw (T, M, B, 4H); see `_Scan`. `kernels.select.select_scan` says which scan runs."""
    w_ci, w_cf, w_co = peepholes
    flags = flags or ScanFlags([])
    scan = SCANS[select.select_scan(xw.device.type, xw.dtype, fgr=w_gr is not None)]
    hs, cs, S, o = scan.apply(xw, whh, w_ci, w_cf, w_co, w_gr, probe, on, flags)
    H = hs.shape[-1]
    return hs, cs, {"input": S[..., :H], "forget": S[..., H : 2 * H], "output": o}


def last_step(seq: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """seq (T, M, B, H) -> (M, B, H) at each sequence's last real token (T-1 without lengths)."""
    if lengths is None:
        return seq[-1]
    T, M, B, H = seq.shape
    idx = (lengths.to(seq.device) - 1).view(1, 1, B, 1).expand(1, M, B, H)
    return seq.gather(0, idx).squeeze(0)


class GatedLSTM(nn.Module):
    """One gated LSTM layer, batch-first, with `torch.nn.LSTM`'s parameter names and shapes.

    weight_ih (4H, I), weight_hh (4H, H), bias_ih, bias_hh (4H), rows i, f, g, o;
    peepholes weight_ci, weight_cf, weight_co of shape (H,) or (H, H); FGR's weight_gr (3H, 3H).
    """

    def __init__(self, input_size: int, hidden_size: int, *, gates: Iterable[str] = GATES,
                 peephole: str = "none", variant: str = "vanilla", forget_bias: float = 0.0,
                 seed: int | None = None):
        super().__init__()
        self.spec = CellSpec(tuple(gates), peephole, variant)
        self.input_size, self.hidden_size = input_size, hidden_size
        gen = torch.Generator()
        gen.manual_seed(seed if seed is not None else int(torch.randint(2**31, ()).item()))
        for name, value in init_lstm(gen, input_size, hidden_size, peephole, forget_bias, variant).items():
            self.register_parameter(name, nn.Parameter(value))
        self.register_buffer("on", gate_masks([self.spec]), persistent=False)

    def peepholes(self) -> list[torch.Tensor | None]:
        return [getattr(self, n, None) for n in PEEPHOLE_NAMES]

    def active_parameters(self) -> int:
        return active_lstm_params(self.spec, self.input_size, self.hidden_size)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        """x (B, T, I) -> outputs (B, T, H), (h_n, c_n) each (B, H) at the last real token."""
        xw = torch.nn.functional.linear(x, self.weight_ih, self.bias_ih + self.bias_hh)
        xw = xw.transpose(0, 1).unsqueeze(1)  # (T, 1, B, 4H)
        peeps = [p.unsqueeze(0) if p is not None else None for p in self.peepholes()]
        w_gr = self.weight_gr.unsqueeze(0) if hasattr(self, "weight_gr") else None  # FGR's R
        flags = ScanFlags([self.spec], x.device)
        hs, cs, _ = lstm_scan(xw, self.weight_hh.unsqueeze(0), peeps, self.on.to(x.dtype), flags, w_gr)
        h_n, c_n = last_step(hs, lengths)[0], last_step(cs, lengths)[0]
        return hs[:, 0].transpose(0, 1), (h_n, c_n)

    def extra_repr(self) -> str:
        s = self.spec
        return (f"{self.input_size}, {self.hidden_size}, gates={gates_name(s.gates)}, peephole={s.peephole}, "
                f"variant={s.variant}")
