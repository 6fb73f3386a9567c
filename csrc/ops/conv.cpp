// conv2d: pointwise convs as sparse products on [C, H*W]; the rest direct on the phase-split
// padded input (kernels/qsparse.hpp PadGeom), depthwise ones on their own kernel.
#include <algorithm>
#include <cstring>
#include <vector>

#include "../kernels/dense.hpp"
#include "ops.hpp"

namespace dcrt {

namespace {

// Below this many output pixels a sample's pixels fill too few vector lanes for the per-sample
// kernels (MobileNetV2 / ResNet-18 on 28x28 inputs end at 1x1-4x4 maps, where each (sample,
// channel) call did a handful of FMAs): batches then run packed_conv.
constexpr size_t kPackedMaxPixels = 64;
// Floats of the im2col block of one slice of samples (a few hundred KB: stays in L2 while
// every output row reads it).
constexpr size_t kPackedBlockFloats = size_t(1) << 16;
// The dense small-map product, any batch (conv_small_dense_pays): weights up to this size, and
// up to this many times the sparse multiply-adds. Measured on Zen 4 (ResNet-18 of
// examples/resnet_fashion.py): the sparse small-map path ran 1.5-6 GMAC/s at batch 1 (one
// thread: 105 -> 66 us with this); batch 64, two threads, 5.1 -> 2.9 ms (MobileNetV2 12.3 -> 11.6).
constexpr size_t kSmallDenseMaxBytes = size_t(256) << 10;
constexpr uint64_t kSmallDenseMaxRatio = 8;

// A conv over a batch of small feature maps as one product on [columns, lanes], the lanes being
// every (sample, output pixel) of a slice of samples: the im2col block B[in_c * kh * kw][lanes]
// (zeros where a tap reads padding), then Y[out_c][lanes] = bias + W x B (the batched sparse
// kernel on the layer's rows layout, group by group, or plain fp32 rows), then back to NCHW
// with the epilogue (+ residual, clamp) in the unfused order. Same sums as the per-sample
// kernels, other summation order (tests/test_packed_conv.py compares it with batch 1).
void packed_conv(const OpCtx& c, const ExecLayer& L, const ConvGeom& g) {
  const float* x = c.in[0];
  float* y = c.out;
  const size_t n = c.n, in_sz = size_t(g.in_c) * g.in_h * g.in_w, out_sz = c.op.out.numel();
  const size_t ohw = size_t(g.out_h) * g.out_w, taps = size_t(g.kh) * g.kw;
  const size_t K = size_t(g.in_c) * taps;  // all groups' columns: group q's are [q * cols, (q + 1) * cols)
  const uint32_t ocg = g.out_c / g.groups, cols = L.cols;
  const size_t per_sample = std::max(K, size_t(g.out_c)) * ohw;
  const size_t ns = std::max<size_t>(1, std::min(n, kPackedBlockFloats / std::max<size_t>(1, per_sample)));
  const size_t ld = ns * ohw;
  std::vector<float>& buf = c.ws.packed;
  if (buf.size() < (K + g.out_c) * ld) buf.resize((K + g.out_c) * ld);  // this caller's, grows once
  float* B = buf.data();
  float* Y = B + K * ld;
  const bool sparse = L.storage == kStorageSparse;
  const QConvRows w = sparse ? L.conv_view() : QConvRows{};
  const SpmmRowsFn f = c.m.spmm_rows().spmm_rows;
  const unsigned parts = c.tasks == 1 ? 1 : 4 * c.tasks;
  for (size_t s0 = 0; s0 < n; s0 += ns) {
    const size_t s1 = std::min(n, s0 + ns), lanes = (s1 - s0) * ohw;
    c.par(parts, [&](size_t t, unsigned) {  // im2col, split over columns
      for (size_t k = K * t / parts; k < K * (t + 1) / parts; ++k) {
        const size_t ic = k / taps;
        const int64_t ky = int64_t(k / g.kw % g.kh) * g.dh - g.ph, kx = int64_t(k % g.kw) * g.dw - g.pw;
        float* b = B + k * ld;
        for (size_t s = s0; s < s1; ++s) {
          const float* xc = x + s * in_sz + ic * g.in_h * g.in_w;
          for (uint32_t oy = 0; oy < g.out_h; ++oy) {
            const int64_t iy = int64_t(oy) * g.sh + ky;
            const bool row_in = iy >= 0 && iy < int64_t(g.in_h);
            for (uint32_t ox = 0; ox < g.out_w; ++ox) {
              const int64_t ix = int64_t(ox) * g.sw + kx;
              *b++ = row_in && ix >= 0 && ix < int64_t(g.in_w) ? xc[iy * g.in_w + ix] : 0.f;
            }
          }
        }
      }
    });
    c.par(parts, [&](size_t t, unsigned) {  // the product, split over output rows
      const uint32_t r0 = uint32_t(uint64_t(g.out_c) * t / parts), r1 = uint32_t(uint64_t(g.out_c) * (t + 1) / parts);
      for (uint32_t r = r0; r < r1; ++r) std::fill(Y + r * ld, Y + r * ld + lanes, L.bias[r]);
      for (uint32_t a = r0; a < r1;) {  // one call per group's run of rows
        const uint32_t q = a / ocg, b = std::min(r1, (q + 1) * ocg);
        const float* Bq = B + size_t(q) * cols * ld;
        if (sparse)
          f(w, Bq, ld, Y, ld, lanes, a, b);
        else
          gemm_lanes_f32(L.weight.data(), cols, Bq, ld, Y, ld, lanes, a, b);
        a = b;
      }
      const bool clamp = c.x.clamp;
      const float lo = c.x.lo, hi = c.x.hi;
      for (uint32_t r = r0; r < r1; ++r)  // back to NCHW, + residual, clamp
        for (size_t s = s0; s < s1; ++s) {
          const float* src = Y + r * ld + (s - s0) * ohw;
          const size_t o = s * out_sz + size_t(r) * ohw;
          const float* res = c.res ? c.res + o : nullptr;
          for (size_t p = 0; p < ohw; ++p) {
            float v = src[p];
            if (res) v += res[p];
            if (clamp) v = std::min(std::max(v, lo), hi);
            y[o + p] = v;
          }
        }
    });
  }
}

// Depthwise convs of small feature maps, any batch: 16 channels at a time vectorised across
// the channels (kernels/dw_blocks.inl; a 1x1 or 2x2 map gives a per-channel kernel 1-4 pixels
// of work, where a call, a padded plane and the taps' setup per channel cost ~240 ns:
// MobileNetV2 on 28x28 spent 70% of batch 1 there). Tasks: (sample, 16-channel block).
}  // namespace

bool conv_small_dense_pays(const ExecLayer& L, const ConvGeom& g) {
  const uint64_t taps = uint64_t(g.kh) * g.kw, pixels = uint64_t(g.out_h) * g.out_w;
  if (L.kind != kLayerConv2d || g.groups != 1 || pixels < 2 || pixels >= kPackedMaxPixels) return false;
  if (L.storage != kStorageSparse && L.storage != kStoragePlain) return false;
  const uint64_t per_tap = uint64_t(g.in_c) * g.out_c;
  if (taps * per_tap * sizeof(float) > kSmallDenseMaxBytes) return false;
  uint64_t inside = 0;  // (tap, pixel) pairs whose input lies inside the map
  for (uint32_t ky = 0; ky < g.kh; ++ky)
    for (uint32_t kx = 0; kx < g.kw; ++kx)
      for (uint32_t oy = 0; oy < g.out_h; ++oy)
        for (uint32_t ox = 0; ox < g.out_w; ++ox) {
          const int64_t iy = int64_t(oy) * g.sh + int64_t(ky) * g.dh - g.ph, ix = int64_t(ox) * g.sw + int64_t(kx) * g.dw - g.pw;
          inside += iy >= 0 && ix >= 0 && iy < int64_t(g.in_h) && ix < int64_t(g.in_w);
        }
  const uint64_t stored = L.storage == kStoragePlain ? uint64_t(L.rows) * L.cols : L.nnz;
  return inside * per_tap <= kSmallDenseMaxRatio * stored * pixels;
}

bool conv_channel_scale(const ExecLayer& L, const ConvGeom& g) {
  return conv_is_depthwise(g) && g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0 &&
         g.pb == 0 && g.pr == 0 && (L.storage == kStorageSparse || L.storage == kStoragePlain);
}

bool conv_small_depthwise(const ExecLayer& L, const ConvGeom& g) {
  return conv_is_depthwise(g) && g.kh * g.kw <= kDwMaxTaps && size_t(g.out_h) * g.out_w < kPackedMaxPixels &&
         size_t(g.in_h) * g.in_w <= kDwMaxInPixels && (L.storage == kStorageSparse || L.storage == kStoragePlain);
}

namespace {

// A small-map conv on the dense weights (conv_small_dense_pays), any batch: per sample
// Y[pixel][out_c] = bias + the in-window taps' products (split over the pixels at batch 1, over
// the samples in a batch), then back to NCHW with the epilogue (+ residual, clamp) in the
// unfused order.
void small_dense(const OpCtx& c, const ExecLayer& L, const ConvGeom& g) {
  const uint32_t P = g.out_h * g.out_w, oc_n = g.out_c;
  const size_t n = c.n, in_sz = size_t(g.in_c) * g.in_h * g.in_w, out_sz = size_t(P) * oc_n;
  std::vector<float>& buf = c.ws.packed;  // this caller's, grows once
  if (buf.size() < n * out_sz) buf.resize(n * out_sz);
  float* yt = buf.data();  // [sample][pixel][out_c]
  const SmallConv s{L.small_w.data(), c.x.small_off.data(), g.kh * g.kw, g.in_c, oc_n, P, g.in_h * g.in_w};
  const SmallConvFn f = c.m.conv_small().conv_small;
  // One sample's pixels [p0, p1): bias, the taps, then (whole samples) back to NCHW + epilogue.
  const auto run = [&](size_t sm, uint32_t p0, uint32_t p1) {
    float* ys = yt + sm * out_sz;
    for (uint32_t p = p0; p < p1; ++p) std::memcpy(ys + size_t(p) * oc_n, L.bias.data(), oc_n * sizeof(float));
    f(s, c.in[0] + sm * in_sz, ys, p0, p1);
  };
  const auto back = [&](size_t sm) {
    const float* ys = yt + sm * out_sz;
    float* y = c.out + sm * out_sz;
    for (uint32_t oc = 0; oc < oc_n; ++oc)
      for (uint32_t p = 0; p < P; ++p) y[size_t(oc) * P + p] = ys[size_t(p) * oc_n + oc];
    c.epilogue(sm, P, 0, oc_n);
  };
  if (c.tasks == 1) {
    for (size_t sm = 0; sm < n; ++sm) run(sm, 0, P), back(sm);
  } else if (n == 1) {  // the pixels split
    const unsigned parts = std::min<unsigned>(P, c.tasks);
    c.par(parts, [&](size_t t, unsigned) { run(0, uint32_t(P * t / parts), uint32_t(P * (t + 1) / parts)); });
    back(0);
  } else {  // whole samples per task
    c.par(n, [&](size_t sm, unsigned) { run(sm, 0, P), back(sm); });
  }
}

void small_depthwise(const OpCtx& c, const ExecLayer& L, const ConvGeom& g) {
  const size_t n = c.n, out_sz = c.op.out.numel(), in_sz = size_t(g.in_c) * g.in_h * g.in_w;
  const float* w = L.storage == kStorageSparse ? L.dw_dense.data() : L.weight.data();  // [out_c][taps]
  const DwBlocksFn f = c.m.dw_blocks().dw_blocks;
  const uint32_t blocks = (g.out_c + kDwLanes - 1) / kDwLanes;
  const auto block = [&](size_t t) {
    const size_t s = t / blocks;
    const uint32_t ch0 = uint32_t(t % blocks) * kDwLanes, ch1 = std::min(g.out_c, ch0 + kDwLanes);
    const ConvEpilogue ep = c.conv_epilogue(s * out_sz);
    f(w, g, L.bias.data(), c.in[0] + s * in_sz, c.out + s * out_sz, ch0, ch1, ep);
  };
  if (c.tasks == 1)
    for (size_t t = 0; t < n * blocks; ++t) block(t);
  else
    c.par(n * blocks, [&](size_t t, unsigned) { block(t); });
}

}  // namespace

void run_conv2d(const OpCtx& c) {
  const OpDesc& op = c.op;
  const ExecLayer& L = c.m.layers()[op.layer];
  const ConvGeom& g = c.x.geom;
  const float* cur = c.in[0];
  float* nxt = c.out;
  const size_t n = c.n, in_sz = size_t(g.in_c) * g.in_h * g.in_w, out_sz = op.out.numel();
  const unsigned tasks = c.tasks, T = c.m.threads();
  if (n == 1 && L.pixel_form) {
    // A one-pixel output map: the matrix-vector product on the row form built at load over the
    // columns that read the input (layout.cpp), their inputs gathered first (a pointwise conv
    // reads x as it is), as a linear layer's batch 1.
    const float* xv = cur;
    if (!L.pixel_in.empty()) {
      if (c.ws.gather.size() < L.pixel_in.size()) c.ws.gather.resize(L.pixel_in.size());
      float* xg = c.ws.gather.data();
      for (size_t k = 0; k < L.pixel_in.size(); ++k) xg[k] = cur[L.pixel_in[k]];
      xv = xg;
    }
    std::memcpy(nxt, L.bias.data(), L.rows * sizeof(float));
    if (L.has_dense8()) {  // a pointwise conv on the dense codebook (fp32): equal row ranges, x4
      const QDense8 w = L.dense8_view();
      const DenseQ8Fn f = c.m.dense_q8().dense_q8;
      c.par_dense_rows(L.rows, [&](uint32_t r0, uint32_t r1) { f(w, xv, nxt, r0, r1); });
    } else if (L.rows16.tiles > 0) {
      const QTiles16 w = L.rows16.view(L.codebook.data());
      const auto& sp = L.rows16.split;
      const SpmvRowsFn f = c.m.spmv_rows().spmv_rows;
      if (tasks == 1 || sp.size() == 2)
        f(w, xv, nxt, 0, L.rows);
      else
        c.par(sp.size() - 1, [&](size_t t, unsigned) { f(w, xv, nxt, sp[t], sp[t + 1]); });
    }
    c.epilogue(0, 1, 0, L.rows);
    return;
  }
  if (!c.x.small_off.empty()) {
    small_dense(c, L, g);
    return;
  }
  if (conv_channel_scale(L, g)) {
    // y = w[c] x + b[c] (the conv kernels' bias-then-taps sum of its one tap), + residual, clamp:
    // the blocks kernel's per-block set-up cost ~50 ns per 16 channels for a few pixels each
    // (MobileNetV2's 52 kept batch norms, 1x1-7x7 maps: ~1.5 us each at 480 channels, Zen 4).
    const float* w = L.storage == kStorageSparse ? L.dw_dense.data() : L.weight.data();
    const size_t hw = size_t(g.out_h) * g.out_w;
    const auto channels = [&](size_t s, uint32_t c0, uint32_t c1) {
      for (uint32_t ch = c0; ch < c1; ++ch) {
        const float a = w[ch], b = L.bias[ch];
        const float* xi = cur + s * in_sz + size_t(ch) * hw;
        float* yo = nxt + s * out_sz + size_t(ch) * hw;
        for (size_t p = 0; p < hw; ++p) yo[p] = b + a * xi[p];
      }
      c.epilogue(s, hw, c0, c1);
    };
    if (tasks == 1) {
      for (size_t s = 0; s < n; ++s) channels(s, 0, g.out_c);
    } else {
      const unsigned chunks = std::min<unsigned>(g.out_c, 4 * tasks);
      c.par(n * chunks, [&](size_t t, unsigned) {
        const size_t s = t / chunks, k = t % chunks;
        channels(s, uint32_t(g.out_c * k / chunks), uint32_t(g.out_c * (k + 1) / chunks));
      });
    }
    return;
  }
  if (conv_small_depthwise(L, g)) {
    small_depthwise(c, L, g);
    return;
  }
  // (and depthwise convs the blocks do not take: over 64 taps, or inputs over 256 pixels)
  // At batch 1 only convs with more than one tap (a one-pixel-wide kernel is the pointwise product
  // below, which the im2col block would only copy).
  if ((n > 1 || size_t(g.kh) * g.kw > 1) && size_t(g.out_h) * g.out_w < kPackedMaxPixels &&
      (L.storage == kStorageSparse || L.storage == kStoragePlain)) {
    packed_conv(c, L, g);
    return;
  }
  if (conv_is_pointwise(L.storage, L.kh, L.kw, g)) {
    // The sparse product W[out, in] x X[in, H*W]: [in, H*W] already is the batched kernel's
    // [cols, lanes] layout (XNNPACK's sparse-inference case), the pixels are the lanes, no padded
    // copy, no transpose. Tasks: (sample, chunk of rows with equal shares of the non-zeros).
    const size_t hw = size_t(g.out_h) * g.out_w;
    const QConvRows w = L.conv_view();
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
        const ConvEpilogue ep = c.conv_epilogue(s * out_sz + ch * hw_out);
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
    const ConvEpilogue ep = c.conv_epilogue(s * out_sz);
    if (sparse)
      f(w, g, tapoff, L.bias.data(), cur + s * in_sz, xpad + s * pad_sz, nxt + s * out_sz, oc0, oc1, oy0, oy1, ep);
    else
      conv_f32(L.weight.data(), L.cols, g, tapoff, L.bias.data(), xpad + s * pad_sz, nxt + s * out_sz, oc0, oc1, oy0,
               oy1, ep);
  });
}

}  // namespace dcrt
