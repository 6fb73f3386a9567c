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

// ph, pw: top and left zero padding; pb, pr: bottom and right (the file's conv2d is symmetric,
// pb = ph and pr = pw; a pad op folded into the conv at load makes them differ); dh, dw: dilation.
struct ConvGeom {
  uint32_t in_c, in_h, in_w;
  uint32_t out_c, out_h, out_w;
  uint32_t kh, kw, sh, sw, ph, pw, groups;
  uint32_t pb, pr, dh, dw;
};

// yt[r*ldy + i] += sum_c W[r, c] * xt[c*ldx + i] for i < n (column-major batch).
using SpmmFn = void (*)(const QSparseMatrix& w, const float* xt, size_t ldx, float* yt, size_t ldy, size_t n);
// Convolution layout: output-channel rows of 32-bit entries (column << 8 | code), fillers
// dropped. Derived at load from the file's CSC (conv weights are reused at every pixel, so
// the kernels want a row's taps together; the bytes stay codebook-indexed).
struct QConvRows {
  uint32_t rows, cols, code_bits;
  const uint32_t* rowptr;   // [rows + 1]
  const uint32_t* entries;  // [rowptr[rows]]: column << 8 | code, code != 0
  const float* codebook;    // [1 << code_bits]
};
constexpr uint32_t kConvSlack = 64;
constexpr uint32_t kConvRowBlock = 4;  // output rows the fast conv kernels block in registers

// Batched product on the rows layout (gather form, the batch counterpart of the conv rows):
// yt[r*ldy + i] += sum_e codebook[code_e] * xt[col_e*ldx + i] for r in [r0, r1), i < n.
// Each output row's lanes accumulate in registers while its entries stream by: one read of an
// input row per entry and no stores until the row ends (the CSC scatter form moves an output
// row in and out of L1 per entry). Row ranges write disjoint outputs: split them over threads.
using SpmmRowsFn = void (*)(const QConvRows& w, const float* xt, size_t ldx, float* yt, size_t ldy, size_t n,
                            uint32_t r0, uint32_t r1);  // floats readable past the end of a padded input

// The fast kernels' padded input: per input channel, sw phase planes of hp = in_h + 2ph rows
// by wq = ceil((in_w + 2pw) / sw) columns; phase p, column j holds padded column j*sw + p.
// Output pixel (oy, ox) with tap (ky, kx) reads padded row oy*sh + ky*dh and padded column
// ox*sw + kx*dw: phase (kx*dw) % sw, column ox + (kx*dw) / sw, so consecutive output pixels read
// consecutive floats at any stride and dilation.
struct PadGeom {
  size_t hp, wq, plane;  // rows, columns of a phase plane; floats per input channel
};
inline PadGeom pad_geom(const ConvGeom& g) {
  const size_t hp = size_t(g.in_h) + g.ph + g.pb, wq = (size_t(g.in_w) + g.pw + g.pr + g.sw - 1) / g.sw;
  return {hp, wq, size_t(g.sw) * hp * wq};
}
inline size_t padded_size(const ConvGeom& g) { return size_t(g.in_c) * pad_geom(g).plane; }

// What a conv kernel does to each output once its sum is complete (ops fused at load, see
// ExecOp): y = sum (+ res) then, if clamp, min(max(y, lo), hi) (relu: [0, inf), relu6: [0, 6]).
// res: a tensor shaped like y (the residual of an add), or null. The order (bias, taps, res,
// clamp) is the unfused ops' order, so a fused result equals the unfused one bit for bit.
struct ConvEpilogue {
  const float* res = nullptr;
  bool clamp = false;
  float lo = 0.f, hi = 0.f;
};

// Output channels [oc0, oc1) x output rows [oy0, oy1) of one sample:
// y[oc, oy, :] = epilogue(bias[oc] + conv(x)). Rectangles write disjoint outputs: split them
// over threads.
// x: [in_c, in_h, in_w]; xpad: pad_input(g, x), padded_size(g) floats, followed by kConvSlack
// readable floats (any contents: they only feed discarded lanes); tapoff:
// conv_tap_offsets(g, cols). Fast kernels read xpad and tapoff, references read x.
using ConvFn = void (*)(const QConvRows& w, const ConvGeom& g, const int64_t* tapoff, const float* bias,
                        const float* x, const float* xpad, float* y, uint32_t oc0, uint32_t oc1, uint32_t oy0,
                        uint32_t oy1, const ConvEpilogue& ep);
// Depthwise convolution (ConvFn for groups = in_c = out_c only; conv_q_rows__ref is its twin).
inline bool conv_is_depthwise(const ConvGeom& g) { return g.groups == g.in_c && g.groups == g.out_c; }

// Offset of column c's tap (channel-in-group, ky, kx) in the padded input of its group
// (PadGeom layout); output pixel (oy, ox) adds oy * sh * wq + ox.
void conv_tap_offsets(const ConvGeom& g, uint32_t cols, int64_t* tapoff);

