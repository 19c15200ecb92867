// The fused LSTM scan on CPU: the time loop of `cell._Scan` (forward, and the backward
// through time) with one batched matmul and one element-wise pass per step (one more of
// each for full peepholes, one more matmul for FGR), instead of ~20 ATen ops per step. Same
// equations, same saved tensors, same outputs as `_Scan` (see its docstring and cell.py's
// module doc, Graves 2013 eqs. 7-11; the variants of Greff et al. 2017, sec. 3). Beside it,
// the two other kernels of a CPU training step: the matmul of the layers around the scan
// (`bmm`: input projection, classifier, weight gradients) and AdaGrad's update
// (`adagrad_`); and, built on all of them, a whole training step as one call (`train_step`,
// train_step.h). ablation/kernels/cpp.py builds and loads them.
//
// Numerics, so that a record retrains bit for bit on any x86-64 machine:
// - the matmuls are our own (`mm` in lstm_kernels.h): every element summed in one fixed
//   order, whatever the CPU, its vector width and the shapes around it. MKL's kernels pick
//   their summation order by CPU (and pinning them to its COMPATIBLE branch costs 3.5x in
//   speed), so no MKL call is left in an LSTM training step on CPU;
// - the element-wise passes use only IEEE +, -, *, / , √ and bit operations (correctly
//   rounded whatever the vector width), compiled with -ffp-contract=off and without
//   -ffast-math: no FMA contraction, no reassociation, so the vectoriser cannot change a
//   result. Everything is compiled twice, for the baseline ISA and for AVX2 (chosen at run
//   time), with the same bits (tests/test_fused.py compares them);
// - exp, σ and tanh are written here from those operations (Cephes' range reduction and
//   polynomials, ~1-2 ulp), never libm's expf/tanhf, whose last bits differ between
//   glibc versions;
// - every reduction in the loop is a matmul per member; element-wise work is per element,
//   so a member's numbers do not depend on the other members of its pack.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/_log_softmax.h>
#include <ATen/ops/_log_softmax_backward_data.h>
#include <ATen/ops/add.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/clamp_max.h>
#include <ATen/ops/div.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/nll_loss_backward.h>
#include <ATen/ops/nll_loss_forward.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/reciprocal.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace {

using at::Tensor;

enum Peep { kNone = 0, kDiagonal = 1, kFull = 2 };

// Per-member switches: the gate masks (`on`, 0 = absent: σ is the constant 1) and the
// variant flags (`cell.ScanFlags`), read once per call, as all-ones or all-zero bit masks
// for `pick`: a bitwise select, exact for every value (inf and NaN too), which the compiler
// vectorises where it does not vectorise `flag ? a : b` on a loop-invariant bool.
struct Member {
  uint64_t on_i, on_f, on_o, niaf, noaf, cifg;
};

// t as a contiguous tensor of dtype: t itself, without an ATen call, when it already is one.
Tensor as(const Tensor& t, at::ScalarType dtype) {
  return t.scalar_type() == dtype && t.is_contiguous() ? t : t.to(dtype).contiguous();
}

