// The fused LSTM scan on CPU: the time loop of `cell._Scan` (forward, and the backward
// through time) with one ATen batched matmul and one element-wise pass per step, instead
// of ~20 ATen ops per step. Same equations, same saved tensors, same outputs as `_Scan`
// (see its docstring and cell.py's module doc, Graves 2013 eqs. 7-11; the variants of
// Greff et al. 2017, sec. 3); ablation/fused.py builds and wraps it.
//
// Numerics, so that a record retrains bit for bit on another x86-64 machine:
// - the matmuls are ATen's bmm (the calls and shapes the Python scan makes, one member
//   per batch entry), so whatever pins MKL for the Python scan pins them here too;
// - the element-wise pass uses only IEEE +, -, *, / (correctly rounded whatever the vector
//   width), compiled with -ffp-contract=off and without -ffast-math: no FMA contraction,
//   no reassociation, so the vectoriser cannot change a result;
// - exp, σ and tanh are written here from those operations (Cephes' range reduction and
//   polynomials, ~1-2 ulp), never libm's expf/tanhf, whose last bits differ between
//   glibc versions;
// - every reduction in the loop is a matmul per member; element-wise work is per element,
//   so a member's numbers do not depend on the other members of its pack.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace {

using at::Tensor;

// exp(x) = 2^n · e^r, n = round(x / ln 2), r = x - n ln 2 in two parts (Cody-Waite), e^r by
// Cephes' polynomial (expf.c) or rational function (exp.c). n comes from the bits of
// x/ln2 + 1.5·2^(mantissa bits): adding that magic number rounds to the nearest integer in
// the FPU's default mode, with adds only (no floor, no float->int conversion).
inline float exp_(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);  // 2^n stays a normal number; NaN passes
  const float magic = 12582912.0f;                    // 1.5 · 2^23
  float t = x * 1.44269504088896341f + magic;
  float n = t - magic;
  float r = x - n * 0.693359375f;  // ln 2 = C1 - C2, C1 exact in 9 bits
  r = r - n * -2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * (r * r) + r + 1.0f;
  int32_t bits, magic_bits;
  std::memcpy(&bits, &t, 4);
  std::memcpy(&magic_bits, &magic, 4);
  int32_t e = (bits - magic_bits + 127) << 23;  // the bits of 2^n
  float scale;
  std::memcpy(&scale, &e, 4);
  return y * scale;
}

inline double exp_(double x) {
  x = x < -708.0 ? -708.0 : (x > 709.0 ? 709.0 : x);
  const double magic = 6755399441055744.0;  // 1.5 · 2^52
  double t = x * 1.4426950408889634073599 + magic;
  double n = t - magic;
  double r = x - n * 6.93145751953125e-1;
  r = r - n * 1.42860682030941723212e-6;
  double rr = r * r;
  double p = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr + 9.99999999999999999910e-1);
  double q = ((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr + 2.27265548208155028766e-1) * rr +
             2.00000000000000000009e0;
  double y = 1.0 + 2.0 * (p / (q - p));  // e^r = 1 + 2r P(r²) / (Q(r²) - r P(r²))
  int64_t bits, magic_bits;
  std::memcpy(&bits, &t, 8);
  std::memcpy(&magic_bits, &magic, 8);
  int64_t e = (bits - magic_bits + 1023) << 52;
  double scale;
  std::memcpy(&scale, &e, 8);
  return y * scale;
}

// σ(x) = 1 / (1 + e^-x): σ(+inf) = 1 exactly (an absent gate), σ(-large) underflows to ~0.
template <typename T>
inline T sigmoid_(T x) {
  return T(1) / (T(1) + exp_(-x));
}

// tanh by Cephes (tanhf.c, tanh.c): an odd polynomial (rational in double) below 0.625,
// 1 - 2 / (e^2|x| + 1) above; both are computed and one selected, so the loop vectorises.
inline float tanh_(float x) {
  float a = x < 0 ? -x : x;
  float z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  float small = p * z * x + x;
  float big = 1.0f - 2.0f / (exp_(a + a) + 1.0f);
  big = x < 0 ? -big : big;
  return a < 0.625f ? small : big;
}

