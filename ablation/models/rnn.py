"""The baselines the lecture sets against the LSTM, for packs: the GRU (Cho et al. 2014) and the Elman RNN.

    u_t = σ(W_u h_{t-1} + U_u x_t + b_u),   r_t = σ(W_r h_{t-1} + U_r x_t + b_r)
    h̃_t = tanh(W_h (r_t ⊙ h_{t-1}) + U_h x_t + b_h)          reset "before" the matmul
    h̃_t = tanh(r_t ⊙ (W_h h_{t-1} + b_hn) + U_h x_t + b_in)   reset "after" (torch.nn.GRU, cuDNN)
    h_t = (1 - u_t) ⊙ h_{t-1} + u_t ⊙ h̃_t;   Elman (tanh): h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)

Parameters are torch's: GRU weight_ih (3H, I), weight_hh (3H, H), biases (3H), rows r, z, n with z = 1 - u;
RNN weight_ih (H, I), weight_hh (H, H), biases (H). An absent gate is the constant 1 as in `models/cell.py`.
The scans take xw (T, M, B, ·) = W_ih x_t + b_ih for a pack of M models and return hs (T, M, B, H), with a
hand-written backward through time like `cell._Scan`; ``probe`` returns ∂J/∂h_t.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ablation.models.cell import CELL_GATES, CellSpec, gate_masks, last_step, uniform


def init_gru(gen: torch.Generator, input_size: int, hidden_size: int) -> dict[str, torch.Tensor]:
    """U(-1/√H, 1/√H) weights as torch.nn.GRU, zero biases."""
    H, u = hidden_size, uniform(gen, hidden_size)
    return {"weight_ih": u(3 * H, input_size), "weight_hh": u(3 * H, H),
            "bias_ih": torch.zeros(3 * H), "bias_hh": torch.zeros(3 * H)}


def init_rnn(gen: torch.Generator, input_size: int, hidden_size: int) -> dict[str, torch.Tensor]:
    """U(-1/√H, 1/√H) weights as torch.nn.RNN, zero biases."""
    H, u = hidden_size, uniform(gen, hidden_size)
    return {"weight_ih": u(H, input_size), "weight_hh": u(H, H), "bias_ih": torch.zeros(H), "bias_hh": torch.zeros(H)}


def active_gru_params(spec: CellSpec, input_size: int, hidden_size: int) -> int:
    """The n rows plus the rows of present gates."""
    return int((1 + sum(spec.mask())) * hidden_size * (input_size + hidden_size + 2))


def active_rnn_params(spec: CellSpec, input_size: int, hidden_size: int) -> int:
    return hidden_size * (input_size + hidden_size + 2)


class _GRUScan(torch.autograd.Function):
    """xw (T, M, B, 3H) = W_ih x + b_ih; whh (M, 3H, H); bhh (M, 3H); on (M, 2) masks for
    (reset, update); reset "before" or "after". Returns hs (T, M, B, H) and, not
    differentiable, RZ (T, M, B, 2H) = [r, z]."""

    @staticmethod
    def forward(ctx, xw, whh, bhh, probe, on, reset):
        T, M, B, G = xw.shape
        H = G // 3
        # absent reset: +inf (r = 1); absent update: -inf (z = 0, i.e. u = 1 - z = 1)
        shift = torch.stack([torch.where(on[:, 0] > 0, 0.0, math.inf), torch.where(on[:, 1] > 0, 0.0, -math.inf)], 1)
        shift = shift.repeat_interleave(H, 1).view(M, 1, 2 * H)
        xrz = xw[..., : 2 * H] + shift  # (T, M, B, 2H)
        if reset == "before":  # b_hh is outside the reset there, so it joins the inputs
            xrz = xrz + bhh[:, : 2 * H].unsqueeze(1)
            xn = xw[..., 2 * H :] + bhh[:, 2 * H :].unsqueeze(1)
        whh_t = whh.transpose(1, 2)  # (M, H, 3H)
        RZ = xw.new_empty(T, M, B, 2 * H)
        N = xw.new_empty(T, M, B, H)  # h̃_t
        A = xw.new_empty(T, M, B, H)  # "after": W_hn h_{t-1} + b_hn; "before": r ⊙ h_{t-1}
        hs = xw.new_zeros(T + 1, M, B, H)
        for t in range(T):
            h = hs[t]
            if reset == "after":
                gh = torch.baddbmm(bhh.unsqueeze(1), h, whh_t)  # (M, B, 3H)
                rz = torch.sigmoid(gh[..., : 2 * H].add_(xrz[t]), out=RZ[t])
                a = A[t].copy_(gh[..., 2 * H :])
                n = torch.tanh(torch.addcmul(xw[t, ..., 2 * H :], rz[..., :H], a), out=N[t])
            else:
                rz = torch.sigmoid(torch.baddbmm(xrz[t], h, whh_t[..., : 2 * H]), out=RZ[t])
                a = torch.mul(rz[..., :H], h, out=A[t])
                n = torch.tanh(torch.baddbmm(xn[t], a, whh_t[..., 2 * H :]), out=N[t])
            torch.addcmul(n, rz[..., H:], h - n, out=hs[t + 1])  # h_t = z h_{t-1} + (1 - z) h̃_t
        ctx.save_for_backward(whh, RZ, N, A, hs)
        ctx.reset, ctx.probe = reset, probe is not None
        ctx.mark_non_differentiable(RZ)
        return hs[1:], RZ

    @staticmethod
    def backward(ctx, dhs, _dRZ):
        whh, RZ, N, A, hs = ctx.saved_tensors
        T, M, B, H = N.shape
        r, z, h_prev = RZ[..., :H], RZ[..., H:], hs[:-1]
        # dpz = dh (h_{t-1} - h̃) σ'(z);  dpn = dh (1 - z)(1 - h̃²);  dpr = ∂J/∂r ⊙ σ'(r)
        k_z = (h_prev - N) * z * (1 - z)
        k_n = (1 - z) * (1 - N * N)
        k_r = (A if ctx.reset == "after" else h_prev) * r * (1 - r)  # ∂(r ⊙ a)/∂r = a
        dx = N.new_empty(T, M, B, 3 * H)  # ∂J/∂xw: [dpr, dpz, dpn]
        dg = N.new_empty(T, M, B, 3 * H) if ctx.reset == "after" else None  # ∂J/∂(W_hh h + b_hh)
        dprobe = N.new_empty(T, M, B, H) if ctx.probe else None
        dh = N.new_zeros(M, B, H)
        for t in range(T - 1, -1, -1):
            if dhs is not None:
                dh = dh + dhs[t]
            if dprobe is not None:
                dprobe[t] = dh
            d = dx[t]
            torch.mul(dh, k_z[t], out=d[..., H : 2 * H])
            dpn = torch.mul(dh, k_n[t], out=d[..., 2 * H :])
            if ctx.reset == "after":
                torch.mul(dpn, k_r[t], out=d[..., :H])
                dg[t, ..., : 2 * H] = d[..., : 2 * H]
                torch.mul(dpn, r[t], out=dg[t, ..., 2 * H :])
                dh = torch.baddbmm(dh * z[t], dg[t], whh)  # (M, B, 3H) @ (M, 3H, H)
            else:
                d_a = torch.bmm(dpn, whh[:, 2 * H :])  # ∂J/∂(r ⊙ h_{t-1})
                torch.mul(d_a, k_r[t], out=d[..., :H])
                dh = torch.baddbmm(torch.addcmul(dh * z[t], d_a, r[t]), d[..., : 2 * H], whh[:, : 2 * H])
        flat = (dg if ctx.reset == "after" else dx).transpose(0, 1).reshape(M, T * B, 3 * H)
        hp = h_prev.transpose(0, 1).reshape(M, T * B, H)
        if ctx.reset == "after":
            dwhh = torch.bmm(flat.transpose(1, 2), hp)
        else:
            ap = A.transpose(0, 1).reshape(M, T * B, H)
            dwhh = torch.cat([torch.bmm(flat[..., : 2 * H].transpose(1, 2), hp),
                              torch.bmm(flat[..., 2 * H :].transpose(1, 2), ap)], 1)
        dbhh = flat.sum(1)
        return dx, dwhh, dbhh, dprobe, None, None


class _RNNScan(torch.autograd.Function):
    """xw (T, M, B, H) = W_ih x + b_ih + b_hh; whh (M, H, H). Returns hs (T, M, B, H)."""

    @staticmethod
    def forward(ctx, xw, whh, probe):
        T, M, B, H = xw.shape
        whh_t = whh.transpose(1, 2)
        hs = xw.new_zeros(T + 1, M, B, H)
        for t in range(T):
            torch.tanh(torch.baddbmm(xw[t], hs[t], whh_t), out=hs[t + 1])
        ctx.save_for_backward(whh, hs)
        ctx.probe = probe is not None
        return hs[1:]

    @staticmethod
    def backward(ctx, dhs):
        whh, hs = ctx.saved_tensors
        T1, M, B, H = hs.shape
        k = 1 - hs[1:] * hs[1:]  # tanh'
        dx = hs.new_empty(T1 - 1, M, B, H)
        dprobe = hs.new_empty(T1 - 1, M, B, H) if ctx.probe else None
        dh = hs.new_zeros(M, B, H)
        for t in range(T1 - 2, -1, -1):
            dh = dh + dhs[t]
            if dprobe is not None:
                dprobe[t] = dh
            dh = torch.bmm(torch.mul(dh, k[t], out=dx[t]), whh)
        flat = dx.transpose(0, 1).reshape(M, -1, H)
        dwhh = torch.bmm(flat.transpose(1, 2), hs[:-1].transpose(0, 1).reshape(M, -1, H))
        return dx, dwhh, dprobe


def gru_scan(xw: torch.Tensor, whh: torch.Tensor, bhh: torch.Tensor, on: torch.Tensor, reset: str,
             probe: torch.Tensor | None = None):
    """hs (T, M, B, H) and the gate activations {reset: r, update: u = 1 - z}; see `_GRUScan`."""
    hs, RZ = _GRUScan.apply(xw, whh, bhh, probe, on, reset)
    H = hs.shape[-1]
    return hs, {"reset": RZ[..., :H], "update": 1 - RZ[..., H:]}


def rnn_scan(xw: torch.Tensor, whh: torch.Tensor, probe: torch.Tensor | None = None):
    """hs (T, M, B, H) for xw (T, M, B, H) = W_ih x + b_ih + b_hh; no gates."""
    return _RNNScan.apply(xw, whh, probe), {}


class GatedGRU(nn.Module):
    """One GRU layer, batch-first, with `torch.nn.GRU`'s parameter names and shapes."""

    def __init__(self, input_size: int, hidden_size: int, *, gates=CELL_GATES["gru"], reset: str = "before",
                 seed: int = 0):
        super().__init__()
        self.spec = CellSpec(tuple(gates), kind="gru", reset=reset)
        for name, value in init_gru(torch.Generator().manual_seed(seed), input_size, hidden_size).items():
            self.register_parameter(name, nn.Parameter(value))
        self.register_buffer("on", gate_masks([self.spec]), persistent=False)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        """x (B, T, I) -> outputs (B, T, H), h_n (B, H) at the last real token."""
        xw = nn.functional.linear(x, self.weight_ih, self.bias_ih).transpose(0, 1).unsqueeze(1)
        hs, _ = gru_scan(xw, self.weight_hh.unsqueeze(0), self.bias_hh.unsqueeze(0), self.on.to(x.dtype),
                         self.spec.reset)
        return hs[:, 0].transpose(0, 1), last_step(hs, lengths)[0]


class ElmanRNN(nn.Module):
    """One tanh RNN layer, batch-first, with `torch.nn.RNN`'s parameter names and shapes."""

    def __init__(self, input_size: int, hidden_size: int, *, seed: int = 0):
        super().__init__()
        for name, value in init_rnn(torch.Generator().manual_seed(seed), input_size, hidden_size).items():
            self.register_parameter(name, nn.Parameter(value))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        xw = nn.functional.linear(x, self.weight_ih, self.bias_ih + self.bias_hh).transpose(0, 1).unsqueeze(1)
        hs, _ = rnn_scan(xw, self.weight_hh.unsqueeze(0))
        return hs[:, 0].transpose(0, 1), last_step(hs, lengths)[0]
