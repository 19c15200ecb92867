// One whole training step of a pack of LSTM sentence classifiers as one call (`train_step`), and
// its forward alone (`classify`): the embedding gather, the input projection, the scan, the
// classifier on the last real step, the cross-entropy, the backward pass through all of them,
// optional per-member clipping and AdaGrad (dense parameters, then the batch's embedding rows),
// without an autograd graph. Included by lstm_scan.cpp inside its anonymous namespace, after the
// kernels it calls (forward_impl, backward_impl, bmm, adagrad_impl).
//
// The same bits as the autograd path (training/trainer.py's `train_step` with FusedScan and
// kernels/matmul.py's _Bmm), operation for operation: the matmuls are `bmm_into` on the same
// operands (a matmul's rows do not depend on how they are grouped, `mm`'s note), the scan is the
// same forward_impl/backward_impl, and every other floating-point operation is the ATen op autograd
// runs, on the same shapes (log-softmax, NLL and their backwards, the peephole reductions, the
// clipping arithmetic), or a single IEEE operation, which any code rounds alike (the bias sum
// b_ih + b_hh, mean's backward 1 / B, the peephole products dpre ⊙ c). What is left is exact by
// construction: copies and the gather, the last step's gradient added to zero, and the embedding
// gradient summed row by row in ascending batch position, as index_add_ sums it; and the terms an
// absent gate contributes, exact zeros, left out of the sums (`gate_ranges`). tests/test_train_step.py
// compares the two bit for bit.
//
// Shapes: table (M, V, E); ids (B, T) int64 cut to the batch's longest sentence; lengths, labels
// (B,) int64; dense = [cls_weight (M, C, H), cls_bias (M, C), weight_ih (M, 4H, E), weight_hh
// (M, 4H, H), bias_ih, bias_hh (M, 4H), then weight_ci, weight_cf, weight_co (diagonal (M, H) or
// full (M, H, H)) if the pack has peepholes, then weight_gr (M, 3H, 3H) if it has an FGR member]:
// `PackedClassifier.named_parameters()` without the embedding, `PackAdagrad.dense`'s order.

struct Pack {
  Tensor cls_w, cls_b, w_ih, w_hh, b_ih, b_hh;
  const Tensor *w_ci = nullptr, *w_cf = nullptr, *w_co = nullptr, *w_gr = nullptr;
  int peep = kNone;

  explicit Pack(const std::vector<Tensor>& dense) {
    const size_t n = dense.size();
    TORCH_CHECK(n == 6 || n == 7 || n == 9 || n == 10, "train_step: dense holds 6, 7, 9 or 10 parameters, got ", n);
    cls_w = dense[0], cls_b = dense[1], w_ih = dense[2], w_hh = dense[3], b_ih = dense[4], b_hh = dense[5];
    if (n >= 9) w_ci = &dense[6], w_cf = &dense[7], w_co = &dense[8], peep = dense[6].dim() == 2 ? kDiagonal : kFull;
    if (n == 7 || n == 10) w_gr = &dense[n - 1];
  }
};

// The batch's distinct tokens, ascending (torch.unique's `rows`), and each (t, b) position's index
// among them, time-major (`inv.t().flatten()`).
struct Rows {
  Tensor rows;
  std::vector<int64_t> pos;
};

Rows unique_rows(const Tensor& ids) {  // ids already checked by `forward_pass`
  const int64_t B = ids.size(0), T_ = ids.size(1);
  Tensor idc = ids.contiguous();
  const int64_t* id = idc.data_ptr<int64_t>();
  std::vector<int64_t> u(id, id + B * T_);
  std::sort(u.begin(), u.end());
  u.erase(std::unique(u.begin(), u.end()), u.end());
  Rows r{at::empty({static_cast<int64_t>(u.size())}, ids.options()), std::vector<int64_t>(B * T_)};
  std::copy(u.begin(), u.end(), r.rows.data_ptr<int64_t>());
  for (int64_t t = 0; t < T_; ++t)
    for (int64_t b = 0; b < B; ++b)
      r.pos[t * B + b] = std::lower_bound(u.begin(), u.end(), id[b * T_ + t]) - u.begin();
  return r;
}

