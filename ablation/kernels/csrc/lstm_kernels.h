// The element-wise kernels of lstm_scan.cpp, included there twice: once compiled for
// AVX2 and once for the baseline ISA (SSE2 on x86-64), inside namespaces `avx2` and
// `base`; no include guard on purpose. Both compute the same IEEE operations in the same
// order (no FMA: -ffp-contract=off), so they give the same bits: tests/test_fused.py checks it.
// Types (Member, FwdStep, BwdStep, Peep) are lstm_scan.cpp's.

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

template <typename T>
using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;

template <typename T>
inline T pick(uint64_t mask, T a, T b) {  // mask all ones: a, zero: b
  Bits<T> m = static_cast<Bits<T>>(mask), ua, ub;
  std::memcpy(&ua, &a, sizeof(T));
  std::memcpy(&ub, &b, sizeof(T));
  ua = (ua & m) | (ub & ~m);
  T r;
  std::memcpy(&r, &ua, sizeof(T));
  return r;
}

// The forward of one row (member m, batch row b) of step t as a few short loops over
// contiguous H-vectors (short loop bodies vectorise without register spills): Graves eqs.
// 7-9 in `fwd_gates`, eqs. 10-11 in `fwd_out` (called by it, or after the matmul c_t W_coᵀ
// when the output peephole is full). A gate a member lacks is filled with the constant 1
// rather than computed. P (the row of h_{t-1} W_hhᵀ) is overwritten by the pre-activations.

// z = xw + P (+ R: FGR) (+ c ⊙ w: diagonal peephole) (+ Q: full peephole), in place in P.
template <typename T, int PEEP, bool FGR>
inline void pre_(int64_t H, const T* __restrict xw, T* __restrict P, const T* __restrict R, const T* __restrict Q,
                 const T* __restrict c, const T* __restrict w) {
  for (int64_t j = 0; j < H; ++j) {
    T z = xw[j] + P[j];
    if (FGR) z = z + R[j];
    if (PEEP == kDiagonal) z = z + c[j] * w[j];
    if (PEEP == kFull) z = z + Q[j];
    P[j] = z;
  }
}

// σ and tanh over a row in whole vectors: the bulk of H as one loop, then the last H % L elements as
// one more whole vector over [H - L, H) (L lanes), recomputing some, since a scalar remainder of their
// polynomials is as slow as all the vectors before it. Both are pure (each output from its input
// alone, never in place), so an element computed twice gets the same bits twice. Fn::of is the
// function (a static member, not a lambda, so that the loops keep their __restrict and vectorise).
struct Sigmoid {
  template <typename T>
  static T of(T x) { return sigmoid_(x); }
};
struct Tanh {
  template <typename T>
  static T of(T x) { return tanh_(x); }
};
struct SigmoidOfTwice {  // σ(2x), for tanh(x) = 2σ(2x) - 1
  template <typename T>
  static T of(T x) { return sigmoid_(x + x); }
};

template <typename Fn, typename T>
inline void map_n(int64_t H, const T* __restrict x, T* __restrict y) {
  constexpr int64_t L = 32 / sizeof(T);
  const int64_t Hv = H < L ? H : H - H % L;
  for (int64_t j = 0; j < Hv; ++j) y[j] = Fn::of(x[j]);
  if (Hv == H) return;
  const T* __restrict xt = x + H - L;
  T* __restrict yt = y + H - L;
#pragma GCC unroll 1
  for (int64_t l = 0; l < L; ++l) yt[l] = Fn::of(xt[l]);
}

template <typename T>
inline void sigmoid_n(int64_t H, bool on, const T* __restrict z, T* __restrict y) {
  if (!on) {
    for (int64_t j = 0; j < H; ++j) y[j] = T(1);  // an absent gate: σ(+inf) = 1 in `_Scan`
    return;
  }
  map_n<Sigmoid>(H, z, y);
}