std::vector<Member> members(const Tensor& on, const c10::optional<Tensor>& niaf, const c10::optional<Tensor>& noaf,
                            const c10::optional<Tensor>& cifg) {
  const int64_t M = on.size(0);
  TORCH_CHECK(on.dim() == 2 && on.size(1) == 3, "lstm scan: on must be (M, 3), got ", on.sizes());
  Tensor on_ = as(on, at::kDouble);
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
  auto all = [](bool b) { return b ? ~uint64_t(0) : uint64_t(0); };
  std::vector<Member> out(M);
  for (int64_t m = 0; m < M; ++m)
    out[m] = {all(o[3 * m] > 0), all(o[3 * m + 1] > 0), all(o[3 * m + 2] > 0), all(ni[m]), all(no[m]), all(ci[m])};
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

// The k of a matmul's sum as up to 4 ascending ranges [r[q][0], r[q][1]) (`mm`): all of 0..K-1, or the
// rows of the gates a member has (`gate_ranges`), where the terms left out are exact zeros.
struct KRanges {
  int64_t r[4][2];
  int n;
};

// Everything one step's element-wise pass reads and writes, as raw pointers into
// contiguous (…, M, B, ·) tensors, already offset to the step.
template <typename T>
struct FwdStep {
  int64_t M, B, H;
  const Member* mem;
  const T *xw, *R, *Q, *Qo;  // xw_t (M,B,4H), members xw_m apart; FGR (M,B,3H); full (M,B,2H), (M,B,H)
  int64_t xw_m;
  T* P;                      // h_{t-1} W_hhᵀ (M,B,4H), then the pre-activations
  const T *wci, *wcf, *wco;  // diagonal peepholes (M,H)
  const T* c_prev;                // (M,B,H), members hm apart (as c and h)
  T *c, *h, *S, *g, *o, *tc, *A;  // outputs; A = [i, f, o] for the next step's FGR matmul
  int64_t hm;                     // c_prev's, c's and h's members lie hm apart (B·H: time-major)
};

template <typename T>
struct BwdStep {
  int64_t M, B, H;
  const Member* mem;
  const T *dhs, *dcs, *Dh, *Da, *Qc, *Qif;  // dJ/dh_t, dJ/dc_t given; dh, da through step t+1; full-peephole matmuls
  const T *S, *g, *o, *tc, *c_prev;  // c_prev's members lie cm apart (B·H: time-major)
  int64_t cm;
  const T *wci, *wcf, *wco;
  T *dc, *dpre, *dprobe, *Dgr, *Dif;  // running dc (M,B,H); dpre_t (M,B,4H); [dpi, dpf, dpo] (FGR); [dpi, dpf] (full)
  int64_t dpre_m;                      // dpre_t's members lie dpre_m apart
  // diagonal peepholes, or null: the products dpi ⊙ c_{t-1}, dpf ⊙ c_{t-1}, dpo ⊙ c_t (M,B,H) members
  // prod_m apart, whose sums over (t, b) are the peepholes' gradients (`train_step`); c_t as c_prev
  T *pci, *pcf, *pco;
  const T* c;
  int64_t prod_m;
};

// The kernels, compiled twice (see lstm_kernels.h); AVX2 where the CPU has it. The two give
// identical results, so the choice is speed only; `set_avx2` lets the tests compare them.
namespace base {
#include "lstm_kernels.h"
}  // namespace base
#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2")
namespace avx2 {
#include "lstm_kernels.h"
}  // namespace avx2
#pragma GCC pop_options
const bool has_avx2 = __builtin_cpu_supports("avx2");
#else
namespace avx2 = base;
const bool has_avx2 = false;
#endif
bool use_avx2 = has_avx2;

// B (M, K, P) with contiguous rows, as `mm` reads it: B itself, or a copy of a transposed
// weight (the usual case, W ᵀ) made in 8x8 tiles, several times faster than ATen's strided copy.
template <typename T>
Tensor rows_contiguous(const Tensor& b) {
  const int64_t M = b.size(0), K = b.size(1), P = b.size(2);
  if (b.stride(2) == 1 && (b.stride(1) == P || K == 1)) return b;
  if (b.stride(1) != 1) return b.contiguous();
  Tensor out = at::empty({M, K, P}, b.options());
  const T* src = b.data_ptr<T>();
  T* dst = out.data_ptr<T>();
  const int64_t s0 = b.stride(0), s2 = b.stride(2);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t p0 = 0; p0 < P; p0 += 8)
      for (int64_t k0 = 0; k0 < K; k0 += 8) {
        const T* s = src + m * s0 + p0 * s2 + k0;
        T* d = dst + (m * K + k0) * P + p0;
        if constexpr (std::is_same_v<T, float>) {
          if (p0 + 8 <= P && k0 + 8 <= K) {  // a whole tile: shuffles
            use_avx2 ? avx2::transpose8(s, s2, d, P) : base::transpose8(s, s2, d, P);
            continue;
          }
        }
        for (int64_t p = 0; p < std::min<int64_t>(8, P - p0); ++p)
          for (int64_t k = 0; k < std::min<int64_t>(8, K - k0); ++k) d[k * P + p] = s[p * s2 + k];
      }
  return out;
}

