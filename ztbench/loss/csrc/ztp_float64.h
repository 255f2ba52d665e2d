// The ZTP loss in float64 as one fused CPU pass, each element certified by a bound on its
// error or flagged (included by csrc/screen.cpp; ztbench/loss/fused.py describes the
// Python side):
//
//   value  = -k log(lam) + log(expm1(lam))
//   d/dlam = -k/lam + 1/(1 - e^-lam)
//
// in the forms of ztbench/loss/kernels.ztp:
//
//   lam >= 1: value = lam - k log(lam) + log(1 - e^-lam)
//             d/dlam = (lam - k)/lam + e^-lam / (1 - e^-lam)
//   lam < 1:  value = log(1 + s) - (k - 1) log(lam), s = expm1(lam)/lam - 1
//                   = sum_{n>=1} lam^n/(n+1)!  (both terms >= 0: no cancellation)
//             d/dlam = q(lam) - (k - 1)/lam, q(x) = 1/(1 - e^-x) - 1/x by its Bernoulli
//             series
//
// The value cancels at its zero crossings (k log(lam) against log(expm1(lam))), where a
// float64 sum of float64 terms is off by many ulp; here log(lam) and the second log (of
// 1 - e^-lam or 1 + s, each formed exactly as two floats) are double-double (log_dd:
// Tang's table method, within 2^-64 relative), c log(lam) (c = k or k - 1) is formed
// exactly by two_prod, and the sum is taken in double-double and rounded once. Then the
// result is within a few ulp unless the terms cancel by ~2^10 or more.
//
// The bound E adds the allowance of each term (its error as analysed below, with margin)
// and of the roundings of the double-double sum. The value is certified where
// E <= 3u|value| (with the final rounding, within 4 ulp), d/dlam where E <= 15u|d/dlam|
// (16 ulp); u = 2^-53. Flagged elements go to the double-double refinement
// (ztbench/loss/dd/ztp.py); lam outside [2^-500, 2^500] and k >= 2^53 are left to the
// pure-torch kernels. It checks the loss's validity rules in the same pass and stops at an
// invalid element. tests/loss/test_fused_float64.py measures log_dd against mpmath and
// holds the certified results to their goals.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "common.h"
#include "double_double.h"