// Everything the forward leaves for the backward.
struct Forward {
  Tensor x, hs, cs, S, gs, os, tcs, last, logits;
  Tensor len;  // the lengths, int64, checked to lie in [1, T]
};

// The forward (`PackedClassifier.logits` on gathered inputs): x[m, t·B + b] = table[m, ids[b, t]],
// xw = x W_ihᵀ + (b_ih + b_hh) (M, T·B, 4H) -> (T, M, B, 4H), the scan, h at each sentence's last
// real token (M, B, H), logits = h W_clsᵀ + b_cls (M, B, C).
template <typename T, int PEEP, bool FGR>
Forward forward_pass(const Tensor& table, const Pack& p, const Tensor& ids, const Tensor& lengths,
                     const std::vector<Member>& mem) {
  const int64_t M = table.size(0), V = table.size(1), E = table.size(2), B = ids.size(0), T_ = ids.size(1);
  const int64_t G = p.w_ih.size(1), H = G / 4, C = p.cls_w.size(1);
  TORCH_CHECK(lengths.numel() == B, "train_step: ", lengths.numel(), " lengths for ", B, " sentences");
  Forward f;
  f.x = at::empty({M, T_ * B, E}, table.options());
  {
    Tensor idc = ids.contiguous();
    const int64_t* id = idc.data_ptr<int64_t>();
    const T* tab = table.data_ptr<T>();
    T* x = f.x.data_ptr<T>();
    for (int64_t i = 0; i < B * T_; ++i)
      TORCH_CHECK(id[i] >= 0 && id[i] < V, "token id ", id[i], " not in [0, ", V, ")");
    for (int64_t m = 0; m < M; ++m)
      for (int64_t t = 0; t < T_; ++t)
        for (int64_t b = 0; b < B; ++b)
          std::memcpy(x + ((m * T_ + t) * B + b) * E, tab + (m * V + id[b * T_ + t]) * E, E * sizeof(T));
  }
  Tensor bias = at::empty({M, G}, table.options());  // the autograd path's bias_ih + bias_hh
  {
    Tensor bi = p.b_ih.contiguous(), bh = p.b_hh.contiguous();
    const T *a = bi.data_ptr<T>(), *b = bh.data_ptr<T>();
    T* o = bias.data_ptr<T>();
    for (int64_t i = 0; i < M * G; ++i) o[i] = a[i] + b[i];
  }
  Tensor xw = at::empty({M, T_ * B, G}, table.options());
  const std::vector<uint8_t> need = need_columns(mem, H);  // an absent gate's columns are never read
  bmm_into<T>(xw, f.x, rows_contiguous<T>(p.w_ih.transpose(1, 2)), &bias, need.data());
  auto out = forward_impl<T, PEEP, FGR>(xw.view({M, T_, B, G}).transpose(0, 1), p.w_hh, p.w_ci, p.w_cf, p.w_co,
                                        p.w_gr, mem, /*member_major=*/true);
  f.hs = out[0], f.cs = out[1], f.S = out[2], f.gs = out[3], f.os = out[4], f.tcs = out[5];
  f.last = at::empty({M, B, H}, table.options());
  {
    f.len = as(lengths, at::kLong);
    const int64_t* len = f.len.data_ptr<int64_t>();
    const T* hs = f.hs.data_ptr<T>();
    const int64_t st = f.hs.stride(0), sm = f.hs.stride(1);
    T* last = f.last.data_ptr<T>();
    for (int64_t b = 0; b < B; ++b)
      TORCH_CHECK(len[b] >= 1 && len[b] <= T_, "length ", len[b], " not in [1, ", T_, "]");
    for (int64_t m = 0; m < M; ++m)
      for (int64_t b = 0; b < B; ++b)  // hs[0] is h_0: a sentence of length L ends at hs[L]
        std::memcpy(last + (m * B + b) * H, hs + len[b] * st + m * sm + b * H, H * sizeof(T));
  }
  f.logits = at::empty({M, B, C}, table.options());
  Tensor cls_b = p.cls_b.contiguous();
  bmm_into<T>(f.logits, f.last, rows_contiguous<T>(p.cls_w.transpose(1, 2)), &cls_b);
  return f;
}

