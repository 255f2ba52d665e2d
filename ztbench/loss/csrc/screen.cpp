// The float32 screen of the shipped loss as one fused CPU pass (built by
// torch.utils.cpp_extension, loaded by ztbench/loss/fused.py).
//
// The same formulas and the same error bound as ztbench/loss/screened.py (read its module
// docstring first): the plain formula in float64 on float32 inputs, each element kept
// where the bound certifies its float32 rounding within 0.5 + 1/8 ulp (margin
// S - K |r| <= 0 for the value and each derivative), and flagged otherwise, for the
// careful kernels to recompute. One pass over memory instead of dozens: the inputs are
// read once, every intermediate stays in vector registers, the outputs are written once;
// chunks of 2^15 elements run on torch's intra-op threads. ZTP results of bfloat16 or
// float16 precision take a float32-arithmetic loop first (ztp_narrow_loop), with the
// float64 step as its second tier.
//
// Vectorised with ATen's Vectorized<double> (lgamma, exp, tanh from SLEEF inside
// libtorch), four vectors per step, built for the CPU capability torch runs with.
// Compiled with -ffp-contract=off: the bound's error model is that of separately rounded
// operations.
//
// The vector primitives (log, log1p, digamma) are in common.h, double-double arithmetic in
// double_double.h; the float64 kernels (the shipped loss's float64 CPU paths) are in
// ztp_float64.h and ztnb_float64.h. All are included here: one translation unit, one
// build.

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "common.h"
#include "ztnb_float64.h"
#include "ztp_float64.h"

