// Convolutions of small output maps (2-63 pixels, groups 1, pointwise ones too) on fp32 weights
// decoded at load, one sample at a time: per output pixel, for each tap that lands inside the input, the axpy over the output
// channels of that tap's [in_c][out_c] weights. On such maps the sparse forms pay per op and
// per entry far more than the multiply-adds (ResNet-18 of examples/resnet_fashion.py at batch
// 1: its 3x3 convs on 7x7-2x2 maps ran at 1.5-6 GMAC/s on the im2col + batched-rows path, 74%
// of the network's time, Zen 4); the dense product does the pruned taps too and still wins on
// these few kilobytes of weights (the load keeps it to layers where it does, ops/conv.cpp).
#pragma once
#include <cstdint>

namespace dcrt {

struct SmallConv {
  const float* w;      // [taps][in_c][out_c]
  const int32_t* off;  // [taps][pixels]: the input pixel (iy * in_w + ix) the tap reads, -1 in padding
  uint32_t taps, in_c, out_c, pixels, in_hw;
};

// yt[p * out_c + oc] += sum over taps t inside and channels ic of w[t][ic][oc] * x[ic * in_hw +
// off[t][p]], for pixels p in [p0, p1); yt holds the bias (or anything) on entry.
using SmallConvFn = void (*)(const SmallConv& s, const float* x, float* yt, uint32_t p0, uint32_t p1);
void conv_small_f32__ref(const SmallConv& s, const float* x, float* yt, uint32_t p0, uint32_t p1);
void conv_small_f32__generic(const SmallConv& s, const float* x, float* yt, uint32_t p0, uint32_t p1);
#if DCRT_HAVE_AVX2
void conv_small_f32__avx2(const SmallConv& s, const float* x, float* yt, uint32_t p0, uint32_t p1);
void conv_small_f32__avx512(const SmallConv& s, const float* x, float* yt, uint32_t p0, uint32_t p1);
#endif

}  // namespace dcrt
