// The direct sparse convolution loop, compiled once per ISA (qsparse.cpp: portable,
// qsparse_avx2.cpp: -mavx2 -mfma). Include inside a per-ISA namespace only: the same template
// built with different flags must not be merged by the linker (ODR).
// Contract: see ConvFn in qsparse.hpp. The includer provides <algorithm>, <cstdint> and
// kernels/qsparse.hpp before the namespace it includes this in.

// One output row segment of kTile pixels at a time: the segment's accumulators live in
// registers; every non-zero tap of the channel adds codebook[code] * (a contiguous run of the
// padded input). No output traffic per tap.
constexpr uint32_t kTile = 16;

template <bool kUnitStride>
void conv_rows_impl(const ::dcrt::QConvRows& w, const ::dcrt::ConvGeom& g, const int64_t* __restrict coloff,
                    const float* bias, const float* __restrict xpad, float* __restrict y, uint32_t oc0,
                    uint32_t oc1) {
  const uint32_t mask = (1u << w.code_bits) - 1;
  const uint32_t icg = g.in_c / g.groups, ocg = g.out_c / g.groups;
  const size_t wp = g.in_w + 2 * g.pw, plane = (g.in_h + 2 * g.ph) * wp;
  for (uint32_t oc = oc0; oc < oc1; ++oc) {
    const float* xg = xpad + size_t(oc / ocg) * icg * plane;
    const uint32_t* e0 = w.entries + w.rowptr[oc];
    const uint32_t* e1 = w.entries + w.rowptr[oc + 1];
    float* yo = y + size_t(oc) * g.out_h * g.out_w;
    for (uint32_t oy = 0; oy < g.out_h; ++oy) {
      const float* xrow = xg + size_t(oy) * g.sh * wp;
      for (uint32_t ox0 = 0; ox0 < g.out_w; ox0 += kTile) {
        const uint32_t n = std::min(kTile, g.out_w - ox0);
        float acc[kTile];
        for (uint32_t i = 0; i < kTile; ++i) acc[i] = bias[oc];
        const float* xb = xrow + size_t(ox0) * g.sw;
        for (const uint32_t* e = e0; e < e1; ++e) {
          const float v = w.codebook[*e & mask];
          const float* xp = xb + coloff[*e >> 8];
          if (kUnitStride) {
            for (uint32_t i = 0; i < kTile; ++i) acc[i] += v * xp[i];  // reads <= kTile-1 past the row: slack
          } else {
            for (uint32_t i = 0; i < n; ++i) acc[i] += v * xp[size_t(i) * g.sw];  // any stride: stay in bounds
          }
        }
        for (uint32_t i = 0; i < n; ++i) yo[size_t(oy) * g.out_w + ox0 + i] = acc[i];
      }
    }
  }
}


inline void conv_rows(const ::dcrt::QConvRows& w, const ::dcrt::ConvGeom& g, const int64_t* tapoff,
                      const float* bias, const float* xpad, float* y, uint32_t oc0, uint32_t oc1) {
  if (g.sw == 1)
    conv_rows_impl<true>(w, g, tapoff, bias, xpad, y, oc0, oc1);
  else
    conv_rows_impl<false>(w, g, tapoff, bias, xpad, y, oc0, oc1);
}