namespace {
using at::Tensor;
using namespace zt;

constexpr double K_COND = 262144.0;  // 2^18, screened.K_COND
constexpr double EXP_FORM_MIN = 0.25;  // screened._EXP_FORM_MIN

// 1 - e^-w for w >= 0, within a few u relative: 2t/(1 + t), t = tanh(w/2) below 1/4,
// 1 - exp(-w) from there on (screened.one_minus_exp_neg); a NaN stays NaN in either form.
ZT_INLINE V one_minus_exp_neg(V w) {
  const V one(1.0);
  const V large = w >= V(EXP_FORM_MIN);
  const Lanes small_lanes = false_lanes(large);  // a bit per lane where w < 1/4
  if (small_lanes == 0) return one - w.neg().exp();  // (each form only where needed)
  const V t = (V(0.5) * w).tanh();
  const V tanh_form = (t + t) / (t + one);
  if (small_lanes == first_lanes(L)) return tanh_form;
  return V::blendv(tanh_form, one - w.neg().exp(), large);
}

// margin S - K |r|: <= 0 where certified, NaN where a term overflowed
ZT_INLINE V margin(V r, V size) { return size - V(K_COND) * r.abs(); }


ZT_INLINE V natural(V p, bool is_log) { return is_log ? p.exp() : p; }

// full=True: lgamma(k + 1) added to the value, and with 1 more to its magnitude (lgamma's
// absolute error near its zeros is what is bounded)
ZT_INLINE void add_log_factorial(V k, V& value, V& size) {
  const V lg = (k + V(1.0)).lgamma();
  value = value + lg;
  size = size + lg + V(1.0);
}

struct Out {
  float* value;     // float32 value, or
  double* value64;  // float64 value (a reduction follows, in float64)
  float* d[2];
  std::vector<int64_t>* rejected;  // positions of the elements not certified
  bool valid = true;               // false once an input is invalid (the caller's rules)
};

// Narrows L doubles to floats in one loop the compiler vectorises.
ZT_INLINE void narrow(V v, float* dst, int count) {
  double b[L];
  v.store(b);
  if (count == L) {
    for (int j = 0; j < L; ++j) dst[j] = static_cast<float>(b[j]);
  } else {
    for (int j = 0; j < count; ++j) dst[j] = static_cast<float>(b[j]);
  }
}

ZT_INLINE void store(Out& o, int64_t i, int count, V value, const V* d, int nd, V mg) {
  if (o.value64) {
    value.store(o.value64 + i, count);
  } else {
    narrow(value, o.value + i, count);
  }
  for (int q = 0; q < nd; ++q) narrow(d[q], o.d[q] + i, count);
  // a bit per lane not certified (margin > 0 or NaN)
  push_lanes(*o.rejected, i, false_lanes(mg <= V(0.0)) & first_lanes(count));
}

template <typename KT>
void ztnb_loop(const KT* kp, const float* mp, const float* tp, bool log_mu, bool log_theta,
               bool need, bool full, Out& o, int64_t begin, int64_t end) {
  const V one(1.0), two(2.0);
  for (int64_t i = begin; i < end; i += L) {
    const int count = static_cast<int>(std::min<int64_t>(L, end - i));
    const V k = load(kp, i, count);
    const V mu = natural(load(mp, i, count), log_mu);
    const V th = natural(load(tp, i, count), log_theta);
    if (!(valid_k(k) && valid_param(mu, log_mu) && valid_param(th, log_theta))) {
      o.valid = false;
      return;
    }
    const V x = mu / th;
    V lx, l_inv;  // log1p(mu/theta), log1p(theta/mu)
    vlog1p_pair(x, th / mu, lx, l_inv);
    const V w = th * lx;
    const V em1 = one_minus_exp_neg(w), inv = one / em1, log_em1 = vlog(em1);
    const V lg_t = th.lgamma(), lg_kt = (k + th).lgamma();
    const V t_k = k * l_inv;
    V value = lg_t - lg_kt + t_k + w + log_em1;
    V size = lg_t.abs() + lg_kt.abs() + two + t_k + w + log_em1.abs() + w * inv;
    if (full) add_log_factorial(k, value, size);
    V mg = margin(value, size);
    V d[2];
    if (need) {
      const V s = th + mu, a = k / s, b = k / mu, c = (th / s) * inv;
      d[0] = a - b + c;
      mg = at::vec::maximum(mg, margin(d[0], a + b + two * c));
      const V y = mu / s;
      const V p_t = vdigamma(th), p_kt = vdigamma(k + th);
      d[1] = p_t - p_kt + a + (lx - y) * inv;
      const V size_t = p_t.abs() + p_kt.abs() + two + a + two * (lx + y) * inv;
      mg = at::vec::maximum(mg, margin(d[1], size_t));
      // d/dlog p = p d/dp, rounded once to float32 afterwards (kernels.chain_rule)
      if (log_mu) d[0] = d[0] * mu;
      if (log_theta) d[1] = d[1] * th;
    }
    store(o, i, count, value, d, need ? 2 : 0, mg);
  }
}

// ZTP's plain formula in float64 on one step of valid natural lam (and k): the value,
// d/dlam with need (d/dlam, not yet times lam for a log-parameter) and the margin.
ZT_INLINE void ztp_step(const V& k, const V& lam, bool need, bool full, V& value, V& d_lam,
                        V& mg) {
  const V em1 = one_minus_exp_neg(lam);
  V log_lam_, log_em1, inv;  // inv = 1/(lam em1), with need
  if (need) {
    vlog_pair_reciprocal(lam, em1, lam * em1, log_lam_, log_em1, inv);
  } else {
    vlog_pair(lam, em1, log_lam_, log_em1);
  }
  value = lam - k * log_lam_ + log_em1;
  V size = lam + k * log_lam_.abs() - log_em1;
  if (full) add_log_factorial(k, value, size);
  mg = margin(value, size);
  if (need) {
    // 1/em1 - k/lam as (lam - k em1) / (lam em1), whose rounding errors are a few u of
    // (lam + k em1) / (lam em1) = 1/em1 + k/lam, the size bounded
    const V k_em1 = k * em1;
    d_lam = (lam - k_em1) * inv;
    mg = at::vec::maximum(mg, margin(d_lam, (lam + k_em1) * inv));
  }
}

template <typename KT>
void ztp_loop(const KT* kp, const float* lp, bool log_lam, bool need, bool full, Out& o,
              int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; i += L) {
    const int count = static_cast<int>(std::min<int64_t>(L, end - i));
    const V k = load(kp, i, count);
    const V lam = natural(load(lp, i, count), log_lam);
    if (!(valid_k(k) && valid_param(lam, log_lam))) {
      o.valid = false;
      return;
    }
    V value, d[2], mg;
    ztp_step(k, lam, need, full, value, d[0], mg);
    if (need && log_lam) d[0] = d[0] * lam;
    store(o, i, count, value, d, need ? 1 : 0, mg);
  }
}

