// AVX2 + FMA builds of the quantized sparse kernels (this file alone is compiled with
// -mavx2 -mfma; registry.cpp calls it only where the CPU has both).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/qsparse.hpp"

namespace dcrt {
namespace avx2 {
#include "kernels/conv_rows.inl"
}  // namespace avx2

void conv_q_rows__avx2(const QConvRows& w, const ConvGeom& g, const int64_t* tapoff, const float* bias,
                       const float*, const float* xpad, float* y, uint32_t oc0, uint32_t oc1, uint32_t oy0,
                       uint32_t oy1) {
  avx2::conv_rows(w, g, tapoff, bias, xpad, y, oc0, oc1, oy0, oy1);
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

// Rows form: V vectors of 8 lanes per output row, two accumulator sets (even and odd
// entries) so consecutive FMAs do not wait on each other.
template <int V>
void rows_block(const QConvRows& w, const float* __restrict xt, size_t ldx, float* __restrict yt, size_t ldy,
                uint32_t r0, uint32_t r1) {
  const uint32_t mask = (1u << w.code_bits) - 1;
  for (uint32_t r = r0; r < r1; ++r) {
    __m256 a[V], b[V];
    for (int k = 0; k < V; ++k) a[k] = b[k] = _mm256_setzero_ps();
    uint32_t e = w.rowptr[r];
    const uint32_t end = w.rowptr[r + 1];
    for (; e + 2 <= end; e += 2) {
      const uint32_t e0 = w.entries[e], e1 = w.entries[e + 1];
      const __m256 v0 = _mm256_broadcast_ss(w.codebook + (e0 & mask));
      const __m256 v1 = _mm256_broadcast_ss(w.codebook + (e1 & mask));
      const float* x0 = xt + size_t(e0 >> 8) * ldx;
      const float* x1 = xt + size_t(e1 >> 8) * ldx;
      for (int k = 0; k < V; ++k) {
        a[k] = _mm256_fmadd_ps(v0, _mm256_loadu_ps(x0 + 8 * k), a[k]);
        b[k] = _mm256_fmadd_ps(v1, _mm256_loadu_ps(x1 + 8 * k), b[k]);
      }
    }
    if (e < end) {
      const uint32_t e0 = w.entries[e];
      const __m256 v0 = _mm256_broadcast_ss(w.codebook + (e0 & mask));
      const float* x0 = xt + size_t(e0 >> 8) * ldx;
      for (int k = 0; k < V; ++k) a[k] = _mm256_fmadd_ps(v0, _mm256_loadu_ps(x0 + 8 * k), a[k]);
    }
    float* yr = yt + size_t(r) * ldy;
    for (int k = 0; k < V; ++k)
      _mm256_storeu_ps(yr + 8 * k, _mm256_add_ps(_mm256_loadu_ps(yr + 8 * k), _mm256_add_ps(a[k], b[k])));
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
  for (; i + 32 <= n; i += 32) rows_block<4>(w, xt + i, ldx, yt + i, ldy, r0, r1);
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

bool cpu_has_avx2_fma() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

}  // namespace dcrt