// CSC -> rows (drops fillers). rowptr: rows + 1, entries: nnz (count of code != 0).
void csc_to_conv_rows(const QSparseMatrix& w, uint32_t* rowptr, uint32_t* entries);
// CSC -> rows in column tiles of tile_cols: row_tile_count() row-pointer arrays of rows + 1,
// back to back, absolute into entries (nnz of them). csc_to_conv_rows is the one-tile case.
uint32_t row_tile_count(uint32_t cols, uint32_t tile_cols);
void csc_to_rows_tiled(const QSparseMatrix& w, uint32_t tile_cols, uint32_t* rowptr, uint32_t* entries);
// Zero-pad one sample into the PadGeom layout: writes exactly padded_size(g) floats.
void pad_input(const ConvGeom& g, const float* x, float* xpad);

void spmm_q_rel16__ref(const QSparseMatrix& w, const float* xt, size_t ldx, float* yt, size_t ldy, size_t n);
void spmm_q_rel16__generic(const QSparseMatrix& w, const float* xt, size_t ldx, float* yt, size_t ldy, size_t n);
void spmm_q_rel16__avx2(const QSparseMatrix& w, const float* xt, size_t ldx, float* yt, size_t ldy, size_t n);
void spmm_rows_q_c24__ref(const QConvRows& w, const float* xt, size_t ldx, float* yt, size_t ldy, size_t n,
                          uint32_t r0, uint32_t r1);
void spmm_rows_q_c24__generic(const QConvRows& w, const float* xt, size_t ldx, float* yt, size_t ldy, size_t n,
                              uint32_t r0, uint32_t r1);
void spmm_rows_q_c24__avx2(const QConvRows& w, const float* xt, size_t ldx, float* yt, size_t ldy, size_t n,
                           uint32_t r0, uint32_t r1);
// AVX-512 (qsparse_avx512.cpp): 16-lane rows, 8-row conv blocks.
void spmm_rows_q_c24__avx512(const QConvRows& w, const float* xt, size_t ldx, float* yt, size_t ldy, size_t n,
                             uint32_t r0, uint32_t r1);
void conv_q_rows__avx512(const QConvRows& w, const ConvGeom& g, const int64_t* tapoff, const float* bias,
                         const float* x, const float* xpad, float* y, uint32_t oc0, uint32_t oc1, uint32_t oy0,
                         uint32_t oy1, const ConvEpilogue& ep);
void conv_dw_q_rows__avx512(const QConvRows& w, const ConvGeom& g, const int64_t* tapoff, const float* bias,
                            const float* x, const float* xpad, float* y, uint32_t oc0, uint32_t oc1, uint32_t oy0,
                            uint32_t oy1, const ConvEpilogue& ep);
#define DCRT_CONV_ARGS                                                                                      \
  const QConvRows &w, const ConvGeom &g, const int64_t *tapoff, const float *bias, const float *x, const float *xpad, \
      float *y, uint32_t oc0, uint32_t oc1, uint32_t oy0, uint32_t oy1, const ConvEpilogue &ep
void conv_q_rows__ref(DCRT_CONV_ARGS);
void conv_q_rows__generic(DCRT_CONV_ARGS);
void conv_q_rows__avx2(DCRT_CONV_ARGS);
void conv_dw_q_rows__generic(DCRT_CONV_ARGS);
void conv_dw_q_rows__avx2(DCRT_CONV_ARGS);
#undef DCRT_CONV_ARGS
bool cpu_has_avx2_fma();  // the __avx2 kernels need both

// Depthwise convolution of a small map (ops/conv.cpp takes it below 64 output pixels): output
// channels [oc0, oc1) of one sample, y[oc] = epilogue(bias[oc] + conv(x[oc])), 16 channels at a
// time vectorised across the channels (kernels/dw_blocks.inl). w: [out_c][kh * kw] fp32, zeros
// where pruned (a sparse layer's codes decoded at load). Needs in_h * in_w <= kDwMaxInPixels
// and kh * kw <= kDwMaxTaps. Ranges write disjoint outputs.
constexpr uint32_t kDwLanes = 16;
constexpr size_t kDwMaxInPixels = 256;  // the transposed input block on the stack: 16 KB
constexpr uint32_t kDwMaxTaps = 64;
using DwBlocksFn = void (*)(const float* w, const ConvGeom& g, const float* bias, const float* x, float* y,
                            uint32_t oc0, uint32_t oc1, const ConvEpilogue& ep);
#define DCRT_DWB_ARGS                                                                                     \
  const float *w, const ConvGeom &g, const float *bias, const float *x, float *y, uint32_t oc0, uint32_t oc1, \
      const ConvEpilogue &ep
void conv_dw_blocks__ref(DCRT_DWB_ARGS);
void conv_dw_blocks__generic(DCRT_DWB_ARGS);
void conv_dw_blocks__avx2(DCRT_DWB_ARGS);
void conv_dw_blocks__avx512(DCRT_DWB_ARGS);
#undef DCRT_DWB_ARGS

}  // namespace dcrt
