// Dense ops of the graph (docs/format.md §3.2): one sample or a slice of one, plain pointers.
// Their reference twins are dcrt.nn's numpy layers (tests/test_runtime.py).
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/qsparse.hpp"

namespace dcrt {

struct PoolGeom {
  uint32_t c, h, w, oh, ow, kh, kw, sh, sw, ph, pw;
};

// dst[c * ld_dst + r] = src[r * ld_src + c] for r < nr, c < nc: the batched linear layers
// [n, cols] <-> [cols, lanes] reshuffles. Callers split nc (or nr) over threads.
using TransposeFn = void (*)(const float* src, size_t ld_src, float* dst, size_t ld_dst, size_t nr, size_t nc);
void transpose_f32__ref(const float* src, size_t ld_src, float* dst, size_t ld_dst, size_t nr, size_t nc);
void transpose_f32__generic(const float* src, size_t ld_src, float* dst, size_t ld_dst, size_t nr, size_t nc);
void transpose_f32__avx2(const float* src, size_t ld_src, float* dst, size_t ld_dst, size_t nr, size_t nc);
void transpose_f32__avx512(const float* src, size_t ld_src, float* dst, size_t ld_dst, size_t nr, size_t nc);

// Channels [c0, c1) of one sample.
void maxpool_f32(const PoolGeom& g, const float* x, float* y, uint32_t c0, uint32_t c1);
void avgpool_f32(const PoolGeom& g, const float* x, float* y, uint32_t c0, uint32_t c1);
// Caffe LRN across channels; one sample [c, hw]; x and y must not overlap.
void lrn_f32(const float* x, float* y, uint32_t c, size_t hw, uint32_t size, float alpha, float beta, float k,
             uint32_t c0, uint32_t c1);
// Softmax over the channel axis of one sample [c, hw].
void softmax_f32(const float* x, float* y, uint32_t c, size_t hw);
// Plain fp32 layers. y[r] = b[r] + W[r, :] . x for rows [r0, r1).
void linear_f32(const float* w, const float* b, const float* x, float* y, uint32_t cols, uint32_t r0, uint32_t r1);
// Plain fp32 rows on the [cols, lanes] layout: y[r * ldy + i] += sum_k w[r * cols + k] * x[k * ldx + i]
// for r in [r0, r1), i < n (zero weights skipped). The dense twin of SpmmRowsFn.
void gemm_lanes_f32(const float* w, uint32_t cols, const float* x, size_t ldx, float* y, size_t ldy, size_t n,
                    uint32_t r0, uint32_t r1);
// Dense conv of one sample, output channels [oc0, oc1) x output rows [oy0, oy1); w is
// [out_c, cols] row-major.
// Same input contract as ConvFn: padded input xpad (+ kConvSlack) and conv_tap_offsets.
void conv_f32(const float* w, uint32_t cols, const ConvGeom& g, const int64_t* tapoff, const float* bias,
              const float* xpad, float* y, uint32_t oc0, uint32_t oc1, uint32_t oy0, uint32_t oy1,
              const ConvEpilogue& ep);

}  // namespace dcrt
