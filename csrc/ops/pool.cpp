// Window and normalisation ops of format 1.0: max/avg pooling, LRN, softmax.
#include <algorithm>

#include "../kernels/dense.hpp"
#include "ops.hpp"

namespace dcrt {

void run_pool(const OpCtx& c) {
  const OpDesc& op = c.op;
  const size_t in_sz = op.in.numel(), out_sz = op.out.numel();
  const PoolGeom g{op.in.d[0], op.in.d[1], op.in.d[2], op.out.d[1], op.out.d[2],
                   op.p[0], op.p[1], op.p[2], op.p[3], op.p[4], op.p[5]};
  const auto pool = op.type == OpType::MaxPool ? maxpool_f32 : avgpool_f32;
  if (c.tasks == 1) {
    for (size_t s = 0; s < c.n; ++s) pool(g, c.in[0] + s * in_sz, c.out + s * out_sz, 0, g.c);
  } else {
    c.par(c.n * g.c, [&](size_t t, unsigned) {
      const size_t s = t / g.c;
      const uint32_t ch = uint32_t(t % g.c);
      pool(g, c.in[0] + s * in_sz, c.out + s * out_sz, ch, ch + 1);
    });
  }
}

void run_lrn(const OpCtx& c) {
  const OpDesc& op = c.op;
  const size_t in_sz = op.in.numel(), out_sz = op.out.numel(), hw = size_t(op.in.d[1]) * op.in.d[2];
  // Samples x channel ranges: batch 1 splits its channels over the threads too.
  const uint32_t ch = op.in.d[0], parts = c.tasks > 1 && c.n < c.tasks ? std::min<uint32_t>(c.tasks, ch) : 1;
  c.par(c.n * parts, [&](size_t t, unsigned) {
    const size_t s = t / parts, p = t % parts;
    lrn_f32(c.in[0] + s * in_sz, c.out + s * out_sz, ch, hw, op.p[0], op.f[1], op.f[2], op.f[3],
            uint32_t(ch * p / parts), uint32_t(ch * (p + 1) / parts));
  });
}

void run_softmax(const OpCtx& c) {
  const uint32_t ch = c.op.in.d[0];
  const size_t in_sz = c.op.in.numel(), hw = in_sz / ch;
  for (size_t s = 0; s < c.n; ++s) softmax_f32(c.in[0] + s * in_sz, c.out + s * in_sz, ch, hw);
}

}  // namespace dcrt