inline double tanh_(double x) {
  double a = x < 0 ? -x : x;
  double s = x * x;
  double p = (-9.64399179425052238628e-1 * s - 9.92877231001918586564e1) * s - 1.61468768441708447952e3;
  double q = ((s + 1.12811678491632931402e2) * s + 2.23548839060100448583e3) * s + 4.84406305325125486048e3;
  double small = x + x * s * (p / q);
  double big = 1.0 - 2.0 / (exp_(a + a) + 1.0);
  big = x < 0 ? -big : big;
  return a < 0.625 ? small : big;
}

enum Peep { kNone = 0, kDiagonal = 1, kFull = 2 };

// Per-member switches: the gate masks (`on`, 0 = absent: σ is the constant 1) and the
// variant flags (`cell.ScanFlags`), read once per call.
struct Member {
  bool on_i, on_f, on_o, niaf, noaf, cifg;
};

std::vector<Member> members(const Tensor& on, const c10::optional<Tensor>& niaf, const c10::optional<Tensor>& noaf,
                            const c10::optional<Tensor>& cifg) {
  const int64_t M = on.size(0);
  TORCH_CHECK(on.dim() == 2 && on.size(1) == 3, "lstm scan: on must be (M, 3), got ", on.sizes());
  Tensor on_ = on.to(at::kDouble).contiguous();
  const double* o = on_.data_ptr<double>();
  auto flag = [M](const c10::optional<Tensor>& f) {
    std::vector<bool> v(M, false);
    if (f.has_value() && f->defined()) {
      Tensor b = f->to(at::kBool).contiguous().view({-1});
      TORCH_CHECK(b.numel() == M, "lstm scan: a variant flag has ", b.numel(), " entries for ", M, " members");
      const bool* p = b.data_ptr<bool>();
      for (int64_t m = 0; m < M; ++m) v[m] = p[m];
    }
    return v;
  };
  auto ni = flag(niaf), no = flag(noaf), ci = flag(cifg);
  std::vector<Member> out(M);
  for (int64_t m = 0; m < M; ++m)
    out[m] = {o[3 * m] > 0, o[3 * m + 1] > 0, o[3 * m + 2] > 0, ni[m], no[m], ci[m]};
  return out;
}

int peep_kind(const c10::optional<Tensor>& w_ci) {
  if (!w_ci.has_value() || !w_ci->defined()) return kNone;
  return w_ci->dim() == 2 ? kDiagonal : kFull;
}

const Tensor* opt(const c10::optional<Tensor>& t) { return t.has_value() && t->defined() ? &*t : nullptr; }

