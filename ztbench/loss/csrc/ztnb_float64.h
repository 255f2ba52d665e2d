// The ZTNB loss in float64 on the CPU as one fused pass, each element certified by a
// bound on its error or flagged (included by csrc/screen.cpp; ztbench/loss/fused.py
// describes the Python side):
//
//   value    = lgamma(theta) - lgamma(k + theta) + k log1p(theta/mu) + log(expm1(w))
//   d/dmu    = k/(theta + mu) - k/mu + theta/(theta + mu) / (1 - e^-w)
//   d/dtheta = psi(theta) - psi(k + theta) + k/(theta + mu)
//              + (log1p(mu/theta) - mu/(theta + mu)) / (1 - e^-w)
//
// with w = theta log1p(mu/theta), log(expm1(w)) = w + log(1 - e^-w), evaluated in the
// x87 extended format (long double, 64-bit significand: 11 bits more than float64) with
// glibc's long double functions; for w > 1, d/dtheta in the form of
// ztbench/loss/kernels.ztnb that cancels its logs analytically (its terms are then of the
// result's order). Each quantity carries a bound on its error (Bounded: a running error
// analysis), each library function allowed a few of its ulps (below), lgamma and psi
// absolutely near their zeros. The value is
// certified where the bound is <= 3u|value| (with the rounding to float64, within 4 ulp),
// each derivative where it is <= 15u|d| (16 ulp); u = 2^-53. Outputs it does not certify
// are recomputed in double-double for k <= 16 (the second tier, below), and those still
// not certified are flagged for the pure-torch careful kernels and their double-double
// refinement. It checks the loss's validity rules in the same pass and stops at an
// invalid element.
//
// For k <= DIRECT_K_MAX, lgamma(k + theta) - lgamma(theta) = log(prod_{i<k} (theta + i))
// and psi(k + theta) - psi(theta) = sum_{i<k} 1/(theta + i), kept as one fraction num/den
// with den the same product: one log and one division, and no cancellation between two
// large lgammas. Above, lgammal_r (glibc's thread-safe lgamma) and psi by recurrence to
// x >= 16 and de Moivre's series.
//
// Where long double has no more precision than double (MSVC, some ARM ABIs) or glibc is
// absent, the kernel is not built in (ZTNB_FLOAT64_AVAILABLE false) and the loss keeps the
// pure-torch path.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common.h"
#include "double_double.h"

#if defined(__GLIBC__) && LDBL_MANT_DIG >= 64
#define ZT_ZTNB_FLOAT64 1
#else
#define ZT_ZTNB_FLOAT64 0
#endif

