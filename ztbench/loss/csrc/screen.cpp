// The float32 screen of the shipped loss as one fused CPU pass (built by
// torch.utils.cpp_extension, loaded by ztbench/loss/fused.py).
//
// The same formulas and the same error bound as ztbench/loss/screened.py (read its module
// docstring first): the plain formula in float64 on float32 inputs, each element kept
// where the bound certifies its float32 rounding within 0.5 + 1/8 ulp (margin
// S - K |r| <= 0 for the value and each derivative), and flagged otherwise, for the
// careful kernels to recompute. One pass over memory instead of dozens: the inputs are
// read once, every intermediate stays in vector registers, the outputs are written once;
// chunks of 2^15 elements run on torch's intra-op threads.
//
// Vectorised with ATen's Vectorized<double> (lgamma, exp, tanh from SLEEF inside
// libtorch), four vectors per step, built for the CPU capability torch runs with.
// Compiled with -ffp-contract=off: the bound's error model is that of separately rounded
// operations.
//
// log is written out below (fdlibm's reduction and polynomial, within 1 ulp; SLEEF's
// vector log cost four times as much here), and log1p is Kahan's log(1 + x) x /
// ((1 + x) - 1) over it, within a few u, where a vector log1p costs as much as two logs;
// the bound allows 16 u per function. tests/loss/test_fused.py measures both.
//
// digamma has no vector form in ATen: psi(x) = psi(x + m) - sum_{i<m} 1/(x + i), with m
// the steps that bring x to >= 8 and the sum kept as one fraction num/den (one division),
// then de Moivre's series log z - 1/(2z) - sum_{n=1}^{7} B_2n / (2n z^2n), whose first
// omitted term at z = 8 is below 2^-60. tests/loss/test_fused.py measures it against
// mpmath within the bound's allowance.

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

// the small vector helpers inlined into the loops (GCC and Clang: an out-of-line call
// passes the 4-vector packs through memory)
#if defined(__GNUC__)
#define ZT_INLINE inline __attribute__((always_inline))
#else
#define ZT_INLINE inline
#endif