template <typename T>
T* ptr(const Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

// Everything one step's element-wise pass reads and writes, as raw pointers into
// contiguous (…, M, B, ·) tensors, already offset to the step.
template <typename T>
struct FwdStep {
  int64_t M, B, H;
  const Member* mem;
  const T *xw, *P, *R, *Q, *Qo;   // xw_t (M,B,4H); h W_hhᵀ (M,B,4H); FGR (M,B,3H); full (M,B,2H), (M,B,H)
  const T *wci, *wcf, *wco;       // diagonal peepholes (M,H)
  const T* c_prev;                // (M,B,H)
  T *c, *h, *S, *g, *o, *tc, *A;  // outputs; A = [i, f, o] for the next step's FGR matmul
};

// The forward of step t for rows [r0, r1) of the M·B rows (Graves eqs. 7-11 and variants).
// Two stages when the output peephole is full (its matmul needs c_t): stage 1 is eqs. 7-9,
// stage 2 eqs. 10-11; otherwise one stage does both.
template <typename T, int PEEP, bool FGR, int STAGE>
void fwd_rows(const FwdStep<T>& s, int64_t r0, int64_t r1) {
  const int64_t H = s.H, G = 4 * H;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t m = r / s.B;
    const Member mb = s.mem[m];
    const T *xw = s.xw + r * G, *P = s.P + r * G, *cp = s.c_prev + r * H;
    const T* R = FGR ? s.R + r * 3 * H : nullptr;
    T *c = s.c + r * H, *h = s.h + r * H, *S = s.S + r * 3 * H, *g = s.g + r * H, *o = s.o + r * H,
      *tc = s.tc + r * H;
    T* A = FGR ? s.A + r * 3 * H : nullptr;
    if (STAGE != 2) {
      const T *wci = PEEP == kDiagonal ? s.wci + m * H : nullptr, *wcf = PEEP == kDiagonal ? s.wcf + m * H : nullptr;
      const T* Q = PEEP == kFull ? s.Q + r * 2 * H : nullptr;
      for (int64_t j = 0; j < H; ++j) {
        T pi = xw[j] + P[j], pf = xw[H + j] + P[H + j], pg = xw[2 * H + j] + P[2 * H + j];
        if (FGR) pi = pi + R[j], pf = pf + R[H + j];
        if (PEEP == kDiagonal) pi = pi + cp[j] * wci[j], pf = pf + cp[j] * wcf[j];
        if (PEEP == kFull) pi = pi + Q[j], pf = pf + Q[H + j];
        T i = mb.on_i ? sigmoid_(pi) : T(1);
        T f = mb.on_f ? sigmoid_(pf) : T(1);
        T sg = sigmoid_(mb.niaf ? pg : pg + pg);           // tanh(x) = 2σ(2x) - 1, as `_Scan`
        T gg = mb.niaf ? pg : (sg + sg) - T(1);            // NIAF: g_t is the pre-activation
        f = mb.cifg ? T(1) - i : f;                        // CIFG: f_t = 1 - i_t
        T cn = f * cp[j] + i * gg;                         // eq. 9
        S[j] = i, S[H + j] = f, S[2 * H + j] = sg, g[j] = gg, c[j] = cn;
        if (FGR) A[j] = i, A[H + j] = f;
        if (PEEP != kFull) {
          T po = xw[3 * H + j] + P[3 * H + j];
          if (FGR) po = po + R[2 * H + j];
          if (PEEP == kDiagonal) po = po + cn * s.wco[m * H + j];  // eq. 10 peeks at c_t
          T oo = mb.on_o ? sigmoid_(po) : T(1);
          T t = mb.noaf ? cn : tanh_(cn);                          // NOAF: h_t = o_t ⊙ c_t
          o[j] = oo, tc[j] = t, h[j] = oo * t;                     // eq. 11
          if (FGR) A[2 * H + j] = oo;
        }
      }
    }
    if (PEEP == kFull && STAGE != 1) {
      const T* Qo = s.Qo + r * H;
      for (int64_t j = 0; j < H; ++j) {
        T po = xw[3 * H + j] + P[3 * H + j];
        if (FGR) po = po + R[2 * H + j];
        po = po + Qo[j];
        T cn = c[j];
        T oo = mb.on_o ? sigmoid_(po) : T(1);
        T t = mb.noaf ? cn : tanh_(cn);
        o[j] = oo, tc[j] = t, h[j] = oo * t;
        if (FGR) A[2 * H + j] = oo;
      }
    }
  }
}

template <typename T, int PEEP, bool FGR, int STAGE>
void fwd_pass(const FwdStep<T>& s) {
  // Element-wise: any split of the rows gives the same numbers.
  at::parallel_for(0, s.M * s.B, 16, [&](int64_t r0, int64_t r1) { fwd_rows<T, PEEP, FGR, STAGE>(s, r0, r1); });
}