// C (M, N, P) = bias + A B, one member after another: `mm` in lstm_kernels.h (fixed summation
// order). A (M, N, K) at strides sa (member, row, column), as raw pointers (the time loops take no
// tensor views); B (M, K, P) with contiguous rows, members sb0 apart; C contiguous; bias (M, P) or
// null; need (M, P) column flags and ks (M) ranges of k, or null (`mm`).
template <typename T>
void bmm_raw(int64_t M, int64_t N, int64_t K, int64_t P, const T* a, std::array<int64_t, 3> sa, const T* b,
             int64_t sb0, T* c, const T* bb = nullptr, const uint8_t* need = nullptr, const KRanges* ks = nullptr) {
  const int64_t sa0 = sa[0], sa_n = sa[1], sa_k = sa[2];
  at::parallel_for(0, M, 1, [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) {
      const T* bm = bb ? bb + m * P : nullptr;
      const uint8_t* nm = need ? need + m * P : nullptr;
      const KRanges* km = ks ? ks + m : nullptr;
      use_avx2 ? avx2::mm<T>(N, K, P, a + m * sa0, sa_n, sa_k, b + m * sb0, c + m * N * P, bm, nm, km)
               : base::mm<T>(N, K, P, a + m * sa0, sa_n, sa_k, b + m * sb0, c + m * N * P, bm, nm, km);
    }
  });
}

// `bmm_raw` on tensors: A (M, N, K) at any strides, B with contiguous rows, C contiguous.
template <typename T>
void bmm_into(const Tensor& C, const Tensor& A, const Tensor& B, const Tensor* bias = nullptr,
              const uint8_t* need = nullptr, const KRanges* ks = nullptr) {
  const int64_t M = A.size(0), N = A.size(1), K = A.size(2), P = B.size(2);
  TORCH_CHECK(B.size(0) == M && B.size(1) == K && B.stride(2) == 1 && (B.stride(1) == P || K == 1),
              "bmm: B must be (M, K, P) with contiguous rows, got ", B.sizes(), " strides ", B.strides());
  TORCH_CHECK(C.is_contiguous() && C.size(0) == M && C.size(1) == N && C.size(2) == P, "bmm: bad output");
  bmm_raw<T>(M, N, K, P, A.data_ptr<T>(), {A.stride(0), A.stride(1), A.stride(2)}, B.data_ptr<T>(), B.stride(0),
             C.data_ptr<T>(), bias ? bias->data_ptr<T>() : nullptr, need, ks);
}

// A member's gates in the order of the pre-activations' rows i, f, g, o (g is always there).
std::array<bool, 4> gates_of(const Member& mb) { return {mb.on_i != 0, mb.on_f != 0, true, mb.on_o != 0}; }

// The columns of the pre-activations (M, 4H) that a member's step reads: not those of an absent gate
// (the constant 1, `sigmoid_n`), so the matmuls that only feed them skip them.
std::vector<uint8_t> need_columns(const std::vector<Member>& mem, int64_t H) {
  std::vector<uint8_t> need(mem.size() * 4 * H);
  for (size_t m = 0; m < mem.size(); ++m) {
    const auto on = gates_of(mem[m]);
    for (int q = 0; q < 4; ++q) std::fill_n(need.begin() + (m * 4 + q) * H, H, on[q]);
  }
  return need;
}

// The rows of a 4H-long sum that a member's gates hold, as ranges of k. An absent gate's pre-activation
// gradients are exact zeros (its σ' is 0), and a sum of IEEE additions from +0 is never -0, so
// leaving its terms out gives the same bits, as long as they are finite (a diverged member's may not
// be; its absent gates' weights take no part in its computation either way).
std::vector<KRanges> gate_ranges(const std::vector<Member>& mem, int64_t H) {
  std::vector<KRanges> out(mem.size());
  for (size_t m = 0; m < mem.size(); ++m) {
    const auto on = gates_of(mem[m]);
    KRanges& k = out[m];
    k.n = 0;
    for (int q = 0; q < 4; ++q) {
      if (!on[q]) continue;
      if (k.n > 0 && k.r[k.n - 1][1] == q * H) {
        k.r[k.n - 1][1] = (q + 1) * H;  // adjacent to the last range: extend it
      } else {
        k.r[k.n][0] = q * H, k.r[k.n][1] = (q + 1) * H, ++k.n;
      }
    }
  }
  return out;
}