template <typename T, bool FGR>
inline void fwd_out(int64_t H, const Member& mb, T* __restrict po, const T* __restrict c, T* __restrict A,
                    T* __restrict o, T* __restrict tc, T* __restrict h) {
  sigmoid_n(H, mb.on_o, po, o);
  if (mb.noaf) {
    for (int64_t j = 0; j < H; ++j) tc[j] = c[j];  // NOAF: h_t = o_t ⊙ c_t
  } else {
    map_n<Tanh>(H, c, tc);
  }
  for (int64_t j = 0; j < H; ++j) h[j] = o[j] * tc[j];  // eq. 11
  if (FGR)
    for (int64_t j = 0; j < H; ++j) A[2 * H + j] = o[j];
}

template <typename T, int PEEP, bool FGR>
inline void fwd_gates(int64_t H, const Member& mb, const T* __restrict xw, T* __restrict P, const T* __restrict R,
                      const T* __restrict Q, const T* __restrict wci, const T* __restrict wcf,
                      const T* __restrict wco, const T* __restrict cp, T* __restrict c, T* __restrict S,
                      T* __restrict g, T* __restrict A, T* __restrict o, T* __restrict tc, T* __restrict h) {
  // an absent gate's pre-activation is never read (σ is the constant 1): it is not computed
  if (mb.on_i) pre_<T, PEEP, FGR>(H, xw, P, R, Q, cp, wci);  // eq. 7
  if (mb.on_f)  // eq. 8
    pre_<T, PEEP, FGR>(H, xw + H, P + H, FGR ? R + H : nullptr, PEEP == kFull ? Q + H : nullptr, cp, wcf);
  sigmoid_n(H, mb.on_i, P, S);
  if (mb.cifg) {
    for (int64_t j = 0; j < H; ++j) S[H + j] = T(1) - S[j];  // CIFG: f_t = 1 - i_t
  } else {
    sigmoid_n(H, mb.on_f, P + H, S + H);
  }
  const T* xg = xw + 2 * H;
  T *Pg = P + 2 * H, *Sg = S + 2 * H;
  for (int64_t j = 0; j < H; ++j) Pg[j] = xg[j] + Pg[j];
  if (mb.niaf) {  // NIAF: g_t is the pre-activation (S keeps σ of it, as `_Scan`)
    for (int64_t j = 0; j < H; ++j) g[j] = Pg[j];
    map_n<Sigmoid>(H, Pg, Sg);
  } else {  // tanh(x) = 2σ(2x) - 1, as `_Scan`
    map_n<SigmoidOfTwice>(H, Pg, Sg);
    for (int64_t j = 0; j < H; ++j) g[j] = (Sg[j] + Sg[j]) - T(1);
  }
  for (int64_t j = 0; j < H; ++j) c[j] = S[H + j] * cp[j] + S[j] * g[j];  // eq. 9
  if (FGR)
    for (int64_t j = 0; j < 2 * H; ++j) A[j] = S[j];
  if (PEEP != kFull) {
    // eq. 10 peeks at c_t
    if (mb.on_o) pre_<T, PEEP, FGR>(H, xw + 3 * H, P + 3 * H, FGR ? R + 2 * H : nullptr, nullptr, c, wco);
    fwd_out<T, FGR>(H, mb, P + 3 * H, c, A, o, tc, h);
  }
}