template <typename T, int PEEP, bool FGR>
std::vector<Tensor> forward_impl(const Tensor& xw_in, const Tensor& whh, const Tensor* w_ci, const Tensor* w_cf,
                                 const Tensor* w_co, const Tensor* w_gr, const std::vector<Member>& mem) {
  const int64_t T_ = xw_in.size(0), M = xw_in.size(1), B = xw_in.size(2), G = xw_in.size(3), H = G / 4;
  Tensor xw = xw_in.contiguous();
  auto opts = xw.options();
  Tensor hs = at::zeros({T_ + 1, M, B, H}, opts), cs = at::zeros({T_ + 1, M, B, H}, opts);
  Tensor S = at::empty({T_, M, B, 3 * H}, opts), gs = at::empty({T_, M, B, H}, opts);
  Tensor os = at::empty({T_, M, B, H}, opts), tcs = at::empty({T_, M, B, H}, opts);
  Tensor P = at::zeros({M, B, G}, opts);  // h_{t-1} W_hhᵀ; zero at t = 0 (h_0 = 0)
  Tensor whh_t = whh.transpose(1, 2);     // (M, H, 4H)
  Tensor R, A, w_gr_t, Q, Qo, w_cif_t, w_co_t, wci, wcf, wco;
  if (FGR) {
    R = at::zeros({M, B, 3 * H}, opts), A = at::empty({M, B, 3 * H}, opts);
    w_gr_t = w_gr->transpose(1, 2);  // (M, 3H, 3H): pre_{i,f,o} += [i, f, o]_{t-1} Rᵀ
  }
  if (PEEP == kFull) {
    Q = at::zeros({M, B, 2 * H}, opts), Qo = at::empty({M, B, H}, opts);
    w_cif_t = at::cat({*w_ci, *w_cf}, 1).transpose(1, 2);  // (M, H, 2H)
    w_co_t = w_co->transpose(1, 2);                         // (M, H, H)
  }
  if (PEEP == kDiagonal) wci = w_ci->contiguous(), wcf = w_cf->contiguous(), wco = w_co->contiguous();
  FwdStep<T> s{M, B, H, mem.data()};
  s.P = ptr<T>(P), s.R = ptr<T>(R), s.Q = ptr<T>(Q), s.Qo = ptr<T>(Qo), s.A = ptr<T>(A);
  s.wci = ptr<T>(wci), s.wcf = ptr<T>(wcf), s.wco = ptr<T>(wco);
  const int64_t n = M * B * H;
  for (int64_t t = 0; t < T_; ++t) {
    if (t > 0) {
      at::bmm_out(P, hs[t], whh_t);
      if (FGR) at::bmm_out(R, A, w_gr_t);
      if (PEEP == kFull) at::bmm_out(Q, cs[t], w_cif_t);
    }
    s.xw = xw.data_ptr<T>() + t * M * B * G;
    s.c_prev = cs.data_ptr<T>() + t * n, s.c = cs.data_ptr<T>() + (t + 1) * n, s.h = hs.data_ptr<T>() + (t + 1) * n;
    s.S = S.data_ptr<T>() + t * 3 * n, s.g = gs.data_ptr<T>() + t * n, s.o = os.data_ptr<T>() + t * n;
    s.tc = tcs.data_ptr<T>() + t * n;
    if (PEEP == kFull) {
      fwd_pass<T, PEEP, FGR, 1>(s);
      at::bmm_out(Qo, cs[t + 1], w_co_t);
      fwd_pass<T, PEEP, FGR, 2>(s);
    } else {
      fwd_pass<T, PEEP, FGR, 0>(s);
    }
  }
  return {hs, cs, S, gs, os, tcs};
}

template <typename T>
struct BwdStep {
  int64_t M, B, H;
  const Member* mem;
  const T *dhs, *dcs, *Dh, *Da, *Qc, *Qif;  // dJ/dh_t, dJ/dc_t given; dh, da through step t+1; full-peephole matmuls
  const T *S, *g, *o, *tc, *c_prev;
  const T *wci, *wcf, *wco;
  T *dc, *dpre, *dprobe, *Dgr, *Dif;  // running dc (M,B,H); dpre_t (M,B,4H); [dpi, dpf, dpo] (FGR); [dpi, dpf] (full)
};