namespace {

using at::Tensor;
// N independent vectors per step: each function's dependency chain (a division, a
// polynomial) is long, and N interleaved chains keep the vector units busy
constexpr int N = 4;
using V1 = at::vec::Vectorized<double>;
using V = at::vec::VectorizedN<double, N>;
constexpr int L = V::size();  // lanes per step
using Lanes = uint64_t;       // a bit per lane
static_assert(L <= 64, "a lane mask must fit in 64 bits");

// a bit per lane where the lane of a comparison's result is false (all bits zero)
ZT_INLINE Lanes false_lanes(const V& mask) {
  Lanes bits = 0;
  for (int i = 0; i < N; ++i) {
    bits |= static_cast<Lanes>(static_cast<uint32_t>(mask[i].zero_mask())) << (i * V1::size());
  }
  return bits;
}

constexpr Lanes first_lanes(int count) {
  return count >= 64 ? ~Lanes{0} : (Lanes{1} << count) - 1;
}

constexpr double K_COND = 262144.0;  // 2^18, screened.K_COND
constexpr double EXP_FORM_MIN = 0.25;  // screened._EXP_FORM_MIN

// log x within 1 ulp on [2^-500, 2^500], which holds every argument the kernel forms from
// valid inputs (parameters and their ratios within 2^+-300, 1 - e^-w >= 2^-450, digamma's
// x >= 8); other lanes (0, negatives, infinities, NaN) take the capability's own log.
// The classic reduction: x = 2^e m with m in [sqrt(2)/2, sqrt(2)) read off the bits,
// f = m - 1 (exact), and
//   log x = e ln2_hi - ((f^2/2 - (s (f^2/2 + R(s^2)) + e ln2_lo)) - f),  s = f / (2 + f),
// where R is the degree-7 minimax polynomial of fdlibm's log on |s| <= 0.1716 (its
// published coefficients), ln2_hi ends in 21 zero bits (e ln2_hi is exact for |e| < 2^11)
// and ln2_lo carries the rest of ln 2; fdlibm bounds the error below 1 ulp.
struct LogParts {
  V1 e, f;  // x = 2^e (1 + f), f in [sqrt(2)/2 - 1, sqrt(2) - 1)
};

ZT_INLINE LogParts log_reduce(V1 x) {
  using I = at::vec::Vectorized<int64_t>;
  const I bits = at::vec::cast<int64_t>(x);
  // bits - bits(sqrt(2)/2), shifted by 512 binades so that the exponent field stays >= 0
  const I q = (bits - I(0x3fe6a09e667f3bcdLL) + I(int64_t{512} << 52)) >> I(52);  // e + 512
  const V1 m = at::vec::cast<double>(bits - ((q - I(512)) << I(52)));
  const V1 e = at::vec::cast<double>(q | I(0x4330000000000000LL)) - V1(0x1p52 + 512.0);
  return {e, m - V1(1.0)};
}

// log x from its parts and s = f / (2 + f) (within a few u: s only enters the small term
// s (f^2/2 + R), at most 2^-6 of log x's size)
ZT_INLINE V1 log_finish(V1 x, const LogParts& p, V1 s) {
  const V1 f = p.f, e = p.e;
  const V1 hfsq = V1(0.5) * f * f, z = s * s, w = z * z;
  const V1 t1 = w * (V1(3.999999999940941908e-01) +
                     w * (V1(2.222219843214978396e-01) + w * V1(1.531383769920937332e-01)));
  const V1 t2 = z * (V1(6.666666666666735130e-01) +
                     w * (V1(2.857142874366239149e-01) +
                          w * (V1(1.818357216161805012e-01) + w * V1(1.479819860511658591e-01))));
  const V1 r = e * V1(6.93147180369123816490e-01) -
               ((hfsq - (s * (hfsq + t2 + t1) + e * V1(1.90821492927058770002e-10))) - f);
  const V1 inside = (x >= V1(0x1p-500)) & (x <= V1(0x1p500));  // false at NaN
  return inside.zero_mask() == 0 ? r : V1::blendv(x.log(), r, inside);
}

ZT_INLINE V vlog(const V& x) {
  V r;
  for (int i = 0; i < N; ++i) {
    const LogParts p = log_reduce(x[i]);
    r[i] = log_finish(x[i], p, p.f / (V1(2.0) + p.f));
  }
  return r;
}

// log a and log b over one division: 1 / ((2 + f_a)(2 + f_b)) gives both quotients s
ZT_INLINE void vlog_pair(const V& a, const V& b, V& log_a, V& log_b) {
  for (int i = 0; i < N; ++i) {
    const LogParts pa = log_reduce(a[i]), pb = log_reduce(b[i]);
    const V1 da = V1(2.0) + pa.f, db = V1(2.0) + pb.f, q = V1(1.0) / (da * db);
    log_a[i] = log_finish(a[i], pa, pa.f * db * q);
    log_b[i] = log_finish(b[i], pb, pb.f * da * q);
  }
}

// log(1 + x), x > -1, from log u, u = 1 + x rounded: Kahan's log(u) x / (u - 1) (the
// quotient x / (u - 1) undoes u's rounding to first order; x itself where u = 1)
ZT_INLINE V log1p_from(const V& log_u, const V& u, const V& x) {
  const V d = u - V(1.0);
  return V::blendv(log_u * (x / d), x, d == V(0.0));
}

ZT_INLINE V vlog1p(V x) {
  const V u = x + V(1.0);
  return log1p_from(vlog(u), u, x);
}

// log1p a and log1p b, their logs over one division (vlog_pair)
void vlog1p_pair(const V& a, const V& b, V& log1p_a, V& log1p_b) {
  const V ua = a + V(1.0), ub = b + V(1.0);
  vlog_pair(ua, ub, log1p_a, log1p_b);
  log1p_a = log1p_from(log1p_a, ua, a);
  log1p_b = log1p_from(log1p_b, ub, b);
}

V vdigamma(V x) {
  const V eight(8.0), one(1.0);
  V num(0.0), den(1.0);
  for (int i = 0; i < 8; ++i) {
    const V small = x < eight;
    num = V::blendv(num, num * x + den, small);
    den = V::blendv(den, den * x, small);
    x = V::blendv(x, x + one, small);
  }
  const V z2 = one / (x * x);
  const V series =
      V(1.0 / 12.0) -
      z2 * (V(1.0 / 120.0) -
            z2 * (V(1.0 / 252.0) -
                  z2 * (V(1.0 / 240.0) -
                        z2 * (V(1.0 / 132.0) - z2 * (V(691.0 / 32760.0) - z2 * V(1.0 / 12.0))))));
  return vlog(x) - V(0.5) / x - z2 * series - num / den;
}

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

// Loads L elements from i (the last block repeats element 0 past the end); a full block
// converts in one loop the compiler vectorises.
template <typename T>
ZT_INLINE V load(const T* p, int64_t i, int count) {
  double buf[L];
  if (count == L) {
    for (int j = 0; j < L; ++j) buf[j] = static_cast<double>(p[i + j]);
  } else {
    for (int j = 0; j < L; ++j) buf[j] = static_cast<double>(p[i + (j < count ? j : 0)]);
  }
  return V::loadu(buf);
}

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
  const Lanes open = false_lanes(mg <= V(0.0)) & first_lanes(count);
  if (open == 0) return;
  for (int j = 0; j < count; ++j) {
    if (open & (Lanes{1} << j)) o.rejected->push_back(i + j);
  }
}

