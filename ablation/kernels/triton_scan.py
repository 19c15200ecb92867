"""The LSTM scan on CUDA as two fused Triton kernels: one launch walks all T steps forward, one walks back.

Same equations (Graves 2013 eqs. 7-11, `models/cell.py`), gate masks, peepholes (none, diagonal (M, H), full
(M, H, H)) and flag variants (NIAF, NOAF, CIFG; Greff et al. 2017 sec. 3) as `cell._Scan`, and the C++ op's
outputs: hs, cs (T+1, M, B, H) with the zero initial state, S (T, M, B, 3H) = σ of the i, f and doubled g
pre-activations, gs, os, tcs (T, M, B, H). Each program owns one (member, `BLOCK_B` batch rows) tile and keeps
h_t, c_t in registers (`tl.dot` with H padded to a power of two >= 16); the backward writes dpre (and ∂J/∂h_t
for the probe), and `cell.TritonScan` leaves the weight gradients to torch. No FGR: `cell.lstm_scan` runs
`_Scan` there. Triton (the ``triton`` extra) is imported at the first launch; on CPU the kernels run only
under TRITON_INTERPRET=1 (tests/test_triton.py). Why Triton here: docs/performance.md.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os

import torch

tl = None  # triton.language, bound by `_kernels` at the first launch (the kernels below read it as a global)

BLOCK_B = 16  # batch rows per program: tl.dot's smallest tile (training batches are 10-25 rows)
# Warps per program. Triton's default, and the fastest measured on an H200 (Triton 3.6; forward and backward
# of a pack of 8, T = 20, H = 50: 1 warp 5.0 ms, 2 warps 3.4, 4 warps 1.3, 8 warps 1.6).
NUM_WARPS = 4
# What compiles on a GPU: in float64 the kernels' tiles need 232-312 KB of shared memory (by peephole kind,
# as Triton 3.6 reported), over an H200's 227 KB. float64 runs under the interpreter (the tests' gradchecks);
# on CUDA `cell.lstm_scan` runs `_Scan` for it.
COMPILED_DTYPES = (torch.float32,)


@functools.cache
def available() -> bool:
    """Whether triton is installed (`cell.lstm_scan` then runs this scan on CUDA)."""
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """Triton's interpreter setting now (TRITON_INTERPRET=1; `triton.knobs` since Triton 3.4)."""
    import triton

    knobs = getattr(triton, "knobs", None)
    return bool(knobs.runtime.interpret) if knobs is not None else os.environ.get("TRITON_INTERPRET", "0") == "1"


