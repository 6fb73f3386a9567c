// Dense codebook products in the precision modes (dense_q8.hpp), AVX-512: int8 on VNNI with
// VBMI byte lookups, bf16 on AVX512-BF16. Compiled with those flags; registry.cpp calls a
// kernel only where the CPU has its instructions (cpu_has_avx512_vnni_vbmi, cpu_has_avx512_bf16 in
// dense_q8.cpp: compiled without these flags).
#include <immintrin.h>

#include <algorithm>

#include "kernels/dense_q8.hpp"

namespace dcrt {
namespace {

// ---- int8: 64 codes per step. The code bytes index the int8 codebook by vpermb (<= 6 bits,
// one 64-entry register), vpermi2b (7 bits) or two vpermi2b and a blend on bit 7 (8 bits);
// vpdpbusd multiplies the u8 input by the s8 weights and sums each 4 into an int32 lane. Four
// rows share each input load: per 64 weights a code load, a lookup and a dot product per row.
template <int Kind>
inline __m512i i8_lookup(__m512i idx, const __m512i* t) {
  if constexpr (Kind == 0) return _mm512_permutexvar_epi8(idx, t[0]);
  else if constexpr (Kind == 1) return _mm512_permutex2var_epi8(t[0], idx, t[1]);
  else {
    const __m512i lo = _mm512_permutex2var_epi8(t[0], idx, t[1]), hi = _mm512_permutex2var_epi8(t[2], idx, t[3]);
    return _mm512_mask_blend_epi8(_mm512_movepi8_mask(idx), lo, hi);
  }
}

inline int64_t hsum_epi32(__m512i v) { return int64_t(_mm512_reduce_add_epi32(v)); }

// Packed codes (code_bits <= 7, 8 codes in code_bits bytes): per 64 codes a load of
// 8 * code_bits bytes, vpermb spreading each 8-code group into its own qword, vpmultishiftqb
// pulling code j's bits (at j * code_bits) into byte j. The bits above a code are left there:
// the lookup reads only the low 6 (vpermb) or 7 (vpermi2b) bits, and the table repeats the
// codebook every 2^code_bits entries below 6 bits.
template <int Kind, bool Packed>
void i8_rows(const QDense8& w, const QInputU8& x, float* y, uint32_t r0, uint32_t r1) {
  const uint32_t b = w.code_bits;
  alignas(64) int8_t tab[256];
  for (int k = 0; k < 256; ++k) tab[k] = w.qcodebook[Packed && b < 6 ? (k & ((1 << b) - 1)) : k];
  __m512i t[4];
  for (int k = 0; k < 4; ++k) t[k] = _mm512_load_si512(tab + 64 * k);
  alignas(64) uint8_t spread_b[64], shift_b[64];
  for (uint32_t g = 0; g < 8; ++g)
    for (uint32_t i = 0; i < 8; ++i) spread_b[8 * g + i] = uint8_t(g * b + i), shift_b[8 * g + i] = uint8_t(i * b);
  const __m512i spread = _mm512_load_si512(spread_b), shift = _mm512_load_si512(shift_b);
  const float s = x.scale * w.qscale;
  const size_t ldc = w.ldc;  // a multiple of 64; padded codes are 0 and weigh 0
  const size_t ld = Packed ? w.ldp : ldc, step = Packed ? 8 * b : 64;  // bytes per row, per 64 codes
  const uint8_t* base = Packed ? w.packed : w.codes;
  const auto codes = [&](const uint8_t* p) {
    const __m512i v = _mm512_loadu_si512(p);
    if constexpr (!Packed) return v;
    else return _mm512_multishift_epi64_epi8(shift, _mm512_permutexvar_epi8(spread, v));
  };
  const auto dp = [&](__m512i acc, __m512i xv, const uint8_t* p) {
    return _mm512_dpbusd_epi32(acc, xv, i8_lookup<Kind>(codes(p), t));
  };
  uint32_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    const uint8_t* c0 = base + size_t(r) * ld;
    // Two accumulators per row (even and odd steps): eight dependency chains.
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    size_t c = 0, o = 0;
    for (; c + 128 <= ldc; c += 128, o += 2 * step) {
      const __m512i xv = _mm512_loadu_si512(x.q + c), xw = _mm512_loadu_si512(x.q + c + 64);
      a0 = dp(a0, xv, c0 + o);
      a1 = dp(a1, xv, c0 + ld + o);
      a2 = dp(a2, xv, c0 + 2 * ld + o);
      a3 = dp(a3, xv, c0 + 3 * ld + o);
      b0 = dp(b0, xw, c0 + o + step);
      b1 = dp(b1, xw, c0 + ld + o + step);
      b2 = dp(b2, xw, c0 + 2 * ld + o + step);
      b3 = dp(b3, xw, c0 + 3 * ld + o + step);
    }
    if (c < ldc) {
      const __m512i xv = _mm512_loadu_si512(x.q + c);
      a0 = dp(a0, xv, c0 + o);
      a1 = dp(a1, xv, c0 + ld + o);
      a2 = dp(a2, xv, c0 + 2 * ld + o);
      a3 = dp(a3, xv, c0 + 3 * ld + o);
    }
    a0 = _mm512_add_epi32(a0, b0), a1 = _mm512_add_epi32(a1, b1), a2 = _mm512_add_epi32(a2, b2);
    a3 = _mm512_add_epi32(a3, b3);
    y[r] += dense_i8_out(hsum_epi32(a0), x.zero, w.qrowsum[r], s);
    y[r + 1] += dense_i8_out(hsum_epi32(a1), x.zero, w.qrowsum[r + 1], s);
    y[r + 2] += dense_i8_out(hsum_epi32(a2), x.zero, w.qrowsum[r + 2], s);
    y[r + 3] += dense_i8_out(hsum_epi32(a3), x.zero, w.qrowsum[r + 3], s);
  }
  for (; r < r1; ++r) {
    const uint8_t* c0 = base + size_t(r) * ld;
    __m512i a0 = _mm512_setzero_si512();
    for (size_t c = 0, o = 0; c < ldc; c += 64, o += step) a0 = dp(a0, _mm512_loadu_si512(x.q + c), c0 + o);
    y[r] += dense_i8_out(hsum_epi32(a0), x.zero, w.qrowsum[r], s);
  }
}

// ---- bf16: 32 codes per step widened to 16-bit lanes, looked up in the bf16 codebook by
// vpermw (<= 5 bits), vpermi2w (6 bits), or vpermi2w pairs blended on bits 6 and 7; vdpbf16ps
// multiplies pairs of bf16 and adds both products to an fp32 lane. Four rows share each load.
template <int Kind>
inline __m512i bf_lookup(__m512i idx, const __m512i* t) {
  if constexpr (Kind == 0) return _mm512_permutexvar_epi16(idx, t[0]);
  else if constexpr (Kind == 1) return _mm512_permutex2var_epi16(t[0], idx, t[1]);
  else {
    const __mmask32 b6 = _mm512_test_epi16_mask(idx, _mm512_set1_epi16(64));
    __m512i v = _mm512_mask_blend_epi16(b6, _mm512_permutex2var_epi16(t[0], idx, t[1]),
                                        _mm512_permutex2var_epi16(t[2], idx, t[3]));
    if constexpr (Kind == 3) {
      const __m512i u = _mm512_mask_blend_epi16(b6, _mm512_permutex2var_epi16(t[4], idx, t[5]),
                                                _mm512_permutex2var_epi16(t[6], idx, t[7]));
      v = _mm512_mask_blend_epi16(_mm512_test_epi16_mask(idx, _mm512_set1_epi16(128)), v, u);
    }
    return v;
  }
}

inline __m512 dpbf16(__m512 acc, __m512i a, __m512i b) {
  return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b);
}

