// Elementwise and data-movement ops (format 1.2): activations, add/mul, concat, global average
// pool, pad; flatten and dropout are aliases of their input (plan.cpp), so they do nothing.
#include <cstring>

#include "../kernels/elementwise.hpp"
#include "ops.hpp"

namespace dcrt {

void run_unary(const OpCtx& c) {
  const OpDesc& op = c.op;
  const Unary f = op.type == OpType::Relu ? Unary::Relu : op.type == OpType::Clip ? Unary::Clip
                  : op.type == OpType::Sigmoid ? Unary::Sigmoid : op.type == OpType::HardSigmoid ? Unary::HardSigmoid
                  : op.type == OpType::HardSwish ? Unary::HardSwish : op.type == OpType::Silu ? Unary::Silu
                  : op.type == OpType::Tanh ? Unary::Tanh : op.p[0] ? Unary::GeluTanh : Unary::GeluErf;
  const float* cur = c.in[0];
  float* nxt = c.out;  // may equal cur: run in place where the input dies here (plan.cpp)
  const size_t total = c.n * op.in.numel();
  if (c.tasks == 1) {
    unary_f32(f, cur, nxt, total, op.f[0], op.f[1]);
  } else {
    const size_t parts = 4 * size_t(c.tasks), step = (total + parts - 1) / parts;
    c.par(parts, [&](size_t t, unsigned) {
      const size_t a = std::min(total, t * step), b = std::min(total, a + step);
      unary_f32(f, cur + a, nxt + a, b - a, op.f[0], op.f[1]);
    });
  }
}

void run_binary(const OpCtx& c) {
  const OpDesc& op = c.op;
  const Shape& sa = op.in_shapes[0];
  const Shape& sb = op.in_shapes[1];
  const size_t out_sz = op.out.numel();
  const bool a_small = sa.numel() < out_sz, b_small = sb.numel() < out_sz;
  const size_t ch = op.out.ndim == 3 ? op.out.d[0] : 1, hw = out_sz / ch;
  const size_t na = sa.numel(), nb = sb.numel();
  const auto one = [&](size_t s0, unsigned) {
    binary_f32(op.type == OpType::Mul, c.in[0] + s0 * na, c.in[1] + s0 * nb, c.out + s0 * out_sz, ch, hw, a_small,
               b_small);
  };
  if (c.tasks == 1 || c.n == 1)
    for (size_t s0 = 0; s0 < c.n; ++s0) one(s0, 0);
  else
    c.par(c.n, one);
}

void run_concat(const OpCtx& c) {
  // Per sample, the inputs' channel blocks one after the other ([C_k, H, W] are contiguous).
  const OpDesc& op = c.op;
  const size_t out_sz = op.out.numel();
  for (size_t s0 = 0; s0 < c.n; ++s0) {
    float* d = c.out + s0 * out_sz;
    for (size_t k = 0; k < op.inputs.size(); ++k) {
      const size_t m = op.in_shapes[k].numel();
      std::memcpy(d, c.in[k] + s0 * m, m * sizeof(float));
      d += m;
    }
  }
}

void run_global_avgpool(const OpCtx& c) {
  const size_t in_sz = c.op.in.numel(), out_sz = c.op.out.numel(), ch = c.op.in.d[0], hw = in_sz / ch;
  for (size_t s0 = 0; s0 < c.n; ++s0) global_avgpool_f32(c.in[0] + s0 * in_sz, c.out + s0 * out_sz, ch, hw);
}

void run_pad(const OpCtx& c) {
  const OpDesc& op = c.op;
  const size_t in_sz = op.in.numel(), out_sz = op.out.numel();
  for (size_t s0 = 0; s0 < c.n; ++s0)
    pad_f32(c.in[0] + s0 * in_sz, c.out + s0 * out_sz, op.in.d[0], op.in.d[1], op.in.d[2], op.p[0], op.p[1], op.p[2],
            op.p[3]);
}

void run_alias(const OpCtx& c) {
  // plan_tensors always aliases flatten and dropout to their input; a copy only if it did not.
  if (c.out != c.in[0]) std::memcpy(c.out, c.in[0], c.n * c.op.in.numel() * sizeof(float));
}

}  // namespace dcrt