// The eager path's validity rules (ztbench/loss/validation.py, eager.screened_kernel):
// k an integer >= 1, finite; a natural parameter finite and > 0; exp of a log-parameter
// > 0 and < 2^128 (eager.NAT_MAX). Lanes past the end repeat element 0.
ZT_INLINE bool valid_k(V k) {
  const V ok = (k >= V(1.0)) & (k == k.floor()) & (k < V(INFINITY));
  return false_lanes(ok) == 0;
}

ZT_INLINE bool valid_param(V p, bool is_log) {
  const V ok = (p > V(0.0)) & (p < V(is_log ? 0x1p128 : INFINITY));
  return false_lanes(ok) == 0;
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

template <typename KT>
void ztp_loop(const KT* kp, const float* lp, bool log_lam, bool need, bool full, Out& o,
              int64_t begin, int64_t end) {
  const V one(1.0);
  for (int64_t i = begin; i < end; i += L) {
    const int count = static_cast<int>(std::min<int64_t>(L, end - i));
    const V k = load(kp, i, count);
    const V lam = natural(load(lp, i, count), log_lam);
    if (!(valid_k(k) && valid_param(lam, log_lam))) {
      o.valid = false;
      return;
    }
    const V em1 = one_minus_exp_neg(lam);
    V log_lam_, log_em1;
    vlog_pair(lam, em1, log_lam_, log_em1);
    V value = lam - k * log_lam_ + log_em1;
    V size = lam + k * log_lam_.abs() - log_em1;
    if (full) add_log_factorial(k, value, size);
    V mg = margin(value, size);
    V d[2];
    if (need) {
      // 1/em1 - k/lam over one division: (lam - k em1) / (lam em1), whose rounding
      // errors are a few u of (lam + k em1) / (lam em1) = 1/em1 + k/lam, the size bounded
      const V inv = one / (lam * em1), k_em1 = k * em1;
      d[0] = (lam - k_em1) * inv;
      mg = at::vec::maximum(mg, margin(d[0], (lam + k_em1) * inv));
      if (log_lam) d[0] = d[0] * lam;
    }
    store(o, i, count, value, d, need ? 1 : 0, mg);
  }
}

// body(out, begin, end) over chunks of 2^15 elements (a multiple of L), in parallel on
// torch's intra-op threads; each chunk collects its own rejected positions and validity,
// joined in chunk order, so the result does not depend on the number of threads.
template <typename F>
void in_chunks(Out& o, int64_t n, const F& body) {
  constexpr int64_t CHUNK = int64_t{1} << 15;
  const int64_t chunks = (n + CHUNK - 1) / CHUNK;
  std::vector<std::vector<int64_t>> rejected(chunks);
  std::vector<char> valid(chunks, 1);
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      Out local = o;
      local.rejected = &rejected[c];
      body(local, c * CHUNK, std::min(n, (c + 1) * CHUNK));
      valid[c] = local.valid;
    }
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

// (value, [d/dlam,] rejected), as ztnb_screen
std::vector<Tensor> ztp_screen(const Tensor& k, const Tensor& lam, bool log_lam, bool need,
                               bool full, bool value64) {
  check(k, "k");
  check(lam, "lam");
  TORCH_CHECK(lam.scalar_type() == at::kFloat, "lam must be float32");
  const auto n = k.numel();
  TORCH_CHECK(lam.numel() == n, "k, lam: one length");
  std::vector<Tensor> keep;
  std::vector<int64_t> rejected;
  Out o = outputs(lam, 1, need, value64, keep, rejected);
  const float* l = lam.data_ptr<float>();
  AT_DISPATCH_ALL_TYPES_AND3(at::kBFloat16, at::kHalf, at::kBool, k.scalar_type(), "ztp_screen", [&] {
    const scalar_t* kp = k.data_ptr<scalar_t>();
    in_chunks(o, n, [&](Out& out, int64_t b, int64_t e) {
      ztp_loop(kp, l, log_lam, need, full, out, b, e);
    });
  });
  return finish(o, keep, rejected);
}

// The kernel's own digamma, log or log1p element by element (float64 in and out), for
// the tests; log_pair and log1p_pair: log or log1p of x computed in a pair with 1/x.
Tensor elementwise(const std::string& name, const Tensor& x) {
  check(x, "x");
  TORCH_CHECK(x.scalar_type() == at::kDouble, "x must be float64");
  const int which = name == "digamma" ? 0 : name == "log" ? 1 : name == "log1p" ? 2
                    : name == "log_pair" ? 3 : name == "log1p_pair" ? 4 : -1;
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
    } else {
      r = which == 0 ? vdigamma(v) : which == 1 ? vlog(v) : vlog1p(v);
    }
    r.store(op + i, count);
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("ztnb_screen", &ztnb_screen);
  m.def("ztp_screen", &ztp_screen);
  m.def("elementwise", &elementwise);
  m.attr("lanes") = L;
}