template <int Kind>
void bf_rows(const QDense8& w, const uint16_t* x, float* y, uint32_t r0, uint32_t r1) {
  __m512i t[8];
  for (int k = 0; k < 8; ++k) t[k] = _mm512_loadu_si512(w.bcodebook + 32 * k);
  const size_t ldc = w.ldc;  // a multiple of 64; the input's padding is 0
  const auto codes32 = [](const uint8_t* p) {
    return _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  };
  uint32_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    const uint8_t* c0 = w.codes + size_t(r) * ldc;
    // Two accumulators per row (even and odd steps): eight dependency chains. ldc is a multiple of 64.
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    for (size_t c = 0; c < ldc; c += 64) {
      const __m512i xv = _mm512_loadu_si512(x + c), xw = _mm512_loadu_si512(x + c + 32);
      a0 = dpbf16(a0, bf_lookup<Kind>(codes32(c0 + c), t), xv);
      a1 = dpbf16(a1, bf_lookup<Kind>(codes32(c0 + ldc + c), t), xv);
      a2 = dpbf16(a2, bf_lookup<Kind>(codes32(c0 + 2 * ldc + c), t), xv);
      a3 = dpbf16(a3, bf_lookup<Kind>(codes32(c0 + 3 * ldc + c), t), xv);
      b0 = dpbf16(b0, bf_lookup<Kind>(codes32(c0 + c + 32), t), xw);
      b1 = dpbf16(b1, bf_lookup<Kind>(codes32(c0 + ldc + c + 32), t), xw);
      b2 = dpbf16(b2, bf_lookup<Kind>(codes32(c0 + 2 * ldc + c + 32), t), xw);
      b3 = dpbf16(b3, bf_lookup<Kind>(codes32(c0 + 3 * ldc + c + 32), t), xw);
    }
    a0 = _mm512_add_ps(a0, b0), a1 = _mm512_add_ps(a1, b1), a2 = _mm512_add_ps(a2, b2), a3 = _mm512_add_ps(a3, b3);
    y[r] += _mm512_reduce_add_ps(a0);
    y[r + 1] += _mm512_reduce_add_ps(a1);
    y[r + 2] += _mm512_reduce_add_ps(a2);
    y[r + 3] += _mm512_reduce_add_ps(a3);
  }
  for (; r < r1; ++r) {
    const uint8_t* c0 = w.codes + size_t(r) * ldc;
    __m512 a0 = _mm512_setzero_ps();
    for (size_t c = 0; c < ldc; c += 32) a0 = dpbf16(a0, bf_lookup<Kind>(codes32(c0 + c), t), _mm512_loadu_si512(x + c));
    y[r] += _mm512_reduce_add_ps(a0);
  }
}

}  // namespace

void dense_i8__avx512vnni(const QDense8& w, const QInputU8& x, float* y, uint32_t r0, uint32_t r1) {
  if (w.packed) {
    if (w.code_bits <= 6) i8_rows<0, true>(w, x, y, r0, r1);
    else i8_rows<1, true>(w, x, y, r0, r1);
  } else if (w.code_bits <= 6) i8_rows<0, false>(w, x, y, r0, r1);
  else if (w.code_bits == 7) i8_rows<1, false>(w, x, y, r0, r1);
  else i8_rows<2, false>(w, x, y, r0, r1);
}

void dense_bf16__avx512bf16(const QDense8& w, const uint16_t* x, float* y, uint32_t r0, uint32_t r1) {
  if (w.code_bits <= 5) bf_rows<0>(w, x, y, r0, r1);
  else if (w.code_bits == 6) bf_rows<1>(w, x, y, r0, r1);
  else if (w.code_bits == 7) bf_rows<2>(w, x, y, r0, r1);
  else bf_rows<3>(w, x, y, r0, r1);
}

}  // namespace dcrt