// ZTP for results of bfloat16 or float16 precision (natural lam, loss form): the same
// plain formula in float32 arithmetic, twice the lanes of float64 and SLEEF's float32
// functions, certified against the narrow result's own target (see
// ztbench/loss/screened.py, narrow_limit): an element is kept where S <= limit |r|, which
// bounds its relative error by 2^-(p+3) for a p-bit result. The lanes it does not
// certify (near a zero crossing) are gathered and recomputed L at a time by the float64
// step (ztp_step, the float32 screen's bound); only those it rejects in turn are left to
// the careful kernels. A step with a lane outside the analysis (lam outside
// [2^-40, 2^40], k > 2^24) is the float64 step as a whole. (L float lanes are L double
// lanes: both are N vectors' worth.)
using VF = at::vec::VectorizedN<float, 2>;
constexpr int LF = VF::size();
static_assert(LF == L, "one float step is one double step");

// The float64 second tier of ztp_narrow_loop: up to L gathered lanes (positions pos, inputs
// kb, lb; the rest padded with the first), their results written, the lanes it does not
// certify appended to the rejected positions.
struct NarrowRetry {
  int64_t pos[L];
  double kb[L], lb[L];
  int m = 0;

  ZT_FLATTEN void flush(Out& o, bool need) {
    if (m == 0) return;
    for (int j = m; j < L; ++j) {
      kb[j] = kb[0];
      lb[j] = lb[0];
    }
    V value, d_lam, mg;
    ztp_step(V::loadu(kb), V::loadu(lb), need, false, value, d_lam, mg);
    double vb[L], db[L];
    value.store(vb);
    if (need) d_lam.store(db);
    const Lanes bad = false_lanes(mg <= V(0.0));
    for (int j = 0; j < m; ++j) {
      if (o.value64) {
        o.value64[pos[j]] = vb[j];
      } else {
        o.value[pos[j]] = static_cast<float>(vb[j]);
      }
      if (need) o.d[0][pos[j]] = static_cast<float>(db[j]);
      if ((bad >> j) & 1) o.rejected->push_back(pos[j]);
    }
    m = 0;
  }
};

template <typename KT, typename LT>
ZT_FLATTEN void ztp_narrow_loop(const KT* kp, const LT* lp, bool need, float limit, Out& o,
                     int64_t begin, int64_t end) {
  const VF one(1.0f), zero(0.0f), lim(limit);
  NarrowRetry retry;
  for (int64_t i = begin; i < end; i += LF) {
    const int count = static_cast<int>(std::min<int64_t>(LF, end - i));
    const VF k = load<VF>(kp, i, count), lam = load<VF>(lp, i, count);
    if (!(valid_k(k) && valid_param(lam, false))) {
      o.valid = false;
      return;
    }
    const VF inside = (lam >= VF(0x1p-40f)) & (lam <= VF(0x1p40f)) & (k <= VF(0x1p24f));
    if ((false_lanes(inside) & first_lanes(count)) != 0) {
      // a lane outside the float32 analysis (whose products could be subnormal, slow as
      // well as inexact): the whole step in float64
      float kf[LF], lf[LF];  // the float lanes widened (exact), padding included
      k.store(kf);
      lam.store(lf);
      V value, d[2], mg;
      ztp_step(load(kf, 0, L), load(lf, 0, L), need, false, value, d[0], mg);
      store(o, i, count, value, d, need ? 1 : 0, mg);
      continue;
    }
    // 1 - e^-lam: -expm1(-lam) within 1 ulp; where every lane has lam >= 1, 1 - exp(-lam)
    // (cheaper), within 2u e^-1 / (1 - e^-1) + u < 2.2u relative
    const VF em1 = false_lanes(lam >= one) == 0 ? one - lam.neg().exp()
                                                  : lam.neg().expm1().neg();
    const VF log_lam = lam.log(), log_em1 = em1.log();
    const VF value = lam - k * log_lam + log_em1;
    // log(em1)'s error is absolute (from em1's relative error): 1 in the size
    const VF size = lam + k * log_lam.abs() - log_em1 + one;
    VF mg = size - lim * value.abs();
    VF d;
    if (need) {
      const VF k_em1 = k * em1, den = lam * em1;
      d = (lam - k_em1) / den;
      mg = at::vec::maximum(mg, (lam + k_em1) / den - lim * d.abs());
    }
    const Lanes rejected = false_lanes(mg <= zero) & first_lanes(count);
    if (o.value64) {
      float v[LF];
      value.store(v);
      if (count == LF) {
        for (int j = 0; j < LF; ++j) o.value64[i + j] = v[j];
      } else {
        for (int j = 0; j < count; ++j) o.value64[i + j] = v[j];
      }
    } else {
      value.store(o.value + i, count);
    }
    if (need) d.store(o.d[0] + i, count);
    for (int j = 0; rejected && j < count; ++j) {
      if (!((rejected >> j) & 1)) continue;
      retry.pos[retry.m] = i + j;
      retry.kb[retry.m] = static_cast<double>(kp[i + j]);
      retry.lb[retry.m] = static_cast<double>(lp[i + j]);
      if (++retry.m == L) retry.flush(o, need);
    }
  }
  retry.flush(o, need);
  // positions in increasing order, as the other loops give them
  std::sort(o.rejected->begin(), o.rejected->end());
}

