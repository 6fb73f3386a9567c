// One registry of kernels: tests and benchmarks iterate it, the executor picks from it.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "crc32.hpp"
#include "huffman.hpp"
#include "kernels/conv_small.hpp"
#include "kernels/dense.hpp"
#include "kernels/dense_q8.hpp"
#include "kernels/qsparse.hpp"
#include "kernels/spmv16.hpp"

namespace dcrt {

struct KernelInfo {
  const char* name;       // spmv_rows_q_t16__generic: <op>_<weights>_<layout>__<arch>
  const char* op;         // "spmv_rows" | "spmv_cols" | "dense_q8" | "dense_i8" | "dense_bf16" | "spmm" | "spmm_rows" | "conv" | "conv_dw" | "conv_dw_blocks" | "conv_small" | "huffman" | "transpose" | "crc32"
  const char* isa;        // "ref" | "generic" | ...
  bool reference;         // the plain twin every other kernel of this op is tested against
  SpmvRowsFn spmv_rows = nullptr;
  SpmvColsFn spmv_cols = nullptr;
  DenseQ8Fn dense_q8 = nullptr;
  DenseI8Fn dense_i8 = nullptr;
  DenseBf16Fn dense_bf16 = nullptr;
  SpmmFn spmm = nullptr;
  SpmmRowsFn spmm_rows = nullptr;
  ConvFn conv = nullptr;
  DwBlocksFn dw_blocks = nullptr;
  SmallConvFn conv_small = nullptr;
  HuffDecodeFn huff = nullptr;
  TransposeFn transpose = nullptr;
  Crc32Fn crc32 = nullptr;
  bool (*supported)() = nullptr;  // CPU feature check; null = always
  uint32_t row_block = kConvRowBlock;  // conv: output rows per register block (the executor's band height)
  uint32_t huff_job_chunks = 12;       // huffman: chunks per decode job (what the decoder keeps in flight, x2)
};

const std::vector<KernelInfo>& kernel_registry();
const KernelInfo* find_kernel(const std::string& name);
// The last supported non-reference kernel of `op` (the registry lists them slowest ISA first).
const KernelInfo& best_kernel(const char* op);

// The kernel the runtime uses for `op` on this CPU. For spmv_rows, spmv_cols and huffman, whose
// AVX-512 variants (vgatherdps; decoded lanes; 16 chunks per register) lose to the BMI2 ones on
// Zen 4 (0.4-0.8x) and may win on other AVX-512 CPUs, every supported variant is timed once per
// process on a synthetic layer or stream (layout.cpp) and the fastest taken; every other op:
// best_kernel.
const KernelInfo& picked_kernel(const char* op);
struct KernelTiming {
  const KernelInfo* kernel;
  double ns_per_nz;  // per stored non-zero (spmv_cols: per non-zero of a live column; huffman: per symbol, low entropy)
  double ns_per_symbol_hi = 0;  // huffman: per symbol at the higher entropy (huffman_timed_bits)
};
// The Huffman decoder for a stream of `bits_per_symbol` (its bytes * 8 / symbols): the timed
// candidates' costs at two entropies (huffman_timed_bits: ~3.6 and ~7.25 bits per symbol), interpolated; the scalar
// decoders take more symbols per table load the shorter the codes, the 16-lane one one per
// gathered element whatever their length.
const KernelInfo& huffman_for_stream(double bits_per_symbol);
std::pair<double, double> huffman_timed_bits();
// What picked_kernel measured for `op` (empty where it timed nothing: one candidate, or an op
// it does not time).
std::vector<KernelTiming> kernel_timings(const char* op);

}  // namespace dcrt