template <typename T, int PEEP, bool FGR, int STAGE>
void fwd_pass(const FwdStep<T>& s) {
  // Element-wise: any split of the rows gives the same numbers.
  at::parallel_for(0, s.M * s.B, 16, [&](int64_t r0, int64_t r1) {
    use_avx2 ? avx2::fwd_rows<T, PEEP, FGR, STAGE>(s, r0, r1) : base::fwd_rows<T, PEEP, FGR, STAGE>(s, r0, r1);
  });
}

// hs and cs (T+1, M, B, H) are stored time-major, or with `member_major` as (M, T+1, B, H) transposed, so
// that the weight gradients read each member's (T·B, H) without a copy (`train_step`).
template <typename T, int PEEP, bool FGR>
std::vector<Tensor> forward_impl(const Tensor& xw_in, const Tensor& whh, const Tensor* w_ci, const Tensor* w_cf,
                                 const Tensor* w_co, const Tensor* w_gr, const std::vector<Member>& mem,
                                 bool member_major = false) {
  const int64_t T_ = xw_in.size(0), M = xw_in.size(1), B = xw_in.size(2), G = xw_in.size(3), H = G / 4;
  // xw time-major or a transposed member-major (M, T, B, 4H) tensor, as the input projection leaves it
  Tensor xw = xw_in.stride(3) == 1 && xw_in.stride(2) == G ? xw_in : xw_in.contiguous();
  auto opts = xw.options();
  auto states = [&] {  // step t writes t + 1
    return member_major ? at::empty({M, T_ + 1, B, H}, opts).transpose(0, 1) : at::empty({T_ + 1, M, B, H}, opts);
  };
  Tensor hs = states(), cs = states();
  for (int64_t m = 0; m < M; ++m)  // h_0 = c_0 = 0
    for (const Tensor* s : {&hs, &cs}) std::fill_n(s->data_ptr<T>() + m * s->stride(1), B * H, T(0));
  Tensor S = at::empty({T_, M, B, 3 * H}, opts), gs = at::empty({T_, M, B, H}, opts);
  Tensor os = at::empty({T_, M, B, H}, opts), tcs = at::empty({T_, M, B, H}, opts);
  Tensor P = at::zeros({M, B, G}, opts);  // h_{t-1} W_hhᵀ; zero at t = 0 (h_0 = 0)
  Tensor whh_t = rows_contiguous<T>(whh.transpose(1, 2));  // (M, H, 4H)
  Tensor R, A, w_gr_t, Q, Qo, w_cif_t, w_co_t, wci, wcf, wco;
  if (FGR) {
    R = at::zeros({M, B, 3 * H}, opts), A = at::empty({M, B, 3 * H}, opts);
    w_gr_t = rows_contiguous<T>(w_gr->transpose(1, 2));  // (M, 3H, 3H): pre_{i,f,o} += [i, f, o]_{t-1} Rᵀ
  }
  if (PEEP == kFull) {
    Q = at::zeros({M, B, 2 * H}, opts), Qo = at::empty({M, B, H}, opts);
    w_cif_t = rows_contiguous<T>(at::cat({*w_ci, *w_cf}, 1).transpose(1, 2));  // (M, H, 2H)
    w_co_t = rows_contiguous<T>(w_co->transpose(1, 2));     // (M, H, H)
  }
  if (PEEP == kDiagonal) wci = w_ci->contiguous(), wcf = w_cf->contiguous(), wco = w_co->contiguous();
  FwdStep<T> s{M, B, H, mem.data()};
  s.P = ptr<T>(P), s.R = ptr<T>(R), s.Q = ptr<T>(Q), s.Qo = ptr<T>(Qo), s.A = ptr<T>(A);
  s.wci = ptr<T>(wci), s.wcf = ptr<T>(wcf), s.wco = ptr<T>(wco);
  const int64_t n = M * B * H, st = hs.stride(0);  // hs[t] is h_{t-1}: step t reads hs[t], writes hs[t + 1]
  s.hm = hs.stride(1);
  T *h0 = ptr<T>(hs), *c0 = ptr<T>(cs);
  const std::vector<uint8_t> need = need_columns(mem, H);
  for (int64_t t = 0; t < T_; ++t) {
    s.xw = xw.data_ptr<T>() + t * xw.stride(0), s.xw_m = xw.stride(1);
    s.c_prev = c0 + t * st, s.c = c0 + (t + 1) * st, s.h = h0 + (t + 1) * st;
    s.S = S.data_ptr<T>() + t * 3 * n, s.g = gs.data_ptr<T>() + t * n, s.o = os.data_ptr<T>() + t * n;
    s.tc = tcs.data_ptr<T>() + t * n;
    if (t > 0) {
      bmm_raw<T>(M, B, H, G, h0 + t * st, {s.hm, H, 1}, ptr<T>(whh_t), H * G, s.P, nullptr, need.data());
      if (FGR) bmm_into<T>(R, A, w_gr_t);
      if (PEEP == kFull) bmm_raw<T>(M, B, H, 2 * H, s.c_prev, {s.hm, H, 1}, ptr<T>(w_cif_t), 2 * H * H, ptr<T>(Q));
    }
    if (PEEP == kFull) {
      fwd_pass<T, PEEP, FGR, 1>(s);
      bmm_raw<T>(M, B, H, H, s.c, {s.hm, H, 1}, ptr<T>(w_co_t), H * H, ptr<T>(Qo));
      fwd_pass<T, PEEP, FGR, 2>(s);
    } else {
      fwd_pass<T, PEEP, FGR, 0>(s);
    }
  }
  return {hs, cs, S, gs, os, tcs};
}

