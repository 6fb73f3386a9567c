// Quantized sparse products on rel16 CSC (format.md §4.3 decoded): reference twins and
// portable optimised versions. Every *_generic is tested against its *_ref.
#include "qsparse.hpp"

#include <algorithm>

namespace dcrt {

// ---------------------------------------------------------------- references
void spmv_q_rel16__ref(const QSparseMatrix& w, const float* x, float* y, uint32_t c0, uint32_t c1) {
  const uint32_t mask = (1u << w.code_bits) - 1;
  for (uint32_t c = c0; c < c1; ++c) {
    int64_t row = -1;
    for (uint32_t e = w.colptr[c]; e < w.colptr[c + 1]; ++e) {
      row += (w.entries[e] >> w.code_bits) + 1;
      y[row] += w.codebook[w.entries[e] & mask] * x[c];
    }
  }
}

void spmm_q_rel16__ref(const QSparseMatrix& w, const float* xt, size_t ldx, float* yt, size_t ldy, size_t n) {
  const uint32_t mask = (1u << w.code_bits) - 1;
  for (uint32_t c = 0; c < w.cols; ++c) {
    int64_t row = -1;
    for (uint32_t e = w.colptr[c]; e < w.colptr[c + 1]; ++e) {
      row += (w.entries[e] >> w.code_bits) + 1;
      const float v = w.codebook[w.entries[e] & mask];
      for (size_t i = 0; i < n; ++i) yt[row * ldy + i] += v * xt[c * ldx + i];
    }
  }
}

void conv_q_rel16__ref(const QSparseMatrix& w, const ConvGeom& g, const float* x, float* y, uint32_t p0, uint32_t p1,
                       float*) {
  const uint32_t mask = (1u << w.code_bits) - 1;
  const uint32_t icg = g.in_c / g.groups, ocg = g.out_c / g.groups, P = g.out_h * g.out_w;
  for (uint32_t c = 0; c < w.cols; ++c) {
    const uint32_t ci = c / (g.kh * g.kw), ky = (c / g.kw) % g.kh, kx = c % g.kw;
    int64_t row = -1;
    for (uint32_t e = w.colptr[c]; e < w.colptr[c + 1]; ++e) {
      row += (w.entries[e] >> w.code_bits) + 1;
      const float v = w.codebook[w.entries[e] & mask];
      const uint32_t ic = uint32_t(row) / ocg * icg + ci;
      for (uint32_t p = p0; p < p1; ++p) {
        const int64_t iy = int64_t(p / g.out_w) * g.sh - g.ph + ky, ix = int64_t(p % g.out_w) * g.sw - g.pw + kx;
        if (iy < 0 || ix < 0 || iy >= g.in_h || ix >= g.in_w) continue;
        y[size_t(row) * P + p] += v * x[(size_t(ic) * g.in_h + iy) * g.in_w + ix];
      }
    }
  }
}

// ---------------------------------------------------------------- generic (portable)
void spmv_q_rel16__generic(const QSparseMatrix& w, const float* __restrict x, float* __restrict y, uint32_t c0,
                           uint32_t c1) {
  const uint32_t b = w.code_bits, mask = (1u << b) - 1, ncode = 1u << b;
  const float* cb = w.codebook;
  float scaled[256];
  for (uint32_t c = c0; c < c1; ++c) {
    const float xv = x[c];
    if (xv == 0.f) continue;  // a zero activation costs nothing (EIE)
    const uint16_t* e = w.entries + w.colptr[c];
    const uint16_t* end = w.entries + w.colptr[c + 1];
    uint32_t row = uint32_t(-1);
    if (uint32_t(end - e) >= ncode) {
      // Scale the codebook once per column: each entry is then a lookup and an add.
      for (uint32_t k = 0; k < ncode; ++k) scaled[k] = cb[k] * xv;
      for (; e < end; ++e) {
        row += (*e >> b) + 1;
        y[row] += scaled[*e & mask];
      }
    } else {
      for (; e < end; ++e) {
        row += (*e >> b) + 1;
        y[row] += cb[*e & mask] * xv;
      }
    }
  }
}

void spmm_q_rel16__generic(const QSparseMatrix& w, const float* __restrict xt, size_t ldx, float* __restrict yt,
                           size_t ldy, size_t n) {
  const uint32_t b = w.code_bits, mask = (1u << b) - 1;
  for (uint32_t c = 0; c < w.cols; ++c) {
    const float* xr = xt + c * ldx;
    uint32_t row = uint32_t(-1);
    for (uint32_t e = w.colptr[c]; e < w.colptr[c + 1]; ++e) {
      const uint16_t en = w.entries[e];
      row += (en >> b) + 1;
      if ((en & mask) == 0) continue;  // filler
      const float v = w.codebook[en & mask];
      float* yr = yt + size_t(row) * ldy;
      for (size_t i = 0; i < n; ++i) yr[i] += v * xr[i];  // contiguous: vectorised by the compiler
    }
  }
}

void im2col_row(const ConvGeom& g, const float* x, uint32_t ic, uint32_t ky, uint32_t kx, uint32_t p0, uint32_t p1,
                float* dst) {
  const float* xc = x + size_t(ic) * g.in_h * g.in_w;
  uint32_t p = p0;
  while (p < p1) {
    const uint32_t oy = p / g.out_w, ox0 = p % g.out_w;
    const uint32_t ox1 = std::min<uint32_t>(g.out_w, ox0 + (p1 - p));
    float* d = dst + (p - p0);
    const int64_t iy = int64_t(oy) * g.sh - g.ph + ky;
    if (iy < 0 || iy >= g.in_h) {
      std::fill(d, d + (ox1 - ox0), 0.f);
    } else {
      const float* xr = xc + size_t(iy) * g.in_w;
      for (uint32_t ox = ox0; ox < ox1; ++ox) {
        const int64_t ix = int64_t(ox) * g.sw - g.pw + kx;
        d[ox - ox0] = (ix >= 0 && ix < g.in_w) ? xr[ix] : 0.f;
      }
    }
    p += ox1 - ox0;
  }
}

// Direct sparse convolution: per weight column (ic, ky, kx) build one shifted input row
// for this pixel tile, then every non-zero of the column is an axpy into its output row.
void conv_q_rel16__generic(const QSparseMatrix& w, const ConvGeom& g, const float* x, float* y, uint32_t p0,
                           uint32_t p1, float* scratch) {
  const uint32_t b = w.code_bits, mask = (1u << b) - 1;
  const uint32_t icg = g.in_c / g.groups, ocg = g.out_c / g.groups, P = g.out_h * g.out_w, T = p1 - p0;
  const uint32_t taps = g.kh * g.kw;
  for (uint32_t c = 0; c < w.cols; ++c) {
    const uint32_t ci = c / taps, ky = (c / g.kw) % g.kh, kx = c % g.kw;
    uint32_t row = uint32_t(-1), group = uint32_t(-1);
    for (uint32_t e = w.colptr[c]; e < w.colptr[c + 1]; ++e) {
      const uint16_t en = w.entries[e];
      row += (en >> b) + 1;
      if ((en & mask) == 0) continue;
      if (row / ocg != group) {  // rows are sorted: each group's input row is built once
        group = row / ocg;
        im2col_row(g, x, group * icg + ci, ky, kx, p0, p1, scratch);
      }
      const float v = w.codebook[en & mask];
      float* __restrict yr = y + size_t(row) * P + p0;
      const float* __restrict xr = scratch;
      for (uint32_t i = 0; i < T; ++i) yr[i] += v * xr[i];
    }
  }
}

}  // namespace dcrt
