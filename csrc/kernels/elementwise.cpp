// Elementwise and data-movement ops of format 1.2 (docs/format.md §3.2).
#include "kernels/elementwise.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace dcrt {

void unary_f32(Unary f, const float* x, float* y, size_t n, float a, float b) {
  switch (f) {
    case Unary::Relu:
      for (size_t i = 0; i < n; ++i) y[i] = x[i] > 0.f ? x[i] : 0.f;
      break;
    case Unary::Clip:  // NaN-free inputs (infer rejects them): min/max order does not matter
      for (size_t i = 0; i < n; ++i) y[i] = std::min(std::max(x[i], a), b);
      break;
    case Unary::Sigmoid:
      for (size_t i = 0; i < n; ++i) y[i] = 1.f / (1.f + std::exp(-x[i]));
      break;
    case Unary::HardSigmoid:
      for (size_t i = 0; i < n; ++i) y[i] = std::min(std::max(a * x[i] + b, 0.f), 1.f);
      break;
    case Unary::HardSwish:
      for (size_t i = 0; i < n; ++i) y[i] = x[i] * std::min(std::max(x[i] + 3.f, 0.f), 6.f) * (1.f / 6.f);
      break;
    case Unary::Silu:
      for (size_t i = 0; i < n; ++i) y[i] = x[i] / (1.f + std::exp(-x[i]));
      break;
    case Unary::Tanh:
      for (size_t i = 0; i < n; ++i) y[i] = std::tanh(x[i]);
      break;
    case Unary::GeluErf:
      for (size_t i = 0; i < n; ++i) y[i] = 0.5f * x[i] * (1.f + std::erf(x[i] * 0.70710678118654752f));
      break;
    case Unary::GeluTanh:
      for (size_t i = 0; i < n; ++i) {
        const float v = x[i];
        y[i] = 0.5f * v * (1.f + std::tanh(0.79788456080286536f * (v + 0.044715f * v * v * v)));
      }
      break;
  }
}

void binary_f32(bool mul, const float* a, const float* b, float* y, size_t c, size_t hw, bool a_small, bool b_small) {
  for (size_t ch = 0; ch < c; ++ch) {
    const float* ac = a + (a_small ? ch : ch * hw);
    const float* bc = b + (b_small ? ch : ch * hw);
    float* yc = y + ch * hw;
    if (!a_small && !b_small) {
      if (mul)
        for (size_t i = 0; i < hw; ++i) yc[i] = ac[i] * bc[i];
      else
        for (size_t i = 0; i < hw; ++i) yc[i] = ac[i] + bc[i];
    } else {
      const float s = a_small ? ac[0] : bc[0];
      const float* v = a_small ? bc : ac;
      if (mul)
        for (size_t i = 0; i < hw; ++i) yc[i] = v[i] * s;
      else
        for (size_t i = 0; i < hw; ++i) yc[i] = v[i] + s;
    }
  }
}

void global_avgpool_f32(const float* x, float* y, size_t c, size_t hw) {
  for (size_t ch = 0; ch < c; ++ch) {
    const float* xc = x + ch * hw;
    double s = 0;  // hw may be large: a double sum keeps the mean exact to fp32
    for (size_t i = 0; i < hw; ++i) s += xc[i];
    y[ch] = float(s / double(hw));
  }
}

void pad_f32(const float* x, float* y, uint32_t c, uint32_t h, uint32_t w, uint32_t top, uint32_t bottom,
             uint32_t left, uint32_t right) {
  const size_t ow = size_t(w) + left + right, oh = size_t(h) + top + bottom;
  for (uint32_t ch = 0; ch < c; ++ch) {
    float* yc = y + ch * oh * ow;
    std::fill(yc, yc + top * ow, 0.f);
    for (uint32_t r = 0; r < h; ++r) {
      float* yr = yc + (top + size_t(r)) * ow;
      std::fill(yr, yr + left, 0.f);
      std::memcpy(yr + left, x + (size_t(ch) * h + r) * w, w * sizeof(float));
      std::fill(yr + left + w, yr + ow, 0.f);
    }
    std::fill(yc + (top + size_t(h)) * ow, yc + oh * ow, 0.f);
  }
}

}  // namespace dcrt
