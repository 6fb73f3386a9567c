// AVX-512 builds of the quantized sparse conv and batched kernels (this file alone is compiled
// with the AVX-512 flags; registry.cpp calls it only where cpu_has_avx512()).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/conv_small.hpp"
#include "kernels/dense.hpp"
#include "kernels/dense_q8.hpp"
#include "kernels/qsparse.hpp"
#include "kernels/spmv16.hpp"

namespace dcrt {
namespace avx512 {
#include "kernels/conv_rows.inl"
#include "kernels/conv_small.inl"
#include "kernels/dw_blocks.inl"
}  // namespace avx512

void conv_small_f32__avx512(const SmallConv& s, const float* x, float* yt, uint32_t p0, uint32_t p1) {
  avx512::conv_small(s, x, yt, p0, p1);
}

void conv_dw_blocks__avx512(const float* w, const ConvGeom& g, const float* bias, const float* x, float* y,
                            uint32_t oc0, uint32_t oc1, const ConvEpilogue& ep) {
  avx512::dw_blocks(w, g, bias, x, y, oc0, oc1, ep);
}

void conv_q_rows__avx512(const QConvRows& w, const ConvGeom& g, const int64_t* tapoff, const float* bias,
                         const float* x, const float* xpad, float* y, uint32_t oc0, uint32_t oc1, uint32_t oy0,
                         uint32_t oy1, const ConvEpilogue& ep) {
  // Rows of under 12 pixels (LeNet-5's 8 x 8, ResNet's 7 x 7) waste most of a 16-lane block:
  // the AVX2 kernel's 8-lane halves and 4-row blocks fit them better (LeNet-5 0.024 vs 0.037
  // ms, Zen 5); from 12 pixels (VGG-16's 14 x 14: 41 vs 27 GMAC/s) the AVX-512 blocks win.
  // Below 16 output channels the window is not worth copying.
  if (g.out_w < 12) return conv_q_rows__avx2(w, g, tapoff, bias, x, xpad, y, oc0, oc1, oy0, oy1, ep);
  if (oc1 - oc0 < 16) return avx512::conv_rows(w, g, tapoff, bias, xpad, y, oc0, oc1, oy0, oy1, ep);
  avx512::conv_rows_aligned(w, g, tapoff, bias, xpad, y, oc0, oc1, oy0, oy1, ep);
}

void conv_dw_q_rows__avx512(const QConvRows& w, const ConvGeom& g, const int64_t* tapoff, const float* bias,
                            const float*, const float* xpad, float* y, uint32_t oc0, uint32_t oc1, uint32_t oy0,
                            uint32_t oy1, const ConvEpilogue& ep) {
  avx512::conv_dw_rows(w, g, tapoff, bias, xpad, y, oc0, oc1, oy0, oy1, ep);
}

namespace {

// Rows form, 16 lanes per register: V registers per output row, two accumulator sets (even
// and odd entries: 2V independent chains; 32 registers hold them at V = 8). `m` masks the
// last register's lanes (a tail of fewer than 16): loads zero them, the store leaves the rest.
template <int V>
void rows_block512(const QConvRows& w, const float* __restrict xt, size_t ldx, float* __restrict yt, size_t ldy,
                   uint32_t r0, uint32_t r1, __mmask16 m) {
  static_assert(V == 1 || V == 2 || V == 4 || V == 8, "block width");
  const uint32_t mask = (1u << w.code_bits) - 1;
  const auto ld = [m](const float* p, int k) {
    return k == V - 1 ? _mm512_maskz_loadu_ps(m, p + 16 * k) : _mm512_loadu_ps(p + 16 * k);
  };
  for (uint32_t r = r0; r < r1; ++r) {
    __m512 a[V], b[V];
#pragma GCC unroll 8
    for (int k = 0; k < V; ++k) a[k] = b[k] = _mm512_setzero_ps();
    uint32_t e = w.rowptr[r];
    const uint32_t end = w.rowptr[r + 1];
    for (; e + 2 <= end; e += 2) {
      const uint32_t e0 = w.entries[e], e1 = w.entries[e + 1];
      const __m512 v0 = _mm512_set1_ps(w.codebook[e0 & mask]);
      const __m512 v1 = _mm512_set1_ps(w.codebook[e1 & mask]);
      const float* x0 = xt + size_t(e0 >> 8) * ldx;
      const float* x1 = xt + size_t(e1 >> 8) * ldx;
#pragma GCC unroll 8
      for (int k = 0; k < V; ++k) {
        a[k] = _mm512_fmadd_ps(v0, ld(x0, k), a[k]);
        b[k] = _mm512_fmadd_ps(v1, ld(x1, k), b[k]);
      }
    }
    if (e < end) {
      const uint32_t e0 = w.entries[e];
      const __m512 v0 = _mm512_set1_ps(w.codebook[e0 & mask]);
      const float* x0 = xt + size_t(e0 >> 8) * ldx;
#pragma GCC unroll 8
      for (int k = 0; k < V; ++k) a[k] = _mm512_fmadd_ps(v0, ld(x0, k), a[k]);
    }
    float* yr = yt + size_t(r) * ldy;
#pragma GCC unroll 8
    for (int k = 0; k < V; ++k) {
      const __m512 s = _mm512_add_ps(ld(yr, k), _mm512_add_ps(a[k], b[k]));
      if (k == V - 1)
        _mm512_mask_storeu_ps(yr + 16 * k, m, s);
      else
        _mm512_storeu_ps(yr + 16 * k, s);
    }
  }
}

}  // namespace

void spmm_rows_q_c24__avx512(const QConvRows& w, const float* xt, size_t ldx, float* yt, size_t ldy, size_t n,
                             uint32_t r0, uint32_t r1) {
  size_t i = 0;
  for (; i + 128 <= n; i += 128) rows_block512<8>(w, xt + i, ldx, yt + i, ldy, r0, r1, 0xFFFF);
  if (i + 64 <= n) {
    rows_block512<4>(w, xt + i, ldx, yt + i, ldy, r0, r1, 0xFFFF);
    i += 64;
  }
  if (i + 32 <= n) {
    rows_block512<2>(w, xt + i, ldx, yt + i, ldy, r0, r1, 0xFFFF);
    i += 32;
  }
  for (; i < n; i += 16) {  // the last one masked
    const size_t left = std::min<size_t>(16, n - i);
    rows_block512<1>(w, xt + i, ldx, yt + i, ldy, r0, r1, __mmask16((1u << left) - 1));
  }
}

// ---- Dense codebook (dense_q8.hpp): 16 codes per step widened to 32-bit lanes, decoded by
// vpermps (<= 4 bits), vpermi2ps (5 bits), two vpermi2ps and a blend on bit 5 (6 bits), or a
// codebook gather (7-8 bits); four rows share each input load. The last step masks the input.
namespace {

template <int Kind>
inline __m512 dq8_lookup(__m512i idx, const __m512* cb, const float* mem) {
  if constexpr (Kind == 0) return _mm512_permutexvar_ps(idx, cb[0]);
  else if constexpr (Kind == 1) return _mm512_permutex2var_ps(cb[0], idx, cb[1]);
  else if constexpr (Kind == 2) {
    const __m512 a = _mm512_permutex2var_ps(cb[0], idx, cb[1]), b = _mm512_permutex2var_ps(cb[2], idx, cb[3]);
    return _mm512_mask_blend_ps(_mm512_test_epi32_mask(idx, _mm512_set1_epi32(32)), a, b);
  } else return _mm512_i32gather_ps(idx, mem, 4);
}

template <int Kind>
void dq8_rows512(const QDense8& w, const float* x, float* y, uint32_t r0, uint32_t r1) {
  __m512 cb[4];
  const uint32_t n = 1u << w.code_bits;
  for (uint32_t k = 0; k < 4; ++k) {
    const uint32_t have = n > 16 * k ? std::min(16u, n - 16 * k) : 0;
    cb[k] = _mm512_maskz_loadu_ps(__mmask16(have >= 16 ? 0xFFFF : (1u << have) - 1), w.codebook + 16 * k);
  }
  const uint32_t full = w.cols / 16 * 16;
  const __mmask16 tail = __mmask16((1u << (w.cols - full)) - 1);
  const auto codes16 = [](const uint8_t* p) {
    return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  };
  uint32_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    const uint8_t* c0 = w.codes + size_t(r) * w.ldc;
    const uint8_t *c1 = c0 + w.ldc, *c2 = c1 + w.ldc, *c3 = c2 + w.ldc;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (uint32_t c = 0; c < w.cols; c += 16) {
      const __m512 xv = c < full ? _mm512_loadu_ps(x + c) : _mm512_maskz_loadu_ps(tail, x + c);
      a0 = _mm512_fmadd_ps(dq8_lookup<Kind>(codes16(c0 + c), cb, w.codebook), xv, a0);
      a1 = _mm512_fmadd_ps(dq8_lookup<Kind>(codes16(c1 + c), cb, w.codebook), xv, a1);
      a2 = _mm512_fmadd_ps(dq8_lookup<Kind>(codes16(c2 + c), cb, w.codebook), xv, a2);
      a3 = _mm512_fmadd_ps(dq8_lookup<Kind>(codes16(c3 + c), cb, w.codebook), xv, a3);
    }
    y[r] += _mm512_reduce_add_ps(a0);
    y[r + 1] += _mm512_reduce_add_ps(a1);
    y[r + 2] += _mm512_reduce_add_ps(a2);
    y[r + 3] += _mm512_reduce_add_ps(a3);
  }
  for (; r < r1; ++r) {
    const uint8_t* c0 = w.codes + size_t(r) * w.ldc;
    __m512 a0 = _mm512_setzero_ps();
    for (uint32_t c = 0; c < w.cols; c += 16) {
      const __m512 xv = c < full ? _mm512_loadu_ps(x + c) : _mm512_maskz_loadu_ps(tail, x + c);
      a0 = _mm512_fmadd_ps(dq8_lookup<Kind>(codes16(c0 + c), cb, w.codebook), xv, a0);
    }
    y[r] += _mm512_reduce_add_ps(a0);
  }
}

}  // namespace

