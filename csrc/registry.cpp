// The kernel registry (DESIGN: one list drives tests, benchmarks and dispatch).
#include "registry.hpp"

#include <cstring>
#include <stdexcept>

namespace dcrt {

const std::vector<KernelInfo>& kernel_registry() {
  // Order within an op: reference first, then from most portable to fastest.
  static const std::vector<KernelInfo> reg = [] {
    std::vector<KernelInfo> r;
    auto add = [&](KernelInfo k) { r.push_back(k); };
    KernelInfo k{};
    k = KernelInfo{"spmv_rows_q_t16__ref", "spmv_rows", "ref", true}; k.spmv_rows = spmv_rows_q_t16__ref; add(k);
    k = KernelInfo{"spmv_rows_q_t16__generic", "spmv_rows", "generic", false};
    k.spmv_rows = spmv_rows_q_t16__generic; add(k);
    k = KernelInfo{"spmv_cols_q_t16__ref", "spmv_cols", "ref", true}; k.spmv_cols = spmv_cols_q_t16__ref; add(k);
    k = KernelInfo{"spmv_cols_q_t16__generic", "spmv_cols", "generic", false};
    k.spmv_cols = spmv_cols_q_t16__generic; add(k);
    k = KernelInfo{"dense_q8__ref", "dense_q8", "ref", true}; k.dense_q8 = dense_q8__ref; add(k);
    k = KernelInfo{"dense_q8__generic", "dense_q8", "generic", false}; k.dense_q8 = dense_q8__generic; add(k);
    k = KernelInfo{"dense_i8__ref", "dense_i8", "ref", true}; k.dense_i8 = dense_i8__ref; add(k);
    k = KernelInfo{"dense_i8__generic", "dense_i8", "generic", false}; k.dense_i8 = dense_i8__generic; add(k);
    k = KernelInfo{"dense_bf16__ref", "dense_bf16", "ref", true}; k.dense_bf16 = dense_bf16__ref; add(k);
    k = KernelInfo{"dense_bf16__generic", "dense_bf16", "generic", false}; k.dense_bf16 = dense_bf16__generic; add(k);
    k = KernelInfo{"spmm_q_rel16__ref", "spmm", "ref", true}; k.spmm = spmm_q_rel16__ref; add(k);
    k = KernelInfo{"spmm_q_rel16__generic", "spmm", "generic", false}; k.spmm = spmm_q_rel16__generic; add(k);
    k = KernelInfo{"spmm_rows_q_c24__ref", "spmm_rows", "ref", true}; k.spmm_rows = spmm_rows_q_c24__ref; add(k);
    k = KernelInfo{"spmm_rows_q_c24__generic", "spmm_rows", "generic", false};
    k.spmm_rows = spmm_rows_q_c24__generic; add(k);
    k = KernelInfo{"conv_q_rows__ref", "conv", "ref", true}; k.conv = conv_q_rows__ref; add(k);
    k = KernelInfo{"conv_q_rows__generic", "conv", "generic", false}; k.conv = conv_q_rows__generic; add(k);
    // Depthwise: the general reference is the twin (the op takes only depthwise geometry).
    k = KernelInfo{"conv_dw_q_rows__ref", "conv_dw", "ref", true}; k.conv = conv_q_rows__ref; add(k);
    k = KernelInfo{"conv_dw_q_rows__generic", "conv_dw", "generic", false}; k.conv = conv_dw_q_rows__generic; add(k);
    k = KernelInfo{"conv_small_f32__ref", "conv_small", "ref", true}; k.conv_small = conv_small_f32__ref; add(k);
    k = KernelInfo{"conv_small_f32__generic", "conv_small", "generic", false};
    k.conv_small = conv_small_f32__generic; add(k);
    k = KernelInfo{"conv_dw_blocks__ref", "conv_dw_blocks", "ref", true}; k.dw_blocks = conv_dw_blocks__ref; add(k);
    k = KernelInfo{"conv_dw_blocks__generic", "conv_dw_blocks", "generic", false};
    k.dw_blocks = conv_dw_blocks__generic; add(k);
#if DCRT_HAVE_AVX2
    k = KernelInfo{"spmv_rows_q_t16__bmi2", "spmv_rows", "bmi2", false}; k.spmv_rows = spmv_rows_q_t16__bmi2;
    k.supported = cpu_has_bmi2_fma; add(k);
    k = KernelInfo{"spmv_cols_q_t16__bmi2", "spmv_cols", "bmi2", false}; k.spmv_cols = spmv_cols_q_t16__bmi2;
    k.supported = cpu_has_bmi2_fma; add(k);
    k = KernelInfo{"spmv_rows_q_t16__avx512", "spmv_rows", "avx512", false}; k.spmv_rows = spmv_rows_q_t16__avx512;
    k.supported = cpu_has_avx512; add(k);
    k = KernelInfo{"spmv_cols_q_t16__avx512", "spmv_cols", "avx512", false}; k.spmv_cols = spmv_cols_q_t16__avx512;
    k.supported = cpu_has_avx512; add(k);
    k = KernelInfo{"spmm_q_rel16__avx2", "spmm", "avx2", false}; k.spmm = spmm_q_rel16__avx2;
    k.supported = cpu_has_avx2_fma; add(k);
    k = KernelInfo{"spmm_rows_q_c24__avx2", "spmm_rows", "avx2", false}; k.spmm_rows = spmm_rows_q_c24__avx2;
    k.supported = cpu_has_avx2_fma; add(k);
    k = KernelInfo{"conv_q_rows__avx2", "conv", "avx2", false}; k.conv = conv_q_rows__avx2;
    k.supported = cpu_has_avx2_fma; add(k);
    k = KernelInfo{"conv_dw_q_rows__avx2", "conv_dw", "avx2", false}; k.conv = conv_dw_q_rows__avx2;
    k.supported = cpu_has_avx2_fma; add(k);
    k = KernelInfo{"dense_q8__avx2", "dense_q8", "avx2", false}; k.dense_q8 = dense_q8__avx2;
    k.supported = cpu_has_avx2_fma; add(k);
    k = KernelInfo{"dense_q8__avx512", "dense_q8", "avx512", false}; k.dense_q8 = dense_q8__avx512;
    k.supported = cpu_has_avx512; add(k);
    k = KernelInfo{"dense_i8__avx512vnni", "dense_i8", "avx512vnni", false}; k.dense_i8 = dense_i8__avx512vnni;
    k.supported = cpu_has_avx512_vnni_vbmi; add(k);
    k = KernelInfo{"dense_bf16__avx512bf16", "dense_bf16", "avx512bf16", false}; k.dense_bf16 = dense_bf16__avx512bf16;
    k.supported = cpu_has_avx512_bf16; add(k);
    k = KernelInfo{"spmm_rows_q_c24__avx512", "spmm_rows", "avx512", false}; k.spmm_rows = spmm_rows_q_c24__avx512;
    k.supported = cpu_has_avx512; add(k);
    k = KernelInfo{"conv_q_rows__avx512", "conv", "avx512", false}; k.conv = conv_q_rows__avx512;
    k.supported = cpu_has_avx512; k.row_block = 8; add(k);
    k = KernelInfo{"conv_dw_q_rows__avx512", "conv_dw", "avx512", false}; k.conv = conv_dw_q_rows__avx512;
    k.supported = cpu_has_avx512; add(k);
    k = KernelInfo{"conv_small_f32__avx2", "conv_small", "avx2", false}; k.conv_small = conv_small_f32__avx2;
    k.supported = cpu_has_avx2_fma; add(k);
    k = KernelInfo{"conv_dw_blocks__avx2", "conv_dw_blocks", "avx2", false}; k.dw_blocks = conv_dw_blocks__avx2;
    k.supported = cpu_has_avx2_fma; add(k);
    k = KernelInfo{"conv_small_f32__avx512", "conv_small", "avx512", false}; k.conv_small = conv_small_f32__avx512;
    k.supported = cpu_has_avx512; add(k);
    k = KernelInfo{"conv_dw_blocks__avx512", "conv_dw_blocks", "avx512", false}; k.dw_blocks = conv_dw_blocks__avx512;
    k.supported = cpu_has_avx512; add(k);
#endif
    k = KernelInfo{"huffman_decode__ref", "huffman", "ref", true}; k.huff = huffman_decode__ref; add(k);
    k = KernelInfo{"huffman_decode_table__generic", "huffman", "generic", false};
    k.huff = huffman_decode_table__generic; add(k);
    k = KernelInfo{"huffman_decode_multi__generic", "huffman", "generic", false};
    k.huff = huffman_decode_multi__generic; add(k);
#if DCRT_HAVE_AVX2
    k = KernelInfo{"huffman_decode_multi__bmi2", "huffman", "bmi2", false};
    k.huff = huffman_decode_multi__bmi2; k.supported = cpu_has_bmi2_fma; add(k);
    k = KernelInfo{"huffman_decode_lanes__avx512vbmi", "huffman", "avx512vbmi", false};
    k.huff = huffman_decode_lanes__avx512vbmi; k.supported = cpu_has_avx512_vbmi; k.huff_job_chunks = 96; add(k);
#endif
    k = KernelInfo{"transpose_f32__ref", "transpose", "ref", true}; k.transpose = transpose_f32__ref; add(k);
    k = KernelInfo{"transpose_f32__generic", "transpose", "generic", false};
    k.transpose = transpose_f32__generic; add(k);
#if DCRT_HAVE_AVX2
    k = KernelInfo{"transpose_f32__avx2", "transpose", "avx2", false}; k.transpose = transpose_f32__avx2;
    k.supported = cpu_has_avx2_fma; add(k);
    k = KernelInfo{"transpose_f32__avx512", "transpose", "avx512", false}; k.transpose = transpose_f32__avx512;
    k.supported = cpu_has_avx512; add(k);
#endif
    k = KernelInfo{"crc32_bytewise__ref", "crc32", "ref", true}; k.crc32 = crc32_bytewise__ref; add(k);
    k = KernelInfo{"crc32_slice8__generic", "crc32", "generic", false}; k.crc32 = crc32_slice8__generic; add(k);
#if DCRT_HAVE_AVX2
    k = KernelInfo{"crc32_fold__pclmul", "crc32", "pclmul", false}; k.crc32 = crc32_fold__pclmul;
    k.supported = cpu_has_pclmul; add(k);
#endif
    return r;
  }();
  return reg;
}

const KernelInfo* find_kernel(const std::string& name) {
  for (const auto& k : kernel_registry())
    if (name == k.name) return &k;
  return nullptr;
}

const KernelInfo& best_kernel(const char* op) {
  const KernelInfo* best = nullptr;
  for (const auto& k : kernel_registry())
    if (!std::strcmp(k.op, op) && !k.reference && (!k.supported || k.supported())) best = &k;
  if (!best) throw std::logic_error(std::string("no kernel registered for ") + op);
  return *best;
}

}  // namespace dcrt