def _forward_kernel(xw, whh, wci, wcf, wco, sw, hs, cs, S, gs, os_, tcs, T, M, B, H,
                    HP: tl.constexpr, BB: tl.constexpr, PEEP: tl.constexpr):
    """Program (m, block): member m's batch rows [block·BB, block·BB + BB) through all T steps.

    xw (T, M, B, 4H) rows i, f, g, o; whh (M, 4H, H); wci, wcf, wco: (M, H) for PEEP = 1, (M, H, H) for
    PEEP = 2, unread for 0; sw (M, 6) int32 member switches (on_i, on_f, on_o, niaf, noaf, cifg). Writes
    hs, cs (T+1, M, B, H) at steps 1..T, S (T, M, B, 3H), gs, os_, tcs (T, M, B, H). All contiguous."""
    m = tl.program_id(0)
    rb = tl.program_id(1) * BB + tl.arange(0, BB)  # batch rows, (BB,)
    rj = tl.arange(0, HP)  # hidden units: the tile's columns, (HP,)
    rk = tl.arange(0, HP)  # the matmuls' reduction index: rows of a transposed weight, (HP,)
    tile = (rb[:, None] < B) & (rj[None, :] < H)  # (BB, HP): real rows and units
    square = (rk[:, None] < H) & (rj[None, :] < H)  # (HP, HP); padding is 0, so padded units stay 0
    on_i = tl.load(sw + m * 6 + 0) != 0
    on_f = tl.load(sw + m * 6 + 1) != 0
    on_o = tl.load(sw + m * 6 + 2) != 0
    niaf = tl.load(sw + m * 6 + 3) != 0
    noaf = tl.load(sw + m * 6 + 4) != 0
    cifg = tl.load(sw + m * 6 + 5) != 0
    # W_kᵀ (HP, HP) of gate k, so that h W_kᵀ is its recurrent term: element (k', j) = whh[m, kH + j, k'].
    wt = whh + m * 4 * H * H + rj[None, :] * H + rk[:, None]
    w_i = tl.load(wt, mask=square, other=0.0)
    w_f = tl.load(wt + H * H, mask=square, other=0.0)
    w_g = tl.load(wt + 2 * H * H, mask=square, other=0.0)
    w_o = tl.load(wt + 3 * H * H, mask=square, other=0.0)
    if PEEP == 1:  # diagonal: w_c· ⊙ c, (1, HP) rows broadcast over the batch
        p_i = tl.load(wci + m * H + rj, mask=rj < H, other=0.0)[None, :]
        p_f = tl.load(wcf + m * H + rj, mask=rj < H, other=0.0)[None, :]
        p_o = tl.load(wco + m * H + rj, mask=rj < H, other=0.0)[None, :]
    if PEEP == 2:  # full: c W_c·ᵀ, the transposed (HP, HP) tiles as W_kᵀ above
        pt = m * H * H + rj[None, :] * H + rk[:, None]
        p_i = tl.load(wci + pt, mask=square, other=0.0)
        p_f = tl.load(wcf + pt, mask=square, other=0.0)
        p_o = tl.load(wco + pt, mask=square, other=0.0)
    # tl.full, not tl.zeros: the kernels call only tl's builtins. tl.zeros, tl.sigmoid and the like are
    # jit functions that `import triton` wrapped, and under the interpreter they cannot be called if triton
    # was imported before TRITON_INTERPRET=1 was set.
    h = tl.full((BB, HP), 0.0, xw.dtype.element_ty)  # h_0 = 0, (BB, HP)
    c = tl.full((BB, HP), 0.0, xw.dtype.element_ty)  # c_0 = 0
    for t in range(T):
        # (BB,) rows of the (T, M, B, ·) tensors at step t, and of hs, cs (T+1, M, B, H) at step t+1; int64,
        # since T·M·B·4H can pass 2³¹ (probes over the whole test set in a large pack)
        row = ((t * M + m) * B + rb).to(tl.int64)
        nxt = (((t + 1) * M + m) * B + rb).to(tl.int64)
        x = xw + row[:, None] * 4 * H + rj[None, :]
        # The pre-activations W_x· x_t + b (in xw) + W_h· h_{t-1}, (BB, HP) each; "ieee": no TF32 rounding.
        pi = tl.load(x, mask=tile, other=0.0) + tl.dot(h, w_i, input_precision="ieee")
        pf = tl.load(x + H, mask=tile, other=0.0) + tl.dot(h, w_f, input_precision="ieee")
        pg = tl.load(x + 2 * H, mask=tile, other=0.0) + tl.dot(h, w_g, input_precision="ieee")
        po = tl.load(x + 3 * H, mask=tile, other=0.0) + tl.dot(h, w_o, input_precision="ieee")
        if PEEP == 1:  # eqs. 7-8: + w_ci ⊙ c_{t-1}, w_cf ⊙ c_{t-1}
            pi += p_i * c
            pf += p_f * c
        if PEEP == 2:
            pi += tl.dot(c, p_i, input_precision="ieee")
            pf += tl.dot(c, p_f, input_precision="ieee")
        i = tl.where(on_i, 1.0 / (1.0 + tl.exp(-pi)), 1.0)  # eq. 7; an absent gate is 1
        f = tl.where(on_f, 1.0 / (1.0 + tl.exp(-pf)), 1.0)  # eq. 8
        f = tl.where(cifg, 1.0 - i, f)  # CIFG: f_t = 1 - i_t
        # g = tanh(pre_g) = 2σ(2·pre_g) - 1; S keeps σ(2·pre_g) for the backward (σ(pre_g) for NIAF,
        # whose g is the pre-activation itself), as `_Scan`'s doubled g rows do.
        sg = 1.0 / (1.0 + tl.exp(-tl.where(niaf, pg, 2.0 * pg)))
        g = tl.where(niaf, pg, 2.0 * sg - 1.0)
        c = f * c + i * g  # eq. 9
        if PEEP == 1:  # eq. 10 peeks at c_t, not c_{t-1}
            po += p_o * c
        if PEEP == 2:
            po += tl.dot(c, p_o, input_precision="ieee")
        o = tl.where(on_o, 1.0 / (1.0 + tl.exp(-po)), 1.0)  # eq. 10
        tc = tl.where(noaf, c, 2.0 / (1.0 + tl.exp(-2.0 * c)) - 1.0)  # tanh(c_t); NOAF: c_t itself
        h = o * tc  # eq. 11
        s = S + row[:, None] * 3 * H + rj[None, :]
        tl.store(s, i, mask=tile)
        tl.store(s + H, f, mask=tile)
        tl.store(s + 2 * H, sg, mask=tile)
        one = row[:, None] * H + rj[None, :]
        tl.store(gs + one, g, mask=tile)
        tl.store(os_ + one, o, mask=tile)
        tl.store(tcs + one, tc, mask=tile)
        tl.store(hs + nxt[:, None] * H + rj[None, :], h, mask=tile)
        tl.store(cs + nxt[:, None] * H + rj[None, :], c, mask=tile)