// body(out, begin, end) over the chunks of for_chunks; each chunk collects its own
// rejected positions and validity, joined in chunk order, so the result does not depend
// on the number of threads.
template <typename F>
void in_chunks(Out& o, int64_t n, const F& body) {
  const int64_t chunks = chunk_count(n);
  std::vector<std::vector<int64_t>> rejected(chunks);
  std::vector<char> valid(chunks, 1);
  for_chunks(n, [&](int64_t c, int64_t begin, int64_t end) {
    Out local = o;
    local.rejected = &rejected[c];
    body(local, begin, end);
    valid[c] = local.valid;
  });
  for (int64_t c = 0; c < chunks; ++c) {
    o.valid = o.valid && valid[c];
    o.rejected->insert(o.rejected->end(), rejected[c].begin(), rejected[c].end());
  }
}

Out outputs(const Tensor& like, int nd, bool need, bool value64, std::vector<Tensor>& keep,
            std::vector<int64_t>& rejected) {
  const auto n = like.numel();
  const auto f32 = like.options().dtype(at::kFloat);
  Out o{nullptr, nullptr, {nullptr, nullptr}, &rejected};
  if (value64) {
    keep.push_back(at::empty({n}, like.options().dtype(at::kDouble)));
    o.value64 = keep.back().data_ptr<double>();
  } else {
    keep.push_back(at::empty({n}, f32));
    o.value = keep.back().data_ptr<float>();
  }
  for (int q = 0; q < (need ? nd : 0); ++q) {
    keep.push_back(at::empty({n}, f32));
    o.d[q] = keep.back().data_ptr<float>();
  }
  return o;
}

// (outputs..., rejected positions as int64) or an empty list where an input is invalid
std::vector<Tensor> finish(const Out& o, std::vector<Tensor>& keep,
                           std::vector<int64_t>& rejected) {
  if (!o.valid) return {};
  const auto m = static_cast<int64_t>(rejected.size());
  keep.push_back(at::empty({m}, at::TensorOptions().dtype(at::kLong)));
  std::copy(rejected.begin(), rejected.end(), keep.back().data_ptr<int64_t>());
  return keep;
}

void check(const Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.dim() == 1 && t.is_contiguous(), name,
              ": a contiguous 1-D CPU tensor is required");
}

// (value, [d/dmu, d/dtheta,] rejected): float32 outputs (the value in float64 with
// value64), the positions of the elements not
// certified; an empty list where an input is invalid (the caller's general path then
// raises or puts NaN there).
std::vector<Tensor> ztnb_screen(const Tensor& k, const Tensor& mu, const Tensor& theta,
                                bool log_mu, bool log_theta, bool need, bool full,
                                bool value64) {
  check(k, "k");
  check(mu, "mu");
  check(theta, "theta");
  TORCH_CHECK(mu.scalar_type() == at::kFloat && theta.scalar_type() == at::kFloat,
              "mu and theta must be float32");
  const auto n = k.numel();
  TORCH_CHECK(mu.numel() == n && theta.numel() == n, "k, mu, theta: one length");
  std::vector<Tensor> keep;
  std::vector<int64_t> rejected;
  Out o = outputs(mu, 2, need, value64, keep, rejected);
  const float* m = mu.data_ptr<float>();
  const float* t = theta.data_ptr<float>();
  AT_DISPATCH_ALL_TYPES_AND3(at::kBFloat16, at::kHalf, at::kBool, k.scalar_type(), "ztnb_screen", [&] {
    const scalar_t* kp = k.data_ptr<scalar_t>();
    in_chunks(o, n, [&](Out& out, int64_t b, int64_t e) {
      ztnb_loop(kp, m, t, log_mu, log_theta, need, full, out, b, e);
    });
  });
  return finish(o, keep, rejected);
}

