// Dense codebook product at batch 1: every weight's code stored as one byte (pruned weights are
// code 0, the codebook's zero), decoded into fp32 by register shuffles inside the loop and never
// expanded in memory. Where a layer keeps 20-60% of its weights (fc8, most convs of the paper),
// walking all the codes with contiguous input loads costs less than any sparse traversal: no
// index per weight, no gather, four times fewer bytes than fp32 dense BLAS reads.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/qsparse.hpp"

namespace dcrt {

struct QDense8 {
  uint32_t rows, cols, code_bits;
  size_t ldc;              // bytes per row of codes (cols rounded up to 64; the padding is code 0)
  const uint8_t* codes;    // [rows][ldc]
  const float* codebook;   // [1 << code_bits], codebook[0] == 0
  // Precision modes (load(precision=...)), built at load by build_dense8_i8 / build_dense8_bf16:
  const int8_t* qcodebook = nullptr;   // int8: [256], round(codebook / qscale), |q| <= 127, q[0] == 0
  float qscale = 0.f;
  const int32_t* qrowsum = nullptr;    // int8: [rows], the sum of each row's int8 weights
  const uint16_t* bcodebook = nullptr; // bf16: [256], the codebook rounded to bf16 (nearest even)
  // int8 with codes of <= 7 bits: the codes packed, 8 codes in code_bits bytes (little-endian
  // bit fields), ldp = ldc / 8 * code_bits bytes per row, 64 readable bytes after the last row
  // (pack_dense8). Null: the int8 kernels read the byte codes.
  const uint8_t* packed = nullptr;
  size_t ldp = 0;
};

// y[r] += sum_c codebook[codes[r][c]] * x[c] for r in [r0, r1). Reads x[0, cols) only. Row
// ranges write disjoint outputs: split them over threads.
using DenseQ8Fn = void (*)(const QDense8& w, const float* x, float* y, uint32_t r0, uint32_t r1);

// The dense codes of a rel16 CSC matrix, rows of ldc = round_up(cols, 64) bytes.
size_t dense8_ldc(uint32_t cols);
void build_dense8(const QSparseMatrix& w, std::vector<uint8_t>& codes);

// ---- Precision modes: the same codes, the products in int8 or bf16 (opt-in at load).
//
// int8: weights are qcodebook[code] * qscale (one scale per layer, 255 levels); the input is
// quantized once per call, x ~= scale * (q - zero) with q in 0..255: zero 0 and 255 steps
// where no input is negative (after a ReLU), else zero 128 and 127 steps a side. A row is
// sum q * w - zero * qrowsum[r], an exact integer (int32 up to kDenseI8MaxCols columns), so
// every int8 kernel gives the same bits: y[r] += float(that) * (scale * qscale).
// bf16: codebook and input rounded to bf16 (nearest even), each product exact in fp32, sums in
// fp32 (the order differs between kernels, as in fp32).
struct QInputU8 {
  const uint8_t* q;  // [ldc]; the padding holds the zero point (its codes are 0)
  float scale;
  int32_t zero;
};
constexpr uint32_t kDenseI8MaxCols = 65536;  // 255 * 127 * 65536 < 2^31
using DenseI8Fn = void (*)(const QDense8& w, const QInputU8& x, float* y, uint32_t r0, uint32_t r1);
using DenseBf16Fn = void (*)(const QDense8& w, const uint16_t* x, float* y, uint32_t r0, uint32_t r1);

// The int8 codebook, its scale and the per-row sums of a layer's dense codes (from codebook,
// codes, ldc, rows, cols of w); the bf16 codebook. Both tables have 256 entries (zeros past
// 2^code_bits) so that kernels may look up any byte.
void build_dense8_i8(const QDense8& w, std::vector<int8_t>& qcodebook, float& qscale, std::vector<int32_t>& rowsum);
void build_dense8_bf16(const float* codebook, uint32_t code_bits, std::vector<uint16_t>& bcodebook);
// The packed codes of w's byte codes (code_bits <= 7): at 5 bits 0.625 bytes per weight
// instead of 1, what a layer streamed from L3 or memory is bound by.
inline bool dense8_packs(uint32_t code_bits) { return code_bits <= 7; }
inline size_t dense8_ldp(uint32_t cols, uint32_t code_bits) { return dense8_ldc(cols) / 8 * code_bits; }
void pack_dense8(const QDense8& w, std::vector<uint8_t>& packed);
// Code c of a packed row (portable kernels; reads 8 bytes at the code's group).
inline uint32_t packed_code(const uint8_t* row, uint32_t c, uint32_t b) {
  uint64_t q;
  std::memcpy(&q, row + size_t(c / 8) * b, 8);
  return uint32_t(q >> ((c % 8) * b)) & ((1u << b) - 1);
}
// Per call, before the rows are split: x[0, cols) into q[0, ldc) (portable, shared by every
// kernel so that they all see the same bytes). Non-finite inputs map to the zero point.
QInputU8 quantize_input_u8(const float* x, uint32_t cols, size_t ldc, uint8_t* q);
void round_input_bf16(const float* x, uint32_t cols, size_t ldc, uint16_t* b);  // the padding is 0
uint16_t bf16_round(float v);  // nearest even; NaN stays NaN
float bf16_float(uint16_t b);
// The last step of every int8 kernel (one definition: the same bits everywhere).
inline float dense_i8_out(int64_t acc, int32_t zero, int32_t rowsum, float scale) {
  return float(acc - int64_t(zero) * rowsum) * scale;
}

void dense_i8__ref(const QDense8& w, const QInputU8& x, float* y, uint32_t r0, uint32_t r1);
void dense_i8__generic(const QDense8& w, const QInputU8& x, float* y, uint32_t r0, uint32_t r1);
void dense_i8__avx512vnni(const QDense8& w, const QInputU8& x, float* y, uint32_t r0, uint32_t r1);
void dense_bf16__ref(const QDense8& w, const uint16_t* x, float* y, uint32_t r0, uint32_t r1);
void dense_bf16__generic(const QDense8& w, const uint16_t* x, float* y, uint32_t r0, uint32_t r1);
void dense_bf16__avx512bf16(const QDense8& w, const uint16_t* x, float* y, uint32_t r0, uint32_t r1);
bool cpu_has_avx512_vnni_vbmi();
bool cpu_has_avx512_bf16();

void dense_q8__ref(const QDense8& w, const float* x, float* y, uint32_t r0, uint32_t r1);
void dense_q8__generic(const QDense8& w, const float* x, float* y, uint32_t r0, uint32_t r1);
void dense_q8__avx2(const QDense8& w, const float* x, float* y, uint32_t r0, uint32_t r1);
void dense_q8__avx512(const QDense8& w, const float* x, float* y, uint32_t r0, uint32_t r1);

}  // namespace dcrt