def _backward_kernel(dhs, dcs, whh, wci, wcf, wco, sw, S, gs, os_, cs, tcs, dpre, dprobe, T, M, B, H,
                     HP: tl.constexpr, BB: tl.constexpr, PEEP: tl.constexpr, PROBE: tl.constexpr):
    """Program (m, block): ∂J/∂pre for member m's rows, walking t = T-1 .. 0 (backpropagation through time).

    dhs, dcs (T, M, B, H): ∂J/∂h_t, ∂J/∂c_t from outside the scan; the forward's saved tensors as written
    by `_forward_kernel` (cs with its zero step 0, so cs[t] is c_{t-1} of step t). Writes dpre
    (T, M, B, 4H) and, with PROBE, dprobe (T, M, B, H) = ∂J/∂h_t through the recurrence."""
    m = tl.program_id(0)
    rb = tl.program_id(1) * BB + tl.arange(0, BB)
    rj = tl.arange(0, HP)
    rk = tl.arange(0, HP)
    tile = (rb[:, None] < B) & (rj[None, :] < H)
    square = (rk[:, None] < H) & (rj[None, :] < H)
    noaf = tl.load(sw + m * 6 + 4) != 0
    niaf = tl.load(sw + m * 6 + 3) != 0
    cifg = tl.load(sw + m * 6 + 5) != 0
    # W_k (HP, HP), not transposed: ∂J/∂h_{t-1} = Σ_k dpre_k W_k; element (r, j) = whh[m, kH + r, j].
    wt = whh + m * 4 * H * H + rk[:, None] * H + rj[None, :]
    w_i = tl.load(wt, mask=square, other=0.0)
    w_f = tl.load(wt + H * H, mask=square, other=0.0)
    w_g = tl.load(wt + 2 * H * H, mask=square, other=0.0)
    w_o = tl.load(wt + 3 * H * H, mask=square, other=0.0)
    if PEEP == 1:
        p_i = tl.load(wci + m * H + rj, mask=rj < H, other=0.0)[None, :]
        p_f = tl.load(wcf + m * H + rj, mask=rj < H, other=0.0)[None, :]
        p_o = tl.load(wco + m * H + rj, mask=rj < H, other=0.0)[None, :]
    if PEEP == 2:  # W_c· itself: ∂J/∂c += dpre_· W_c·
        pt = m * H * H + rk[:, None] * H + rj[None, :]
        p_i = tl.load(wci + pt, mask=square, other=0.0)
        p_f = tl.load(wcf + pt, mask=square, other=0.0)
        p_o = tl.load(wco + pt, mask=square, other=0.0)
    dh = tl.full((BB, HP), 0.0, gs.dtype.element_ty)  # ∂J/∂h_t through step t+1, (BB, HP)
    dc = tl.full((BB, HP), 0.0, gs.dtype.element_ty)  # ∂J/∂c_t through step t+1
    for step in range(T):
        t = T - 1 - step
        row = ((t * M + m) * B + rb).to(tl.int64)
        one = row[:, None] * H + rj[None, :]
        s = S + row[:, None] * 3 * H + rj[None, :]
        i = tl.load(s, mask=tile, other=0.0)
        f = tl.load(s + H, mask=tile, other=0.0)
        sg = tl.load(s + 2 * H, mask=tile, other=0.0)
        g = tl.load(gs + one, mask=tile, other=0.0)
        o = tl.load(os_ + one, mask=tile, other=0.0)
        tc = tl.load(tcs + one, mask=tile, other=0.0)
        c_prev = tl.load(cs + one, mask=tile, other=0.0)  # cs[t] = c_{t-1}
        dh += tl.load(dhs + one, mask=tile, other=0.0)
        if PROBE:
            tl.store(dprobe + one, dh, mask=tile)
        # eq. 11, h = o ⊙ tanh(c): ∂h/∂c = o (1 - tanh² c) (o for NOAF's h = o ⊙ c), ∂h/∂po = tanh(c) σ'(po)
        dc += tl.load(dcs + one, mask=tile, other=0.0) + dh * tl.where(noaf, o, o * (1.0 - tc * tc))
        dpo = dh * tc * o * (1.0 - o)
        if PEEP == 1:  # eq. 10's peephole reads c_t
            dc += dpo * p_o
        if PEEP == 2:
            dc += tl.dot(dpo, p_o, input_precision="ieee")
        # eq. 9, c_t = f c_{t-1} + i g: dpi = dc g σ'(pi) (CIFG: f = 1 - i, so dc (g - c_{t-1}) σ'(pi)),
        # dpf = dc c_{t-1} σ'(pf) (0 for CIFG: its f has no weights), dpg = dc i tanh'(pg) with
        # tanh'(x) = 1 - tanh² x = 4σ(2x)(1 - σ(2x)) (NIAF: g = pg, so dc i).
        dpi = dc * tl.where(cifg, g - c_prev, g) * i * (1.0 - i)
        dpf = tl.where(cifg, 0.0, dc * c_prev * f * (1.0 - f))
        dpg = dc * tl.where(niaf, i, i * 4.0 * sg * (1.0 - sg))
        d = dpre + row[:, None] * 4 * H + rj[None, :]
        tl.store(d, dpi, mask=tile)
        tl.store(d + H, dpf, mask=tile)
        tl.store(d + 2 * H, dpg, mask=tile)
        tl.store(d + 3 * H, dpo, mask=tile)
        dc = dc * f  # ∂c_t/∂c_{t-1} through eq. 9
        if PEEP == 1:  # eqs. 7-8's peepholes read c_{t-1}
            dc += dpi * p_i + dpf * p_f
        if PEEP == 2:
            dc += tl.dot(dpi, p_i, input_precision="ieee") + tl.dot(dpf, p_f, input_precision="ieee")
        dh = (tl.dot(dpi, w_i, input_precision="ieee") + tl.dot(dpf, w_f, input_precision="ieee")
              + tl.dot(dpg, w_g, input_precision="ieee") + tl.dot(dpo, w_o, input_precision="ieee"))