// (value, [d/dlam,] rejected), as ztnb_screen. narrow_limit > 0 (natural lam, loss form,
// k float32, bfloat16 or float16): the float32-arithmetic loop for results of bfloat16 or
// float16 precision, with that limit on S / |r|; lam is then bfloat16 or float16 itself
// (read as it is).
std::vector<Tensor> ztp_screen(const Tensor& k, const Tensor& lam, bool log_lam, bool need,
                               bool full, bool value64, double narrow_limit) {
  check(k, "k");
  check(lam, "lam");
  const bool narrow = narrow_limit > 0.0;
  TORCH_CHECK(!narrow || (!log_lam && !full), "the narrow loop takes natural lam, loss form");
  TORCH_CHECK(narrow ? (lam.scalar_type() == at::kBFloat16 || lam.scalar_type() == at::kHalf)
                     : lam.scalar_type() == at::kFloat,
              "lam must be float32 (bfloat16 or float16 with narrow_limit)");
  const auto n = k.numel();
  TORCH_CHECK(lam.numel() == n, "k, lam: one length");
  std::vector<Tensor> keep;
  std::vector<int64_t> rejected;
  Out o = outputs(lam, 1, need, value64, keep, rejected);
  if (narrow) {
    // k float32, bfloat16 or float16 and lam bfloat16 or float16 only: each instantiation
    // of the narrow loop is large (its build time grows with their number)
    TORCH_CHECK(k.scalar_type() == at::kFloat || k.scalar_type() == at::kBFloat16 ||
                    k.scalar_type() == at::kHalf,
                "the narrow loop takes k float32, bfloat16 or float16");
    const auto limit = static_cast<float>(narrow_limit);
    auto run = [&](const auto* kp) {
      auto with_lam = [&](const auto* l) {
        in_chunks(o, n, [&](Out& out, int64_t b, int64_t e) {
          ztp_narrow_loop(kp, l, need, limit, out, b, e);
        });
      };
      if (lam.scalar_type() == at::kBFloat16) {
        with_lam(lam.data_ptr<c10::BFloat16>());
      } else {
        with_lam(lam.data_ptr<c10::Half>());
      }
    };
    if (k.scalar_type() == at::kFloat) {
      run(k.data_ptr<float>());
    } else if (k.scalar_type() == at::kBFloat16) {
      run(k.data_ptr<c10::BFloat16>());
    } else {
      run(k.data_ptr<c10::Half>());
    }
    return finish(o, keep, rejected);
  }
  AT_DISPATCH_ALL_TYPES_AND3(at::kBFloat16, at::kHalf, at::kBool, k.scalar_type(), "ztp_screen", [&] {
    const scalar_t* kp = k.data_ptr<scalar_t>();
    const float* l = lam.data_ptr<float>();
    in_chunks(o, n, [&](Out& out, int64_t b, int64_t e) {
      ztp_loop(kp, l, log_lam, need, full, out, b, e);
    });
  });
  return finish(o, keep, rejected);
}

// The float64 kernels' result: ``outputs``, then for each list (a member pointer of the
// chunks' Flags) its positions joined in chunk order as an int64 tensor; an empty list
// where a chunk met an invalid input.
template <typename Flags>
std::vector<Tensor> with_positions(std::vector<Tensor> outputs, const std::vector<Flags>& flags,
                                   std::initializer_list<std::vector<int64_t> Flags::*> lists) {
  for (const auto& f : flags) {
    if (!f.valid) return {};
  }
  for (const auto list : lists) {
    int64_t m = 0;
    for (const auto& f : flags) m += static_cast<int64_t>((f.*list).size());
    Tensor pos = at::empty({m}, at::TensorOptions().dtype(at::kLong));
    int64_t* p = pos.data_ptr<int64_t>();
    for (const auto& f : flags) p = std::copy((f.*list).begin(), (f.*list).end(), p);
    outputs.push_back(pos);
  }
  return outputs;
}

