// Dense graph ops (format.md §3.2) with Caffe semantics.
#include "kernels/dense.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace dcrt {

void transpose_f32__ref(const float* src, size_t ld_src, float* dst, size_t ld_dst, size_t nr, size_t nc) {
  for (size_t r = 0; r < nr; ++r)
    for (size_t c = 0; c < nc; ++c) dst[c * ld_dst + r] = src[r * ld_src + c];
}

// 16 x 16 tiles: a plain double loop writes one float per cache line on the strided side.
void transpose_f32__generic(const float* __restrict src, size_t ld_src, float* __restrict dst, size_t ld_dst,
                            size_t nr, size_t nc) {
  constexpr size_t B = 16;
  for (size_t r0 = 0; r0 < nr; r0 += B)
    for (size_t c0 = 0; c0 < nc; c0 += B) {
      const size_t r1 = std::min(nr, r0 + B), c1 = std::min(nc, c0 + B);
      for (size_t c = c0; c < c1; ++c)
        for (size_t r = r0; r < r1; ++r) dst[c * ld_dst + r] = src[r * ld_src + c];
    }
}

void maxpool_f32(const PoolGeom& g, const float* x, float* y, uint32_t c0, uint32_t c1) {
  for (uint32_t c = c0; c < c1; ++c) {
    const float* xc = x + size_t(c) * g.h * g.w;
    float* yc = y + size_t(c) * g.oh * g.ow;
    for (uint32_t oy = 0; oy < g.oh; ++oy) {
      const int64_t hs = int64_t(oy) * g.sh - g.ph;
      const int64_t y0 = std::max<int64_t>(hs, 0), y1 = std::min<int64_t>(hs + g.kh, g.h);
      for (uint32_t ox = 0; ox < g.ow; ++ox) {
        const int64_t ws = int64_t(ox) * g.sw - g.pw;
        const int64_t x0 = std::max<int64_t>(ws, 0), x1 = std::min<int64_t>(ws + g.kw, g.w);
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t iy = y0; iy < y1; ++iy)
          for (int64_t ix = x0; ix < x1; ++ix) m = std::max(m, xc[iy * g.w + ix]);
        yc[size_t(oy) * g.ow + ox] = m;
      }
    }
  }
}

void avgpool_f32(const PoolGeom& g, const float* x, float* y, uint32_t c0, uint32_t c1) {
  for (uint32_t c = c0; c < c1; ++c) {
    const float* xc = x + size_t(c) * g.h * g.w;
    float* yc = y + size_t(c) * g.oh * g.ow;
    for (uint32_t oy = 0; oy < g.oh; ++oy) {
      const int64_t hs = int64_t(oy) * g.sh - g.ph;
      const int64_t he = std::min<int64_t>(hs + g.kh, int64_t(g.h) + g.ph);  // Caffe's divisor window
      const int64_t y0 = std::max<int64_t>(hs, 0), y1 = std::min<int64_t>(hs + g.kh, g.h);
      for (uint32_t ox = 0; ox < g.ow; ++ox) {
        const int64_t ws = int64_t(ox) * g.sw - g.pw;
        const int64_t we = std::min<int64_t>(ws + g.kw, int64_t(g.w) + g.pw);
        const int64_t x0 = std::max<int64_t>(ws, 0), x1 = std::min<int64_t>(ws + g.kw, g.w);
        float s = 0.f;
        for (int64_t iy = y0; iy < y1; ++iy)
          for (int64_t ix = x0; ix < x1; ++ix) s += xc[iy * g.w + ix];
        yc[size_t(oy) * g.ow + ox] = s / float((he - hs) * (we - ws));
      }
    }
  }
}

void lrn_f32(const float* x, float* y, uint32_t c, size_t hw, uint32_t size, float alpha, float beta, float k,
             uint32_t c0, uint32_t c1) {
  // The window's sum of squares accumulates in y's own channel (x and y never alias), so
  // inference allocates nothing here. Channels [c0, c1) of the output (threads split them).
  const int64_t half = size / 2;
  const float a = alpha / float(size);
  for (int64_t ch = c0; ch < int64_t(c1); ++ch) {
    float* yc = y + size_t(ch) * hw;
    std::fill(yc, yc + hw, 0.f);
    for (int64_t j = std::max<int64_t>(0, ch - half); j <= std::min<int64_t>(int64_t(c) - 1, ch + half); ++j) {
      const float* xj = x + size_t(j) * hw;
      for (size_t i = 0; i < hw; ++i) yc[i] += xj[i] * xj[i];
    }
    const float* xc = x + size_t(ch) * hw;
    if (beta == 0.75f) {
      // AlexNet's and GoogLeNet's beta: s^-0.75 = r * sqrt(r) with r = 1 / sqrt(s), two
      // correctly rounded square roots and a division that vectorise (std::pow does not):
      // ~10x faster, within 2 ulp of pow.
      for (size_t i = 0; i < hw; ++i) {
        const float r = 1.f / std::sqrt(k + a * yc[i]);
        yc[i] = xc[i] * (r * std::sqrt(r));
      }
    } else {
      for (size_t i = 0; i < hw; ++i) yc[i] = xc[i] * std::pow(k + a * yc[i], -beta);
    }
  }
}