void dense_q8__avx512(const QDense8& w, const float* x, float* y, uint32_t r0, uint32_t r1) {
  if (w.code_bits <= 4) dq8_rows512<0>(w, x, y, r0, r1);
  else if (w.code_bits == 5) dq8_rows512<1>(w, x, y, r0, r1);
  else if (w.code_bits == 6) dq8_rows512<2>(w, x, y, r0, r1);
  else dq8_rows512<3>(w, x, y, r0, r1);
}

}  // namespace dcrt

namespace dcrt {

// 16 x 16 blocks in registers (unpack, shuffle within 128-bit lanes, then two rounds of
// 128-bit lane shuffles), in 64 x 64 tiles as the AVX2 form; edges fall back to scalar.
void transpose_f32__avx512(const float* __restrict src, size_t ld_src, float* __restrict dst, size_t ld_dst,
                           size_t nr, size_t nc) {
  // Tiles of 64 x 64; where the destination's stride is a multiple of 4 KB (the batched layers'
  // [n, rows] output, 16 KB at 4096 rows) 16 destination rows x 64: those rows share one L1 set,
  // and 64 of them thrashed it (VGG-16 fc6's output, 4096 x 64: 329 vs 84 us for the scalar
  // 16 x 16 loop, Zen 5). Elsewhere 16 would cut the source rows' runs to 64 bytes.
  const size_t TC = (ld_dst * sizeof(float)) % 4096 == 0 ? 16 : 64, TR = 64;
  for (size_t c0 = 0; c0 < nc; c0 += TC)
    for (size_t r0 = 0; r0 < nr; r0 += TR) {
      const size_t c1 = std::min(nc, c0 + TC), r1 = std::min(nr, r0 + TR);
      size_t r = r0;
      for (; r + 16 <= r1; r += 16) {
        size_t c = c0;
        for (; c + 16 <= c1; c += 16) {
          const float* s = src + r * ld_src + c;
          __m512 t[16], u[16];
#pragma GCC unroll 8
          for (int i = 0; i < 16; i += 2) {
            const __m512 a = _mm512_loadu_ps(s + i * ld_src), b = _mm512_loadu_ps(s + (i + 1) * ld_src);
            t[i] = _mm512_unpacklo_ps(a, b);
            t[i + 1] = _mm512_unpackhi_ps(a, b);
          }
          // u[4g + m], lane k: rows 4g..4g+3 of column 4k + m
#pragma GCC unroll 4
          for (int g = 0; g < 4; ++g) {
            u[4 * g] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
            u[4 * g + 1] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
            u[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
            u[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
          }
          float* d = dst + c * ld_dst + r;
#pragma GCC unroll 4
          for (int m = 0; m < 4; ++m) {
            const __m512 v = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x88), w = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xDD);
            const __m512 v2 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x88);
            const __m512 w2 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xDD);
            _mm512_storeu_ps(d + size_t(m) * ld_dst, _mm512_shuffle_f32x4(v, v2, 0x88));        // k = 0
            _mm512_storeu_ps(d + size_t(4 + m) * ld_dst, _mm512_shuffle_f32x4(w, w2, 0x88));    // k = 1
            _mm512_storeu_ps(d + size_t(8 + m) * ld_dst, _mm512_shuffle_f32x4(v, v2, 0xDD));    // k = 2
            _mm512_storeu_ps(d + size_t(12 + m) * ld_dst, _mm512_shuffle_f32x4(w, w2, 0xDD));   // k = 3
          }
        }
        for (; c < c1; ++c)
          for (size_t i = r; i < r + 16; ++i) dst[c * ld_dst + i] = src[i * ld_src + c];
      }
      for (; r < r1; ++r)
        for (size_t c = c0; c < c1; ++c) dst[c * ld_dst + r] = src[r * ld_src + c];
    }
}

}  // namespace dcrt