// C (M, 4H, P) = A B for A (M, 4H, K) at any strides and B (M, K, P) with contiguous rows, in the rows
// of each member's gates (`ks`, `gate_ranges`); an absent gate's rows, sums of exact zeros, are +0.
template <typename T>
Tensor gate_rows_bmm(const Tensor& A, const Tensor& B, const std::vector<KRanges>& ks) {
  const int64_t M = A.size(0), G = A.size(1), K = A.size(2), P = B.size(2);
  TORCH_CHECK(B.size(1) == K && B.stride(2) == 1 && B.stride(1) == P,
              "gate_rows_bmm: B must be (M, K, P) with contiguous rows");
  Tensor C = at::empty({M, G, P}, A.options());
  const T *a = A.data_ptr<T>(), *b = B.data_ptr<T>();
  T* c = C.data_ptr<T>();
  const int64_t sa_n = A.stride(1), sa_k = A.stride(2);
  for (int64_t m = 0; m < M; ++m) {
    T* cm = c + m * G * P;
    std::fill_n(cm, G * P, T(0));
    for (int q = 0; q < ks[m].n; ++q) {
      const int64_t r0 = ks[m].r[q][0], n = ks[m].r[q][1] - r0;
      const T* am = a + m * A.stride(0) + r0 * sa_n;
      const T* bm = b + m * B.stride(0);
      use_avx2 ? avx2::mm<T>(n, K, P, am, sa_n, sa_k, bm, cm + r0 * P, nullptr)
               : base::mm<T>(n, K, P, am, sa_n, sa_k, bm, cm + r0 * P, nullptr);
    }
  }
  return C;
}

// The gradients of W_hh, the peepholes and FGR's R from dpre, member-major as flat (M, T·B, 4H):
// `cell.weight_grads` with the fixed-order bmm, op for op, dW_hh in the rows of the gates each member
// has (`gate_rows_bmm`). Returns {dwhh, dci, dcf, dco, dgr} (undefined where absent).
template <typename T>
std::vector<Tensor> weight_grads(const Tensor& flat, const Forward& f, int peep, const Tensor* fgr_mask,
                                 const std::vector<KRanges>& ks, const Tensor& prods) {
  const int64_t T_ = f.gs.size(0), M = f.gs.size(1), B = f.gs.size(2), H = f.gs.size(3);
  std::vector<Tensor> g(5);
  // (T, M, B, ·) -> (M, T·B, ·): a view of hs and cs, stored member-major (`forward_impl`)
  auto member_major = [&](const Tensor& s) { return s.transpose(0, 1).reshape({M, T_ * B, s.size(3)}); };
  g[0] = gate_rows_bmm<T>(flat.transpose(1, 2), member_major(f.hs.narrow(0, 0, T_)), ks);
  if (peep == kDiagonal) {  // (dpi ⊙ c_{t-1}).sum over (t, b), ...: the products from `backward_impl`
    Tensor pr = prods.view({3, M, T_ * B, H});
    g[1] = pr[0].sum(1), g[2] = pr[1].sum(1), g[3] = pr[2].sum(1);
  } else if (peep == kFull) {
    Tensor cp = member_major(f.cs.narrow(0, 0, T_)), cc = member_major(f.cs.narrow(0, 1, T_));
    Tensor di = flat.narrow(2, 0, H), df = flat.narrow(2, H, H), dout = flat.narrow(2, 3 * H, H);
    g[1] = bmm(di.transpose(1, 2), cp, c10::nullopt), g[2] = bmm(df.transpose(1, 2), cp, c10::nullopt);
    g[3] = bmm(dout.transpose(1, 2), cc, c10::nullopt);
  }
  if (fgr_mask) {  // dR = Σ_t dpre_{i,f,o}(t)ᵀ [i, f, o]_{t-1}; members without FGR keep their zero weights
    Tensor prev = at::cat({f.S.narrow(0, 0, T_ - 1).narrow(3, 0, 2 * H), f.os.narrow(0, 0, T_ - 1)}, -1);
    Tensor a_prev = at::cat({at::zeros({1, M, B, 3 * H}, f.S.options()), prev});
    Tensor d_ifo = at::cat({flat.narrow(2, 0, 2 * H), flat.narrow(2, 3 * H, H)}, -1);
    g[4] = at::mul(bmm(d_ifo.transpose(1, 2), member_major(a_prev), c10::nullopt), *fgr_mask);
  }
  return g;
}

