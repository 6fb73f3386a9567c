// AVX2 + FMA builds of the quantized sparse kernels (this file alone is compiled with
// -mavx2 -mfma; registry.cpp calls it only where the CPU has both).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "kernels/qsparse.hpp"

namespace dcrt {
namespace avx2 {
#include "kernels/conv_rows.inl"
}  // namespace avx2

void conv_q_rows__avx2(const QConvRows& w, const ConvGeom& g, const int64_t* tapoff, const float* bias,
                       const float*, const float* xpad, float* y, uint32_t oc0, uint32_t oc1) {
  avx2::conv_rows(w, g, tapoff, bias, xpad, y, oc0, oc1);
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

bool cpu_has_avx2_fma() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

}  // namespace dcrt
