// AVX-512 builds of the quantized sparse conv and batched kernels (this file alone is compiled
// with the AVX-512 flags; registry.cpp calls it only where cpu_has_avx512()).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/qsparse.hpp"
#include "kernels/spmv16.hpp"

namespace dcrt {
namespace avx512 {
#include "kernels/conv_rows.inl"
}  // namespace avx512

void conv_q_rows__avx512(const QConvRows& w, const ConvGeom& g, const int64_t* tapoff, const float* bias,
                         const float*, const float* xpad, float* y, uint32_t oc0, uint32_t oc1, uint32_t oy0,
                         uint32_t oy1, const ConvEpilogue& ep) {
  avx512::conv_rows(w, g, tapoff, bias, xpad, y, oc0, oc1, oy0, oy1, ep);
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

}  // namespace dcrt