namespace zt {

constexpr bool ZTNB_FLOAT64_AVAILABLE = ZT_ZTNB_FLOAT64;

// positions of the elements whose value, d/dmu or d/dtheta is not certified; valid: false
// once an input is invalid (the loop then stops)
struct ZtnbFloat64Flags {
  std::vector<int64_t> value, d_mu, d_theta;
  bool valid = true;
};

#if ZT_ZTNB_FLOAT64

using LD = long double;
constexpr LD R = 0x1p-64L;  // the unit roundoff of long double
// allowances of glibc's long double functions, relative (lgamma: of max(|lgamma|, 1)):
// 2 of their ulps for log and log1p, 4 for expm1, 8 for lgamma; tests/loss/
// test_fused_float64.py measures each against mpmath well within
constexpr LD FN_LOG = 0x1p-62L;
constexpr LD FN_EXPM1 = 0x1p-61L;
constexpr LD FN_LGAMMA = 0x1p-60L;
constexpr int DIRECT_K_MAX = 16;

// A long double value and a bound on its absolute error, propagated to first order
// through each operation (a running error analysis): the bound of a result is the
// operands' bounds times the operation's sensitivity plus its own rounding (R |result|,
// or the allowance of a library function).
struct Bounded {
  LD v, e;
};

ZT_INLINE Bounded exact(LD v) { return {v, 0.0L}; }

ZT_INLINE Bounded operator+(const Bounded& a, const Bounded& b) {
  const LD v = a.v + b.v;
  return {v, a.e + b.e + R * std::fabs(v)};
}

ZT_INLINE Bounded operator-(const Bounded& a, const Bounded& b) {
  const LD v = a.v - b.v;
  return {v, a.e + b.e + R * std::fabs(v)};
}

ZT_INLINE Bounded operator*(const Bounded& a, const Bounded& b) {
  const LD v = a.v * b.v;
  return {v, std::fabs(a.v) * b.e + std::fabs(b.v) * a.e + a.e * b.e + R * std::fabs(v)};
}

ZT_INLINE Bounded operator/(const Bounded& a, const Bounded& b) {
  const LD v = a.v / b.v, den = std::fabs(b.v) - b.e;  // |b| >= den over b's interval
  return {v, den > 0 ? (a.e + std::fabs(v) * b.e) / den + R * std::fabs(v) : INFINITY};
}

// log1p, log, 1 - e^-x: the function's own allowance plus the input's bound times the
// largest derivative over the input's interval
ZT_INLINE Bounded log1p_b(const Bounded& a) {
  const LD v = std::log1p(a.v), low = 1.0L + a.v - a.e;
  return {v, FN_LOG * std::fabs(v) + (low > 0 ? a.e / low : INFINITY)};
}

ZT_INLINE Bounded log_b(const Bounded& a) {
  const LD v = std::log(a.v), low = a.v - a.e;
  return {v, FN_LOG * std::fabs(v) + (low > 0 ? a.e / low : INFINITY)};
}

// (for a >= 0 with a bound below 1/2: e^(e - a) <= (1 - v)(1 + 2e))
ZT_INLINE Bounded one_minus_exp_neg_b(const Bounded& a) {
  const LD v = -std::expm1(-a.v);
  return {v, FN_EXPM1 * v + a.e * (1.0L - v) * (1.0L + 2.0L * a.e)};
}

// log1p(t) - t for t > -1: its series within |t| <= 1/16 (no cancellation), the
// difference beyond (at most 33-fold cancellation, which the bound carries)
constexpr int LOG1PMX_TERMS = 19;  // t^2 .. t^20: the first omitted term is < 2^-66 t^2/2

struct Log1pmxCoefficients {
  LD c[LOG1PMX_TERMS];  // (-1)^(n+1)/n for n = 2 .. 20
  constexpr Log1pmxCoefficients() : c() {
    for (int n = 2; n < LOG1PMX_TERMS + 2; ++n) c[n - 2] = ((n % 2) ? 1.0L : -1.0L) / n;
  }
};
constexpr Log1pmxCoefficients LOG1PMX;

ZT_INLINE Bounded log1pmx_b(const Bounded& t) {
  if (std::fabs(t.v) > 0.0625L) return log1p_b(t) - t;
  // its rounding within 4R of the sum (terms falling 16-fold), plus the input's bound
  // times |d/dt| = |t/(1 + t)| <= 16|t|/15 (interval widened by e)
  LD acc = LOG1PMX.c[LOG1PMX_TERMS - 1];
  for (int n = LOG1PMX_TERMS - 2; n >= 0; --n) acc = acc * t.v + LOG1PMX.c[n];
  const LD v = acc * t.v * t.v;
  return {v, 4.0L * R * std::fabs(v) + t.e * 1.07L * (std::fabs(t.v) + t.e)};
}

// lgamma and psi, absolute allowance near their zeros; the input's bound times the
// derivative's bound |psi(x)| <= |log x| + 1/x, |psi'(x)| <= 1/x + 1/x^2
ZT_INLINE Bounded lgamma_b(const Bounded& a) {
  int sign;
  const LD v = lgammal_r(a.v, &sign);
  return {v, FN_LGAMMA * (std::fabs(v) + 1.0L) + a.e * (std::fabs(std::log(a.v)) + 1.0L / a.v)};
}

// psi(x), x > 0: psi(x) = psi(x + m) - sum_{i<m} 1/(x + i) with x + m >= 16, then
// log z - 1/(2z) - sum_{n=1}^{8} B_2n / (2n z^2n) (first omitted term below 2^-70);
// allowance 2^-59 of |psi| plus the shift's sum (whose terms it adds with ~2 roundings
// each)
ZT_INLINE Bounded digamma_b(const Bounded& a) {
  LD x = a.v, shift = 0.0L;
  while (x < 16.0L) {
    shift += 1.0L / x;
    x += 1.0L;
  }
  const LD z2 = 1.0L / (x * x);
  const LD series =
      z2 * (1.0L / 12 -
            z2 * (1.0L / 120 -
                  z2 * (1.0L / 252 -
                        z2 * (1.0L / 240 -
                              z2 * (1.0L / 132 -
                                    z2 * (691.0L / 32760 - z2 * (1.0L / 12 - z2 * 3617.0L / 8160)))))));
  const LD tail = std::log(x) - 0.5L / x - series, v = tail - shift;
  const LD e = 0x1p-59L * (std::fabs(tail) + 2.0L * shift + 1.0L) +
               a.e * (1.0L / a.v + 1.0L / (a.v * a.v));
  return {v, e};
}

// glibc's long double log, log1p, expm1 or lgamma element by element, for the tests: the
// result as hi + lo (two doubles)
inline void long_double_function(int which, const double* x, double* hi, double* lo, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    int sign;
    const LD a = x[i];
    const LD v = which == 0 ? std::log(a) : which == 1 ? std::log1p(a)
                 : which == 2 ? std::expm1(a) : lgammal_r(a, &sign);
    hi[i] = static_cast<double>(v);
    lo[i] = static_cast<double>(v - static_cast<LD>(hi[i]));
  }
}