// The log table of ztp_float64.h from its (3, LOG_TABLE_SIZE) float64 tensor: r, hi, lo.
LogTable log_table_of(const Tensor& table) {
  TORCH_CHECK(table.device().is_cpu() && table.is_contiguous() &&
                  table.scalar_type() == at::kDouble && table.dim() == 2 &&
                  table.size(0) == 3 && table.size(1) == LOG_TABLE_SIZE,
              "log_table: a contiguous (3, ", LOG_TABLE_SIZE, ") float64 CPU tensor");
  const double* tab = table.data_ptr<double>();
  return {tab, tab + LOG_TABLE_SIZE, tab + 2 * LOG_TABLE_SIZE};
}

// (value, d/dlam (empty without need), positions whose value is not certified, positions
// whose d/dlam is not certified, positions outside the kernel's range): the float64 ZTP
// kernel of ztp_float64.h on float64 k and lam; log_table (3, LOG_TABLE_SIZE): r, hi, lo;
// h and q: the series' coefficients (ZtpFloat64Constants). An empty list where an input
// is invalid.
std::vector<Tensor> ztp_float64(const Tensor& k, const Tensor& lam, bool need,
                                const Tensor& log_table, const Tensor& h, const Tensor& q) {
  for (const auto* t : {&k, &lam, &log_table, &h, &q}) {
    TORCH_CHECK(t->device().is_cpu() && t->is_contiguous() && t->scalar_type() == at::kDouble,
                "ztp_float64: contiguous float64 CPU tensors are required");
  }
  TORCH_CHECK(k.dim() == 1 && lam.dim() == 1 && k.numel() == lam.numel(),
              "k, lam: 1-D, one length");
  TORCH_CHECK(h.numel() >= 2 && q.numel() >= 1, "h, q: the series' coefficients");
  const ZtpFloat64Constants c{log_table_of(log_table),
                              h.data_ptr<double>(), static_cast<int>(h.numel()),
                              q.data_ptr<double>(), static_cast<int>(q.numel())};
  const auto n = k.numel();
  Tensor value = at::empty({n}, k.options());
  Tensor d = at::empty({need ? n : 0}, k.options());
  std::vector<ZtpFloat64Flags> flags(chunk_count(n));
  const double* kp = k.data_ptr<double>();
  const double* lp = lam.data_ptr<double>();
  double* vp = value.data_ptr<double>();
  double* dp = d.data_ptr<double>();
  for_chunks(n, [&](int64_t c_, int64_t begin, int64_t end) {
    ztp_float64_loop(kp, lp, need, c, vp, dp, flags[c_], begin, end);
  });
  return with_positions({value, d}, flags,
                        {&ZtpFloat64Flags::value, &ZtpFloat64Flags::grad, &ZtpFloat64Flags::outside});
}

