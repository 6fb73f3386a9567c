// AVX2 + FMA builds of the quantized sparse kernels (this file alone is compiled with
// -mavx2 -mfma; registry.cpp calls it only where the CPU has both).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/conv_small.hpp"
#include "kernels/dense.hpp"
#include "kernels/dense_q8.hpp"
#include "kernels/qsparse.hpp"

namespace dcrt {
namespace avx2 {
#include "kernels/conv_rows.inl"
#include "kernels/conv_small.inl"
#include "kernels/dw_blocks.inl"
}  // namespace avx2

void conv_small_f32__avx2(const SmallConv& s, const float* x, float* yt, uint32_t p0, uint32_t p1) {
  avx2::conv_small(s, x, yt, p0, p1);
}

void conv_dw_blocks__avx2(const float* w, const ConvGeom& g, const float* bias, const float* x, float* y,
                          uint32_t oc0, uint32_t oc1, const ConvEpilogue& ep) {
  avx2::dw_blocks(w, g, bias, x, y, oc0, oc1, ep);
}

void conv_q_rows__avx2(const QConvRows& w, const ConvGeom& g, const int64_t* tapoff, const float* bias,
                       const float*, const float* xpad, float* y, uint32_t oc0, uint32_t oc1, uint32_t oy0,
                       uint32_t oy1, const ConvEpilogue& ep) {
  avx2::conv_rows(w, g, tapoff, bias, xpad, y, oc0, oc1, oy0, oy1, ep);
}

void conv_dw_q_rows__avx2(const QConvRows& w, const ConvGeom& g, const int64_t* tapoff, const float* bias,
                          const float*, const float* xpad, float* y, uint32_t oc0, uint32_t oc1, uint32_t oy0,
                          uint32_t oy1, const ConvEpilogue& ep) {
  avx2::conv_dw_rows(w, g, tapoff, bias, xpad, y, oc0, oc1, oy0, oy1, ep);
}

namespace {

// One block of W lanes (8 or 16) of the batch: the column's inputs stay in registers while its
// entries stream by, so each stored entry costs one broadcast and W/8 load-FMA-store of its
// output row. A column whose W inputs are all zero is skipped (activation sparsity, batched).
template <int W>
void spmm_block(const QSparseMatrix& w, const float* __restrict xt, size_t ldx, float* __restrict yt, size_t ldy) {
  static_assert(W == 8 || W == 16, "block width");
  const uint32_t b = w.code_bits, mask = (1u << b) - 1;
  const __m256 zero = _mm256_setzero_ps();
  for (uint32_t c = 0; c < w.cols; ++c) {
    const float* xr = xt + size_t(c) * ldx;
    const __m256 x0 = _mm256_loadu_ps(xr);
    const __m256 x1 = W == 16 ? _mm256_loadu_ps(xr + 8) : zero;
    int live = _mm256_movemask_ps(_mm256_cmp_ps(x0, zero, _CMP_NEQ_UQ));
    if (W == 16) live |= _mm256_movemask_ps(_mm256_cmp_ps(x1, zero, _CMP_NEQ_UQ));
    if (!live) continue;
    uint32_t row = uint32_t(-1);
    for (uint32_t e = w.colptr[c]; e < w.colptr[c + 1]; ++e) {
      const uint32_t en = w.entries[e];
      row += (en >> b) + 1;
      if ((en & mask) == 0) continue;  // filler
      const __m256 v = _mm256_broadcast_ss(w.codebook + (en & mask));
      float* yr = yt + size_t(row) * ldy;
      _mm256_storeu_ps(yr, _mm256_fmadd_ps(v, x0, _mm256_loadu_ps(yr)));
      if (W == 16) _mm256_storeu_ps(yr + 8, _mm256_fmadd_ps(v, x1, _mm256_loadu_ps(yr + 8)));
    }
  }
}

// Rows form: V vectors of 8 lanes per output row. Below 8 vectors, two accumulator sets (even
// and odd entries) so consecutive FMAs do not wait on each other; at 8 vectors one set already
// gives 8 independent chains and a second would not fit the 16 registers. The k loops must be
// unrolled: GCC otherwise keeps a[] / b[] on the stack and stores them at every entry
// (64 lanes: 20 -> 8 cycles per entry).
template <int V>
void rows_block(const QConvRows& w, const float* __restrict xt, size_t ldx, float* __restrict yt, size_t ldy,
                uint32_t r0, uint32_t r1) {
  static_assert(V == 1 || V == 2 || V == 4 || V == 8, "block width");
  constexpr bool kTwoSets = V < 8;
  const uint32_t mask = (1u << w.code_bits) - 1;
  for (uint32_t r = r0; r < r1; ++r) {
    __m256 a[V], b[V];
#pragma GCC unroll 8
    for (int k = 0; k < V; ++k) a[k] = b[k] = _mm256_setzero_ps();
    uint32_t e = w.rowptr[r];
    const uint32_t end = w.rowptr[r + 1];
    if (kTwoSets) {
      for (; e + 2 <= end; e += 2) {
        const uint32_t e0 = w.entries[e], e1 = w.entries[e + 1];
        const __m256 v0 = _mm256_broadcast_ss(w.codebook + (e0 & mask));
        const __m256 v1 = _mm256_broadcast_ss(w.codebook + (e1 & mask));
        const float* x0 = xt + size_t(e0 >> 8) * ldx;
        const float* x1 = xt + size_t(e1 >> 8) * ldx;
#pragma GCC unroll 8
        for (int k = 0; k < V; ++k) {
          a[k] = _mm256_fmadd_ps(v0, _mm256_loadu_ps(x0 + 8 * k), a[k]);
          b[k] = _mm256_fmadd_ps(v1, _mm256_loadu_ps(x1 + 8 * k), b[k]);
        }
      }
    }
    for (; e < end; ++e) {
      const uint32_t e0 = w.entries[e];
      const __m256 v0 = _mm256_broadcast_ss(w.codebook + (e0 & mask));
      const float* x0 = xt + size_t(e0 >> 8) * ldx;
#pragma GCC unroll 8
      for (int k = 0; k < V; ++k) a[k] = _mm256_fmadd_ps(v0, _mm256_loadu_ps(x0 + 8 * k), a[k]);
    }
    float* yr = yt + size_t(r) * ldy;
#pragma GCC unroll 8
    for (int k = 0; k < V; ++k) {
      const __m256 s = kTwoSets ? _mm256_add_ps(a[k], b[k]) : a[k];
      _mm256_storeu_ps(yr + 8 * k, _mm256_add_ps(_mm256_loadu_ps(yr + 8 * k), s));
    }
  }
}

}  // namespace

void spmm_q_rel16__avx2(const QSparseMatrix& w, const float* xt, size_t ldx, float* yt, size_t ldy, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) spmm_block<16>(w, xt + i, ldx, yt + i, ldy);
  if (i + 8 <= n) {
    spmm_block<8>(w, xt + i, ldx, yt + i, ldy);
    i += 8;
  }
  if (i < n) spmm_q_rel16__generic(w, xt + i, ldx, yt + i, ldy, n - i);  // < 8 lanes left
}