template <typename T, int PEEP, bool FGR, int STAGE>
void bwd_pass(const BwdStep<T>& s) {
  at::parallel_for(0, s.M * s.B, 16, [&](int64_t r0, int64_t r1) {
    use_avx2 ? avx2::bwd_rows<T, PEEP, FGR, STAGE>(s, r0, r1) : base::bwd_rows<T, PEEP, FGR, STAGE>(s, r0, r1);
  });
}

// With `prods` (3, M, T, B, H), diagonal peepholes only: the products whose sums are the peepholes'
// gradients, written as the pass goes (BwdStep's pci, pcf, pco).
template <typename T, int PEEP, bool FGR>
std::vector<Tensor> backward_impl(const Tensor& dhs_in, const Tensor& dcs_in, const Tensor& whh, const Tensor* w_ci,
                                  const Tensor* w_cf, const Tensor* w_co, const Tensor* w_gr, const Tensor& S,
                                  const Tensor& gs, const Tensor& os, const Tensor& cs, const Tensor& tcs,
                                  const std::vector<Member>& mem, bool probe, const Tensor* prods = nullptr) {
  const int64_t T_ = gs.size(0), M = gs.size(1), B = gs.size(2), H = gs.size(3);
  Tensor dhs = dhs_in.contiguous(), dcs = dcs_in.contiguous();
  auto opts = gs.options();
  // dpre (T, M, B, 4H), stored member-major: the weight gradients read it as (M, T·B, 4H) without a copy
  Tensor dpre = at::empty({M, T_, B, 4 * H}, opts).transpose(0, 1);
  Tensor dprobe = probe ? at::empty({T_, M, B, H}, opts) : Tensor();
  Tensor Dh = at::zeros({M, B, H}, opts), dc = at::zeros({M, B, H}, opts);
  Tensor Da, Dgr, Qc, Qif, Dif, w_cif, w_co_c, w_gr_c, wci, wcf, wco;
  Tensor whh_c = whh.contiguous();
  if (FGR) Da = at::zeros({M, B, 3 * H}, opts), Dgr = at::empty({M, B, 3 * H}, opts), w_gr_c = w_gr->contiguous();
  if (PEEP == kFull) {
    Qc = at::empty({M, B, H}, opts), Qif = at::zeros({M, B, H}, opts), Dif = at::empty({M, B, 2 * H}, opts);
    w_cif = at::cat({*w_ci, *w_cf}, 1), w_co_c = w_co->contiguous();  // (M, 2H, H), (M, H, H)
  }
  if (PEEP == kDiagonal) wci = w_ci->contiguous(), wcf = w_cf->contiguous(), wco = w_co->contiguous();
  const std::vector<KRanges> ks = gate_ranges(mem, H);
  BwdStep<T> s{M, B, H, mem.data()};
  s.Dh = ptr<T>(Dh), s.Da = ptr<T>(Da), s.Qc = ptr<T>(Qc), s.Qif = ptr<T>(Qif);
  s.wci = ptr<T>(wci), s.wcf = ptr<T>(wcf), s.wco = ptr<T>(wco);
  s.dc = ptr<T>(dc), s.Dgr = ptr<T>(Dgr), s.Dif = ptr<T>(Dif);
  s.cm = cs.stride(1);
  const int64_t n = M * B * H;
  TORCH_CHECK(!prods || (PEEP == kDiagonal && prods->is_contiguous() && prods->numel() == 3 * T_ * n),
              "lstm scan: the peephole products are (3, M, T, B, H), for diagonal peepholes");
  T* pr = prods ? ptr<T>(*prods) : nullptr;
  s.prod_m = T_ * B * H;
  for (int64_t t = T_ - 1; t >= 0; --t) {
    s.dhs = dhs.data_ptr<T>() + t * n, s.dcs = dcs.data_ptr<T>() + (dcs.size(0) == 1 ? 0 : t * n);
    s.S = S.data_ptr<T>() + t * 3 * n, s.g = gs.data_ptr<T>() + t * n, s.o = os.data_ptr<T>() + t * n;
    s.tc = tcs.data_ptr<T>() + t * n, s.c_prev = cs.data_ptr<T>() + t * cs.stride(0), s.c = s.c_prev + cs.stride(0);
    s.pci = pr ? pr + t * B * H : nullptr, s.pcf = pr ? s.pci + T_ * n : nullptr, s.pco = pr ? s.pcf + T_ * n : nullptr;
    s.dpre = dpre.data_ptr<T>() + t * dpre.stride(0), s.dpre_m = dpre.stride(1);
    s.dprobe = probe ? dprobe.data_ptr<T>() + t * n : nullptr;
    const std::array<int64_t, 3> sd{s.dpre_m, 4 * H, 1};  // dpre_t (M, B, 4H)
    if (PEEP == kFull) {
      bwd_pass<T, PEEP, FGR, 1>(s);
      bmm_raw<T>(M, B, H, H, s.dpre + 3 * H, sd, ptr<T>(w_co_c), H * H, ptr<T>(Qc));  // dc += dpo W_co
      bwd_pass<T, PEEP, FGR, 2>(s);
      if (t > 0) bmm_into<T>(Qif, Dif, w_cif);  // dc += [dpi, dpf] [W_ci; W_cf]
    } else {
      bwd_pass<T, PEEP, FGR, 0>(s);
    }
    if (t > 0) {
      // (M, B, 4H) @ (M, 4H, H), in the present gates' rows
      bmm_raw<T>(M, B, 4 * H, H, s.dpre, sd, ptr<T>(whh_c), 4 * H * H, ptr<T>(Dh), nullptr, nullptr, ks.data());
      if (FGR) bmm_into<T>(Da, Dgr, w_gr_c);  // (M, B, 3H) @ (M, 3H, 3H)
    }
  }
  return {dpre, probe ? dprobe : at::empty({0}, opts)};
}

