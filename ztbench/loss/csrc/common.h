// Vector primitives shared by the fused kernels (csrc/screen.cpp includes this file):
// ATen's Vectorized<double> in packs of N vectors, lane masks, a 1-ulp log and Kahan's
// log1p over it, digamma, and loads that convert any element type to double.
//
// log is written out below (fdlibm's reduction and polynomial, within 1 ulp; SLEEF's
// vector log cost four times as much here), and log1p is Kahan's log(1 + x) x /
// ((1 + x) - 1) over it, within a few u, where a vector log1p costs as much as two logs;
// the float32 screen's bound allows 16 u per function. tests/loss/test_fused.py measures
// both.
//
// digamma has no vector form in ATen: psi(x) = psi(x + m) - sum_{i<m} 1/(x + i), with m
// the steps that bring x to >= 8 and the sum kept as one fraction num/den (one division),
// then de Moivre's series log z - 1/(2z) - sum_{n=1}^{7} B_2n / (2n z^2n), whose first
// omitted term at z = 8 is below 2^-60. tests/loss/test_fused.py measures it against
// mpmath within the bound's allowance.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace zt {
// the small vector helpers inlined into the loops (GCC and Clang: an out-of-line call
// passes the 4-vector packs through memory)
#if defined(__GNUC__)
#define ZT_INLINE inline __attribute__((always_inline))
// a loop with everything it calls inlined (its body is too large for the compiler's own
// inlining limits, which then leave even ATen's one-line constructors as calls)
#define ZT_FLATTEN __attribute__((flatten))
#else
#define ZT_INLINE inline
#define ZT_FLATTEN
#endif

// N independent vectors per step: each function's dependency chain (a division, a
// polynomial) is long, and N interleaved chains keep the vector units busy
constexpr int N = 4;
using V1 = at::vec::Vectorized<double>;
using V = at::vec::VectorizedN<double, N>;
constexpr int L = V::size();  // lanes per step
using Lanes = uint64_t;       // a bit per lane
static_assert(L <= 64, "a lane mask must fit in 64 bits");

// a bit per lane where the lane of a comparison's result is false (all bits zero), for a
// pack of doubles (V) or of floats (the narrow loop's)
template <typename P>
ZT_INLINE Lanes false_lanes(const P& mask) {
  using W = at::vec::Vectorized<typename P::value_type>;
  static_assert(P::size() <= 64, "a lane mask must fit in 64 bits");
  Lanes bits = 0;
  for (int i = 0; i < P::size() / W::size(); ++i) {
    bits |= static_cast<Lanes>(static_cast<uint32_t>(mask[i].zero_mask())) << (i * W::size());
  }
  return bits;
}

constexpr Lanes first_lanes(int count) {
  return count >= 64 ? ~Lanes{0} : (Lanes{1} << count) - 1;
}


// log x within 1 ulp on [2^-500, 2^500], which holds every argument the kernel forms from
// valid inputs (parameters and their ratios within 2^+-300, 1 - e^-w >= 2^-450, digamma's
// x >= 8); other lanes (0, negatives, infinities, NaN) take the capability's own log.
// The classic reduction: x = 2^e m with m in [sqrt(2)/2, sqrt(2)) read off the bits,
// f = m - 1 (exact), and
//   log x = e ln2_hi - ((f^2/2 - (s (f^2/2 + R(s^2)) + e ln2_lo)) - f),  s = f / (2 + f),
// where R is the degree-7 minimax polynomial of fdlibm's log on |s| <= 0.1716 (its
// published coefficients), ln2_hi ends in 21 zero bits (e ln2_hi is exact for |e| < 2^11)
// and ln2_lo carries the rest of ln 2; fdlibm bounds the error below 1 ulp.
// ln 2 = LN2_HI + LN2_LO (fdlibm's split: LN2_HI ends in 21 zero bits, so e LN2_HI is exact
// for |e| < 2^11)
constexpr double LN2_HI = 6.93147180369123816490e-01;
constexpr double LN2_LO = 1.90821492927058770002e-10;

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
// s (f^2/2 + R), at most 2^-6 of log x's size). Written over whole packs (each operation
// on the N vectors in turn), so that the N polynomial chains interleave.
ZT_INLINE V log_finish(const V& x, const V& e, const V& f, const V& s) {
  const V hfsq = V(0.5) * f * f, z = s * s, w = z * z;
  const V t1 = w * (V(3.999999999940941908e-01) +
                    w * (V(2.222219843214978396e-01) + w * V(1.531383769920937332e-01)));
  const V t2 = z * (V(6.666666666666735130e-01) +
                    w * (V(2.857142874366239149e-01) +
                         w * (V(1.818357216161805012e-01) + w * V(1.479819860511658591e-01))));
  const V r = e * V(LN2_HI) - ((hfsq - (s * (hfsq + t2 + t1) + e * V(LN2_LO))) - f);
  const V inside = (x >= V(0x1p-500)) & (x <= V(0x1p500));  // false at NaN
  return false_lanes(inside) == 0 ? r : V::blendv(x.log(), r, inside);
}