// The kernel's own digamma, log or log1p element by element (float64 in and out), for
// the tests; log_pair and log1p_pair: log or log1p of x computed in a pair with 1/x;
// log_pair_reciprocal and pair_reciprocal: log x and 1/x from vlog_pair_reciprocal(x, 1/x, x);
// logf, expf, expm1f: the float32 functions of ztp_narrow_loop on x rounded to float32.
Tensor elementwise(const std::string& name, const Tensor& x) {
  check(x, "x");
  TORCH_CHECK(x.scalar_type() == at::kDouble, "x must be float64");
  const int single = name == "logf" ? 0 : name == "expf" ? 1 : name == "expm1f" ? 2 : -1;
  if (single >= 0) {
    auto out = at::empty_like(x);
    const double* xp = x.data_ptr<double>();
    double* op = out.data_ptr<double>();
    for (int64_t i = 0; i < x.numel(); i += LF) {
      const int count = static_cast<int>(std::min<int64_t>(LF, x.numel() - i));
      const VF v = load<VF>(xp, i, count);
      const VF r = single == 0 ? v.log() : single == 1 ? v.exp() : v.expm1();
      float b[LF];
      r.store(b);
      for (int j = 0; j < count; ++j) op[i + j] = b[j];
    }
    return out;
  }
  const int which = name == "digamma" ? 0 : name == "log" ? 1 : name == "log1p" ? 2
                    : name == "log_pair" ? 3 : name == "log1p_pair" ? 4
                    : name == "log_pair_reciprocal" ? 5 : name == "pair_reciprocal" ? 6 : -1;
  TORCH_CHECK(which >= 0, "unknown function ", name);
  auto out = at::empty_like(x);
  const double* xp = x.data_ptr<double>();
  double* op = out.data_ptr<double>();
  const int64_t n = x.numel();
  for (int64_t i = 0; i < n; i += L) {
    const int count = static_cast<int>(std::min<int64_t>(L, n - i));
    const V v = load(xp, i, count);
    V r, partner;  // the pairs: f(x) computed beside f(1/x)
    if (which == 3) {
      vlog_pair(v, V(1.0) / v, r, partner);
    } else if (which == 4) {
      vlog1p_pair(v, V(1.0) / v, r, partner);
    } else if (which >= 5) {
      V inv;
      vlog_pair_reciprocal(v, V(1.0) / v, v, r, partner, inv);
      if (which == 6) r = inv;
    } else {
      r = which == 0 ? vdigamma(v) : which == 1 ? vlog(v) : vlog1p(v);
    }
    r.store(op + i, count);
  }
  return out;
}

// (value, d/dmu, d/dtheta (empty without need), positions whose value, d/dmu, d/dtheta is
// not certified): the float64 ZTNB kernel of ztnb_float64.h on float64 k, mu, theta; an
// empty list where an input is invalid or the kernel is not built in
// (ZTNB_FLOAT64_AVAILABLE).
std::vector<Tensor> ztnb_float64(const Tensor& k, const Tensor& mu, const Tensor& theta,
                                 bool need) {
  for (const auto* t : {&k, &mu, &theta}) {
    TORCH_CHECK(t->device().is_cpu() && t->is_contiguous() && t->dim() == 1 &&
                    t->scalar_type() == at::kDouble && t->numel() == k.numel(),
                "ztnb_float64: contiguous 1-D float64 CPU tensors of one length are required");
  }
  if (!ZTNB_FLOAT64_AVAILABLE) return {};
  const auto n = k.numel();
  Tensor value = at::empty({n}, k.options());
  Tensor d_mu = at::empty({need ? n : 0}, k.options());
  Tensor d_theta = at::empty({need ? n : 0}, k.options());
  std::vector<ZtnbFloat64Flags> flags(chunk_count(n));
#if ZT_ZTNB_FLOAT64
  const double* kp = k.data_ptr<double>();
  const double* mp = mu.data_ptr<double>();
  const double* tp = theta.data_ptr<double>();
  double* vp = value.data_ptr<double>();
  double* dmp = d_mu.data_ptr<double>();
  double* dtp = d_theta.data_ptr<double>();
  for_chunks(n, [&](int64_t c, int64_t begin, int64_t end) {
    ztnb_float64_loop(kp, mp, tp, need, vp, dmp, dtp, flags[c], begin, end);
  });
#endif
  return with_positions({value, d_mu, d_theta}, flags,
                        {&ZtnbFloat64Flags::value, &ZtnbFloat64Flags::d_mu,
                         &ZtnbFloat64Flags::d_theta});
}

// log_dd of ztp_float64.h element by element, for the tests: (2, n), hi then lo; x in
// [2^-500, 2^500]
Tensor log_double_double(const Tensor& x, const Tensor& log_table) {
  check(x, "x");
  TORCH_CHECK(x.scalar_type() == at::kDouble, "x must be float64");
  const LogTable t = log_table_of(log_table);
  const int64_t n = x.numel();
  auto out = at::empty({2, n}, x.options());
  const double* xp = x.data_ptr<double>();
  double* op = out.data_ptr<double>();
  for (int64_t i = 0; i < n; i += V1::size()) {
    const int count = static_cast<int>(std::min<int64_t>(V1::size(), n - i));
    double buf[V1::size()];
    std::fill(buf, buf + V1::size(), 1.0);
    std::copy(xp + i, xp + i + count, buf);
    const DD1 r = log_dd(V1::loadu(buf), t);
    r.hi.store(op + i, count);
    r.lo.store(op + n + i, count);
  }
  return out;
}