// f(float()) or f(double()) by the dtype of `like`; `what` names the op in the error.
template <typename F>
auto by_dtype(const Tensor& like, const char* what, F&& f) {
  if (like.scalar_type() == at::kFloat) return f(float());
  TORCH_CHECK(like.scalar_type() == at::kDouble, what, " takes float32 or float64, got ", like.scalar_type());
  return f(double());
}

// f.template operator()<T, peephole kind, fgr>(), the scan's compile-time cases.
template <typename F>
auto dispatch(const Tensor& like, int peep, bool fgr, F&& f) {
  TORCH_CHECK(like.device().is_cpu(), "the fused LSTM scan runs on CPU tensors, got ", like.device());
  return by_dtype(like, "the fused LSTM scan", [&](auto tag) {
    using T = decltype(tag);
    if (peep == kNone) return fgr ? f.template operator()<T, kNone, true>() : f.template operator()<T, kNone, false>();
    if (peep == kDiagonal)
      return fgr ? f.template operator()<T, kDiagonal, true>() : f.template operator()<T, kDiagonal, false>();
    return fgr ? f.template operator()<T, kFull, true>() : f.template operator()<T, kFull, false>();
  });
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

// bias + a b for (M, N, K) @ (M, K, P) (+ (M, P)), in the fixed order of `mm`: the matmuls
// around the scan (input projection, classifier, weight gradients; fused.bmm).
Tensor bmm(const Tensor& a, const Tensor& b, const c10::optional<Tensor>& bias) {
  TORCH_CHECK(a.dim() == 3 && b.dim() == 3 && a.size(0) == b.size(0) && a.size(2) == b.size(1),
              "bmm: shapes ", a.sizes(), " and ", b.sizes(), " do not multiply");
  TORCH_CHECK(a.device().is_cpu() && b.scalar_type() == a.scalar_type(), "bmm: CPU tensors of one dtype");
  const int64_t P = b.size(2);
  Tensor biasc;
  if (bias.has_value() && bias->defined()) {
    biasc = bias->contiguous();
    TORCH_CHECK(biasc.numel() == a.size(0) * P && biasc.scalar_type() == a.scalar_type(), "bmm: bias must be (M, P)");
  }
  Tensor c = at::empty({a.size(0), a.size(1), P}, a.options());
  by_dtype(a, "bmm", [&](auto tag) {
    using T = decltype(tag);
    bmm_into<T>(c, a, rows_contiguous<T>(b), biasc.defined() ? &biasc : nullptr);
  });
  return c;
}

// One AdaGrad step in place on a stacked parameter p (M, ...) with gradient g and state G
// (`adagrad_n`), member m at learning rate -neg_lr[m]. With `rows` (U,), p and G are
// embedding tables (M, V, E) and g (M, U, E) holds the gradient of those rows only. With
// `gates` (M ranges, `gate_ranges`), p is a gate-row parameter (M, 4H, ...) updated only in
// the rows of each member's gates: an absent gate's rows have exact zero gradients, which
// would leave p and G as they are (`train_step`).
void adagrad_impl(const Tensor& p, const Tensor& g_in, const Tensor& G, const Tensor& neg_lr, double eps,
                  const c10::optional<Tensor>& rows, const std::vector<KRanges>* gates = nullptr) {
  TORCH_CHECK(p.is_contiguous() && G.is_contiguous() && G.sizes() == p.sizes() && p.device().is_cpu(),
              "adagrad_: parameter and state must be contiguous CPU tensors of one shape");
  Tensor g = g_in.contiguous(), lr = as(neg_lr, p.scalar_type());
  const int64_t M = p.size(0);
  TORCH_CHECK(lr.numel() == M, "adagrad_: one learning rate per member");
  by_dtype(p, "adagrad_", [&](auto tag) {
    using T = decltype(tag);
    T *pp = p.data_ptr<T>(), *GG = G.data_ptr<T>();
    const T *gg = g.data_ptr<T>(), *l = lr.data_ptr<T>();
    const T e = static_cast<T>(eps);
    auto step = [&](int64_t n, T* a, const T* b, T* c, T lr_m) {
      use_avx2 ? avx2::adagrad_n<T>(n, a, b, c, lr_m, e) : base::adagrad_n<T>(n, a, b, c, lr_m, e);
    };
    if (!rows.has_value() || !rows->defined()) {
      TORCH_CHECK(g.sizes() == p.sizes(), "adagrad_: gradient ", g.sizes(), " for parameter ", p.sizes());
      const int64_t n = p.numel() / M;
      if (!gates) {
        for (int64_t m = 0; m < M; ++m) step(n, pp + m * n, gg + m * n, GG + m * n, l[m]);
        return;
      }
      const int64_t per = n / p.size(1);  // elements a row
      for (int64_t m = 0; m < M; ++m)
        for (int q = 0; q < (*gates)[m].n; ++q) {
          const int64_t off = m * n + (*gates)[m].r[q][0] * per;
          step(((*gates)[m].r[q][1] - (*gates)[m].r[q][0]) * per, pp + off, gg + off, GG + off, l[m]);
        }
      return;
    }
    Tensor r = as(*rows, at::kLong);
    const int64_t U = r.numel(), V = p.size(1), E = p.numel() / (M * V);
    TORCH_CHECK(g.numel() == M * U * E, "adagrad_: row gradient ", g.sizes(), " for ", U, " rows");
    const int64_t* ri = r.data_ptr<int64_t>();
    for (int64_t m = 0; m < M; ++m)
      for (int64_t u = 0; u < U; ++u) {
        TORCH_CHECK(ri[u] >= 0 && ri[u] < V, "adagrad_: row ", ri[u], " out of range");
        const int64_t off = (m * V + ri[u]) * E;
        step(E, pp + off, gg + (m * U + u) * E, GG + off, l[m]);
      }
  });
}

void adagrad_(const Tensor& p, const Tensor& g, const Tensor& G, const Tensor& neg_lr, double eps,
              const c10::optional<Tensor>& rows) {
  adagrad_impl(p, g, G, neg_lr, eps, rows);
}

#include "train_step.h"  // the whole training step as one call, built on the kernels above

// Run the AVX2 kernels (true) or the baseline ones; returns whether AVX2 was in use.
bool set_avx2(bool on) {
  TORCH_CHECK(!on || has_avx2, "set_avx2: this CPU has no AVX2");
  bool was = use_avx2;
  use_avx2 = on;
  return was;
}

}  // namespace

