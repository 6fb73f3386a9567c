// conv2d: pointwise convs as sparse products on [C, H*W]; the rest direct on the phase-split
// padded input (kernels/qsparse.hpp PadGeom), depthwise ones on their own kernel.
#include <algorithm>

#include "../kernels/dense.hpp"
#include "ops.hpp"

namespace dcrt {

void run_conv2d(const OpCtx& c) {
  const OpDesc& op = c.op;
  const ExecLayer& L = c.m.layers()[op.layer];
  const ConvGeom& g = c.x.geom;
  const float* cur = c.in[0];
  float* nxt = c.out;
  const size_t n = c.n, in_sz = size_t(g.in_c) * g.in_h * g.in_w, out_sz = op.out.numel();
  const unsigned tasks = c.tasks, T = c.m.threads();
  if (conv_is_pointwise(L.storage, L.kh, L.kw, g)) {
    // The sparse product W[out, in] x X[in, H*W]: [in, H*W] already is the batched kernel's
    // [cols, lanes] layout (XNNPACK's sparse-inference case), the pixels are the lanes, no padded
    // copy, no transpose. Tasks: (sample, chunk of rows with equal shares of the non-zeros).
    const QConvRows w = L.conv_view();
    const size_t hw = size_t(g.out_h) * g.out_w;
    const unsigned chunks = tasks == 1 ? 1 : 4 * tasks;
    const uint32_t* rp = L.conv_rowptr.data();
    const SpmmRowsFn f = c.m.spmm_rows().spmm_rows;
    c.par(n * chunks, [&](size_t t, unsigned) {
      const size_t s0 = t / chunks, k = t % chunks;
      const auto row_at = [&](uint64_t e) { return uint32_t(std::lower_bound(rp, rp + L.rows, uint32_t(e)) - rp); };
      const uint32_t r0 = k == 0 ? 0 : row_at(L.nnz * k / chunks);
      const uint32_t r1 = k + 1 == chunks ? L.rows : row_at(L.nnz * (k + 1) / chunks);
      float* y = nxt + s0 * out_sz;
      for (uint32_t r = r0; r < r1; ++r) std::fill(y + r * hw, y + (r + 1) * hw, L.bias[r]);
      if (r0 < r1) f(w, cur + s0 * in_sz, hw, y, hw, hw, r0, r1);
      c.epilogue(s0, hw, r0, r1);  // on the task's rows, while they are warm
    });
    return;
  }
  const bool sparse = L.storage == kStorageSparse;
  if (sparse && conv_is_depthwise(g)) {
    // Depthwise: one channel at a time, its padded plane built in the worker's scratch right
    // before the kernel reads it (hot in L1/L2): the input is read once and no padded copy of
    // the whole tensor goes through memory (that copy cost as much as the taps). Tasks: (sample,
    // channel chunk).
    ConvGeom g1 = g;
    g1.in_c = g1.out_c = g1.groups = 1;
    const size_t stride = c.x.plane, hw_in = size_t(g.in_h) * g.in_w;  // plane + slack (plan.cpp)
    const size_t hw_out = size_t(g.out_h) * g.out_w;
    const unsigned chunks = tasks == 1 ? 1 : std::min<unsigned>(g.out_c, 4 * tasks);
    const int64_t* tapoff = c.x.tapoff.data();
    const ConvFn f = c.m.conv_dw().conv;
    c.par(n * chunks, [&](size_t t, unsigned worker) {
      const size_t s = t / chunks, k = t % chunks;
      const uint32_t ch0 = uint32_t(g.out_c * k / chunks), ch1 = uint32_t(g.out_c * (k + 1) / chunks);
      float* scratch = c.ws.scratch.data() + size_t(worker) * stride;
      for (uint32_t ch = ch0; ch < ch1; ++ch) {
        const float* xc = cur + s * in_sz + ch * hw_in;
        pad_input(g1, xc, scratch);
        const QConvRows w1{1, L.cols, L.code_bits, L.conv_rowptr.data() + ch, L.conv_entries.data(), L.codebook.data()};
        ConvEpilogue ep;
        ep.res = c.res ? c.res + s * out_sz + ch * hw_out : nullptr;
        ep.clamp = c.x.clamp;
        ep.lo = c.x.lo;
        ep.hi = c.x.hi;
        f(w1, g1, tapoff, L.bias.data() + ch, xc, scratch, nxt + s * out_sz + ch * hw_out, 0, 1, 0, g.out_h, ep);
      }
    });
    return;
  }
  const size_t pad_sz = c.x.padded;
  const int64_t* tapoff = c.x.tapoff.data();
  float* xpad = c.ws.xpad.data();
  c.par(n, [&](size_t s, unsigned) { pad_input(g, cur + s * in_sz, xpad + s * pad_sz); });
  // Tasks are rectangles of output channels x bands of the kernel's row block (disjoint writes): bands first, so a
  // task's input window stays in cache for all its channels; channel chunks only where there are
  // fewer than 8 bands per thread.
  const bool split = tasks > 1;
  const uint32_t rb = sparse ? c.m.conv().row_block : kConvRowBlock;
  const uint32_t bands = split ? (g.out_h + rb - 1) / rb : 1;
  const uint32_t band_rows = split ? rb : g.out_h;
  const uint32_t oc_parts = split ? std::min<uint32_t>(L.rows, (8 * T + bands - 1) / bands) : 1;
  const uint32_t chunk = (L.rows + oc_parts - 1) / oc_parts, nchunk = (L.rows + chunk - 1) / chunk;
  const QConvRows w = sparse ? L.conv_view() : QConvRows{};
  const ConvFn f = c.m.conv().conv;
  c.par(n * nchunk * bands, [&](size_t t, unsigned) {
    const size_t s = t / (nchunk * bands);
    const uint32_t oc0 = uint32_t(t / bands % nchunk) * chunk, oc1 = std::min(L.rows, oc0 + chunk);
    const uint32_t oy0 = uint32_t(t % bands) * band_rows, oy1 = std::min(g.out_h, oy0 + band_rows);
    ConvEpilogue ep;
    ep.res = c.res ? c.res + s * out_sz : nullptr;
    ep.clamp = c.x.clamp;
    ep.lo = c.x.lo;
    ep.hi = c.x.hi;
    if (sparse)
      f(w, g, tapoff, L.bias.data(), cur + s * in_sz, xpad + s * pad_sz, nxt + s * out_sz, oc0, oc1, oy0, oy1, ep);
    else
      conv_f32(L.weight.data(), L.cols, g, tapoff, L.bias.data(), xpad + s * pad_sz, nxt + s * out_sz, oc0, oc1, oy0,
               oy1, ep);
  });
}

}  // namespace dcrt
