// Depthwise convolution of small maps, 16 channels per block, vectorised across the channels:
// compiled once per ISA (qsparse.cpp: portable; qsparse_avx2.cpp; qsparse_avx512.cpp), the
// 16-lane loops left to the compiler (4, 8 or 16 lanes per instruction). Include inside a
// per-ISA namespace only (ODR). Contract: DwBlocksFn in qsparse.hpp.
//
// Per block: its input transposed to [pixel][16] (kDwMaxInPixels pixels: L1-sized, on the
// stack), then per output pixel the bias and, per tap inside the input, one 16-lane
// multiply-add of the tap's weights [tap][16]; the epilogue (+ residual, clamp) on the way back
// to [channel][pixel]. Order per output: bias, taps in tap order, residual, clamp.
void dw_blocks(const float* w, const ConvGeom& g, const float* bias, const float* x, float* y, uint32_t oc0,
               uint32_t oc1, const ConvEpilogue& ep) {
  constexpr uint32_t L = kDwLanes;
  const size_t in_hw = size_t(g.in_h) * g.in_w, ohw = size_t(g.out_h) * g.out_w;
  const uint32_t taps = g.kh * g.kw;
  alignas(64) float xt[kDwMaxInPixels][L];
  alignas(64) float wt[kDwMaxTaps][L];
  alignas(64) float acc[L];
  alignas(64) float b[L];
  for (uint32_t ch0 = oc0; ch0 < oc1; ch0 += L) {
    const uint32_t nl = std::min(L, oc1 - ch0);
    bool live[kDwMaxTaps];
    for (uint32_t k = 0; k < taps; ++k) {
      live[k] = false;
      for (uint32_t l = 0; l < L; ++l) {
        const float v = l < nl ? w[size_t(ch0 + l) * taps + k] : 0.f;
        wt[k][l] = v;
        live[k] = live[k] || v != 0.f;
      }
    }
    for (uint32_t l = 0; l < L; ++l) b[l] = l < nl ? bias[ch0 + l] : 0.f;
    const float* xs = x + size_t(ch0) * in_hw;
    for (size_t p = 0; p < in_hw; ++p)
      for (uint32_t l = 0; l < L; ++l) xt[p][l] = l < nl ? xs[l * in_hw + p] : 0.f;
    for (uint32_t oy = 0; oy < g.out_h; ++oy)
      for (uint32_t ox = 0; ox < g.out_w; ++ox) {
        for (uint32_t l = 0; l < L; ++l) acc[l] = b[l];
        for (uint32_t k = 0; k < taps; ++k) {
          if (!live[k]) continue;
          const int64_t iy = int64_t(oy) * g.sh - g.ph + int64_t(k / g.kw) * g.dh;
          const int64_t ix = int64_t(ox) * g.sw - g.pw + int64_t(k % g.kw) * g.dw;
          if (iy < 0 || iy >= g.in_h || ix < 0 || ix >= g.in_w) continue;
          const float* xv = xt[size_t(iy) * g.in_w + size_t(ix)];
          const float* wk = wt[k];
          for (uint32_t l = 0; l < L; ++l) acc[l] += wk[l] * xv[l];
        }
        const size_t p = size_t(oy) * g.out_w + ox;
        for (uint32_t l = 0; l < nl; ++l) {
          const size_t o = size_t(ch0 + l) * ohw + p;
          float v = acc[l];
          if (ep.res) v += ep.res[o];
          if (ep.clamp) v = std::min(std::max(v, ep.lo), ep.hi);
          y[o] = v;
        }
      }
  }
}
