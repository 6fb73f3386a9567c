// Quantized sparse kernels on the rel16 execution layout: CSC columns of 16-bit entries
// (gap << code_bits | code), codebook indirection, never expanded to fp32.
// Plain pointers in, outputs out: no files, no graphs (the XNNPACK habit).
#pragma once
#include <cstddef>
#include <cstdint>

namespace dcrt {

struct QSparseMatrix {
  uint32_t rows, cols, code_bits;
  const uint32_t* colptr;   // [cols + 1]
  const uint16_t* entries;  // [colptr[cols]]
  const float* codebook;    // [1 << code_bits], codebook[0] == 0 (fillers)
};

struct ConvGeom {
  uint32_t in_c, in_h, in_w;
  uint32_t out_c, out_h, out_w;
  uint32_t kh, kw, sh, sw, ph, pw, groups;
};

// y[rows] += W[:, c0:c1] * x[c0:c1]. Columns with x == 0 may be skipped.
using SpmvFn = void (*)(const QSparseMatrix& w, const float* x, float* y, uint32_t c0, uint32_t c1);
// yt[r*ldy + i] += sum_c W[r, c] * xt[c*ldx + i] for i < n (column-major batch).
using SpmmFn = void (*)(const QSparseMatrix& w, const float* xt, size_t ldx, float* yt, size_t ldy, size_t n);
// One sample: y[oc*out_h*out_w + p] += conv(x) for output pixels p in [p0, p1).
// scratch: at least (p1 - p0) floats. x is [in_c, in_h, in_w].
using ConvFn = void (*)(const QSparseMatrix& w, const ConvGeom& g, const float* x, float* y, uint32_t p0, uint32_t p1,
                        float* scratch);

void spmv_q_rel16__ref(const QSparseMatrix& w, const float* x, float* y, uint32_t c0, uint32_t c1);
void spmv_q_rel16__generic(const QSparseMatrix& w, const float* x, float* y, uint32_t c0, uint32_t c1);
void spmm_q_rel16__ref(const QSparseMatrix& w, const float* xt, size_t ldx, float* yt, size_t ldy, size_t n);
void spmm_q_rel16__generic(const QSparseMatrix& w, const float* xt, size_t ldx, float* yt, size_t ldy, size_t n);
void conv_q_rel16__ref(const QSparseMatrix& w, const ConvGeom& g, const float* x, float* y, uint32_t p0, uint32_t p1,
                       float* scratch);
void conv_q_rel16__generic(const QSparseMatrix& w, const ConvGeom& g, const float* x, float* y, uint32_t p0,
                           uint32_t p1, float* scratch);

// Fill dst[0 .. p1-p0) with input channel `ic` shifted by kernel tap (ky, kx) for output
// pixels [p0, p1): one row of the im2col matrix, zeros where the tap falls in the padding.
void im2col_row(const ConvGeom& g, const float* x, uint32_t ic, uint32_t ky, uint32_t kx, uint32_t p0, uint32_t p1,
                float* dst);

}  // namespace dcrt