namespace zt {

constexpr double U = 0x1p-53;        // unit roundoff of float64
constexpr double EPS_LOG = 0x1p-66;  // log_dd's allowance (relative; see log_dd)
// added to every bound: a term near the subnormal range (e^-lam past lam ~ 708) loses
// relative accuracy, so a result that small is never certified
constexpr double TINY = 0x1p-1070;

// ------------------------------------------------------------------ double-double log

// r_j = 1/(1 + j/128) rounded to float64 and -log(r_j) = hi_j + lo_j (to ~2^-106), for
// j = -38..53 at index j + 38 (ztbench/loss/fused.py builds the table)
struct LogTable {
  const double* r;
  const double* hi;
  const double* lo;
};
constexpr double LOG_TABLE_STEP = 128.0;
constexpr int LOG_TABLE_OFFSET = 38;
constexpr int LOG_TABLE_SIZE = 92;

// log x = hi + lo within 2^-64 |log x|, for x in [2^-500, 2^500] (the caller's range).
// x = 2^e m, m in [sqrt(2)/2, sqrt(2)) (log_reduce); j = round(128 (m - 1)) picks r_j ~ 1/m,
// so that z = r_j m - 1, formed exactly as zh + zl (two_prod; r_j m - 1 is exact by
// Sterbenz), has |z| < 2^-7.5; then
//   log x = e ln2 - log r_j + log1p(z),  log1p(z) = z - z^2/2 + z^3 P(z) + zl/(1 + z),
// zl/(1 + z) ~ zl (1 - z + z^2) (|zl| <= 2^-53, the rest is < 2^-75),
// P the series through z^10 (the first omitted term, z^11/11, is < 2^-72 |z|), z - z^2/2
// in double-double, the rest in float64 (below 2^-14 |z|); ln2 = LN2_HI + LN2_LO with
// e LN2_HI exact. j = 0 has r = 1: near x = 1 the result is log1p(m - 1), relative.
// Error: below 2^-67 |log x| (the largest part is z^3 P(z)'s rounding, < 2^-75 against
// |log x| > 2^-8.1 wherever j != 0); tests/loss/test_fused.py measures < 2^-69.
template <typename T>
ZT_INLINE DDT<T> log_dd_finish(const T& e, const T& m, const T& r, const T& thi, const T& tlo) {
  const DDT<T> rm = two_prod(r, m);
  const T one(1.0), z = rm.hi - one, zl = rm.lo;  // z exact (Sterbenz)
  const DDT<T> sq = two_prod(z, z);
  const DDT<T> s = fast_two_sum(z, T(-0.5) * sq.hi);  // z - z^2/2
  T poly(-1.0 / 10.0);
  for (const double c : {1.0 / 9.0, -1.0 / 8.0, 1.0 / 7.0, -1.0 / 6.0, 1.0 / 5.0, -1.0 / 4.0,
                         1.0 / 3.0}) {
    poly = poly * z + T(c);
  }
  const T lo1 = ((s.lo - T(0.5) * sq.lo) + z * sq.hi * poly) + zl * ((one - z) + sq.hi);
  const DDT<T> a = two_sum(e * T(LN2_HI), thi);
  const DDT<T> b = two_sum(a.hi, s.hi);
  return fast_two_sum(b.hi, b.lo + (a.lo + (e * T(LN2_LO) + (tlo + lo1))));
}

// (e, m, r_j, hi_j, lo_j) of x, for log_dd_finish
struct LogDDParts {
  V1 e, m, r, thi, tlo;
};

ZT_INLINE LogDDParts log_dd_parts(const V1& x, const LogTable& t) {
  using I = at::vec::Vectorized<int64_t>;
  const LogParts p = log_reduce(x);
  // round(128 f) + 38 in the low bits of 2^52 + (128 f + 38), clamped (an argument
  // outside the range never reads outside the table)
  const V1 jf = p.f * V1(LOG_TABLE_STEP) + V1(0x1p52 + LOG_TABLE_OFFSET);
  const I j = at::vec::minimum(
      at::vec::maximum(at::vec::cast<int64_t>(jf) - I(0x4330000000000000LL), I(0)),
      I(LOG_TABLE_SIZE - 1));
  return {p.e, p.f + V1(1.0), at::vec::gather<8>(t.r, j), at::vec::gather<8>(t.hi, j),
          at::vec::gather<8>(t.lo, j)};
}

ZT_INLINE DD1 log_dd(const V1& x, const LogTable& t) {
  const LogDDParts p = log_dd_parts(x, t);
  return log_dd_finish(p.e, p.m, p.r, p.thi, p.tlo);
}

// log_dd on a pack: the table lookups vector by vector, the arithmetic on the pack (its
// N dependency chains interleaved)
ZT_INLINE DD log_dd(const V& x, const LogTable& t) {
  V e, m, r, thi, tlo;
  for (int i = 0; i < N; ++i) {
    const LogDDParts p = log_dd_parts(x[i], t);
    e[i] = p.e;
    m[i] = p.m;
    r[i] = p.r;
    thi[i] = p.thi;
    tlo[i] = p.tlo;
  }
  return log_dd_finish(e, m, r, thi, tlo);
}

// sum_{i<n} c[i] x^i by Horner's rule
ZT_INLINE V horner(const V& x, const double* c, int n) {
  V acc(c[n - 1]);
  for (int i = n - 2; i >= 0; --i) acc = acc * x + V(c[i]);
  return acc;
}

// ------------------------------------------------------------------ the ZTP kernel

struct ZtpFloat64Constants {
  LogTable log;
  const double* h;  // 1/(n+1)!, n = 1..nh: s(lam) = sum_n h[n-1] lam^n (h[0] = 1/2)
  int nh;
  const double* q;  // q(x) = 1/2 + x sum_i q[i] x^(2i)
  int nq;
};

// positions of the elements whose value or d/dlam is not certified, and of those outside
// the kernel's range; valid: false once an input is invalid (the loop then stops)
struct ZtpFloat64Flags {
  std::vector<int64_t> value, grad, outside;
  bool valid = true;
};

// e^-lam as hi + lo: hi = exp(-lam) (within 1 ulp), lo = hi d with d = -lam - log(hi)
// (log_dd; -lam - log_hi is exact by Sterbenz), so that hi + lo is within
// 2^-64 (lam + 1) relative, for lam <= EXP_DD_MAX (where hi >= 2^-433 is in log_dd's range);
// beyond, lo = 0 (hi within 1 ulp)
constexpr double EXP_DD_MAX = 300.0;

ZT_INLINE DD exp_neg_dd(const V& lam, const LogTable& t) {
  const V hi = lam.neg().exp();
  const V in_range = lam <= V(EXP_DD_MAX);
  const DD l = log_dd(V::blendv(V(1.0), hi, in_range), t);
  const V d = (lam.neg() - l.hi) - l.lo;
  return {hi, V::blendv(V(0.0), hi * d, in_range)};
}

ZT_FLATTEN inline void ztp_float64_loop(const double* kp, const double* lp, bool need,
                             const ZtpFloat64Constants& c, double* vp, double* dp,
                             ZtpFloat64Flags& flags, int64_t begin, int64_t end) {
  const V one(1.0), zero(0.0), u(U), tiny(TINY), eps_log(EPS_LOG);
  for (int64_t i = begin; i < end; i += L) {
    const int count = static_cast<int>(std::min<int64_t>(L, end - i));
    const Lanes present = first_lanes(count);
    V k = load(kp, i, count), lam = load(lp, i, count);
    if (!(valid_k(k) && valid_param(lam, false))) {
      flags.valid = false;
      return;
    }
    const V inside = (lam >= V(0x1p-500)) & (lam <= V(0x1p500)) & (k < V(0x1p53));
    lam = V::blendv(one, lam, inside);  // (a safe stand-in where outside)
    k = V::blendv(one, k, inside);
    const V big = lam >= one;
    const bool all_big = false_lanes(big) == 0;
    const DD log_lam = log_dd(lam, c.log);
    const DD e = exp_neg_dd(lam, c.log);
    V s_hi = zero, s_lo = zero, tail = zero;
    if (!all_big) {
      tail = lam * lam * horner(lam, c.h + 1, c.nh - 1);  // s - lam/2
      const DD s = fast_two_sum(V(0.5) * lam, tail);
      s_hi = s.hi;
      s_lo = s.lo;
    }
    // the second log: of 1 + y, y = -e^-lam (lam >= 1) or s (lam < 1), as arg.hi + arg.lo
    DD arg = two_sum(one, V::blendv(s_hi, e.hi.neg(), big));
    arg.lo = arg.lo + V::blendv(s_lo, e.lo.neg(), big);
    const V inv_arg = one / arg.hi;
    const DD lg = log_dd(arg.hi, c.log);
    const V g_hi = lg.hi, g_lo = lg.lo + arg.lo * inv_arg;
    // its allowance: the argument's error over the argument (e^-lam's, see exp_neg_dd; s
    // within 4u of its tail plus the series' truncation, below 2^-59 s), log_dd's, and
    // log(hi + lo) - log(hi) - lo/hi ~ -(lo/hi)^2/2, below 2^-105
    const V e_err = e.hi * V::blendv(V(2.0) * u, eps_log * (lam + one), lam <= V(EXP_DD_MAX));
    const V arg_err = V::blendv(V(4.0) * u * tail + V(0x1p-59) * s_hi, e_err, big);
    const V err_g = V(1.01) * arg_err * inv_arg + eps_log * g_hi.abs() + V(0x1p-104);
    // value = a - cf log(lam) + g: (a, cf) = (lam, k) for lam >= 1, (0, k - 1) below
    const V a = V::blendv(zero, lam, big), cf = V::blendv(k - one, k, big);
    DD cl = two_prod(cf, log_lam.hi);
    cl.lo = cl.lo + cf * log_lam.lo;
    const DD s1 = two_sum(a, cl.hi.neg());
    const DD s2 = two_sum(s1.hi, g_hi);
    const V value = s2.hi + (((s1.lo + s2.lo) - cl.lo) + g_lo);
    const V err_v = eps_log * cl.hi.abs() + err_g +
                    V(3.0) * u * (s1.lo.abs() + s2.lo.abs() + cl.lo.abs() + g_lo.abs()) + tiny;
    const Lanes outside = false_lanes(inside) & present;
    const Lanes open_v = false_lanes(err_v <= V(3.0) * u * value.abs());
    value.store(vp + i, count);
    push_lanes(flags.outside, i, outside);
    push_lanes(flags.value, i, open_v & present & ~outside);
    if (!need) continue;
    // lam >= 1: t1 + t2, t1 = (lam - k)/lam, t2 = e^-lam/(1 - e^-lam), each quotient a/b
    // as q + (a - q b)/b with the remainder by fma (double-double, within ~2^-104): the
    // error is e^-lam's, 2^-64 (lam + 1) relative (exp_neg_dd), over 1 - e^-lam
    const V inv_lam = one / lam;
    const DD diff = two_sum(lam, k.neg());
    const V q1 = diff.hi * inv_lam;
    const V r1 = (fma1(q1.neg(), lam, diff.hi) + diff.lo) * inv_lam;
    const V q2 = e.hi * inv_arg;
    const V r2 = ((fma1(q2.neg(), arg.hi, e.hi) + e.lo) - q2 * arg.lo) * inv_arg;
    const DD sum = two_sum(q1, q2);
    V d = sum.hi + (sum.lo + (r1 + r2));
    V err_d = V(1.01) * e_err * inv_arg * inv_arg +
              V(4.0) * u * (sum.lo.abs() + r1.abs() + r2.abs()) + V(0x1p-100) * (q1.abs() + q2.abs());
    if (!all_big) {
      // lam < 1: q within 2u (its series' terms fall by x^2/40 and more), (k - 1)/lam
      // within u (k = 1: d = q; k >= 2: (k - 1)/lam > 1 > q, no large cancellation)
      const V q = V(0.5) + lam * horner(lam * lam, c.q, c.nq), t = (k - one) / lam;
      d = V::blendv(q - t, d, big);
      err_d = V::blendv(V(3.0) * u * q + u * t.abs(), err_d, big);
    }
    const Lanes open_d = false_lanes(err_d + tiny <= V(15.0) * u * d.abs());
    d.store(dp + i, count);
    push_lanes(flags.grad, i, open_d & present & ~outside);
  }
}

}  // namespace zt