// glibc's long double log, log1p, expm1 or lgamma of ztnb_float64.h, for the tests: (2, n),
// the result as hi then lo; an empty tensor where the ZTNB kernel is not built in
Tensor long_double_elementwise(const std::string& name, const Tensor& x) {
  check(x, "x");
  TORCH_CHECK(x.scalar_type() == at::kDouble, "x must be float64");
  const int which = name == "log" ? 0 : name == "log1p" ? 1 : name == "expm1" ? 2
                    : name == "lgamma" ? 3 : -1;
  TORCH_CHECK(which >= 0, "unknown function ", name);
#if ZT_ZTNB_FLOAT64
  auto out = at::empty({2, x.numel()}, x.options());
  zt::long_double_function(which, x.data_ptr<double>(), out.data_ptr<double>(),
                           out.data_ptr<double>() + x.numel(), x.numel());
  return out;
#else
  return at::empty({0}, x.options());
#endif
}

// double_double.h's expm1, exp, log or log1p of hi + lo (float64 tensors of one length),
// for the tests: (2, n), hi then lo
Tensor double_double_elementwise(const std::string& name, const Tensor& hi, const Tensor& lo) {
  check(hi, "hi");
  check(lo, "lo");
  TORCH_CHECK(hi.scalar_type() == at::kDouble && lo.scalar_type() == at::kDouble &&
                  hi.numel() == lo.numel(),
              "hi and lo must be float64 tensors of one length");
  const int which = name == "expm1" ? 0 : name == "exp" ? 1 : name == "log" ? 2
                    : name == "log1p" ? 3 : -1;
  TORCH_CHECK(which >= 0, "unknown function ", name);
  const int64_t n = hi.numel();
  auto out = at::empty({2, n}, hi.options());
  const double* hp = hi.data_ptr<double>();
  const double* lp = lo.data_ptr<double>();
  double* op = out.data_ptr<double>();
  for (int64_t i = 0; i < n; ++i) {
    const D2 a = {hp[i], lp[i]};
    const D2 r = which == 0 ? dd_expm1(a) : which == 1 ? dd_exp(a) : which == 2 ? dd_log(a)
                 : dd_log1p(a);
    op[i] = r.hi;
    op[n + i] = r.lo;
  }
  return out;
}

// the float64 ZTNB kernel's second tier (ztnb_float64.h) on float64 k, mu, theta, for the
// tests: (3, n), value, d/dmu, d/dtheta where it certifies them, NaN elsewhere; an empty
// tensor where the ZTNB kernel is not built in
Tensor ztnb_second_tier(const Tensor& k, const Tensor& mu, const Tensor& theta) {
  for (const auto* t : {&k, &mu, &theta}) {
    TORCH_CHECK(t->device().is_cpu() && t->is_contiguous() && t->dim() == 1 &&
                    t->scalar_type() == at::kDouble && t->numel() == k.numel(),
                "ztnb_second_tier: contiguous 1-D float64 CPU tensors of one length are "
                "required");
  }
#if ZT_ZTNB_FLOAT64
  auto out = at::empty({3, k.numel()}, k.options());
  second_tier(k.data_ptr<double>(), mu.data_ptr<double>(), theta.data_ptr<double>(),
              out.data_ptr<double>(), k.numel());
  return out;
#else
  return at::empty({0}, k.options());
#endif
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("ztnb_screen", &ztnb_screen);
  m.def("ztp_screen", &ztp_screen);
  m.def("ztp_float64", &ztp_float64);
  m.def("ztnb_float64", &ztnb_float64);
  m.attr("ztnb_float64_available") = ZTNB_FLOAT64_AVAILABLE;
  m.def("elementwise", &elementwise);
  m.def("log_double_double", &log_double_double);
  m.def("long_double_function", &long_double_elementwise);
  m.def("double_double_function", &double_double_elementwise);
  m.def("ztnb_second_tier", &ztnb_second_tier);
  m.attr("lanes") = L;
  m.attr("log_table_step") = LOG_TABLE_STEP;
  m.attr("log_table_offset") = LOG_TABLE_OFFSET;
  m.attr("log_table_size") = LOG_TABLE_SIZE;
}
