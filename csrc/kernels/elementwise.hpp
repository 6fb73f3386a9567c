// Elementwise and data-movement ops of format 1.2 (docs/format.md §3.2): plain pointers, one
// sample (or a flat range) at a time. Their reference twin is dcrt.graph's numpy forward
// (tests/test_graph.py runs every op against it).
#pragma once
#include <cstddef>
#include <cstdint>

namespace dcrt {

enum class Unary : uint8_t { Relu, Clip, Sigmoid, HardSigmoid, HardSwish, Silu, Tanh, GeluErf, GeluTanh };
// y[i] = f(x[i]) for i < n; y may equal x (in place). a, b: clip min/max, hardsigmoid alpha/beta.
void unary_f32(Unary f, const float* x, float* y, size_t n, float a, float b);
// One sample: y = a (+|*) b where b is either the same [c, hw] or [c, 1] (broadcast over hw);
// `a_small` swaps the roles (a is [c, 1]). y may equal the full-size input.
void binary_f32(bool mul, const float* a, const float* b, float* y, size_t c, size_t hw, bool a_small, bool b_small);
// One sample [c, hw] -> [c]: the mean over hw.
void global_avgpool_f32(const float* x, float* y, size_t c, size_t hw);
// One sample [c, h, w] -> [c, h + top + bottom, w + left + right], zeros around.
void pad_f32(const float* x, float* y, uint32_t c, uint32_t h, uint32_t w, uint32_t top, uint32_t bottom,
             uint32_t left, uint32_t right);

}  // namespace dcrt