// The forward of step t for rows [r0, r1) of its M·B rows; STAGE 0 is the whole step, 1 and
// 2 its halves before and after the full output peephole's matmul.
template <typename T, int PEEP, bool FGR, int STAGE>
void fwd_rows(const FwdStep<T>& s, int64_t r0, int64_t r1) {
  const int64_t H = s.H, G = 4 * H;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t m = r / s.B, b = r - m * s.B, hr = m * s.hm + b * H;  // row r = m·B + b; hr: of c_prev, c, h
    const T* xw = s.xw + m * s.xw_m + b * G;                               // row r of xw_t
    const T* R = FGR ? s.R + r * 3 * H : nullptr;
    T* A = FGR ? s.A + r * 3 * H : nullptr;
    if (STAGE != 2) {
      const bool diag = PEEP == kDiagonal;
      fwd_gates<T, PEEP, FGR>(H, s.mem[m], xw, s.P + r * G, R, PEEP == kFull ? s.Q + r * 2 * H : nullptr,
                              diag ? s.wci + m * H : nullptr, diag ? s.wcf + m * H : nullptr,
                              diag ? s.wco + m * H : nullptr, s.c_prev + hr, s.c + hr, s.S + r * 3 * H,
                              s.g + r * H, A, s.o + r * H, s.tc + r * H, s.h + hr);
    }
    if (PEEP == kFull && STAGE != 1) {
      T* po = s.P + r * G + 3 * H;
      if (s.mem[m].on_o)
        pre_<T, kFull, FGR>(H, xw + 3 * H, po, FGR ? R + 2 * H : nullptr, s.Qo + r * H, nullptr, nullptr);
      fwd_out<T, FGR>(H, s.mem[m], po, s.c + hr, A, s.o + r * H, s.tc + r * H, s.h + hr);
    }
  }
}

// The backward of one row of step t (the loop body of `_Scan.backward`, its per-step
// factors computed on the fly), in two halves: `bwd_out` to dpo and the running dc,
// `bwd_gates` from dc to dpi, dpf, dpg and dc·f; full peepholes put the matmul dpo W_co
// between them.
template <typename T, int PEEP, bool FGR>
inline void bwd_out(int64_t H, Member mb, const T* __restrict Dh, const T* __restrict dhs, const T* __restrict dcs,
                    const T* __restrict Qif, const T* __restrict Da, const T* __restrict wco,
                    const T* __restrict o, const T* __restrict tc, T* __restrict dc, T* __restrict d,
                    T* __restrict Dgr, T* __restrict dprobe) {
  for (int64_t j = 0; j < H; ++j) {
    T dh = Dh[j] + dhs[j];
    if (dprobe) dprobe[j] = dh;
    T oo = o[j], t = tc[j];
    T kc = pick<T>(mb.noaf, oo, oo * (T(1) - t * t));  // dc_t += dh_t ⊙ o ⊙ tanh'(c_t)
    T dcv = dc[j];
    if (PEEP == kFull) dcv = dcv + Qif[j];  // the step after's dc·f + [dpi, dpf] [W_ci; W_cf]
    dcv = dcv + dcs[j] + dh * kc;
    T dpo = dh * (t * oo * (T(1) - oo));
    if (FGR) dpo = dpo + Da[2 * H + j] * (oo * (T(1) - oo));
    if (PEEP == kDiagonal) dcv = dcv + dpo * wco[j];
    d[3 * H + j] = dpo;
    dc[j] = dcv;
    if (FGR) Dgr[2 * H + j] = dpo;
  }
}

template <typename T, int PEEP, bool FGR>
inline void bwd_gates(int64_t H, Member mb, const T* __restrict Qc, const T* __restrict Da, const T* __restrict wci,
                      const T* __restrict wcf, const T* __restrict S, const T* __restrict g,
                      const T* __restrict cp, T* __restrict dc, T* __restrict d, T* __restrict Dgr,
                      T* __restrict Dif) {
  for (int64_t j = 0; j < H; ++j) {
    T dcv = dc[j];
    if (PEEP == kFull) dcv = dcv + Qc[j];  // + dpo W_co
    T i = S[j], f = S[H + j], sg = S[2 * H + j], gg = g[j], c0 = cp[j];
    T ki = pick<T>(mb.cifg, (gg - c0) * i * (T(1) - i), gg * i * (T(1) - i));  // CIFG: f = 1 - i
    T kf = pick<T>(mb.cifg, T(0), c0 * f * (T(1) - f));
    T kg = pick<T>(mb.niaf, i, i * sg * (T(1) - sg) * T(4));  // i·tanh'(x) = i·4σ(2x)(1 - σ(2x))
    T dpi = dcv * ki, dpf = dcv * kf, dpg = dcv * kg;
    if (FGR) {
      dpi = dpi + Da[j] * (i * (T(1) - i));
      dpf = dpf + Da[H + j] * pick<T>(mb.cifg, T(0), f * (T(1) - f));
    }
    dcv = dcv * f;  // ∂c_t/∂c_{t-1} through eq. 9
    if (PEEP == kDiagonal) dcv = dcv + (dpi * wci[j] + dpf * wcf[j]);
    dc[j] = dcv;
    d[j] = dpi, d[H + j] = dpf, d[2 * H + j] = dpg;
    if (FGR) Dgr[j] = dpi, Dgr[H + j] = dpf;
    if (PEEP == kFull) Dif[j] = dpi, Dif[H + j] = dpf;
  }
}

