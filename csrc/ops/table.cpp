// Op type -> op function: the one line a new op adds besides its file.
#include "ops.hpp"

#include <algorithm>

namespace dcrt {

OpFn op_function(OpType t) {
  switch (t) {
    case OpType::Linear: return run_linear;
    case OpType::Conv2d: return run_conv2d;
    case OpType::Relu: case OpType::Clip: case OpType::Sigmoid: case OpType::HardSigmoid: case OpType::HardSwish:
    case OpType::Silu: case OpType::Tanh: case OpType::Gelu:
      return run_unary;
    case OpType::Add: case OpType::Mul: return run_binary;
    case OpType::Concat: return run_concat;
    case OpType::GlobalAvgPool: return run_global_avgpool;
    case OpType::Pad: return run_pad;
    case OpType::MaxPool: case OpType::AvgPool: return run_pool;
    case OpType::Lrn: return run_lrn;
    case OpType::Softmax: return run_softmax;
    case OpType::Flatten: case OpType::Dropout: return run_alias;
  }
  return nullptr;  // unreachable: parse_file admits known types only
}

void OpCtx::epilogue(size_t s, size_t inner, size_t r0, size_t r1) const {
  if (!res && !x.clamp) return;
  const size_t per = op.out.numel();
  float* y = out + s * per;
  const float* r = res ? res + s * per : nullptr;
  for (size_t i = r0 * inner; i < r1 * inner; ++i) {
    float v = y[i];
    if (r) v += r[i];
    if (x.clamp) v = std::min(std::max(v, x.lo), x.hi);
    y[i] = v;
  }
}

}  // namespace dcrt