void spmm_rows_q_c24__avx2(const QConvRows& w, const float* xt, size_t ldx, float* yt, size_t ldy, size_t n,
                           uint32_t r0, uint32_t r1) {
  size_t i = 0;
  for (; i + 64 <= n; i += 64) rows_block<8>(w, xt + i, ldx, yt + i, ldy, r0, r1);
  if (i + 32 <= n) {
    rows_block<4>(w, xt + i, ldx, yt + i, ldy, r0, r1);
    i += 32;
  }
  if (i + 16 <= n) {
    rows_block<2>(w, xt + i, ldx, yt + i, ldy, r0, r1);
    i += 16;
  }
  if (i + 8 <= n) {
    rows_block<1>(w, xt + i, ldx, yt + i, ldy, r0, r1);
    i += 8;
  }
  if (i < n) spmm_rows_q_c24__generic(w, xt + i, ldx, yt + i, ldy, n - i, r0, r1);  // < 8 lanes left
}

// 8 x 8 blocks in registers (unpack / shuffle / permute2f128), in 64 x 64 tiles so that both
// sides' cache lines are filled completely while they are hot; edges fall back to scalar.
void transpose_f32__avx2(const float* __restrict src, size_t ld_src, float* __restrict dst, size_t ld_dst, size_t nr,
                         size_t nc) {
  // Tiles of 64 x 64; where the destination's stride is a multiple of 4 KB (the batched layers'
  // [n, rows] output, 16 KB at 4096 rows) 16 destination rows x 64: those rows share one L1 set,
  // and 64 of them thrashed it (VGG-16 fc6's output, 4096 x 64: 329 vs 84 us for the scalar
  // 16 x 16 loop, Zen 5). Elsewhere 16 would cut the source rows' runs to 64 bytes.
  const size_t TC = (ld_dst * sizeof(float)) % 4096 == 0 ? 16 : 64, TR = 64;
  for (size_t c0 = 0; c0 < nc; c0 += TC)
    for (size_t r0 = 0; r0 < nr; r0 += TR) {
      const size_t c1 = std::min(nc, c0 + TC), r1 = std::min(nr, r0 + TR);
      size_t r = r0;
      for (; r + 8 <= r1; r += 8) {
        size_t c = c0;
        for (; c + 8 <= c1; c += 8) {
          const float* s = src + r * ld_src + c;
          const __m256 a0 = _mm256_loadu_ps(s), a1 = _mm256_loadu_ps(s + ld_src);
          const __m256 a2 = _mm256_loadu_ps(s + 2 * ld_src), a3 = _mm256_loadu_ps(s + 3 * ld_src);
          const __m256 a4 = _mm256_loadu_ps(s + 4 * ld_src), a5 = _mm256_loadu_ps(s + 5 * ld_src);
          const __m256 a6 = _mm256_loadu_ps(s + 6 * ld_src), a7 = _mm256_loadu_ps(s + 7 * ld_src);
          const __m256 b0 = _mm256_unpacklo_ps(a0, a1), b1 = _mm256_unpackhi_ps(a0, a1);
          const __m256 b2 = _mm256_unpacklo_ps(a2, a3), b3 = _mm256_unpackhi_ps(a2, a3);
          const __m256 b4 = _mm256_unpacklo_ps(a4, a5), b5 = _mm256_unpackhi_ps(a4, a5);
          const __m256 b6 = _mm256_unpacklo_ps(a6, a7), b7 = _mm256_unpackhi_ps(a6, a7);
          const __m256 d0 = _mm256_shuffle_ps(b0, b2, 0x44), d1 = _mm256_shuffle_ps(b0, b2, 0xEE);
          const __m256 d2 = _mm256_shuffle_ps(b1, b3, 0x44), d3 = _mm256_shuffle_ps(b1, b3, 0xEE);
          const __m256 d4 = _mm256_shuffle_ps(b4, b6, 0x44), d5 = _mm256_shuffle_ps(b4, b6, 0xEE);
          const __m256 d6 = _mm256_shuffle_ps(b5, b7, 0x44), d7 = _mm256_shuffle_ps(b5, b7, 0xEE);
          float* d = dst + c * ld_dst + r;
          _mm256_storeu_ps(d, _mm256_permute2f128_ps(d0, d4, 0x20));
          _mm256_storeu_ps(d + ld_dst, _mm256_permute2f128_ps(d1, d5, 0x20));
          _mm256_storeu_ps(d + 2 * ld_dst, _mm256_permute2f128_ps(d2, d6, 0x20));
          _mm256_storeu_ps(d + 3 * ld_dst, _mm256_permute2f128_ps(d3, d7, 0x20));
          _mm256_storeu_ps(d + 4 * ld_dst, _mm256_permute2f128_ps(d0, d4, 0x31));
          _mm256_storeu_ps(d + 5 * ld_dst, _mm256_permute2f128_ps(d1, d5, 0x31));
          _mm256_storeu_ps(d + 6 * ld_dst, _mm256_permute2f128_ps(d2, d6, 0x31));
          _mm256_storeu_ps(d + 7 * ld_dst, _mm256_permute2f128_ps(d3, d7, 0x31));
        }
        for (; c < c1; ++c)
          for (size_t i = r; i < r + 8; ++i) dst[c * ld_dst + i] = src[i * ld_src + c];
      }
      for (; r < r1; ++r)
        for (size_t c = c0; c < c1; ++c) dst[c * ld_dst + r] = src[r * ld_src + c];
    }
}