// the parts (e, f) of each lane of x (log_reduce on each vector)
ZT_INLINE void log_reduce(const V& x, V& e, V& f) {
  for (int i = 0; i < N; ++i) {
    const LogParts p = log_reduce(x[i]);
    e[i] = p.e;
    f[i] = p.f;
  }
}

ZT_INLINE V vlog(const V& x) {
  V e, f;
  log_reduce(x, e, f);
  return log_finish(x, e, f, f / (V(2.0) + f));
}

// log a and log b over one division: 1 / ((2 + f_a)(2 + f_b)) gives both quotients s
ZT_INLINE void vlog_pair(const V& a, const V& b, V& log_a, V& log_b) {
  V ea, fa, eb, fb;
  log_reduce(a, ea, fa);
  log_reduce(b, eb, fb);
  const V da = V(2.0) + fa, db = V(2.0) + fb, q = V(1.0) / (da * db);
  log_a = log_finish(a, ea, fa, fa * db * q);
  log_b = log_finish(b, eb, fb, fb * da * q);
}

// log a, log b and 1/c over one division: q = 1/((2 + f_a)(2 + f_b) c) gives both of
// vlog_pair's quotients (q c, a few u from 1/((2 + f_a)(2 + f_b))) and 1/c = (2 + f_a)
// (2 + f_b) q (within a few u). A c whose product underflows or overflows gives NaN logs,
// which the callers' bounds reject.
ZT_INLINE void vlog_pair_reciprocal(const V& a, const V& b, const V& c, V& log_a, V& log_b,
                                    V& inv_c) {
  V ea, fa, eb, fb;
  log_reduce(a, ea, fa);
  log_reduce(b, eb, fb);
  const V da = V(2.0) + fa, db = V(2.0) + fb, dab = da * db;
  const V q = V(1.0) / (dab * c), qc = q * c;
  log_a = log_finish(a, ea, fa, fa * db * qc);
  log_b = log_finish(b, eb, fb, fb * da * qc);
  inv_c = dab * q;
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
inline void vlog1p_pair(const V& a, const V& b, V& log1p_a, V& log1p_b) {
  const V ua = a + V(1.0), ub = b + V(1.0);
  vlog_pair(ua, ub, log1p_a, log1p_b);
  log1p_a = log1p_from(log1p_a, ua, a);
  log1p_b = log1p_from(log1p_b, ub, b);
}

inline V vdigamma(V x) {
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

// Loads a pack (V by default) from i, converted to its element type (the last block
// repeats element 0 past the end); a full block converts in one loop the compiler
// vectorises.
template <typename P = V, typename T>
ZT_INLINE P load(const T* p, int64_t i, int count) {
  using E = typename P::value_type;
  constexpr int n = P::size();
  E buf[n];
  if (count == n) {
    for (int j = 0; j < n; ++j) buf[j] = static_cast<E>(p[i + j]);
  } else {
    for (int j = 0; j < n; ++j) buf[j] = static_cast<E>(p[i + (j < count ? j : 0)]);
  }
  return P::loadu(buf);
}

// i + j for each bit j set in bits, appended to `to` (the positions of a step's lanes)
ZT_INLINE void push_lanes(std::vector<int64_t>& to, int64_t i, Lanes bits) {
  for (int j = 0; bits; ++j, bits >>= 1) {
    if (bits & 1) to.push_back(i + j);
  }
}

// The eager path's validity rules (ztbench/loss/validation.py, eager.screened_kernel):
// k an integer >= 1, finite; a natural parameter finite and > 0; exp of a log-parameter
// > 0 and < 2^128 (eager.NAT_MAX). Every lane is checked: load() repeats element 0 past
// the end. Packs of doubles or floats.
template <typename P>
ZT_INLINE bool valid_k(const P& k) {
  const P ok = (k >= P(1.0)) & (k == k.floor()) & (k < P(INFINITY));
  return false_lanes(ok) == 0;
}

template <typename P>
ZT_INLINE bool valid_param(const P& p, bool is_log) {
  // (2^128 by ldexp: no float holds it, and ldexp gives inf there where a cast is undefined)
  using E = typename P::value_type;
  const P ok = (p > P(0.0)) & (p < P(is_log ? std::ldexp(E(1), 128) : E(INFINITY)));
  return false_lanes(ok) == 0;
}

// Chunks of 2^15 elements (a multiple of L), small enough to stay in cache.
constexpr int64_t CHUNK = int64_t{1} << 15;

inline int64_t chunk_count(int64_t n) { return (n + CHUNK - 1) / CHUNK; }

// body(c, begin, end) for each chunk c of [0, n), in parallel on torch's intra-op threads.
template <typename F>
void for_chunks(int64_t n, const F& body) {
  at::parallel_for(0, chunk_count(n), 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) body(c, c * CHUNK, std::min(n, (c + 1) * CHUNK));
  });
}

}  // namespace zt