// within goal_u u of r (false at NaN, and where r overflows float64)
ZT_INLINE bool certified(const Bounded& r, LD goal_u) {
  const LD size = std::fabs(r.v);
  return size <= static_cast<LD>(DBL_MAX) && r.e <= goal_u * 0x1p-53L * size;
}

// ------------------------------------------------------------------ the second tier
//
// Where the long double pass does not certify an output (its terms cancel by ~2^8 or
// more: the value's and the derivatives' zero crossings), the output is recomputed in
// double-double (double_double.h) for k <= DIRECT_K_MAX and mu in [2^-400, 2^400], theta
// in [2^-400, 2^56] (products, quotients and logs then stay far from over- and underflow,
// and within the ranges of double_double.h: log of the product <= 16 * 56 ln 2 < 622):
//
//   value    = k log1p(theta/mu) - log(prod_{j<k} (theta + j)) + w + log(1 - e^-w)
//   d/dmu    = k/s - k/mu + theta/(s (1 - e^-w))
//   d/dtheta = k/s - sum_{j<k} 1/(theta + j) + (log1p(x) - mu/s)/(1 - e^-w)
//
// with s = mu + theta (exact, two_sum), x = mu/theta, w = theta log1p(x), 1 - e^-w =
// -expm1(-w) (1 for w > 700, where e^-w < 2^-1000). Every term is within ~2^-97 of
// itself, logs within 2^-99 absolute besides (double_double.h's functions within 2^-99,
// +, *, / within 2^-103; 1 - e^-w takes w's relative error times w/(e^w - 1) <= 1; log(1 -
// e^-w) adds 1 - e^-w's relative error as absolute), so the error of a result is below
// 2^-97 (M + k + 2), M the sum of the magnitudes of its terms (for d/dtheta, log1p(x) +
// mu/s over 1 - e^-w for the last); the derivatives' terms carry relative errors only,
// below 2^-97 M. The bounds taken are eight times those: 2^-94 (M + k + 4) for the value,
// 2^-94 M for the derivatives; an output is certified as in the long double pass (bound
// <= 3u resp. 15u of the result). Elements it does not certify keep their flag (the
// pure-torch double-double forms and the last resort).