// ---- Dense codebook (dense_q8.hpp): 8 codes per step widened to 32-bit lanes, decoded by
// vpermps on 8-entry slices of the codebook and blends on the code's bits 3 and 4 (<= 5 bits:
// 1, 2 or 4 permutes), else a codebook gather; four rows share each input load.
namespace {

template <int Kind>  // 0: <= 3 bits, 1: 4, 2: 5, 3: gather
inline __m256 dq8_lookup8(__m256i idx, const __m256* cb, const float* mem) {
  if constexpr (Kind == 0) return _mm256_permutevar8x32_ps(cb[0], idx);
  else if constexpr (Kind == 3) return _mm256_i32gather_ps(mem, idx, 4);
  else {
    const __m256 b3 = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));  // bit 3 -> sign
    const __m256 lo = _mm256_blendv_ps(_mm256_permutevar8x32_ps(cb[0], idx), _mm256_permutevar8x32_ps(cb[1], idx), b3);
    if constexpr (Kind == 1) return lo;
    const __m256 hi = _mm256_blendv_ps(_mm256_permutevar8x32_ps(cb[2], idx), _mm256_permutevar8x32_ps(cb[3], idx), b3);
    return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 27)));  // bit 4
  }
}

template <int Kind>
void dq8_rows256(const QDense8& w, const float* x, float* y, uint32_t r0, uint32_t r1) {
  alignas(32) float cbuf[32] = {};
  const uint32_t n = std::min(32u, 1u << w.code_bits);
  std::copy(w.codebook, w.codebook + n, cbuf);
  const __m256 cb[4] = {_mm256_load_ps(cbuf), _mm256_load_ps(cbuf + 8), _mm256_load_ps(cbuf + 16),
                        _mm256_load_ps(cbuf + 24)};
  const uint32_t full = w.cols / 8 * 8;
  alignas(32) static const int32_t ramp[8] = {0, 1, 2, 3, 4, 5, 6, 7};
  const __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32(int32_t(w.cols - full)),
                                          _mm256_load_si256(reinterpret_cast<const __m256i*>(ramp)));
  const auto codes8 = [](const uint8_t* p) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  };
  const auto hsum = [](__m256 v) {
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
  };
  uint32_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    const uint8_t* c0 = w.codes + size_t(r) * w.ldc;
    const uint8_t *c1 = c0 + w.ldc, *c2 = c1 + w.ldc, *c3 = c2 + w.ldc;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (uint32_t c = 0; c < w.cols; c += 8) {
      const __m256 xv = c < full ? _mm256_loadu_ps(x + c) : _mm256_maskload_ps(x + c, tail);
      a0 = _mm256_fmadd_ps(dq8_lookup8<Kind>(codes8(c0 + c), cb, w.codebook), xv, a0);
      a1 = _mm256_fmadd_ps(dq8_lookup8<Kind>(codes8(c1 + c), cb, w.codebook), xv, a1);
      a2 = _mm256_fmadd_ps(dq8_lookup8<Kind>(codes8(c2 + c), cb, w.codebook), xv, a2);
      a3 = _mm256_fmadd_ps(dq8_lookup8<Kind>(codes8(c3 + c), cb, w.codebook), xv, a3);
    }
    y[r] += hsum(a0);
    y[r + 1] += hsum(a1);
    y[r + 2] += hsum(a2);
    y[r + 3] += hsum(a3);
  }
  for (; r < r1; ++r) {
    const uint8_t* c0 = w.codes + size_t(r) * w.ldc;
    __m256 a0 = _mm256_setzero_ps();
    for (uint32_t c = 0; c < w.cols; c += 8) {
      const __m256 xv = c < full ? _mm256_loadu_ps(x + c) : _mm256_maskload_ps(x + c, tail);
      a0 = _mm256_fmadd_ps(dq8_lookup8<Kind>(codes8(c0 + c), cb, w.codebook), xv, a0);
    }
    y[r] += hsum(a0);
  }
}

}  // namespace

void dense_q8__avx2(const QDense8& w, const float* x, float* y, uint32_t r0, uint32_t r1) {
  if (w.code_bits <= 3) dq8_rows256<0>(w, x, y, r0, r1);
  else if (w.code_bits == 4) dq8_rows256<1>(w, x, y, r0, r1);
  else if (w.code_bits == 5) dq8_rows256<2>(w, x, y, r0, r1);
  else dq8_rows256<3>(w, x, y, r0, r1);
}

bool cpu_has_avx2_fma() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

}  // namespace dcrt
