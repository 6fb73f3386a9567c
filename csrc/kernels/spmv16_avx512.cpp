// AVX-512 build of the batch-1 row and column forms (this file alone is compiled with -mavx512f -mavx512bw
// -mavx512vl -mavx512dq -mfma -mbmi2; registry.cpp calls it only where the CPU has them).
//
// Sixteen entries per step instead of one: a 256-bit load of sixteen 16-bit entries widened to
// 32-bit lanes, the index and the code split by one AND and one shift, the codebook read by a
// register shuffle (vpermps for <= 4-bit codes, vpermi2ps for 5-bit: the whole codebook lives
// in one or two registers), the inputs by one vgatherdps from the tile's block of x (L1), and
// one FMA. A segment's tail (its length is a multiple of four entries) is masked: lanes past the
// segment load no entry and gather nothing. On the AVX2 machines this was not worth it (an
// 8-lane gather alone costs ~11 cycles on Zen 3); on the AVX-512 Xeons gathers are cheap enough.
//
// Column form: sixteen entries of one column's run decoded per step (for codes of <= 5 bits the
// codebook is multiplied by the column's input once per column, 16 or 32 products in registers,
// so a product is one shuffle; wider codes gather the codebook and multiply), then added into y
// by scalar read-add-writes (see col_scatter16).
#include <immintrin.h>

#include <cstdint>

#include "kernels/spmv16.hpp"

namespace dcrt {
namespace {

// The codebook in registers: lookup(code) for code_bits <= 5, else a gather from memory.
struct Codebook512 {
  __m512 lo, hi;
  const float* mem;
  uint32_t bits;
  explicit Codebook512(const float* cb, uint32_t code_bits) : mem(cb), bits(code_bits) {
    const uint32_t n = 1u << code_bits;
    lo = _mm512_maskz_loadu_ps(__mmask16(n >= 16 ? 0xFFFF : (1u << n) - 1), cb);
    hi = n > 16 ? _mm512_maskz_loadu_ps(__mmask16(n >= 32 ? 0xFFFF : (1u << (n - 16)) - 1), cb + 16)
                : _mm512_setzero_ps();
  }
};

template <int Kind>  // 0: <= 4 bits (vpermps), 1: 5 bits (vpermi2ps), 2: gather
inline __m512 lookup(const Codebook512& c, __m512i code, __mmask16 m) {
  if constexpr (Kind == 0) return _mm512_permutexvar_ps(code, c.lo);
  else if constexpr (Kind == 1) return _mm512_permutex2var_ps(c.lo, code, c.hi);
  else return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, code, c.mem, 4);
}

// One row's segment: sum of codebook[code] * xt[index] over [e, end) (a multiple of 4 entries).
template <int Kind>
inline float row_dot16(const uint16_t* e, const uint16_t* end, const float* xt, const Codebook512& c,
                       __m512i imask, __m128i shift) {
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  for (; e + 32 <= end; e += 32) {  // two independent chains hide the gathers' latency
    const __m512i v0 = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(e)));
    const __m512i v1 = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(e + 16)));
    const __m512 x0 = _mm512_i32gather_ps(_mm512_and_si512(v0, imask), xt, 4);
    const __m512 x1 = _mm512_i32gather_ps(_mm512_and_si512(v1, imask), xt, 4);
    a0 = _mm512_fmadd_ps(lookup<Kind>(c, _mm512_srl_epi32(v0, shift), 0xFFFF), x0, a0);
    a1 = _mm512_fmadd_ps(lookup<Kind>(c, _mm512_srl_epi32(v1, shift), 0xFFFF), x1, a1);
  }
  while (e < end) {  // 16 at a time, the last one masked
    const uint32_t n = uint32_t(end - e) < 16 ? uint32_t(end - e) : 16;
    const __mmask16 m = __mmask16((1u << n) - 1);
    const __m512i v = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, e));
    const __m512 x = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, _mm512_and_si512(v, imask), xt, 4);
    a0 = _mm512_mask3_fmadd_ps(lookup<Kind>(c, _mm512_srl_epi32(v, shift), m), x, a0, m);
    e += n;
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