// `adagrad.clip_members`, op for op: each member's gradients scaled to a total norm of at most clip.
void clip_members(std::vector<Tensor>& grads, double clip) {
  Tensor sq;
  for (const Tensor& g : grads) {
    Tensor s = g.pow(2).flatten(1).sum(1);
    sq = sq.defined() ? at::add(sq, s) : s;  // Python's sum() from 0: 0 + s is s (s >= 0)
  }
  Tensor scale = at::clamp_max(at::mul(at::reciprocal(at::add(sq.sqrt(), 1e-6)), clip), 1.0);  // CLIP_EPS
  for (Tensor& g : grads) {
    std::vector<int64_t> shape(g.dim(), 1);
    shape[0] = -1;
    g = at::mul(g, scale.view(shape));
  }
}

template <typename T, int PEEP, bool FGR>
Tensor step_impl(const Tensor& table, const std::vector<Tensor>& dense, const std::vector<Tensor>& state,
                 const Tensor& table_state, const Tensor& ids, const Tensor& lengths, const Tensor& labels,
                 const std::vector<Member>& mem, const Tensor* fgr_mask, const Tensor& neg_lr, double eps,
                 double clip, bool train_table) {
  const Pack p(dense);
  const int64_t M = table.size(0), E = table.size(2), B = ids.size(0), T_ = ids.size(1);
  const int64_t G = p.w_ih.size(1), H = G / 4, C = p.cls_w.size(1);
  const Forward f = forward_pass<T, PEEP, FGR>(table, p, ids, lengths, mem);
  // an absent gate's pre-activation gradients are exact zeros: the products that only read or write them
  // leave them out (`gate_ranges`), columns (need) or rows of a sum (ks)
  const std::vector<uint8_t> need = need_columns(mem, H);
  const std::vector<KRanges> ks = gate_ranges(mem, H);
  // loss: F.cross_entropy(logits (M·B, C), labels repeated M times, reduction none) (M, B), its mean over B
  Tensor tgt = at::empty({M * B}, ids.options());
  {
    Tensor lab = as(labels, at::kLong);
    TORCH_CHECK(lab.numel() == B, "train_step: ", lab.numel(), " labels for ", B, " sentences");
    for (int64_t m = 0; m < M; ++m) std::copy_n(lab.data_ptr<int64_t>(), B, tgt.data_ptr<int64_t>() + m * B);
  }
  Tensor logp = at::_log_softmax(f.logits.view({M * B, C}), 1, false);
  auto [nll, total_weight] = at::nll_loss_forward(logp, tgt, {}, at::Reduction::None, -100);
  Tensor losses = nll.view({M, B}).mean(1);
  // backward of losses.sum(): mean's backward 1 / B, then NLL's and log-softmax's (M·B, C) -> (M, B, C)
  Tensor dnll = at::empty({M * B}, table.options());  // ones / B: 1 / B, rounded once, as ATen's division
  std::fill_n(dnll.data_ptr<T>(), M * B, T(1) / T(B));
  Tensor dlogp = at::nll_loss_backward(dnll, logp, tgt, {}, at::Reduction::None, -100, total_weight);
  Tensor dlogits = at::_log_softmax_backward_data(dlogp, logp, 1, logp.scalar_type()).view({M, B, C});
  // the classifier: dh = dlogits W_cls, dW_cls = dlogitsᵀ h (each element the sum of `_Bmm`'s hᵀ dlogits:
  // the same products in the same order), db = Σ_b dlogits (a ones-row product, as _Bmm: `one` at stride 0)
  const T one = 1;
  Tensor dlast = at::empty({M, B, H}, table.options());
  bmm_into<T>(dlast, dlogits, p.cls_w.contiguous());
  Tensor d_cls_w = at::empty({M, C, H}, table.options()), d_cls_b = at::empty({M, C}, table.options());
  bmm_raw<T>(M, C, B, H, ptr<T>(dlogits), {B * C, 1, C}, ptr<T>(f.last), B * H, ptr<T>(d_cls_w));
  bmm_raw<T>(M, 1, B, C, &one, {0, 0, 0}, ptr<T>(dlogits), B * C, ptr<T>(d_cls_b));
  // last_step's backward: the gradient of hs at each last real token, added to zero (gather's backward)
  Tensor dhs = at::zeros({T_, M, B, H}, table.options());
  {
    const int64_t* len = f.len.data_ptr<int64_t>();
    const T* dl = dlast.data_ptr<T>();
    T* d = dhs.data_ptr<T>();
    for (int64_t m = 0; m < M; ++m)
      for (int64_t b = 0; b < B; ++b) {
        T* row = d + (((len[b] - 1) * M + m) * B + b) * H;
        for (int64_t j = 0; j < H; ++j) row[j] = row[j] + dl[(m * B + b) * H + j];
      }
  }
  // no gradient reaches the cell states from outside: dcs is zero at every step, one (1, M, B, H) for all
  Tensor prods = PEEP == kDiagonal ? at::empty({3, M, T_, B, H}, table.options()) : Tensor();
  Tensor dpre = backward_impl<T, PEEP, FGR>(dhs, at::zeros({1, M, B, H}, table.options()), p.w_hh, p.w_ci, p.w_cf,
                                            p.w_co, p.w_gr, f.S, f.gs, f.os, f.cs, f.tcs, mem, false,
                                            PEEP == kDiagonal ? &prods : nullptr)[0];
  Tensor flat = dpre.transpose(0, 1).reshape({M, T_ * B, G});  // member-major, as the projection's output
  std::vector<Tensor> wg = weight_grads<T>(flat, f, PEEP, fgr_mask, ks, prods);
  // the input projection: dW_ihᵀ = xᵀ dxw, d(b_ih + b_hh) = Σ dxw (both biases get it), dx = dxw W_ih
  Tensor d_w_ih = at::zeros({M, E, G}, table.options()), d_bias = at::zeros({M, G}, table.options());
  bmm_into<T>(d_w_ih, f.x.transpose(1, 2), flat, nullptr, need.data());
  bmm_raw<T>(M, 1, T_ * B, G, &one, {0, 0, 0}, ptr<T>(flat), T_ * B * G, ptr<T>(d_bias), nullptr, need.data());
  d_w_ih = rows_contiguous<T>(d_w_ih.transpose(1, 2));  // (M, 4H, E), copied in tiles
  std::vector<Tensor> grads = {d_cls_w, d_cls_b, d_w_ih, wg[0], d_bias, d_bias};
  if (PEEP != kNone) grads.insert(grads.end(), {wg[1], wg[2], wg[3]});
  if (FGR) grads.push_back(wg[4]);
  TORCH_CHECK(grads.size() == dense.size() && state.size() == dense.size(), "train_step: one state per parameter");
  Rows r;
  Tensor d_rows;
  if (train_table) {  // the embedding rows' gradient (M, U, E): index_add_ of dx over batch positions, ascending
    r = unique_rows(ids);
    const int64_t U = r.rows.numel();
    Tensor dx = at::empty({M, T_ * B, E}, table.options());
    bmm_into<T>(dx, flat, p.w_ih.contiguous(), nullptr, nullptr, ks.data());
    d_rows = at::zeros({M, U, E}, table.options());
    const T* src = dx.data_ptr<T>();
    T* dst = d_rows.data_ptr<T>();
    for (int64_t m = 0; m < M; ++m)
      for (int64_t i = 0; i < T_ * B; ++i) {
        T* row = dst + (m * U + r.pos[i]) * E;
        const T* s = src + (m * T_ * B + i) * E;
        for (int64_t j = 0; j < E; ++j) row[j] = row[j] + s[j];
      }
    grads.push_back(d_rows);
  }
  if (clip > 0) clip_members(grads, clip);
  // AdaGrad, the gate-row parameters (W_ih, W_hh, b_ih, b_hh: dense[2..5]) in their members' gates' rows
  for (size_t k = 0; k < dense.size(); ++k)
    adagrad_impl(dense[k], grads[k], state[k], neg_lr, eps, c10::nullopt, k >= 2 && k <= 5 ? &ks : nullptr);
  if (train_table) adagrad_impl(table, grads.back(), table_state, neg_lr, eps, r.rows);
  return losses;
}