constexpr double TIER_ERROR = 0x1p-94;

ZT_INLINE bool second_tier_applies(double k, double mu, double theta) {
  return k <= DIRECT_K_MAX && mu >= 0x1p-400 && mu <= 0x1p400 && theta >= 0x1p-400 &&
         theta <= 0x1p56;
}

// the pieces the three outputs share
struct TierShared {
  D2 s, lx, w, em1;  // mu + theta, log1p(x), w, 1 - e^-w
};

ZT_INLINE TierShared tier_shared(double mu, double theta) {
  const D2 lx = dd_log1p(dd(mu) / dd(theta));
  const D2 w = lx * dd(theta);
  return {two_sum(mu, theta), lx, w, w.hi > 700.0 ? dd(1.0) : -dd_expm1(-w)};
}

// r rounded to out where the bound TIER_ERROR magnitude is <= goal_u u |r| (as certified)
ZT_INLINE bool tier_certified(const D2& r, double magnitude, double goal_u, double& out) {
  const double v = r.hi + r.lo;
  if (!(std::fabs(v) <= DBL_MAX && TIER_ERROR * magnitude <= goal_u * 0x1p-53 * std::fabs(v)))
    return false;
  out = v;
  return true;
}

ZT_INLINE bool tier_value(double k, double mu, double theta, const TierShared& t, double& out) {
  const D2 l1 = dd_log1p(dd(theta) / dd(mu));
  D2 prod = dd(theta);
  for (int j = 1; j < static_cast<int>(k); ++j) prod = prod * two_sum(theta, static_cast<double>(j));
  const D2 g = dd_log(prod), le = dd_log(t.em1), kl1 = l1 * dd(k);
  const double m = std::fabs(kl1.hi) + std::fabs(g.hi) + std::fabs(t.w.hi) + std::fabs(le.hi);
  return tier_certified(((kl1 - g) + t.w) + le, m + k + 4.0, 3.0, out);
}

ZT_INLINE bool tier_d_mu(double k, double mu, double theta, const TierShared& t, double& out) {
  const D2 a = dd(k) / t.s, b = dd(k) / dd(mu), c = dd(theta) / (t.s * t.em1);
  return tier_certified((a - b) + c, a.hi + b.hi + c.hi, 15.0, out);
}

ZT_INLINE bool tier_d_theta(double k, double mu, double theta, const TierShared& t, double& out) {
  D2 f = dd(0.0);
  for (int j = 0; j < static_cast<int>(k); ++j) f = f + dd(1.0) / two_sum(theta, static_cast<double>(j));
  const D2 a = dd(k) / t.s, y = dd(mu) / t.s, q = (t.lx - y) / t.em1;
  const double m = f.hi + a.hi + (t.lx.hi + y.hi) / t.em1.hi;
  return tier_certified((a - f) + q, m, 15.0, out);
}

// The second tier on one element: each output still open (open: value, d/dmu, d/dtheta)
// recomputed, written to out where certified and then closed; nothing where it does not
// apply.
ZT_INLINE void second_tier(double k, double mu, double theta, bool open[3],
                           double* const out[3]) {
  if (!(open[0] || open[1] || open[2]) || !second_tier_applies(k, mu, theta)) return;
  const TierShared t = tier_shared(mu, theta);
  if (open[0]) open[0] = !tier_value(k, mu, theta, t, *out[0]);
  if (open[1]) open[1] = !tier_d_mu(k, mu, theta, t, *out[1]);
  if (open[2]) open[2] = !tier_d_theta(k, mu, theta, t, *out[2]);
}

// the second tier element by element, for the tests: (3, n), value, d/dmu, d/dtheta where
// certified, NaN where not or where the tier does not apply
inline void second_tier(const double* kp, const double* mp, const double* tp, double* out,
                        int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    double* const r[3] = {out + i, out + n + i, out + 2 * n + i};
    for (double* p : r) *p = NAN;
    bool open[3] = {true, true, true};
    second_tier(kp[i], mp[i], tp[i], open, r);
  }
}

