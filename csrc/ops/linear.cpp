// linear: plain fp32 rows, batch 1 on the spmv16 tiles (row or column form), batches on the
// transposed [cols, lanes] blocks (rows layout, gather form).
#include <algorithm>
#include <cstring>
#include <mutex>

#include "../kernels/dense.hpp"
#include "../kernels/dense_q8.hpp"
#include "../relidx.hpp"
#include "ops.hpp"

namespace dcrt {

void build_row_tiles(const ExecLayer& L);  // layout.cpp

void run_linear(const OpCtx& c) {
  const OpDesc& op = c.op;
  const ExecLayer& L = c.m.layers()[op.layer];
  const float* cur = c.in[0];
  float* nxt = c.out;
  const size_t n = c.n, in_sz = op.in.numel(), out_sz = op.out.numel();
  const unsigned tasks = c.tasks;
  if (L.storage == kStoragePlain) {
    const uint32_t blk = (L.rows + tasks - 1) / tasks;
    c.par(n * tasks, [&](size_t t, unsigned) {
      const size_t s = t / tasks;
      const uint32_t r0 = uint32_t(t % tasks) * blk, r1 = std::min(L.rows, r0 + blk);
      if (r0 < r1) linear_f32(L.weight.data(), L.bias.data(), cur + s * in_sz, nxt + s * out_sz, L.cols, r0, r1);
    });
  } else if (n == 1) {
    // Row form for dense inputs, column form (zero inputs skipped) below the layer's crossover
    // density; each share writes its own outputs, so no reduction.
    std::memcpy(nxt, L.bias.data(), L.rows * sizeof(float));
    uint32_t* live = c.ws.live.data();
    const uint32_t nlive = live_columns(cur, L.cols, live);
    if (L.has_dense8() && nlive >= L.dense8_cols_density * L.cols) {
      // Dense codebook: equal row ranges (the cost per row is the same), multiples of 4 rows.
      // A precision mode rounds the input once here, before the split (dense_q8.hpp).
      const QDense8 w = L.dense8_view();
      const auto split = [&](const auto& f) { c.par_dense_rows(L.rows, f); };
      if (L.dense8_prec == kPrecisionInt8) {
        const QInputU8 q = quantize_input_u8(cur, L.cols, w.ldc, reinterpret_cast<uint8_t*>(c.ws.lowp.data()));
        const DenseI8Fn f = c.m.dense_i8().dense_i8;
        split([&](uint32_t r0, uint32_t r1) { f(w, q, nxt, r0, r1); });
      } else if (L.dense8_prec == kPrecisionBf16) {
        round_input_bf16(cur, L.cols, w.ldc, c.ws.lowp.data());
        const DenseBf16Fn f = c.m.dense_bf16().dense_bf16;
        const uint16_t* xb = c.ws.lowp.data();
        split([&](uint32_t r0, uint32_t r1) { f(w, xb, nxt, r0, r1); });
      } else {
        const DenseQ8Fn f = c.m.dense_q8().dense_q8;
        split([&](uint32_t r0, uint32_t r1) { f(w, cur, nxt, r0, r1); });
      }
    } else if (!L.has_dense8() && nlive >= L.cols16_density * L.cols) {  // no row form beside a dense codebook
      const QTiles16 w = L.rows16.view(L.codebook.data());
      const auto& sp = L.rows16.split;
      const unsigned shares = uint32_t(sp.size() - 1);
      const SpmvRowsFn f = c.m.spmv_rows().spmv_rows;
      if (tasks == 1 || shares == 1)
        f(w, cur, nxt, 0, L.rows);
      else
        c.par(shares, [&](size_t t, unsigned) { f(w, cur, nxt, sp[t], sp[t + 1]); });
    } else if (nlive) {
      const QTiles16 w = L.cols16.view(L.codebook.data());
      const auto& sp = L.cols16.split;
      const SpmvColsFn f = c.m.spmv_cols().spmv_cols;
      if (tasks == 1 || L.cols16.split.size() == 2)
        f(w, cur, live, nlive, nxt, 0, L.cols16.tiles);
      else
        c.par(sp.size() - 1, [&](size_t t, unsigned) { f(w, cur, live, nlive, nxt, sp[t], sp[t + 1]); });
    }
  } else {
    // Batch: transpose to [cols, np] so the inner loop runs over contiguous samples; lanes
    // n..np-1 are zero and their outputs dropped.
    const size_t np = batch_lanes(n);
    float* xt = c.ws.xt.data();
    float* yt = c.ws.yt.data();
    // Reshuffles in 64-column (64-row) blocks split over the tasks: at batch 64 the input of
    // VGG-16 fc6 is 6.4 MB, 1.3 ms on one thread with a scalar transpose.
    const TransposeFn tr = c.m.transpose().transpose;
    const size_t in_blocks = (L.cols + 63) / 64;
    const size_t parts = tasks == 1 ? 1 : std::min<size_t>(in_blocks, 4 * tasks);
    c.par(parts, [&](size_t t, unsigned) {
      const size_t c0 = std::min<size_t>(L.cols, in_blocks * t / parts * 64);
      const size_t c1 = std::min<size_t>(L.cols, in_blocks * (t + 1) / parts * 64);
      tr(cur + c0, in_sz, xt + c0 * np, np, n, c1 - c0);
      if (np != n)
        for (size_t q = c0; q < c1; ++q) std::fill(xt + q * np + n, xt + (q + 1) * np, 0.f);
    });
    for (uint32_t r = 0; r < L.rows; ++r) std::fill(yt + size_t(r) * np, yt + size_t(r + 1) * np, L.bias[r]);
    if (L.cols < (1u << 24)) {
      // Gather form on the rows layout (built once, on the first batched call): each task owns a
      // range of output rows and keeps their batch lanes in registers.
      std::call_once(*L.rows_once, [&] { build_row_tiles(L); });
      const unsigned chunks = tasks == 1 ? 1 : 8 * tasks;
      const auto& rw = L.row_work;
      const SpmmRowsFn f = c.m.spmm_rows().spmm_rows;
      c.par(chunks, [&](size_t t, unsigned) {
        // Equal shares of the non-zeros; each task walks the column tiles over its rows.
        const uint64_t lo = L.nnz * t / chunks, hi = L.nnz * (t + 1) / chunks;
        const uint32_t r0 = t == 0 ? 0 : uint32_t(std::lower_bound(rw.begin(), rw.end() - 1, lo) - rw.begin());
        const uint32_t r1 = t + 1 == chunks ? L.rows : uint32_t(std::lower_bound(rw.begin(), rw.end() - 1, hi) - rw.begin());
        if (r0 >= r1) return;
        for (uint32_t k = 0; k < L.row_tiles; ++k) {
          const QConvRows wr{L.rows, L.cols, L.code_bits, L.conv_rowptr.data() + size_t(k) * (L.rows + 1),
                             L.conv_entries.data(), L.codebook.data()};
          f(wr, xt, np, yt, np, np, r0, r1);
        }
      });
    } else {
      // Batch slices of at most 16 samples: a task's output block (rows x 16 floats) stays in L2
      // while the entries stream by once per slice.
      const QSparseMatrix w = L.view();
      const SpmmFn f = c.m.spmm().spmm;
      const size_t slice = std::min<size_t>(16, std::max<size_t>(8, (n / tasks + 7) / 8 * 8));
      const size_t nt = (n + slice - 1) / slice;
      c.par(nt, [&](size_t t, unsigned) {
        const size_t a = t * slice, b = std::min(n, a + slice);
        f(w, xt + a, np, yt + a, np, b - a);
      });
    }
    const size_t out_blocks = (L.rows + 63) / 64;
    const size_t oparts = tasks == 1 ? 1 : std::min<size_t>(out_blocks, 4 * tasks);
    c.par(oparts, [&](size_t t, unsigned) {
      const size_t r0 = std::min<size_t>(L.rows, out_blocks * t / oparts * 64);
      const size_t r1 = std::min<size_t>(L.rows, out_blocks * (t + 1) / oparts * 64);
      tr(yt + r0 * np, np, nxt + r0, out_sz, r1 - r0, n);
    });
  }
  // A fused add / relu / clip: one pass over the (small) outputs.
  for (size_t s = 0; s < n; ++s) c.epilogue(s, 1, 0, out_sz);
}

}  // namespace dcrt