Tensor train_step(const Tensor& table, at::TensorList dense_in, at::TensorList state_in, const Tensor& table_state,
                  const Tensor& ids, const Tensor& lengths, const Tensor& labels, const Tensor& on,
                  const c10::optional<Tensor>& niaf, const c10::optional<Tensor>& noaf,
                  const c10::optional<Tensor>& cifg, const c10::optional<Tensor>& fgr, const Tensor& neg_lr,
                  double eps, double clip, bool train_table) {
  TORCH_CHECK(ids.dim() == 2 && ids.scalar_type() == at::kLong, "train_step: ids must be (B, T) int64");
  const std::vector<Tensor> dense(dense_in.begin(), dense_in.end()), state(state_in.begin(), state_in.end());
  const Pack p(dense);
  auto mem = members(on, niaf, noaf, cifg);
  const Tensor* fgr_mask = opt(fgr);
  TORCH_CHECK((p.w_gr != nullptr) == (fgr_mask != nullptr), "train_step: weight_gr and the fgr mask go together");
  return dispatch(table, p.peep, p.w_gr != nullptr, [&]<typename T, int P, bool F>() {
    return step_impl<T, P, F>(table, dense, state, table_state, ids, lengths, labels, mem, fgr_mask, neg_lr, eps,
                              clip, train_table);
  });
}

// The forward alone, for evaluation: logits (M, B, C).
Tensor classify(const Tensor& table, at::TensorList dense_in, const Tensor& ids, const Tensor& lengths,
                const Tensor& on, const c10::optional<Tensor>& niaf, const c10::optional<Tensor>& noaf,
                const c10::optional<Tensor>& cifg) {
  TORCH_CHECK(ids.dim() == 2 && ids.scalar_type() == at::kLong, "classify: ids must be (B, T) int64");
  const std::vector<Tensor> dense(dense_in.begin(), dense_in.end());
  const Pack p(dense);
  auto mem = members(on, niaf, noaf, cifg);
  return dispatch(table, p.peep, p.w_gr != nullptr, [&]<typename T, int P, bool F>() {
    return forward_pass<T, P, F>(table, p, ids, lengths, mem).logits;
  });
}