void softmax_f32(const float* x, float* y, uint32_t c, size_t hw) {
  for (size_t i = 0; i < hw; ++i) {
    float m = -std::numeric_limits<float>::infinity();
    for (uint32_t ch = 0; ch < c; ++ch) m = std::max(m, x[ch * hw + i]);
    float s = 0.f;
    for (uint32_t ch = 0; ch < c; ++ch) {
      const float e = std::exp(x[ch * hw + i] - m);
      y[ch * hw + i] = e;
      s += e;
    }
    const float inv = 1.f / s;
    for (uint32_t ch = 0; ch < c; ++ch) y[ch * hw + i] *= inv;
  }
}

void linear_f32(const float* w, const float* b, const float* __restrict x, float* y, uint32_t cols, uint32_t r0,
                uint32_t r1) {
  for (uint32_t r = r0; r < r1; ++r) {
    const float* __restrict wr = w + size_t(r) * cols;
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // 8 lanes: vectorisable without -ffast-math
    uint32_t c = 0;
    for (; c + 8 <= cols; c += 8)
      for (int l = 0; l < 8; ++l) acc[l] += wr[c + l] * x[c + l];
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; c < cols; ++c) s += wr[c] * x[c];
    y[r] = b[r] + s;
  }
}

void gemm_lanes_f32(const float* w, uint32_t cols, const float* x, size_t ldx, float* y, size_t ldy, size_t n,
                    uint32_t r0, uint32_t r1) {
  for (uint32_t r = r0; r < r1; ++r) {
    float* __restrict yr = y + size_t(r) * ldy;
    const float* wr = w + size_t(r) * cols;
    for (uint32_t k = 0; k < cols; ++k) {
      const float v = wr[k];
      if (v == 0.f) continue;
      const float* __restrict xr = x + size_t(k) * ldx;
      for (size_t i = 0; i < n; ++i) yr[i] += v * xr[i];  // contiguous: vectorised by the compiler
    }
  }
}

void conv_f32(const float* w, uint32_t cols, const ConvGeom& g, const int64_t* tapoff, const float* bias,
              const float* xpad, float* y, uint32_t oc0, uint32_t oc1, uint32_t oy0, uint32_t oy1,
              const ConvEpilogue& ep) {
  constexpr uint32_t kTile = 16;
  const uint32_t icg = g.in_c / g.groups, ocg = g.out_c / g.groups;
  const PadGeom pg = pad_geom(g);
  for (uint32_t oc = oc0; oc < oc1; ++oc) {
    const float* xg = xpad + size_t(oc / ocg) * icg * pg.plane;
    const float* wr = w + size_t(oc) * cols;
    float* yo = y + size_t(oc) * g.out_h * g.out_w;
    for (uint32_t oy = oy0; oy < oy1; ++oy)
      for (uint32_t ox0 = 0; ox0 < g.out_w; ox0 += kTile) {
        const uint32_t n = std::min(kTile, g.out_w - ox0);
        float acc[kTile];
        for (uint32_t i = 0; i < kTile; ++i) acc[i] = bias[oc];
        const float* xb = xg + size_t(oy) * g.sh * pg.wq + ox0;
        for (uint32_t c = 0; c < cols; ++c) {
          const float v = wr[c];
          if (v == 0.f) continue;
          const float* xp = xb + tapoff[c];
          for (uint32_t i = 0; i < n; ++i) acc[i] += v * xp[i];
        }
        const size_t o = size_t(oy) * g.out_w + ox0;
        const float* ro = ep.res ? ep.res + size_t(oc) * g.out_h * g.out_w + o : nullptr;
        for (uint32_t i = 0; i < n; ++i) {
          float v = acc[i];
          if (ro) v += ro[i];
          if (ep.clamp) v = std::min(std::max(v, ep.lo), ep.hi);
          yo[o + i] = v;
        }
      }
  }
}

}  // namespace dcrt