// The backward of step t (the loop body of `_Scan.backward`, its per-step factors computed
// on the fly), for rows [r0, r1). Full peepholes split it where dc needs the matmul dpo W_co.
template <typename T, int PEEP, bool FGR, int STAGE>
void bwd_rows(const BwdStep<T>& s, int64_t r0, int64_t r1) {
  const int64_t H = s.H;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t m = r / s.B;
    const Member mb = s.mem[m];
    T *dc = s.dc + r * H, *d = s.dpre + r * 4 * H;
    const T *o = s.o + r * H, *S = s.S + r * 3 * H, *Da = FGR ? s.Da + r * 3 * H : nullptr;
    if (STAGE != 2) {
      const T *Dh = s.Dh + r * H, *dhs = s.dhs + r * H, *dcs = s.dcs + r * H, *tc = s.tc + r * H;
      T* dprobe = s.dprobe ? s.dprobe + r * H : nullptr;
      const T* Qif = PEEP == kFull ? s.Qif + r * H : nullptr;
      for (int64_t j = 0; j < H; ++j) {
        T dh = Dh[j] + dhs[j];
        if (dprobe) dprobe[j] = dh;
        T oo = o[j], t = tc[j];
        T kc = mb.noaf ? oo : oo * (T(1) - t * t);  // dc_t += dh_t ⊙ o ⊙ tanh'(c_t)
        T dcv = dc[j];
        if (PEEP == kFull) dcv = dcv + Qif[j];  // the step before's dc·f + dp_{i,f} W_c{i,f}
        dcv = dcv + dcs[j] + dh * kc;
        T dpo = dh * (t * oo * (T(1) - oo));
        if (FGR) dpo = dpo + Da[2 * H + j] * (oo * (T(1) - oo));
        if (PEEP == kDiagonal) dcv = dcv + dpo * s.wco[m * H + j];
        d[3 * H + j] = dpo;
        dc[j] = dcv;
        if (FGR) s.Dgr[r * 3 * H + 2 * H + j] = dpo;
      }
    }
    if (STAGE != 1) {
      const T *g = s.g + r * H, *cp = s.c_prev + r * H, *Qc = PEEP == kFull ? s.Qc + r * H : nullptr;
      for (int64_t j = 0; j < H; ++j) {
        T dcv = dc[j];
        if (PEEP == kFull) dcv = dcv + Qc[j];  // + dpo W_co
        T i = S[j], f = S[H + j], sg = S[2 * H + j], gg = g[j], c0 = cp[j];
        T ki = mb.cifg ? (gg - c0) * i * (T(1) - i) : gg * i * (T(1) - i);  // CIFG: f = 1 - i
        T kf = mb.cifg ? T(0) : c0 * f * (T(1) - f);
        T kg = mb.niaf ? i : i * sg * (T(1) - sg) * T(4);  // i·tanh'(x) = i·4σ(2x)(1 - σ(2x))
        T dpi = dcv * ki, dpf = dcv * kf, dpg = dcv * kg;
        if (FGR) {
          dpi = dpi + Da[j] * (i * (T(1) - i));
          dpf = dpf + Da[H + j] * (mb.cifg ? T(0) : f * (T(1) - f));
        }
        dcv = dcv * f;  // ∂c_t/∂c_{t-1} through eq. 9
        if (PEEP == kDiagonal) dcv = dcv + (dpi * s.wci[m * H + j] + dpf * s.wcf[m * H + j]);
        dc[j] = dcv;
        d[j] = dpi, d[H + j] = dpf, d[2 * H + j] = dpg;
        if (FGR) s.Dgr[r * 3 * H + j] = dpi, s.Dgr[r * 3 * H + H + j] = dpf;
        if (PEEP == kFull) s.Dif[r * 2 * H + j] = dpi, s.Dif[r * 2 * H + H + j] = dpf;
      }
    }
  }
}