template <typename T, int PEEP, bool FGR, int STAGE>
void bwd_rows(const BwdStep<T>& s, int64_t r0, int64_t r1) {
  const int64_t H = s.H;
  const bool diag = PEEP == kDiagonal, full = PEEP == kFull;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t m = r / s.B, b = r - m * s.B, cr = m * s.cm + b * H;  // row r = m·B + b; cr: of c_prev, c
    T* d = s.dpre + m * s.dpre_m + b * 4 * H;                              // row r of dpre_t
    const T* Da = FGR ? s.Da + r * 3 * H : nullptr;
    T* Dgr = FGR ? s.Dgr + r * 3 * H : nullptr;
    if (STAGE != 2)
      bwd_out<T, PEEP, FGR>(H, s.mem[m], s.Dh + r * H, s.dhs + r * H, s.dcs + r * H, full ? s.Qif + r * H : nullptr,
                            Da, diag ? s.wco + m * H : nullptr, s.o + r * H, s.tc + r * H, s.dc + r * H, d, Dgr,
                            s.dprobe ? s.dprobe + r * H : nullptr);
    if (STAGE != 1)
      bwd_gates<T, PEEP, FGR>(H, s.mem[m], full ? s.Qc + r * H : nullptr, Da, diag ? s.wci + m * H : nullptr,
                              diag ? s.wcf + m * H : nullptr, s.S + r * 3 * H, s.g + r * H, s.c_prev + cr,
                              s.dc + r * H, d, Dgr, full ? s.Dif + r * 2 * H : nullptr);
    if (diag && s.pci) {  // the peepholes' gradient terms, from dpre_t as just written
      const int64_t pr = m * s.prod_m + b * H;
      const T *__restrict dr = d, *__restrict cp = s.c_prev + cr, *__restrict c = s.c + cr;
      T *__restrict pi = s.pci + pr, *__restrict pf = s.pcf + pr, *__restrict po = s.pco + pr;
      for (int64_t j = 0; j < H; ++j) pi[j] = dr[j] * cp[j], pf[j] = dr[H + j] * cp[j], po[j] = dr[3 * H + j] * c[j];
    }
  }
}

// The matmul of the scan and of the layers around it, C = bias + A B for one member:
// A (N, K) at any strides, B (K, P) with contiguous rows, C (N, P) contiguous, bias (P) or
// null. Every element is summed in one fixed order, bias (or 0) first, then k = 0, 1, ...,
// K-1, one IEEE multiply and one add per term (no FMA). The blocking (R rows by a strip of
// one or two 32-byte vectors, held in registers while k runs) and the ISA (GCC vector types: one
// AVX2 instruction or two SSE2 ones) change which elements are computed together, never the
// order of any element's additions, so C does not depend on the CPU or the shapes around
// it. MKL promises neither (its kernels and summation order follow the CPU: numerics.py).
// (an attribute on a dependent alias template is dropped by GCC, hence one typedef per type)
template <typename T>
struct VecOf;
template <>
struct VecOf<float> {
  typedef float type __attribute__((vector_size(32)));
};
template <>
struct VecOf<double> {
  typedef double type __attribute__((vector_size(32)));
};
template <typename T>
using Vec = typename VecOf<T>::type;

