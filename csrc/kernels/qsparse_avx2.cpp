// AVX2 + FMA builds of the quantized sparse kernels (this file alone is compiled with
// -mavx2 -mfma; registry.cpp calls it only where the CPU has both).
#include <algorithm>
#include <cstdint>

#include "kernels/qsparse.hpp"

namespace dcrt {
namespace avx2 {
#include "kernels/conv_rows.inl"
}  // namespace avx2

void conv_q_rows__avx2(const QConvRows& w, const ConvGeom& g, const int64_t* tapoff, const float* bias,
                       const float*, const float* xpad, float* y, uint32_t oc0, uint32_t oc1) {
  avx2::conv_rows(w, g, tapoff, bias, xpad, y, oc0, oc1);
}

bool cpu_has_avx2_fma() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

}  // namespace dcrt
