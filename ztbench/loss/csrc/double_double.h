// Double-double arithmetic (a value as hi + lo, two doubles, ~106 bits): the error-free
// transforms on vectors and on scalars, and scalar +, *, / and expm1, exp, log, log1p
// for the second tier of the float64 ZTNB kernel (ztnb_float64.h). Included by
// ztp_float64.h and ztnb_float64.h; the build's -ffp-contract=off keeps each + and *
// rounded on its own, as the transforms require.
//
// The scalar functions' errors (tests/loss/test_fused_float64.py measures each against
// mpmath, well within):
//   dd_expm1: within 2^-99 relative (|x| <= 700);
//   dd_exp: within 2^-99 relative (-670 <= x <= 700: below, 2^n (1 + t) leaves its low
//     part subnormal);
//   dd_log: within 2^-99 absolute plus 2^-104 relative (-700 <= log a <= 665);
//   dd_log1p: within 2^-99 relative (z > -1/2, log1p(z) <= 700).
// +, *, / of double-doubles: within 2^-103 relative of the result.
#pragma once

#include <cmath>
#include <cstdint>

#include "common.h"

namespace zt {

// ------------------------------------------------------------------ error-free transforms
// on single vectors (V1), on packs (V) and on scalars (double) alike

template <typename T>
struct DDT {
  T hi, lo;
};
using DD1 = DDT<V1>;
using DD = DDT<V>;
using D2 = DDT<double>;

// a * b + c rounded once
ZT_INLINE V1 fma1(const V1& a, const V1& b, const V1& c) {
#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
  return at::vec::fmadd(a, b, c);  // the vfmadd instruction
#else
  // ATen's portable fmadd is a * b + c, rounded twice: std::fma lane by lane
  double x[V1::size()], y[V1::size()], z[V1::size()];
  a.store(x);
  b.store(y);
  c.store(z);
  for (int j = 0; j < V1::size(); ++j) x[j] = std::fma(x[j], y[j], z[j]);
  return V1::loadu(x);
#endif
}

ZT_INLINE V fma1(const V& a, const V& b, const V& c) {
  V r;
  for (int i = 0; i < N; ++i) r[i] = fma1(a[i], b[i], c[i]);
  return r;
}

ZT_INLINE double fma1(double a, double b, double c) { return std::fma(a, b, c); }

template <typename T>
ZT_INLINE T negated(const T& a) {
  return a.neg();
}

ZT_INLINE double negated(double a) { return -a; }

// a b = hi + lo exactly
template <typename T>
ZT_INLINE DDT<T> two_prod(const T& a, const T& b) {
  const T p = a * b;
  return {p, fma1(a, b, negated(p))};
}

// a + b = hi + lo exactly (Knuth)
template <typename T>
ZT_INLINE DDT<T> two_sum(const T& a, const T& b) {
  const T s = a + b, bb = s - a;
  return {s, (a - (s - bb)) + (b - bb)};
}

// a + b = hi + lo exactly, for |a| >= |b| (Dekker)
template <typename T>
ZT_INLINE DDT<T> fast_two_sum(const T& a, const T& b) {
  const T s = a + b;
  return {s, b - (s - a)};
}

// ------------------------------------------------------------------ scalar arithmetic

ZT_INLINE D2 dd(double a) { return {a, 0.0}; }
ZT_INLINE D2 operator-(const D2& a) { return {-a.hi, -a.lo}; }

// a + b within 3 2^-106 |a + b| (the two parts summed separately: no loss where they
// cancel)
ZT_INLINE D2 operator+(const D2& a, const D2& b) {
  D2 s = two_sum(a.hi, b.hi);
  const D2 t = two_sum(a.lo, b.lo);
  s = fast_two_sum(s.hi, s.lo + t.hi);
  return fast_two_sum(s.hi, s.lo + t.lo);
}

ZT_INLINE D2 operator-(const D2& a, const D2& b) { return a + (-b); }

// a b within ~2^-103 |a b| (the cross products rounded on their own)
ZT_INLINE D2 operator*(const D2& a, const D2& b) {
  const D2 p = two_prod(a.hi, b.hi);
  return fast_two_sum(p.hi, p.lo + (a.hi * b.lo + a.lo * b.hi));
}

// a / b within ~2^-103 |a/b|: three quotient digits, each from the remainder of the last
ZT_INLINE D2 operator/(const D2& a, const D2& b) {
  const double q1 = a.hi / b.hi;
  D2 r = a - b * dd(q1);
  const double q2 = r.hi / b.hi;
  r = r - b * dd(q2);
  const double q3 = r.hi / b.hi;
  const D2 q = fast_two_sum(q1, q2);
  return q + dd(q3);
}

ZT_INLINE D2 ldexp_dd(const D2& a, int e) { return {std::ldexp(a.hi, e), std::ldexp(a.lo, e)}; }

// ------------------------------------------------------------------ scalar functions

// ln 2 in three parts (each the rounding of what the previous leave): with n LN2_A and
// n LN2_B formed exactly by two_prod, n ln 2 is within ~2^-150 (x = n ln 2 + r below)
constexpr double LN2_A = 0x1.62e42fefa39efp-1;
constexpr double LN2_B = 0x1.abc9e3b39803fp-56;
constexpr double LN2_C = 0x1.7b57a079a1934p-111;

// 1/n! as hi + lo (to 2^-107 relative), n = 2..11
constexpr double INV_FACTORIAL[10][2] = {
    {0x1.0000000000000p-1, 0.0},
    {0x1.5555555555555p-3, 0x1.5555555555555p-57},
    {0x1.5555555555555p-5, 0x1.5555555555555p-59},
    {0x1.1111111111111p-7, 0x1.1111111111111p-63},
    {0x1.6c16c16c16c17p-10, -0x1.f49f49f49f49fp-65},
    {0x1.a01a01a01a01ap-13, 0x1.a01a01a01a01ap-73},
    {0x1.a01a01a01a01ap-16, 0x1.a01a01a01a01ap-76},
    {0x1.71de3a556c734p-19, -0x1.c154f8ddc6c00p-73},
    {0x1.27e4fb7789f5cp-22, 0x1.cbbc05b4fa99ap-76},
    {0x1.ae64567f544e4p-26, -0x1.c062e06d1f209p-80},
};
constexpr int EXP_HALVINGS = 6;

// e^x = 2^n (1 + t): returns t = e^r - 1 with r = x - n ln 2, n = round(x/ln 2)
// (|r| <= ln2/2), for |x.hi| <= 700. e^s - 1 by its Taylor series at s = r/2^6
// (|s| < 2^-7.5; through s^11/11!, the first omitted term < 2^-111 |s|), then six
// doublings e^(2s) - 1 = t (t + 2), each at most doubling t's relative error: within
// ~2^-100 of e^r - 1, relative (tiny r included: no 1 + t is formed before the end).
ZT_INLINE D2 exp_reduced(const D2& x, int& n) {
  n = static_cast<int>(std::nearbyint(x.hi * 0x1.71547652b82fep0));  // x / ln 2
  D2 r = x;
  if (n != 0) {
    const double nd = n;
    r = ((x - two_prod(nd, LN2_A)) - two_prod(nd, LN2_B)) - dd(nd * LN2_C);
  }
  const D2 s = ldexp_dd(r, -EXP_HALVINGS);
  D2 p = {INV_FACTORIAL[9][0], INV_FACTORIAL[9][1]};
  for (int i = 8; i >= 0; --i) p = p * s + D2{INV_FACTORIAL[i][0], INV_FACTORIAL[i][1]};
  D2 t = s + s * s * p;
  for (int i = 0; i < EXP_HALVINGS; ++i) t = t * (t + dd(2.0));
  return t;
}

// e^x - 1, relative, |x.hi| <= 700 (for x < -670, 2^n (1 + t) - 1 is -1 to ~2^-106)
ZT_INLINE D2 dd_expm1(const D2& x) {
  int n;
  const D2 t = exp_reduced(x, n);
  if (n == 0) return t;
  return ldexp_dd(t + dd(1.0), n) - dd(1.0);  // |e^x - 1| > 0.29: no cancellation
}

// e^x, relative, -670 <= x.hi <= 700
ZT_INLINE D2 dd_exp(const D2& x) {
  int n;
  const D2 t = exp_reduced(x, n);
  return ldexp_dd(t + dd(1.0), n);
}

// log a for a > 0 (a.hi normal, -700 <= log a <= 665, e^-y0 within dd_exp's range):
// y0 = log(a.hi) (float64), then
// log a = y0 + log1p(t), t = a e^-y0 - 1 (|t| < 2^-43, so log1p(t) = t - t^2/2 to
// 2^-129): t's error is e^-y0's, ~2^-100 absolute.
ZT_INLINE D2 dd_log(const D2& a) {
  const double y0 = std::log(a.hi);
  const D2 t = a * dd_exp(dd(-y0)) - dd(1.0);
  return dd(y0) + (t - dd(0.5 * t.hi * t.hi));
}

// log(1 + z) for z > -1/2 (log1p(z) <= 700): y0 = log1p(z.hi), then log1p(z) = y0 +
// log1p(t), t = (z - expm1(y0)) / (1 + expm1(y0)): z - expm1(y0) ~ 2^-53 z is formed from
// two quantities within ~2^-100 of z, so the result is within ~2^-99 of itself however
// small z is.
ZT_INLINE D2 dd_log1p(const D2& z) {
  const double y0 = std::log1p(z.hi);
  const D2 e = dd_expm1(dd(y0));
  const D2 t = (z - e) / (e + dd(1.0));
  return dd(y0) + (t - dd(0.5 * t.hi * t.hi));
}

}  // namespace zt