TORCH_LIBRARY(ablation_fused, m) {
  m.def("set_avx2(bool on) -> bool", &set_avx2);
  m.def("bmm(Tensor a, Tensor b, Tensor? bias) -> Tensor");
  m.def("adagrad_(Tensor(a!) p, Tensor g, Tensor(b!) G, Tensor neg_lr, float eps, Tensor? rows) -> ()");
  m.def("lstm_forward(Tensor xw, Tensor whh, Tensor? w_ci, Tensor? w_cf, Tensor? w_co, Tensor? w_gr, Tensor on, "
        "Tensor? niaf, Tensor? noaf, Tensor? cifg) -> Tensor[]");
  m.def("lstm_backward(Tensor dhs, Tensor dcs, Tensor whh, Tensor? w_ci, Tensor? w_cf, Tensor? w_co, Tensor? w_gr, "
        "Tensor S, Tensor gs, Tensor os, Tensor cs, Tensor tcs, Tensor on, Tensor? niaf, Tensor? noaf, Tensor? cifg, "
        "bool probe) -> Tensor[]");
  m.def("train_step(Tensor(a!) table, Tensor(b!)[] dense, Tensor(c!)[] state, Tensor(d!) table_state, Tensor ids, "
        "Tensor lengths, Tensor labels, Tensor on, Tensor? niaf, Tensor? noaf, Tensor? cifg, Tensor? fgr, "
        "Tensor neg_lr, float eps, float clip, bool train_table) -> Tensor");
  m.def("classify(Tensor table, Tensor[] dense, Tensor ids, Tensor lengths, Tensor on, Tensor? niaf, Tensor? noaf, "
        "Tensor? cifg) -> Tensor");
}

TORCH_LIBRARY_IMPL(ablation_fused, CPU, m) {
  m.impl("bmm", &bmm);
  m.impl("adagrad_", &adagrad_);
  m.impl("lstm_forward", &lstm_forward);
  m.impl("lstm_backward", &lstm_backward);
  m.impl("train_step", &train_step);
  m.impl("classify", &classify);
}
