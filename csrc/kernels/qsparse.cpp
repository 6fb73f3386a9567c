// Quantized sparse products on rel16 CSC (format.md §4.3 decoded): reference twins and
// portable optimised versions. Every *_generic is tested against its *_ref.
#include "qsparse.hpp"

#include <algorithm>
#include <vector>

namespace dcrt {

// ---------------------------------------------------------------- references
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

void spmm_rows_q_c24__ref(const QConvRows& w, const float* xt, size_t ldx, float* yt, size_t ldy, size_t n,
                          uint32_t r0, uint32_t r1) {
  const uint32_t mask = (1u << w.code_bits) - 1;
  for (uint32_t r = r0; r < r1; ++r)
    for (size_t i = 0; i < n; ++i) {
      double s = 0;
      for (uint32_t e = w.rowptr[r]; e < w.rowptr[r + 1]; ++e)
        s += double(w.codebook[w.entries[e] & mask]) * xt[size_t(w.entries[e] >> 8) * ldx + i];
      yt[size_t(r) * ldy + i] += float(s);
    }
}

void spmm_rows_q_c24__generic(const QConvRows& w, const float* __restrict xt, size_t ldx, float* __restrict yt,
                              size_t ldy, size_t n, uint32_t r0, uint32_t r1) {
  constexpr size_t L = 16;  // lanes held in a local accumulator (vectorised by the compiler)
  const uint32_t mask = (1u << w.code_bits) - 1;
  for (size_t i0 = 0; i0 < n; i0 += L) {
    const size_t m = std::min(L, n - i0);
    for (uint32_t r = r0; r < r1; ++r) {
      float acc[L] = {};
      for (uint32_t e = w.rowptr[r]; e < w.rowptr[r + 1]; ++e) {
        const float v = w.codebook[w.entries[e] & mask];
        const float* xr = xt + size_t(w.entries[e] >> 8) * ldx + i0;
        if (m == L)
          for (size_t i = 0; i < L; ++i) acc[i] += v * xr[i];
        else
          for (size_t i = 0; i < m; ++i) acc[i] += v * xr[i];
      }
      float* yr = yt + size_t(r) * ldy + i0;
      for (size_t i = 0; i < m; ++i) yr[i] += acc[i];
    }
  }
}

void conv_q_rows__ref(const QConvRows& w, const ConvGeom& g, const int64_t*, const float* bias, const float* x,
                      const float*, float* y, uint32_t oc0, uint32_t oc1, uint32_t oy0, uint32_t oy1,
                      const ConvEpilogue& ep) {
  const uint32_t mask = (1u << w.code_bits) - 1;
  const uint32_t icg = g.in_c / g.groups, ocg = g.out_c / g.groups, taps = g.kh * g.kw;
  for (uint32_t oc = oc0; oc < oc1; ++oc)
    for (uint32_t oy = oy0; oy < oy1; ++oy)
      for (uint32_t ox = 0; ox < g.out_w; ++ox) {
        float s = bias[oc];
        for (uint32_t e = w.rowptr[oc]; e < w.rowptr[oc + 1]; ++e) {
          const uint32_t col = w.entries[e] >> 8, ic = oc / ocg * icg + col / taps;
          const int64_t iy = int64_t(oy) * g.sh - g.ph + int64_t((col / g.kw) % g.kh) * g.dh;
          const int64_t ix = int64_t(ox) * g.sw - g.pw + int64_t(col % g.kw) * g.dw;
          if (iy >= 0 && ix >= 0 && iy < g.in_h && ix < g.in_w)
            s += w.codebook[w.entries[e] & mask] * x[(size_t(ic) * g.in_h + iy) * g.in_w + ix];
        }
        const size_t o = (size_t(oc) * g.out_h + oy) * g.out_w + ox;
        if (ep.res) s += ep.res[o];
        if (ep.clamp) s = std::min(std::max(s, ep.lo), ep.hi);
        y[o] = s;
      }
}

void conv_dw_blocks__ref(const float* w, const ConvGeom& g, const float* bias, const float* x, float* y, uint32_t oc0,
                         uint32_t oc1, const ConvEpilogue& ep) {
  const uint32_t taps = g.kh * g.kw;
  for (uint32_t oc = oc0; oc < oc1; ++oc)
    for (uint32_t oy = 0; oy < g.out_h; ++oy)
      for (uint32_t ox = 0; ox < g.out_w; ++ox) {
        float s = bias[oc];
        for (uint32_t k = 0; k < taps; ++k) {
          const int64_t iy = int64_t(oy) * g.sh - g.ph + int64_t(k / g.kw) * g.dh;
          const int64_t ix = int64_t(ox) * g.sw - g.pw + int64_t(k % g.kw) * g.dw;
          if (iy >= 0 && ix >= 0 && iy < g.in_h && ix < g.in_w)
            s += w[size_t(oc) * taps + k] * x[(size_t(oc) * g.in_h + iy) * g.in_w + ix];
        }
        const size_t o = (size_t(oc) * g.out_h + oy) * g.out_w + ox;
        if (ep.res) s += ep.res[o];
        if (ep.clamp) s = std::min(std::max(s, ep.lo), ep.hi);
        y[o] = s;
      }
}

// ---------------------------------------------------------------- generic (portable)
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

uint32_t row_tile_count(uint32_t cols, uint32_t tile_cols) {
  return cols ? (cols + tile_cols - 1) / tile_cols : 1;
}

void csc_to_rows_tiled(const QSparseMatrix& w, uint32_t tile_cols, uint32_t* rowptr, uint32_t* entries) {
  const uint32_t mask = (1u << w.code_bits) - 1, rows = w.rows;
  const uint32_t tiles = row_tile_count(w.cols, tile_cols);
  std::vector<uint32_t> cur(size_t(tiles) * rows, 0);  // counts, then fill cursors
  for (uint32_t c = 0; c < w.cols; ++c) {
    uint32_t* ct = cur.data() + size_t(c / tile_cols) * rows;
    uint32_t row = uint32_t(-1);
    for (uint32_t e = w.colptr[c]; e < w.colptr[c + 1]; ++e) {
      row += (w.entries[e] >> w.code_bits) + 1;
      if (w.entries[e] & mask) ct[row]++;
    }
  }
  uint32_t pos = 0;
  for (uint32_t k = 0; k < tiles; ++k) {
    uint32_t* rp = rowptr + size_t(k) * (rows + 1);
    for (uint32_t r = 0; r < rows; ++r) {
      const uint32_t n = cur[size_t(k) * rows + r];
      rp[r] = cur[size_t(k) * rows + r] = pos;
      pos += n;
    }
    rp[rows] = pos;
  }
  for (uint32_t c = 0; c < w.cols; ++c) {  // columns ascending: each row's entries come out sorted
    uint32_t* ct = cur.data() + size_t(c / tile_cols) * rows;
    uint32_t row = uint32_t(-1);
    for (uint32_t e = w.colptr[c]; e < w.colptr[c + 1]; ++e) {
      row += (w.entries[e] >> w.code_bits) + 1;
      if (w.entries[e] & mask) entries[ct[row]++] = c << 8 | (w.entries[e] & mask);
    }
  }
}

void csc_to_conv_rows(const QSparseMatrix& w, uint32_t* rowptr, uint32_t* entries) {
  csc_to_rows_tiled(w, std::max<uint32_t>(1, w.cols), rowptr, entries);
}

void pad_input(const ConvGeom& g, const float* x, float* xpad) {
  const PadGeom pg = pad_geom(g);
  const uint32_t sw = g.sw;
  float* d = xpad;
  for (uint32_t c = 0; c < g.in_c; ++c)
    for (uint32_t p = 0; p < sw; ++p)
      for (size_t r = 0; r < pg.hp; ++r, d += pg.wq) {
        const int64_t iy = int64_t(r) - int64_t(g.ph);
        if (iy < 0 || iy >= int64_t(g.in_h)) {
          std::fill(d, d + pg.wq, 0.f);
          continue;
        }
        const float* xr = x + (size_t(c) * g.in_h + size_t(iy)) * g.in_w;
        if (sw == 1) {
          std::fill(d, d + g.pw, 0.f);
          std::copy(xr, xr + g.in_w, d + g.pw);
          std::fill(d + g.pw + g.in_w, d + pg.wq, 0.f);
        } else {
          // Phase p, column j holds padded column j*sw + p = input column j*sw + p - pw: zeros
          // left of the input, then every sw-th input float, then zeros (no per-float test).
          const int64_t first = int64_t(p) - int64_t(g.pw);  // input column of j = 0
          size_t j = 0;
          for (; j < pg.wq && first + int64_t(j * sw) < 0; ++j) d[j] = 0.f;
          for (int64_t ix = first + int64_t(j * sw); j < pg.wq && ix < int64_t(g.in_w); ++j, ix += sw) d[j] = xr[ix];
          for (; j < pg.wq; ++j) d[j] = 0.f;
        }
      }
  // No write past the padded sample: in a batch the next sample starts right here.
}

namespace generic {
#include "kernels/conv_rows.inl"
#include "kernels/dw_blocks.inl"
}  // namespace generic

void conv_dw_blocks__generic(const float* w, const ConvGeom& g, const float* bias, const float* x, float* y,
                             uint32_t oc0, uint32_t oc1, const ConvEpilogue& ep) {
  generic::dw_blocks(w, g, bias, x, y, oc0, oc1, ep);
}

void conv_tap_offsets(const ConvGeom& g, uint32_t cols, int64_t* tapoff) {
  const PadGeom pg = pad_geom(g);
  const uint32_t taps = g.kh * g.kw;
  for (uint32_t c = 0; c < cols; ++c) {
    const uint64_t ky = (c / g.kw) % g.kh * uint64_t(g.dh), kx = c % g.kw * uint64_t(g.dw);  // padded offsets
    tapoff[c] = int64_t((c / taps) * pg.plane + (kx % g.sw) * pg.hp * pg.wq + ky * pg.wq + kx / g.sw);
  }
}

void conv_q_rows__generic(const QConvRows& w, const ConvGeom& g, const int64_t* tapoff, const float* bias,
                          const float*, const float* xpad, float* y, uint32_t oc0, uint32_t oc1, uint32_t oy0,
                          uint32_t oy1, const ConvEpilogue& ep) {
  generic::conv_rows(w, g, tapoff, bias, xpad, y, oc0, oc1, oy0, oy1, ep);
}

void conv_dw_q_rows__generic(const QConvRows& w, const ConvGeom& g, const int64_t* tapoff, const float* bias,
                             const float*, const float* xpad, float* y, uint32_t oc0, uint32_t oc1, uint32_t oy0,
                             uint32_t oy1, const ConvEpilogue& ep) {
  generic::conv_dw_rows(w, g, tapoff, bias, xpad, y, oc0, oc1, oy0, oy1, ep);
}

}  // namespace dcrt