template <typename T, int PEEP, bool FGR, int STAGE>
void bwd_pass(const BwdStep<T>& s) {
  at::parallel_for(0, s.M * s.B, 16, [&](int64_t r0, int64_t r1) { bwd_rows<T, PEEP, FGR, STAGE>(s, r0, r1); });
}

template <typename T, int PEEP, bool FGR>
std::vector<Tensor> backward_impl(const Tensor& dhs_in, const Tensor& dcs_in, const Tensor& whh, const Tensor* w_ci,
                                  const Tensor* w_cf, const Tensor* w_co, const Tensor* w_gr, const Tensor& S,
                                  const Tensor& gs, const Tensor& os, const Tensor& cs, const Tensor& tcs,
                                  const std::vector<Member>& mem, bool probe) {
  const int64_t T_ = gs.size(0), M = gs.size(1), B = gs.size(2), H = gs.size(3);
  Tensor dhs = dhs_in.contiguous(), dcs = dcs_in.contiguous();
  auto opts = gs.options();
  Tensor dpre = at::empty({T_, M, B, 4 * H}, opts);
  Tensor dprobe = probe ? at::empty({T_, M, B, H}, opts) : Tensor();
  Tensor Dh = at::zeros({M, B, H}, opts), dc = at::zeros({M, B, H}, opts);
  Tensor Da, Dgr, Qc, Qif, Dif, w_cif, wci, wcf, wco;
  Tensor whh_c = whh.contiguous();
  if (FGR) Da = at::zeros({M, B, 3 * H}, opts), Dgr = at::empty({M, B, 3 * H}, opts);
  if (PEEP == kFull) {
    Qc = at::empty({M, B, H}, opts), Qif = at::zeros({M, B, H}, opts), Dif = at::empty({M, B, 2 * H}, opts);
    w_cif = at::cat({*w_ci, *w_cf}, 1);  // (M, 2H, H)
  }
  if (PEEP == kDiagonal) wci = w_ci->contiguous(), wcf = w_cf->contiguous(), wco = w_co->contiguous();
  BwdStep<T> s{M, B, H, mem.data()};
  s.Dh = ptr<T>(Dh), s.Da = ptr<T>(Da), s.Qc = ptr<T>(Qc), s.Qif = ptr<T>(Qif);
  s.wci = ptr<T>(wci), s.wcf = ptr<T>(wcf), s.wco = ptr<T>(wco);
  s.dc = ptr<T>(dc), s.Dgr = ptr<T>(Dgr), s.Dif = ptr<T>(Dif);
  const int64_t n = M * B * H;
  for (int64_t t = T_ - 1; t >= 0; --t) {
    s.dhs = dhs.data_ptr<T>() + t * n, s.dcs = dcs.data_ptr<T>() + t * n;
    s.S = S.data_ptr<T>() + t * 3 * n, s.g = gs.data_ptr<T>() + t * n, s.o = os.data_ptr<T>() + t * n;
    s.tc = tcs.data_ptr<T>() + t * n, s.c_prev = cs.data_ptr<T>() + t * n;
    s.dpre = dpre.data_ptr<T>() + t * 4 * n, s.dprobe = probe ? dprobe.data_ptr<T>() + t * n : nullptr;
    Tensor d = dpre[t];
    if (PEEP == kFull) {
      bwd_pass<T, PEEP, FGR, 1>(s);
      at::bmm_out(Qc, d.narrow(2, 3 * H, H), *w_co);  // dc += dpo W_co
      bwd_pass<T, PEEP, FGR, 2>(s);
      if (t > 0) at::bmm_out(Qif, Dif, w_cif);  // dc += [dpi, dpf] [W_ci; W_cf]
    } else {
      bwd_pass<T, PEEP, FGR, 0>(s);
    }
    if (t > 0) {
      at::bmm_out(Dh, d, whh_c);  // (M, B, 4H) @ (M, 4H, H)
      if (FGR) at::bmm_out(Da, Dgr, *w_gr);  // (M, B, 3H) @ (M, 3H, 3H)
    }
  }
  return {dpre, probe ? dprobe : at::empty({0}, opts)};
}