// R rows by NV vectors of columns, held in registers while k runs over `ks`; B's rows sb apart.
// PART: only the first w columns of the last vector are stored.
template <typename T, int R, int NV, bool PART>
inline void mm_strip(const KRanges& ks, const T* __restrict A, int64_t sa_n, int64_t sa_k, const T* __restrict B,
                     int64_t sb, T* __restrict C, int64_t sc, const T* __restrict bias, int w) {
  using V = Vec<T>;
  constexpr int L = sizeof(V) / sizeof(T);
  V acc[R][NV], b[NV];
  for (int i = 0; i < NV; ++i) {
    b[i] = V{};
    if (bias) std::memcpy(&b[i], bias + i * L, sizeof(V));
  }
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < NV; ++i) acc[r][i] = b[i];
  for (int q = 0; q < ks.n; ++q)
    for (int64_t k = ks.r[q][0]; k < ks.r[q][1]; ++k) {
      for (int i = 0; i < NV; ++i) std::memcpy(&b[i], B + k * sb + i * L, sizeof(V));
      for (int r = 0; r < R; ++r) {
        const T a = A[r * sa_n + k * sa_k];
        for (int i = 0; i < NV; ++i) acc[r][i] += b[i] * a;
      }
    }
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < NV; ++i)
      std::memcpy(C + r * sc + i * L, &acc[r][i], (PART && i == NV - 1 ? w : L) * sizeof(T));
}

// Columns [p, p + NV·L) of all N rows (the last vector w wide with PART), B's rows sb apart from b:
// blocks of 6 rows, then the rest as one block.
template <typename T, int NV, bool PART>
void mm_cols(int64_t N, const KRanges& ks, const T* A, int64_t sa_n, int64_t sa_k, const T* b, int64_t sb, T* C,
             int64_t P, const T* bb, int64_t p, int w) {
  constexpr int R = 6;  // 6 rows by 2 vectors: 12 accumulators, 2 of B, 1 of A (of the 16 vector registers)
  int64_t n = 0;
  for (; n + R <= N; n += R) mm_strip<T, R, NV, PART>(ks, A + n * sa_n, sa_n, sa_k, b, sb, C + n * P + p, P, bb, w);
  const T* a = A + n * sa_n;
  T* c = C + n * P + p;
  switch (N - n) {
    case 5: return mm_strip<T, 5, NV, PART>(ks, a, sa_n, sa_k, b, sb, c, P, bb, w);
    case 4: return mm_strip<T, 4, NV, PART>(ks, a, sa_n, sa_k, b, sb, c, P, bb, w);
    case 3: return mm_strip<T, 3, NV, PART>(ks, a, sa_n, sa_k, b, sb, c, P, bb, w);
    case 2: return mm_strip<T, 2, NV, PART>(ks, a, sa_n, sa_k, b, sb, c, P, bb, w);
    case 1: return mm_strip<T, 1, NV, PART>(ks, a, sa_n, sa_k, b, sb, c, P, bb, w);
  }
}

