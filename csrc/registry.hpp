// One registry of kernels: tests and benchmarks iterate it, the executor picks from it.
#pragma once
#include <string>
#include <vector>

#include "crc32.hpp"
#include "huffman.hpp"
#include "kernels/dense.hpp"
#include "kernels/dense_q8.hpp"
#include "kernels/qsparse.hpp"
#include "kernels/spmv16.hpp"

namespace dcrt {

struct KernelInfo {
  const char* name;       // spmv_rows_q_t16__generic: <op>_<weights>_<layout>__<arch>
  const char* op;         // "spmv_rows" | "spmv_cols" | "dense_q8" | "dense_i8" | "dense_bf16" | "spmm" | "spmm_rows" | "conv" | "conv_dw" | "conv_dw_blocks" | "huffman" | "transpose" | "crc32"
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
  HuffDecodeFn huff = nullptr;
  TransposeFn transpose = nullptr;
  Crc32Fn crc32 = nullptr;
  bool (*supported)() = nullptr;  // CPU feature check; null = always
  uint32_t row_block = kConvRowBlock;  // conv: output rows per register block (the executor's band height)
};

const std::vector<KernelInfo>& kernel_registry();
const KernelInfo* find_kernel(const std::string& name);
// The last supported non-reference kernel of `op` (the registry lists them slowest ISA first).
const KernelInfo& best_kernel(const char* op);

// The kernel the runtime uses for `op` on this CPU. For spmv_rows and spmv_cols, whose AVX-512
// variants (vgatherdps; decoded lanes) lose to the BMI2 ones on Zen 4 (0.6-0.8x) and win on
// other AVX-512 CPUs, every supported variant is timed once per process on a synthetic layer
// (layout.cpp) and the fastest taken; every other op: best_kernel.
const KernelInfo& picked_kernel(const char* op);
struct KernelTiming {
  const KernelInfo* kernel;
  double ns_per_nz;  // per stored non-zero (spmv_cols: per non-zero of a live column)
};
// What picked_kernel measured for `op` (empty where it timed nothing: one candidate, or an op
// it does not time).
std::vector<KernelTiming> kernel_timings(const char* op);

}  // namespace dcrt