@functools.cache
def _kernels(interpret: bool):
    """The two kernels, wrapped by `triton.jit` now, with the interpreter setting ``interpret`` (which
    `triton.jit` reads as it wraps; one pair per setting, so a later change of it is honoured)."""
    global tl
    import triton
    import triton.language

    tl = triton.language
    return triton.jit(_forward_kernel), triton.jit(_backward_kernel)


def _launch(like: torch.Tensor):
    """The kernels for tensors like ``like``; a clear error where Triton cannot run them."""
    if like.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"the Triton LSTM scan takes float32 or float64, got {like.dtype}")
    interpret = interpreting()
    if like.device.type != "cuda" and not interpret:
        raise ValueError(f"the Triton LSTM scan runs {like.device.type} tensors only under Triton's interpreter "
                         "(TRITON_INTERPRET=1); on CUDA it runs compiled")
    if not interpret and like.dtype not in COMPILED_DTYPES:
        raise ValueError(f"the compiled Triton LSTM scan takes float32, got {like.dtype} (its tiles outgrow a "
                         "GPU's shared memory); lstm_scan runs _Scan for it")
    return _kernels(interpret)


def _on_device(like: torch.Tensor):
    """Launch on ``like``'s GPU (Triton launches on the current CUDA device), or as it is (CPU, interpreter)."""
    return torch.cuda.device(like.device) if like.device.type == "cuda" else contextlib.nullcontext()