// Strips of two vectors, then one, then the last P % L columns: B's and the bias's padded with zeros
// to a whole vector, whose extra lanes are computed and dropped; the w columns get exactly the
// additions of a whole vector. `need` (P flags, or null: all): the columns
// the caller reads; a strip none of whose columns it reads is skipped and left as it was (an absent
// gate's pre-activations, `need_columns`).
template <typename T>
void mm(int64_t N, int64_t K, int64_t P, const T* A, int64_t sa_n, int64_t sa_k, const T* B, T* C, const T* bias,
        const uint8_t* need = nullptr, const KRanges* ks = nullptr) {
  constexpr int L = 32 / sizeof(T), W = 2 * L;
  const KRanges all{{{0, K}}, 1};
  const KRanges& kr = ks ? *ks : all;
  auto wanted = [&](int64_t p, int64_t w) {
    if (!need) return true;
    for (int64_t j = p; j < p + w; ++j)
      if (need[j]) return true;
    return false;
  };
  int64_t p = 0;
  for (; p + W <= P; p += W)
    if (wanted(p, W)) mm_cols<T, 2, false>(N, kr, A, sa_n, sa_k, B + p, P, C, P, bias ? bias + p : nullptr, p, L);
  if (P - p >= L) {
    if (wanted(p, L)) mm_cols<T, 1, false>(N, kr, A, sa_n, sa_k, B + p, P, C, P, bias ? bias + p : nullptr, p, L);
    p += L;
  }
  const int64_t w = P - p;
  if (w == 0 || !wanted(p, w)) return;
  constexpr int64_t kStack = 4096 / sizeof(T);  // up to K = 511 (float) on the stack, else the heap
  T on_stack[kStack];
  std::vector<T> on_heap((K + 1) * L > kStack ? (K + 1) * L : 0);
  T* pad = on_heap.empty() ? on_stack : on_heap.data();  // K rows of B (those the sum reads), then the bias
  // lane by lane, not memcpy and fill: this runs once per member and call (every time step, for dh)
  for (int q = 0; q < kr.n; ++q)
    for (int64_t k = kr.r[q][0]; k < kr.r[q][1]; ++k)
      for (int j = 0; j < L; ++j) pad[k * L + j] = j < w ? B[k * P + p + j] : T(0);
  if (bias)
    for (int j = 0; j < L; ++j) pad[K * L + j] = j < w ? bias[p + j] : T(0);
  mm_cols<T, 1, true>(N, kr, A, sa_n, sa_k, pad, L, C, P, bias ? pad + K * L : nullptr, p, static_cast<int>(w));
}

// The transpose of an 8x8 float tile: dst row k = src column k (rows ss and ds apart), in three rounds
// of shuffles (pairs of rows, then of pairs, then of halves); `rows_contiguous`'s inner step.
inline void transpose8(const float* __restrict src, int64_t ss, float* __restrict dst, int64_t ds) {
  using V = Vec<float>;
  typedef int32_t I __attribute__((vector_size(32)));
  V r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) std::memcpy(&r[i], src + i * ss, sizeof(V));
  for (int i = 0; i < 8; i += 2) {
    t[i] = __builtin_shuffle(r[i], r[i + 1], I{0, 8, 1, 9, 4, 12, 5, 13});
    t[i + 1] = __builtin_shuffle(r[i], r[i + 1], I{2, 10, 3, 11, 6, 14, 7, 15});
  }
  for (int i = 0; i < 8; i += 4)
    for (int j = 0; j < 2; ++j) {
      u[i + 2 * j] = __builtin_shuffle(t[i + j], t[i + j + 2], I{0, 1, 8, 9, 4, 5, 12, 13});
      u[i + 2 * j + 1] = __builtin_shuffle(t[i + j], t[i + j + 2], I{2, 3, 10, 11, 6, 7, 14, 15});
    }
  for (int i = 0; i < 4; ++i) {
    const V lo = __builtin_shuffle(u[i], u[i + 4], I{0, 1, 2, 3, 8, 9, 10, 11});
    const V hi = __builtin_shuffle(u[i], u[i + 4], I{4, 5, 6, 7, 12, 13, 14, 15});
    std::memcpy(dst + i * ds, &lo, sizeof(V));
    std::memcpy(dst + (i + 4) * ds, &hi, sizeof(V));
  }
}

// AdaGrad (Duchi et al. 2011) on n elements of one member: G += g²; p += (-lr·g) / (√G + eps),
// in torch.optim.Adagrad's order of operations, with IEEE operations only (√ is correctly
// rounded), so any vector width gives the same bits. `PackAdagrad.step` calls it.
template <typename T>
inline void adagrad_n(int64_t n, T* __restrict p, const T* __restrict g, T* __restrict G, T neg_lr, T eps) {
  for (int64_t j = 0; j < n; ++j) {
    const T s = G[j] + g[j] * g[j];
    G[j] = s;
    p[j] = p[j] + (neg_lr * g[j]) / (std::sqrt(s) + eps);
  }
}
