// Dense codebook product at batch 1: every weight's code stored as one byte (pruned weights are
// code 0, the codebook's zero), decoded into fp32 by register shuffles inside the loop and never
// expanded in memory. Where a layer keeps 20-60% of its weights (fc8, most convs of the paper),
// walking all the codes with contiguous input loads costs less than any sparse traversal: no
// index per weight, no gather, four times fewer bytes than fp32 dense BLAS reads.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/qsparse.hpp"

namespace dcrt {

struct QDense8 {
  uint32_t rows, cols, code_bits;
  size_t ldc;              // bytes per row of codes (cols rounded up to 64; the padding is code 0)
  const uint8_t* codes;    // [rows][ldc]
  const float* codebook;   // [1 << code_bits], codebook[0] == 0
};

// y[r] += sum_c codebook[codes[r][c]] * x[c] for r in [r0, r1). Reads x[0, cols) only. Row
// ranges write disjoint outputs: split them over threads.
using DenseQ8Fn = void (*)(const QDense8& w, const float* x, float* y, uint32_t r0, uint32_t r1);

// The dense codes of a rel16 CSC matrix, rows of ldc = round_up(cols, 64) bytes.
size_t dense8_ldc(uint32_t cols);
void build_dense8(const QSparseMatrix& w, std::vector<uint8_t>& codes);

void dense_q8__ref(const QDense8& w, const float* x, float* y, uint32_t r0, uint32_t r1);
void dense_q8__generic(const QDense8& w, const float* x, float* y, uint32_t r0, uint32_t r1);
void dense_q8__avx2(const QDense8& w, const float* x, float* y, uint32_t r0, uint32_t r1);
void dense_q8__avx512(const QDense8& w, const float* x, float* y, uint32_t r0, uint32_t r1);

}  // namespace dcrt