template <typename F>
auto dispatch(const Tensor& like, int peep, bool fgr, F&& f) {
  TORCH_CHECK(like.device().is_cpu(), "the fused LSTM scan runs on CPU tensors, got ", like.device());
  auto go = [&](auto tag) {
    using T = decltype(tag);
    if (peep == kNone) return fgr ? f.template operator()<T, kNone, true>() : f.template operator()<T, kNone, false>();
    if (peep == kDiagonal)
      return fgr ? f.template operator()<T, kDiagonal, true>() : f.template operator()<T, kDiagonal, false>();
    return fgr ? f.template operator()<T, kFull, true>() : f.template operator()<T, kFull, false>();
  };
  if (like.scalar_type() == at::kFloat) return go(float());
  TORCH_CHECK(like.scalar_type() == at::kDouble, "the fused LSTM scan takes float32 or float64, got ",
              like.scalar_type());
  return go(double());
}

std::vector<Tensor> lstm_forward(const Tensor& xw, const Tensor& whh, const c10::optional<Tensor>& w_ci,
                                 const c10::optional<Tensor>& w_cf, const c10::optional<Tensor>& w_co,
                                 const c10::optional<Tensor>& w_gr, const Tensor& on,
                                 const c10::optional<Tensor>& niaf, const c10::optional<Tensor>& noaf,
                                 const c10::optional<Tensor>& cifg) {
  TORCH_CHECK(xw.dim() == 4 && xw.size(3) % 4 == 0, "lstm scan: xw must be (T, M, B, 4H), got ", xw.sizes());
  auto mem = members(on, niaf, noaf, cifg);
  int peep = peep_kind(w_ci);
  bool fgr = opt(w_gr) != nullptr;
  return dispatch(xw, peep, fgr, [&]<typename T, int P, bool F>() {
    return forward_impl<T, P, F>(xw, whh, opt(w_ci), opt(w_cf), opt(w_co), opt(w_gr), mem);
  });
}

std::vector<Tensor> lstm_backward(const Tensor& dhs, const Tensor& dcs, const Tensor& whh,
                                  const c10::optional<Tensor>& w_ci, const c10::optional<Tensor>& w_cf,
                                  const c10::optional<Tensor>& w_co, const c10::optional<Tensor>& w_gr,
                                  const Tensor& S, const Tensor& gs, const Tensor& os, const Tensor& cs,
                                  const Tensor& tcs, const Tensor& on, const c10::optional<Tensor>& niaf,
                                  const c10::optional<Tensor>& noaf, const c10::optional<Tensor>& cifg, bool probe) {
  auto mem = members(on, niaf, noaf, cifg);
  int peep = peep_kind(w_ci);
  bool fgr = opt(w_gr) != nullptr;
  return dispatch(gs, peep, fgr, [&]<typename T, int P, bool F>() {
    return backward_impl<T, P, F>(dhs, dcs, whh, opt(w_ci), opt(w_cf), opt(w_co), opt(w_gr), S, gs, os, cs, tcs,
                                  mem, probe);
  });
}

}  // namespace

TORCH_LIBRARY(ablation_fused, m) {
  m.def("lstm_forward(Tensor xw, Tensor whh, Tensor? w_ci, Tensor? w_cf, Tensor? w_co, Tensor? w_gr, Tensor on, "
        "Tensor? niaf, Tensor? noaf, Tensor? cifg) -> Tensor[]");
  m.def("lstm_backward(Tensor dhs, Tensor dcs, Tensor whh, Tensor? w_ci, Tensor? w_cf, Tensor? w_co, Tensor? w_gr, "
        "Tensor S, Tensor gs, Tensor os, Tensor cs, Tensor tcs, Tensor on, Tensor? niaf, Tensor? noaf, Tensor? cifg, "
        "bool probe) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(ablation_fused, CPU, m) {
  m.impl("lstm_forward", &lstm_forward);
  m.impl("lstm_backward", &lstm_backward);
}