def _switches(on: torch.Tensor, niaf, noaf, cifg) -> torch.Tensor:
    """(M, 6) int32: gate present (on_i, on_f, on_o from on (M, 3)) and the variant flags ((M,) bool or None)."""
    M = on.shape[0]
    no = torch.zeros(M, dtype=torch.bool, device=on.device)
    flags = [no if f is None else f.reshape(M).to(on.device) for f in (niaf, noaf, cifg)]
    cols = [on[:, k] > 0 for k in range(3)] + flags
    return torch.stack(cols, 1).to(torch.int32).contiguous()


def _peep(w_ci, w_cf, w_co, dummy):
    """The peephole kind (0 none, 1 diagonal (M, H), 2 full (M, H, H)) and its weights, contiguous."""
    if w_ci is None:
        return 0, (dummy, dummy, dummy)
    return (1 if w_ci.dim() == 2 else 2), tuple(w.contiguous() for w in (w_ci, w_cf, w_co))


def _meta(H: int) -> dict:
    """The compile-time sizes: H padded to a power of two ≥ 16 (`tl.dot`'s smallest tile), the batch block."""
    return {"HP": max(16, 1 << (H - 1).bit_length()), "BB": BLOCK_B, "num_warps": NUM_WARPS}


def refuse_fgr(w_gr):
    if w_gr is not None:
        raise ValueError("the Triton LSTM scan has no FGR (w_gr must be None); lstm_scan runs _Scan for packs with FGR")


def lstm_forward(xw, whh, w_ci, w_cf, w_co, w_gr, on, niaf=None, noaf=None, cifg=None):
    """hs, cs (T+1, M, B, H), S (T, M, B, 3H), gs, os, tcs (T, M, B, H) for xw (T, M, B, 4H), whh (M, 4H, H),
    peepholes None, (M, H) or (M, H, H), on (M, 3), flags (M,) bool or None: the C++ `lstm_forward`'s
    arguments and outputs (`cell.FusedScan`), without FGR (w_gr must be None)."""
    refuse_fgr(w_gr)
    fwd, _ = _launch(xw)
    T, M, B, G = xw.shape
    H = G // 4
    xw, whh = xw.contiguous(), whh.contiguous()
    peep, (wci, wcf, wco) = _peep(w_ci, w_cf, w_co, whh)
    hs = xw.new_zeros(T + 1, M, B, H)  # step 0: h_0 = 0; the kernel writes steps 1..T
    cs = xw.new_zeros(T + 1, M, B, H)
    S = xw.new_empty(T, M, B, 3 * H)
    gs, os_, tcs = (xw.new_empty(T, M, B, H) for _ in range(3))
    grid = (M, -(-B // BLOCK_B))  # (member, batch block)
    with _on_device(xw):
        fwd[grid](xw, whh, wci, wcf, wco, _switches(on, niaf, noaf, cifg), hs, cs, S, gs, os_, tcs, T, M, B, H,
                  PEEP=peep, **_meta(H))
    return hs, cs, S, gs, os_, tcs


def lstm_backward(dhs, dcs, whh, w_ci, w_cf, w_co, w_gr, S, gs, os_, cs, tcs, on, niaf=None, noaf=None, cifg=None,
                  probe: bool = False):
    """dpre (T, M, B, 4H) and dprobe (T, M, B, H) = ∂J/∂h_t (None without ``probe``) from the gradients
    dhs, dcs (T, M, B, H) and `lstm_forward`'s saved tensors: the C++ `lstm_backward`'s."""
    refuse_fgr(w_gr)
    _, bwd = _launch(gs)
    T, M, B, H = gs.shape
    dhs, dcs, whh = dhs.contiguous(), dcs.contiguous(), whh.contiguous()
    peep, (wci, wcf, wco) = _peep(w_ci, w_cf, w_co, whh)
    dpre = gs.new_empty(T, M, B, 4 * H)
    dprobe = gs.new_empty(T, M, B, H) if probe else None
    grid = (M, -(-B // BLOCK_B))  # (member, batch block)
    with _on_device(gs):
        bwd[grid](dhs, dcs, whh, wci, wcf, wco, _switches(on, niaf, noaf, cifg), S, gs, os_, cs, tcs, dpre,
                  dpre if dprobe is None else dprobe, T, M, B, H, PEEP=peep, PROBE=probe, **_meta(H))
    return dpre, dprobe
