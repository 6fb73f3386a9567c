// The executor's op layer (XNNPACK's operator level, between the graph and the micro-kernels):
// one function per op type that splits the op over the workers and calls kernels. Each op family
// has its own file; table.cpp maps op types to them.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "../model.hpp"

namespace dcrt {

// Batch lanes of the transposed [cols, lanes] blocks: a multiple of 8, so the AVX2 batched
// kernels run whole 8-lane blocks (zero pad lanes) instead of a scalar tail: at batch 2-7 the
// tail ran 8x slower than one 8-lane block (measured on a 4096 x 9216 layer at 9%).
inline size_t batch_lanes(size_t n) { return (n + 7) / 8 * 8; }

// One caller's buffers (Model keeps a free list): n samples of the load-time plan.
// Whether a depthwise conv runs in 16-channel blocks (small maps, any batch: ops/conv.cpp).
bool conv_small_depthwise(const ExecLayer& L, const ConvGeom& g);
// A depthwise 1x1 conv, stride 1, no padding (a per-channel scale: MobileNetV2's kept batch
// norms): y = w[c] x + b[c], any batch (ops/conv.cpp; sparse layers keep ExecLayer::dw_dense).
bool conv_channel_scale(const ExecLayer& L, const ConvGeom& g);
// Whether this conv runs the dense small-map product (any batch) (kernels/conv_small.hpp; the
// load builds ExecLayer::small_w / ExecOp::small_off where it does): groups 1, any kernel size
// (pointwise too), 2-63 output pixels, at most 256 KiB of fp32 weights, and at most 8x the stored non-zeros'
// multiply-adds (the taps that land inside the input, all of them, against nnz x pixels).
bool conv_small_dense_pays(const ExecLayer& L, const ConvGeom& g);

struct Workspace {
  size_t cap_n = 0;
  std::vector<float> arena, xt, yt, xpad;
  std::vector<float> scratch;  // per worker: one padded channel plane (depthwise convs)
  std::vector<float> packed;   // convs of small feature maps in a batch (ops/conv.cpp): grown on first use
  std::vector<uint32_t> live;  // batch 1: the live input columns of a linear layer
  std::vector<uint16_t> lowp;
  std::vector<float> gather;   // batch 1: the inputs a conv on a one-pixel map reads (grown on first use)  // batch 1: a dense-codebook layer's input in int8 or bf16 (precision modes)
  std::vector<const float*> ins;  // the running op's input pointers
  // Sizes saturate (then the allocation fails with bad_alloc) instead of wrapping.
  void reserve(size_t n, const BufferPlan& p) {
    if (n <= cap_n) return;
    arena.resize(sat_mul(n, p.arena));
    xt.resize(n > 1 ? sat_mul(batch_lanes(n), p.lin_cols) : 0);
    yt.resize(n > 1 ? sat_mul(batch_lanes(n), p.lin_rows) : 0);
    live.resize(p.lin_cols);
    lowp.resize((p.lin_cols + 63) / 64 * 64);
    xpad.resize(sat_add(sat_mul(n, p.padded), kConvSlack));
    scratch.resize(p.scratch);
    cap_n = n;
  }
};

// What an op function gets: the op, its fused form, n samples, input pointers (one per
// ExecOp::reads entry, each to n samples), the output (n samples; may equal in[0] for an op
// run in place), the epilogue's residual (n samples, or null) and how to split.
struct OpCtx {
  const Model& m;
  const OpDesc& op;
  const ExecOp& x;
  Workspace& ws;
  size_t n;
  const float* const* in;
  float* out;
  const float* res;
  unsigned tasks;  // how many shares to cut the op into (1: run it here, unsplit)
  bool wake;       // whether splitting may wake sleeping workers
  void par(size_t n_tasks, const std::function<void(size_t, unsigned)>& fn) const {
    m.workers().parallel_for(n_tasks, fn, wake);
  }
  // A dense-codebook product's rows in equal ranges (the cost per row is the same), starting at
  // multiples of 4 rows, at least 64 rows a share: fn(r0, r1), here alone where it is one share.
  void par_dense_rows(uint32_t rows, const std::function<void(uint32_t, uint32_t)>& fn) const {
    const uint32_t parts = std::max<uint32_t>(1, std::min<uint32_t>(tasks, rows / 64));
    if (parts == 1) return fn(0, rows);
    par(parts, [&](size_t t, unsigned) {
      const uint32_t r0 = uint32_t(uint64_t(rows) * t / parts) / 4 * 4;
      const uint32_t r1 = t + 1 == parts ? rows : uint32_t(uint64_t(rows) * (t + 1) / parts) / 4 * 4;
      fn(r0, r1);
    });
  }
  // The epilogue of one sample's [rows x inner] block: + residual, then the clamp, over
  // rows [r0, r1) (ops whose kernels do not apply it themselves).
  void epilogue(size_t s, size_t inner, size_t r0, size_t r1) const;
  // The fused epilogue as the conv kernels take it, its residual at `offset` elements into res.
  ConvEpilogue conv_epilogue(size_t offset) const {
    ConvEpilogue ep;
    ep.res = res ? res + offset : nullptr;
    ep.clamp = x.clamp;
    ep.lo = x.lo;
    ep.hi = x.hi;
    return ep;
  }
};

using OpFn = void (*)(const OpCtx&);
OpFn op_function(OpType t);  // table.cpp

void run_linear(const OpCtx& c);     // ops/linear.cpp
void run_conv2d(const OpCtx& c);     // ops/conv.cpp
void run_unary(const OpCtx& c);      // ops/elementwise.cpp: relu, clip, sigmoid, ..., gelu
void run_binary(const OpCtx& c);     //   add, mul
void run_concat(const OpCtx& c);
void run_global_avgpool(const OpCtx& c);
void run_pad(const OpCtx& c);
void run_alias(const OpCtx& c);      //   flatten, dropout (aliased by the plan: nothing to do)
void run_pool(const OpCtx& c);       // ops/pool.cpp: maxpool, avgpool
void run_lrn(const OpCtx& c);
void run_softmax(const OpCtx& c);

}  // namespace dcrt