// The loop over [begin, end): results rounded once to float64, flags where the bound does
// not certify them (within goal_u - 1/2 ulp, so that the rounding stays within the goal).
inline void ztnb_float64_loop(const double* kp, const double* mp, const double* tp, bool need,
                              double* vp, double* dmp, double* dtp, ZtnbFloat64Flags& flags,
                              int64_t begin, int64_t end) {
  const Bounded one = exact(1.0L);
  for (int64_t i = begin; i < end; ++i) {
    // the loss's validity rules: k an integer >= 1, finite; mu, theta finite and > 0
    const double kd = kp[i], md = mp[i], td = tp[i];
    if (!(kd >= 1.0 && kd == std::floor(kd) && kd < INFINITY && md > 0.0 && md < INFINITY &&
          td > 0.0 && td < INFINITY)) {
      flags.valid = false;
      return;
    }
    const Bounded k = exact(kd), mu = exact(md), th = exact(td);
    const Bounded x = mu / th, lx = log1p_b(x), w = th * lx;
    const Bounded em1 = one_minus_exp_neg_b(w);
    // g = lgamma(k + theta) - lgamma(theta), f = psi(k + theta) - psi(theta)
    Bounded g, f;
    if (k.v <= DIRECT_K_MAX) {
      Bounded num = exact(0.0L), den = one;
      for (int j = 0; j < static_cast<int>(k.v); ++j) {
        const Bounded t = th + exact(j);
        num = num * t + den;
        den = den * t;
      }
      g = log_b(den);
      f = num / den;
    } else {
      const Bounded kt = k + th;
      g = lgamma_b(kt) - lgamma_b(th);
      f = digamma_b(kt) - digamma_b(th);
    }
    // value = k log1p(theta/mu) - g + w + log(1 - e^-w)
    const Bounded value = ((k * log1p_b(one / x) - g) + w) + log_b(em1);
    vp[i] = static_cast<double>(value.v);
    // value, d/dmu, d/dtheta not certified yet
    bool open[3] = {!certified(value, 3.0L), false, false};
    if (need) {
      const Bounded s = th + mu, a = k / s, inv = one / em1;
      const Bounded d_mu = (a - k / mu) + (th / s) * inv;
      dmp[i] = static_cast<double>(d_mu.v);
      open[1] = !certified(d_mu, 15.0L);
      const Bounded y = mu / s, sx = lx - y;  // s(x) = log1p(x) - x/(1 + x)
      Bounded d_theta;
      if (w.v > 1.0L) {
        // psi(theta) - psi(k + theta) + log1p(k/theta) - log1pmx(t) + s(x)/expm1(w),
        // t = (k - mu)/(theta + mu): the logs of the digamma difference, k/(theta + mu) and
        // s(x) cancelled analytically (ztbench.loss.kernels.ztnb)
        const Bounded t = (k - mu) / s;
        // s(x)/expm1(w) = s(x) e^-w / (1 - e^-w), e^-w = 1 - em1 (1 - e^-w < 1 - 1/e:
        // within e-fold of em1's relative bound)
        d_theta = ((log1p_b(k / th) - f) - log1pmx_b(t)) + sx * (one - em1) * inv;
      } else {
        d_theta = (a - f) + sx * inv;
      }
      dtp[i] = static_cast<double>(d_theta.v);
      open[2] = !certified(d_theta, 15.0L);
    }
    double* const out[3] = {vp + i, need ? dmp + i : nullptr, need ? dtp + i : nullptr};
    second_tier(kd, md, td, open, out);
    if (open[0]) flags.value.push_back(i);
    if (open[1]) flags.d_mu.push_back(i);
    if (open[2]) flags.d_theta.push_back(i);
  }
}

#endif

}  // namespace zt
