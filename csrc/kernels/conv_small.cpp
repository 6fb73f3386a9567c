// The small-map dense conv: reference twin and portable build (conv_small.hpp).
#include "kernels/conv_small.hpp"

#include <cstddef>
#include <cstring>

namespace dcrt {

namespace generic {
#include "kernels/conv_small.inl"
}  // namespace generic

// The specification: every output element as its own sum, taps then channels, zeros included.
void conv_small_f32__ref(const SmallConv& s, const float* x, float* yt, uint32_t p0, uint32_t p1) {
  for (uint32_t p = p0; p < p1; ++p)
    for (uint32_t oc = 0; oc < s.out_c; ++oc) {
      float a = yt[size_t(p) * s.out_c + oc];
      for (uint32_t t = 0; t < s.taps; ++t) {
        const int32_t o = s.off[size_t(t) * s.pixels + p];
        if (o < 0) continue;
        for (uint32_t ic = 0; ic < s.in_c; ++ic)
          a += s.w[(size_t(t) * s.in_c + ic) * s.out_c + oc] * x[size_t(ic) * s.in_hw + size_t(o)];
      }
      yt[size_t(p) * s.out_c + oc] = a;
    }
}

void conv_small_f32__generic(const SmallConv& s, const float* x, float* yt, uint32_t p0, uint32_t p1) {
  generic::conv_small(s, x, yt, p0, p1);
}

}  // namespace dcrt