template <int Kind>
void rows_avx512(const QTiles16& w, const float* x, float* y, uint32_t p0, uint32_t p1) {
  const Codebook512 c(w.codebook, w.code_bits);
  const __m512i imask = _mm512_set1_epi32(int32_t((1u << w.field_bits) - 1));
  const __m128i shift = _mm_cvtsi32_si128(int32_t(w.field_bits));
  for (uint32_t k = 0; k < w.tiles; ++k) {
    const float* xt = x + size_t(k) * w.tile;
    const uint32_t* gp = w.gptr + size_t(k) * (w.lines + 1);
    const uint32_t* ord = w.order + size_t(k) * w.rows;
    for (uint32_t p = p0; p < p1; ++p)
      y[ord[p]] += row_dot16<Kind>(w.entries + size_t(gp[p]) * kGroup, w.entries + size_t(gp[p + 1]) * kGroup, xt,
                                   c, imask, shift);
  }
}

// One column's run in one row tile: yt[index] += codebook[code] * xv. Sixteen entries are
// decoded at a time (index, and the product by a shuffle of the premultiplied codebook or a
// gather and a multiply), then added into y one by one: 16 scattered lanes cost more as one
// vscatterdps than as 16 scalar read-add-writes on Zen 4 (measured 0.5-0.6x). Fillers add 0.
template <int Kind>
inline void col_scatter16(const uint16_t* e, const uint16_t* end, float xv, float* yt, const Codebook512& c,
                          __m512i imask, __m128i shift) {
  const __m512 xb = _mm512_set1_ps(xv);
  Codebook512 cx = c;  // Kind 0/1: the codebook times xv, looked up directly
  if constexpr (Kind < 2) {
    cx.lo = _mm512_mul_ps(c.lo, xb);
    cx.hi = _mm512_mul_ps(c.hi, xb);
  }
  alignas(64) uint32_t ix[16];
  alignas(64) float pr[16];
  while (e < end) {
    const uint32_t n = uint32_t(end - e) < 16 ? uint32_t(end - e) : 16;  // a multiple of 4
    const __mmask16 t = __mmask16((1u << n) - 1);
    const __m512i v = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(t, e));
    const __m512i code = _mm512_srl_epi32(v, shift);
    _mm512_store_si512(ix, _mm512_and_si512(v, imask));
    if constexpr (Kind < 2) _mm512_store_ps(pr, lookup<Kind>(cx, code, t));
    else _mm512_store_ps(pr, _mm512_mul_ps(lookup<2>(c, code, t), xb));
    for (uint32_t j = 0; j < n; j += 4) {
      yt[ix[j]] += pr[j];
      yt[ix[j + 1]] += pr[j + 1];
      yt[ix[j + 2]] += pr[j + 2];
      yt[ix[j + 3]] += pr[j + 3];
    }
    e += n;
  }
}

template <int Kind>
void cols_avx512(const QTiles16& w, const float* x, const uint32_t* live, uint32_t nlive, float* y, uint32_t t0,
                 uint32_t t1) {
  const Codebook512 c(w.codebook, w.code_bits);
  const __m512i imask = _mm512_set1_epi32(int32_t((1u << w.field_bits) - 1));
  const __m128i shift = _mm_cvtsi32_si128(int32_t(w.field_bits));
  for (uint32_t k = t0; k < t1; ++k) {
    float* yt = y + size_t(k) * w.tile;
    const uint32_t* gp = w.gptr + size_t(k) * (w.lines + 1);
    for (uint32_t i = 0; i < nlive; ++i) {
      const uint32_t col = live[i];
      col_scatter16<Kind>(w.entries + size_t(gp[col]) * kGroup, w.entries + size_t(gp[col + 1]) * kGroup, x[col],
                          yt, c, imask, shift);
    }
  }
}

}  // namespace

void spmv_cols_q_t16__avx512(const QTiles16& w, const float* x, const uint32_t* live, uint32_t nlive, float* y,
                             uint32_t t0, uint32_t t1) {
  if (w.code_bits <= 4) cols_avx512<0>(w, x, live, nlive, y, t0, t1);
  else if (w.code_bits == 5) cols_avx512<1>(w, x, live, nlive, y, t0, t1);
  else cols_avx512<2>(w, x, live, nlive, y, t0, t1);
}

void spmv_rows_q_t16__avx512(const QTiles16& w, const float* x, float* y, uint32_t p0, uint32_t p1) {
  if (w.code_bits <= 4) rows_avx512<0>(w, x, y, p0, p1);
  else if (w.code_bits == 5) rows_avx512<1>(w, x, y, p0, p1);
  else rows_avx512<2>(w, x, y, p0, p1);
}

bool cpu_has_avx512() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("bmi2");
#else
  return false;
#endif
}

}  // namespace dcrt
