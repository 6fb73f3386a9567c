// Loader (decode + execution layout) and graph executor for .dcz models.
#include "model.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "huffman.hpp"
#include "kernels/dense.hpp"
#include "kernels/elementwise.hpp"
#include "relidx.hpp"

namespace dcrt {

// Batch lanes of the transposed [cols, lanes] blocks: a multiple of 8, so the AVX2 batched
// kernels run whole 8-lane blocks (zero pad lanes) instead of a scalar tail: at batch 2-7 the
// tail ran 8x slower than one 8-lane block (measured on a 4096 x 9216 layer at 9%).
inline size_t batch_lanes(size_t n) { return (n + 7) / 8 * 8; }

struct Workspace {
  size_t cap_n = 0;
  std::vector<float> arena, xt, yt, xpad;
  std::vector<uint32_t> live;  // batch 1: the live input columns of a linear layer
  std::vector<const float*> ins;  // the current op's input pointers
  // n samples of the load-time plan; sizes saturate (then the allocation fails with
  // bad_alloc) instead of wrapping.
  void reserve(size_t n, const BufferPlan& p) {
    if (n <= cap_n) return;
    arena.resize(sat_mul(n, p.arena));
    xt.resize(n > 1 ? sat_mul(batch_lanes(n), p.lin_cols) : 0);
    yt.resize(n > 1 ? sat_mul(batch_lanes(n), p.lin_rows) : 0);
    live.resize(p.lin_cols);
    xpad.resize(sat_add(sat_mul(n, p.padded), kConvSlack));
    cap_n = n;
  }
};

namespace {
using clk = std::chrono::steady_clock;
double secs(clk::time_point a, clk::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// Work below this many multiply-adds runs on one thread: handing it over costs more.
constexpr uint64_t kParallelMin = 1 << 13;
// Ops below this much work (OpDesc::work, all samples) never wake a sleeping worker: measured
// with bench/gap_latency.py, waking one for LeNet-300-100's ip1 (~19k entries) made calls after
// a 1 ms gap 15-20% slower than threads=1, while LeNet-5's conv2 (~200k) gains.
constexpr uint64_t kWakeMin = 1 << 16;

}  // namespace

// Columns per tile of a linear layer's rows layout: the power of two nearest 24 / density
// (about 24 non-zeros per row and tile), 128 to 2048. A tile's input block (512 columns x 64
// lanes x 4 B = 128 KiB at 4%) stays in L2, and each row's accumulators are loaded and stored
// once per 24 entries. Measured at 64 lanes on Zen 3: 4096 x 25088 at 4% 7.9 cycles per entry
// with 512 columns, 8.4 with 1024, 10.3 with 2048; 4096 x 9216 at 9% 6.8 (256) vs 8.5 (1024).
uint32_t row_tile_cols(uint32_t rows, uint32_t cols, uint64_t nnz) {
  const double density = rows && cols ? double(nnz) / (double(rows) * cols) : 0.0;
  if (density <= 0.0) return 2048;
  const double want = 24.0 / density;
  uint32_t t = 128;
  while (t < 2048 && double(t) * 1.41421356 < want) t *= 2;
  return t;
}

namespace {

// The column-tiled rows layout of a sparse linear layer (see ExecLayer).
void build_row_tiles(const ExecLayer& L) {
  const uint32_t tile_cols = row_tile_cols(L.rows, L.cols, L.nnz);
  const uint32_t tiles = row_tile_count(L.cols, tile_cols), rows = L.rows;
  L.conv_rowptr.resize(size_t(tiles) * (rows + 1));
  L.conv_entries.resize(L.nnz);
  csc_to_rows_tiled(L.view(), tile_cols, L.conv_rowptr.data(), L.conv_entries.data());
  L.row_work.assign(size_t(rows) + 1, 0);
  for (uint32_t k = 0; k < tiles; ++k) {
    const uint32_t* rp = L.conv_rowptr.data() + size_t(k) * (rows + 1);
    for (uint32_t r = 0; r < rows; ++r) L.row_work[r + 1] += rp[r + 1] - rp[r];
  }
  for (uint32_t r = 0; r < rows; ++r) L.row_work[r + 1] += L.row_work[r];
  L.row_tiles = tiles;
  L.row_tile_cols = tile_cols;
}

ConvGeom conv_geom(const OpDesc& op, const ExecLayer& L) {
  return ConvGeom{op.in.d[0], op.in.d[1], op.in.d[2], op.out.d[0], op.out.d[1], op.out.d[2],
                  L.kh, L.kw, op.p[0], op.p[1], op.p[2], op.p[3], op.p[4]};
}
}  // namespace

namespace {
unsigned checked_threads(unsigned threads) {
  if (threads > kMaxThreads)
    throw InputError("threads must be in 1.." + std::to_string(kMaxThreads) + ", got " + std::to_string(threads));
  if (threads == 0) threads = std::min(kMaxThreads, std::max(1u, std::thread::hardware_concurrency()));
  return threads;
}
}  // namespace

Model::Model(const uint8_t* data, size_t size, unsigned threads, const LoadLimits& limits)
    : spmv_rows_(&best_kernel("spmv_rows")), spmv_cols_(&best_kernel("spmv_cols")), spmm_(&best_kernel("spmm")), spmm_rows_(&best_kernel("spmm_rows")), conv_(&best_kernel("conv")),
      huff_(&best_kernel("huffman")), transpose_(&best_kernel("transpose")) {
  threads = checked_threads(threads);
  const auto t0 = clk::now();
  ParsedFile f = parse_file(data, size);
  const auto t1 = clk::now();
  input_ = f.input;
  meta_json_ = std::move(f.meta_json);
  ops_ = f.ops;
  if (!f.mean.empty()) {
    mean_ = f.mean;
    inv_std_.resize(f.std.size());
    for (size_t i = 0; i < f.std.size(); ++i) inv_std_[i] = 1.f / f.std[i];
  }
  // Buffer plan (per sample, from the validated shapes) and the caller's limits, before
  // anything big is decoded or allocated.
  plan_.activation = input_.numel();
  plan_.work = input_.numel();
  std::string biggest = "the input";
  for (size_t i = 0; i < ops_.size(); ++i) {
    const OpDesc& op = ops_[i];
    if (op.out.numel() > plan_.activation) {
      plan_.activation = op.out.numel();
      biggest = "op[" + std::to_string(i) + "]'s output";
    }
    plan_.work = sat_add(plan_.work, op.work);
    if (op.type == OpType::Linear) {
      plan_.lin_cols = std::max<uint64_t>(plan_.lin_cols, f.layers[op.layer].cols);
      plan_.lin_rows = std::max<uint64_t>(plan_.lin_rows, f.layers[op.layer].rows);
    } else if (op.type == OpType::Conv2d) {
      const LayerDesc& L = f.layers[op.layer];
      const ConvGeom g{op.in.d[0], op.in.d[1], op.in.d[2], op.out.d[0], op.out.d[1], op.out.d[2],
                       L.kh, L.kw, op.p[0], op.p[1], op.p[2], op.p[3], op.p[4]};
      if (padded_size(g) > plan_.padded) plan_.padded = padded_size(g);
      if (padded_size(g) > limits.max_activation)
        throw LimitError("op[" + std::to_string(i) + "] (conv2d)'s padded input needs " +
                         std::to_string(padded_size(g)) + " elements per sample, over max_activation=" +
                         std::to_string(limits.max_activation));
    }
  }
  if (plan_.activation > limits.max_activation)
    throw LimitError(biggest + " needs " + std::to_string(plan_.activation) +
                     " elements per sample, over max_activation=" + std::to_string(limits.max_activation));
  if (plan_.work > limits.max_work)
    throw LimitError("the network needs " + std::to_string(plan_.work) +
                     " multiply-adds per sample, over max_work=" + std::to_string(limits.max_work));
  plan_tensors();
  pool_ = std::make_unique<ThreadPool>(threads);
  decode_layers(f);
  tapoff_.assign(ops_.size(), {});
  for (size_t i = 0; i < ops_.size(); ++i) {
    const OpDesc& op = ops_[i];
    if (op.type == OpType::Conv2d) {
      const ExecLayer& L = layers_[op.layer];
      const ConvGeom g = conv_geom(op, L);
      tapoff_[i].resize(L.cols);
      conv_tap_offsets(g, L.cols, tapoff_[i].data());
    }
  }
  const auto t3 = clk::now();
  stats_.parse_s = secs(t0, t1);
  stats_.layout_s = secs(t1, t3) - stats_.decode_s;  // decode_s: set by decode_layers
  stats_.total_s = secs(t0, t3);
}

Model::~Model() = default;

namespace {
bool is_unary(OpType t) {
  switch (t) {
    case OpType::Relu: case OpType::Clip: case OpType::Sigmoid: case OpType::HardSigmoid: case OpType::HardSwish:
    case OpType::Silu: case OpType::Tanh: case OpType::Gelu:
      return true;
    default:
      return false;
  }
}
}  // namespace

// Arena plan by liveness. A tensor lives from the op that writes it to the last op that reads it
// (or one of its aliases); flatten and dropout alias their input, and an elementwise op whose
// input dies there runs in place. Buffers are placed biggest first at the lowest offset that
// overlaps no buffer alive at the same time (TFLite's greedy-by-size).
void Model::plan_tensors() {
  const size_t T = ops_.size() + 1;
  std::vector<uint64_t> size(T), last(T, 0);
  std::vector<size_t> root(T);
  size[0] = input_.numel();
  for (size_t i = 0; i < ops_.size(); ++i) {
    size[i + 1] = ops_[i].out.numel();
    for (uint32_t t : ops_[i].inputs) last[t] = std::max<uint64_t>(last[t], i);
  }
  last[T - 1] = ops_.size();  // the output outlives every op
  for (size_t t = 0; t < T; ++t) root[t] = t;
  for (size_t i = 0; i < ops_.size(); ++i) {
    const OpDesc& op = ops_[i];
    const size_t in = op.inputs[0], r = root[in];
    if (op.type == OpType::Flatten || op.type == OpType::Dropout) {
      root[i + 1] = r;
    } else if (is_unary(op.type)) {
      bool dies = true;  // no reader of r's buffer after this op
      for (size_t u = 0; u <= i && dies; ++u)
        if (root[u] == r && last[u] > i) dies = false;
      if (dies) root[i + 1] = r;
    }
  }
  struct Buf { size_t r; uint64_t size, start, end, off; };
  std::vector<Buf> bufs;
  std::vector<size_t> buf_of(T, SIZE_MAX);
  for (size_t t = 0; t < T; ++t) {
    const size_t r = root[t];
    if (buf_of[r] == SIZE_MAX) {
      buf_of[r] = bufs.size();
      bufs.push_back({r, size[r], r == 0 ? 0 : r - 1, 0, 0});  // tensor r is written by op r - 1
    }
    Buf& b = bufs[buf_of[r]];
    b.end = std::max(b.end, last[t]);
  }
  std::vector<size_t> order(bufs.size());
  for (size_t k = 0; k < order.size(); ++k) order[k] = k;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return bufs[a].size > bufs[b].size; });
  std::vector<size_t> placed;
  uint64_t peak = 0;
  for (size_t k : order) {
    Buf& b = bufs[k];
    std::vector<std::pair<uint64_t, uint64_t>> busy;  // [off, off + size) of overlapping lifetimes
    for (size_t q : placed)
      if (bufs[q].start <= b.end && b.start <= bufs[q].end) busy.push_back({bufs[q].off, bufs[q].off + bufs[q].size});
    std::sort(busy.begin(), busy.end());
    uint64_t off = 0;
    for (const auto& iv : busy) {
      if (iv.first >= off + b.size) break;  // the gap before this one fits
      off = std::max(off, iv.second);
    }
    b.off = off;
    peak = std::max(peak, off + b.size);
    placed.push_back(k);
  }
  tensor_off_.resize(T);
  for (size_t t = 0; t < T; ++t) tensor_off_[t] = bufs[buf_of[root[t]]].off;
  plan_.arena = peak;
}

void Model::decode_layers(ParsedFile& f) {
  layers_.resize(f.layers.size());
  // Tables first (validates code lengths), then every chunk of every stream in parallel.
  // Jobs of kChunksPerJob chunks: the decoder interleaves six chunks of one stream.
  constexpr uint64_t kChunksPerJob = 12;
  struct Job { uint32_t layer; bool index; uint64_t c0, c1; };
  std::vector<HuffTable> ctab(f.layers.size()), itab(f.layers.size());
  std::vector<std::vector<uint8_t>> codes(f.layers.size()), gaps(f.layers.size());
  std::vector<Job> jobs;
  for (uint32_t i = 0; i < f.layers.size(); ++i) {
    LayerDesc& d = f.layers[i];
    ExecLayer& L = layers_[i];
    L.name = d.name; L.storage = d.storage; L.kind = d.kind; L.rows = d.rows; L.cols = d.cols;
    L.kh = d.kh; L.kw = d.kw; L.code_bits = d.code_bits; L.index_bits = d.index_bits;
    L.nnz = d.nnz; L.n_entries = d.n_entries;
    L.bias = std::move(d.bias);
    if (d.storage == kStoragePlain) {
      L.weight = std::move(d.weight);
      continue;
    }
    build_huff_table(d.code_lengths.data(), 1u << d.code_bits, d.n_entries, ctab[i], d.where() + ": code_lengths");
    build_huff_table(d.index_lengths.data(), 1u << d.index_bits, d.n_entries, itab[i], d.where() + ": index_lengths");
    codes[i].resize(d.n_entries);  // bounded: n_entries <= 8 * stream bytes (checked in parse)
    gaps[i].resize(d.n_entries);
    for (uint64_t c = 0; c < d.n_chunks; c += kChunksPerJob) {
      const uint64_t c1 = std::min<uint64_t>(c + kChunksPerJob, d.n_chunks);
      jobs.push_back({i, false, c, c1});
      jobs.push_back({i, true, c, c1});
    }
    stats_.symbols_decoded += 2 * d.n_entries;
  }
  std::vector<int64_t> bad(jobs.size(), -1);
  const HuffDecodeFn dec = huff_->huff;
  const auto t0 = clk::now();
  pool_->parallel_for(jobs.size(), [&](size_t j, unsigned) {
    const Job& jb = jobs[j];
    const LayerDesc& d = f.layers[jb.layer];
    const HuffStream hs{jb.index ? d.index_stream : d.code_stream,
                        (jb.index ? d.index_offsets : d.code_offsets).data(), d.chunk_symbols, d.n_entries};
    bad[j] = dec(jb.index ? itab[jb.layer] : ctab[jb.layer], hs, jb.c0, jb.c1,
                 (jb.index ? gaps : codes)[jb.layer].data());
  });
  stats_.decode_s = secs(t0, clk::now());
  for (size_t j = 0; j < jobs.size(); ++j)
    if (bad[j] >= 0)
      throw FormatError(f.layers[jobs[j].layer].where() + ": " + (jobs[j].index ? "index_stream" : "code_stream") +
                        ": chunk " + std::to_string(bad[j]) +
                        ": corrupt (invalid code, runs past the chunk's end, spare bytes or non-zero padding)");
  // Execution layout: rel16 entries, validated against the row count; equal-work column splits.
  std::vector<std::string> errors(layers_.size());
  const unsigned T = pool_->size();
  pool_->parallel_for(layers_.size(), [&](size_t i, unsigned) {
    ExecLayer& L = layers_[i];
    if (L.storage != kStorageSparse) return;
    LayerDesc& d = f.layers[i];
    L.codebook = std::move(d.codebook);
    L.colptr = std::move(d.colptr);
    L.entries.resize(L.n_entries);
    pack_rel16(codes[i].data(), gaps[i].data(), L.n_entries, L.code_bits, L.entries.data());
    const int64_t badc = check_rel16_columns(L.colptr.data(), L.cols, L.entries.data(), L.code_bits, L.rows);
    if (badc >= 0) {
      errors[i] = d.where() + ": column " + std::to_string(badc) + " runs past rows=" + std::to_string(L.rows);
      return;
    }
    const uint64_t real = L.n_entries - uint64_t(std::count(codes[i].begin(), codes[i].end(), uint8_t(0)));
    if (real != L.nnz) {
      errors[i] = d.where() + ": nnz says " + std::to_string(L.nnz) + " but the code stream has " +
                  std::to_string(real) + " non-zero codes";
      return;
    }
    if (L.kind == kLayerConv2d) {  // convolution runs on output-channel rows
      L.conv_rowptr.resize(size_t(L.rows) + 1);
      L.conv_entries.resize(L.nnz);
      csc_to_conv_rows(L.view(), L.conv_rowptr.data(), L.conv_entries.data());
    }
    std::vector<uint8_t>().swap(codes[i]);
    std::vector<uint8_t>().swap(gaps[i]);
  });
  for (const auto& e : errors)
    if (!e.empty()) throw FormatError(e);
  // Batch-1 layouts of the sparse linear layers: each (layer, form) is one job, so the biggest
  // layer's two forms build on two threads.
  std::vector<std::pair<uint32_t, bool>> builds;
  for (uint32_t i = 0; i < layers_.size(); ++i)
    if (layers_[i].storage == kStorageSparse && layers_[i].kind == kLayerLinear) {
      builds.push_back({i, false});
      builds.push_back({i, true});
    }
  pool_->parallel_for(builds.size(), [&](size_t j, unsigned) {
    ExecLayer& L = layers_[builds[j].first];
    if (builds[j].second)
      build_cols16(L.view(), 0, T, L.cols16);
    else
      build_rows16(L.view(), 0, T, L.rows16);
  });
  for (auto& L : layers_)
    if (L.storage == kStorageSparse && L.kind == kLayerLinear) L.cols16_density = cols16_max_density(L.rows16, L.cols16);
}

Workspace* Model::acquire(size_t n) const {
  std::unique_ptr<Workspace> ws;
  {
    std::lock_guard<std::mutex> lk(ws_mutex_);
    if (!ws_free_.empty()) {
      ws = std::move(ws_free_.back());
      ws_free_.pop_back();
    }
  }
  if (!ws) ws = std::make_unique<Workspace>();
  ws->reserve(n, plan_);
  return ws.release();
}

void Model::release(Workspace* ws) const {
  std::lock_guard<std::mutex> lk(ws_mutex_);
  ws_free_.emplace_back(ws);
}

void Model::infer(const float* x, size_t n, float* y, double* op_seconds) const {
  if (n == 0) return;
  struct Guard {
    const Model* m;
    Workspace* ws;
    ~Guard() { m->release(ws); }
  } g{this, acquire(n)};
  Workspace& ws = *g.ws;
  float* const arena = ws.arena.data();
  float* cur = arena + n * tensor_off_[0];
  // Normalise into the first buffer, rejecting non-finite input on the way.
  const size_t per = input_.numel();
  const size_t C = mean_.size(), inner = C ? per / C : per;
  // Samples in parallel where there is enough to share (6.4 MB at batch 64 for a 25088-wide
  // input); errors are raised here, on the calling thread, for the first bad sample.
  uint8_t bad1 = 0;  // batch 1 (the latency path) allocates nothing
  std::vector<uint8_t> bad_n(n > 1 ? n : 0, 0);
  uint8_t* bad = n > 1 ? bad_n.data() : &bad1;
  auto prologue = [&](size_t s, unsigned) {
    const float* xs = x + s * per;
    float* d = cur + s * per;
    // All-ones exponent = NaN or Inf; an integer OR-reduction vectorises (an early-exit loop
    // does not), and the index is looked for only when there is one.
    uint32_t nonfinite = 0;
    for (size_t i = 0; i < per; ++i) {
      uint32_t u;
      std::memcpy(&u, xs + i, 4);
      nonfinite |= uint32_t((u & 0x7f800000u) == 0x7f800000u);
    }
    bad[s] = uint8_t(nonfinite);
    if (nonfinite) return;
    if (!C) {
      std::memcpy(d, xs, per * sizeof(float));
    } else {
      for (size_t c = 0; c < C; ++c) {
        const float m = mean_[c], is = inv_std_[c];
        for (size_t i = c * inner; i < (c + 1) * inner; ++i) d[i] = (xs[i] - m) * is;
      }
    }
  };
  if (n > 1 && n * per >= (size_t(1) << 16))
    pool_->parallel_for(n, prologue);
  else
    for (size_t s = 0; s < n; ++s) prologue(s, 0);
  for (size_t s = 0; s < n; ++s)
    if (bad[s])
      for (size_t i = 0; i < per; ++i)
        if (!std::isfinite(x[s * per + i]))
          throw InputError("input contains NaN or Inf (sample " + std::to_string(s) + ", flat index " +
                           std::to_string(i) + ")");
  std::vector<const float*>& ins = ws.ins;  // grows once, to the widest concat
  for (size_t i = 0; i < ops_.size(); ++i) {
    const OpDesc& op = ops_[i];
    ins.resize(op.inputs.size());
    for (size_t k = 0; k < op.inputs.size(); ++k) ins[k] = arena + n * tensor_off_[op.inputs[k]];
    if (op_seconds) {
      const auto t0 = clk::now();
      run_op(op, ws, n, ins.data(), arena + n * tensor_off_[i + 1]);
      op_seconds[i] += secs(t0, clk::now());
    } else {
      run_op(op, ws, n, ins.data(), arena + n * tensor_off_[i + 1]);
    }
  }
  std::memcpy(y, arena + n * tensor_off_.back(), n * output_shape().numel() * sizeof(float));
  pool_->note_activity();
}

unsigned Model::op_threads(const OpDesc& op, size_t n) const {
  return sat_mul(op.work, n) < kParallelMin ? 1 : pool_->size();
}
bool Model::op_wakes(const OpDesc& op, size_t n) const {
  return op_threads(op, n) > 1 && sat_mul(op.work, n) >= kWakeMin;
}

void Model::run_op(const OpDesc& op, Workspace& ws, size_t n, const float* const* in, float* out) const {
  const float* cur = in[0];
  float* nxt = out;  // may equal cur: flatten, dropout, an elementwise op run in place (plan_tensors)
  const size_t in_sz = op.in.numel(), out_sz = op.out.numel();
  const unsigned T = pool_->size();
  // Sleeping workers are woken only for ops big enough to pay for the wake-up (a futex call on
  // this thread, and tens of microseconds before a woken vCPU runs); smaller ops use the
  // workers that are awake anyway (the previous op's), or run here alone.
  const bool wake = op_wakes(op, n);
  // Split only where someone will help: alone, the caller runs the op's unsplit form.
  const unsigned tasks = op_threads(op, n) > 1 && pool_->helpers_available(wake) ? T : 1;
  const auto par = [&](size_t tasks, const std::function<void(size_t, unsigned)>& fn) {
    pool_->parallel_for(tasks, fn, wake);
  };
  switch (op.type) {
    case OpType::Linear: {
      const ExecLayer& L = layers_[op.layer];
      if (L.storage == kStoragePlain) {
        const uint32_t blk = (L.rows + tasks - 1) / tasks;
        par(n * tasks, [&](size_t t, unsigned) {
          const size_t s = t / tasks;
          const uint32_t r0 = uint32_t(t % tasks) * blk, r1 = std::min(L.rows, r0 + blk);
          if (r0 < r1) linear_f32(L.weight.data(), L.bias.data(), cur + s * in_sz, nxt + s * out_sz, L.cols, r0, r1);
        });
      } else if (n == 1) {
        // Row form for dense inputs, column form (zero inputs skipped) below the layer's
        // crossover density; each share writes its own outputs, so no reduction.
        std::memcpy(nxt, L.bias.data(), L.rows * sizeof(float));
        uint32_t* live = ws.live.data();
        const uint32_t nlive = live_columns(cur, L.cols, live);
        const unsigned shares = uint32_t(L.rows16.split.size() - 1);
        if (nlive >= L.cols16_density * L.cols) {
          const QTiles16 w = L.rows16.view(L.codebook.data());
          const auto& sp = L.rows16.split;
          if (tasks == 1 || shares == 1)
            spmv_rows_->spmv_rows(w, cur, nxt, 0, L.rows);
          else
            par(shares, [&](size_t t, unsigned) { spmv_rows_->spmv_rows(w, cur, nxt, sp[t], sp[t + 1]); });
        } else if (nlive) {
          const QTiles16 w = L.cols16.view(L.codebook.data());
          const auto& sp = L.cols16.split;
          if (tasks == 1 || L.cols16.split.size() == 2)
            spmv_cols_->spmv_cols(w, cur, live, nlive, nxt, 0, L.cols16.tiles);
          else
            par(sp.size() - 1, [&](size_t t, unsigned) {
              spmv_cols_->spmv_cols(w, cur, live, nlive, nxt, sp[t], sp[t + 1]);
            });
        }
      } else {
        // Batch: transpose to [cols, np] so the inner loop runs over contiguous samples; lanes
        // n..np-1 are zero and their outputs dropped.
        const size_t np = batch_lanes(n);
        float* xt = ws.xt.data();
        float* yt = ws.yt.data();
        // Reshuffles in 64-column (64-row) blocks split over the tasks: at batch 64 the input of
        // VGG-16 fc6 is 6.4 MB, 1.3 ms on one thread with a scalar transpose.
        const TransposeFn tr = transpose_->transpose;
        const size_t in_blocks = (L.cols + 63) / 64;
        par(tasks == 1 ? 1 : std::min<size_t>(in_blocks, 4 * tasks), [&](size_t t, unsigned) {
          const size_t parts = tasks == 1 ? 1 : std::min<size_t>(in_blocks, 4 * tasks);
          const size_t c0 = std::min<size_t>(L.cols, in_blocks * t / parts * 64);
          const size_t c1 = std::min<size_t>(L.cols, in_blocks * (t + 1) / parts * 64);
          tr(cur + c0, in_sz, xt + c0 * np, np, n, c1 - c0);
          if (np != n)
            for (size_t c = c0; c < c1; ++c) std::fill(xt + c * np + n, xt + (c + 1) * np, 0.f);
        });
        for (uint32_t r = 0; r < L.rows; ++r) std::fill(yt + size_t(r) * np, yt + size_t(r + 1) * np, L.bias[r]);
        const QSparseMatrix w = L.view();
        if (L.cols < (1u << 24)) {
          // Gather form on the rows layout (built once, on the first batched call): each task owns
          // a range of output rows and keeps their batch lanes in registers.
          std::call_once(*L.rows_once, [&] { build_row_tiles(L); });
          const unsigned chunks = tasks == 1 ? 1 : 8 * tasks;
          const auto& rw = L.row_work;
          par(chunks, [&](size_t t, unsigned) {
            // Equal shares of the non-zeros; each task walks the column tiles over its rows.
            const uint64_t lo = L.nnz * t / chunks, hi = L.nnz * (t + 1) / chunks;
            const uint32_t r0 = t == 0 ? 0 : uint32_t(std::lower_bound(rw.begin(), rw.end() - 1, lo) - rw.begin());
            const uint32_t r1 = t + 1 == chunks ? L.rows : uint32_t(std::lower_bound(rw.begin(), rw.end() - 1, hi) - rw.begin());
            if (r0 >= r1) return;
            for (uint32_t k = 0; k < L.row_tiles; ++k) {
              const QConvRows wr{L.rows, L.cols, L.code_bits, L.conv_rowptr.data() + size_t(k) * (L.rows + 1),
                                 L.conv_entries.data(), L.codebook.data()};
              spmm_rows_->spmm_rows(wr, xt, np, yt, np, np, r0, r1);
            }
          });
        } else {
          // Batch slices of at most 16 samples: a task's output block (rows x 16 floats) stays in
          // L2 while the entries stream by once per slice.
          const size_t slice = std::min<size_t>(16, std::max<size_t>(8, (n / tasks + 7) / 8 * 8));
          const size_t nt = (n + slice - 1) / slice;
          par(nt, [&](size_t t, unsigned) {
            const size_t a = t * slice, b = std::min(n, a + slice);
            spmm_->spmm(w, xt + a, np, yt + a, np, b - a);
          });
        }
        const size_t out_blocks = (L.rows + 63) / 64;
        const size_t oparts = tasks == 1 ? 1 : std::min<size_t>(out_blocks, 4 * tasks);
        par(oparts, [&](size_t t, unsigned) {
          const size_t r0 = std::min<size_t>(L.rows, out_blocks * t / oparts * 64);
          const size_t r1 = std::min<size_t>(L.rows, out_blocks * (t + 1) / oparts * 64);
          tr(yt + r0 * np, np, nxt + r0, out_sz, r1 - r0, n);
        });
      }
      break;
    }
    case OpType::Conv2d: {
      const ExecLayer& L = layers_[op.layer];
      const ConvGeom g = conv_geom(op, L);
      if (L.storage == kStorageSparse && L.kh == 1 && L.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0 &&
          g.groups == 1) {
        // A pointwise conv is the sparse product W[out, in] x X[in, H*W], and [in, H*W] already is
        // the batched kernel's [cols, lanes] layout (XNNPACK's sparse-inference case): the pixels
        // are the lanes, no padded copy, no transpose. Tasks: (sample, chunk of rows with equal
        // shares of the non-zeros).
        const QConvRows w = L.conv_view();
        const size_t hw = size_t(g.out_h) * g.out_w;
        const unsigned chunks = tasks == 1 ? 1 : 4 * tasks;
        const uint32_t* rp = L.conv_rowptr.data();
        par(n * chunks, [&](size_t t, unsigned) {
          const size_t s0 = t / chunks, k = t % chunks;
          const auto row_at = [&](uint64_t e) { return uint32_t(std::lower_bound(rp, rp + L.rows, uint32_t(e)) - rp); };
          const uint32_t r0 = k == 0 ? 0 : row_at(L.nnz * k / chunks);
          const uint32_t r1 = k + 1 == chunks ? L.rows : row_at(L.nnz * (k + 1) / chunks);
          float* y = nxt + s0 * out_sz;
          for (uint32_t r = r0; r < r1; ++r) std::fill(y + r * hw, y + (r + 1) * hw, L.bias[r]);
          if (r0 < r1) spmm_rows_->spmm_rows(w, cur + s0 * in_sz, hw, y, hw, hw, r0, r1);
        });
        break;
      }
      const size_t pad_sz = padded_size(g);
      const int64_t* tapoff = tapoff_[&op - ops_.data()].data();
      float* xpad = ws.xpad.data();
      par(n, [&](size_t s, unsigned) { pad_input(g, cur + s * in_sz, xpad + s * pad_sz); });
      // Tasks are rectangles of output channels x 4-row bands (disjoint writes): bands first, so
      // a task's input window stays in cache for all its channels; channel chunks only where
      // there are fewer than 8 bands per thread.
      const bool split = tasks > 1;
      const uint32_t bands = split ? (g.out_h + kConvRowBlock - 1) / kConvRowBlock : 1;
      const uint32_t band_rows = split ? kConvRowBlock : g.out_h;
      const uint32_t oc_parts = split ? std::min<uint32_t>(L.rows, (8 * T + bands - 1) / bands) : 1;
      const uint32_t chunk = (L.rows + oc_parts - 1) / oc_parts, nchunk = (L.rows + chunk - 1) / chunk;
      const QConvRows w = L.storage == kStorageSparse ? L.conv_view() : QConvRows{};
      par(n * nchunk * bands, [&](size_t t, unsigned) {
        const size_t s = t / (nchunk * bands);
        const uint32_t oc0 = uint32_t(t / bands % nchunk) * chunk, oc1 = std::min(L.rows, oc0 + chunk);
        const uint32_t oy0 = uint32_t(t % bands) * band_rows, oy1 = std::min(g.out_h, oy0 + band_rows);
        if (L.storage == kStorageSparse)
          conv_->conv(w, g, tapoff, L.bias.data(), cur + s * in_sz, xpad + s * pad_sz, nxt + s * out_sz, oc0, oc1,
                      oy0, oy1);
        else
          conv_f32(L.weight.data(), L.cols, g, tapoff, L.bias.data(), xpad + s * pad_sz, nxt + s * out_sz, oc0, oc1,
                   oy0, oy1);
      });
      break;
    }
    case OpType::Relu: case OpType::Clip: case OpType::Sigmoid: case OpType::HardSigmoid: case OpType::HardSwish:
    case OpType::Silu: case OpType::Tanh: case OpType::Gelu: {
      const Unary f = op.type == OpType::Relu ? Unary::Relu : op.type == OpType::Clip ? Unary::Clip
                      : op.type == OpType::Sigmoid ? Unary::Sigmoid : op.type == OpType::HardSigmoid ? Unary::HardSigmoid
                      : op.type == OpType::HardSwish ? Unary::HardSwish : op.type == OpType::Silu ? Unary::Silu
                      : op.type == OpType::Tanh ? Unary::Tanh : op.p[0] ? Unary::GeluTanh : Unary::GeluErf;
      const size_t total = n * in_sz;
      if (tasks == 1) {
        unary_f32(f, cur, nxt, total, op.f[0], op.f[1]);
      } else {
        const size_t parts = 4 * size_t(tasks), step = (total + parts - 1) / parts;
        par(parts, [&](size_t t, unsigned) {
          const size_t a = std::min(total, t * step), b = std::min(total, a + step);
          unary_f32(f, cur + a, nxt + a, b - a, op.f[0], op.f[1]);
        });
      }
      break;
    }
    case OpType::Add: case OpType::Mul: {
      const Shape& sa = op.in_shapes[0];
      const Shape& sb = op.in_shapes[1];
      const bool a_small = sa.numel() < out_sz, b_small = sb.numel() < out_sz;
      const size_t c = op.out.ndim == 3 ? op.out.d[0] : 1, hw = out_sz / c;
      const size_t na = sa.numel(), nb = sb.numel();
      const auto one = [&](size_t s0, unsigned) {
        binary_f32(op.type == OpType::Mul, in[0] + s0 * na, in[1] + s0 * nb, nxt + s0 * out_sz, c, hw, a_small, b_small);
      };
      if (tasks == 1 || n == 1)
        for (size_t s0 = 0; s0 < n; ++s0) one(s0, 0);
      else
        par(n, one);
      break;
    }
    case OpType::Concat: {
      // Per sample, the inputs' channel blocks one after the other ([C_k, H, W] are contiguous).
      for (size_t s0 = 0; s0 < n; ++s0) {
        float* d = nxt + s0 * out_sz;
        for (size_t k = 0; k < op.inputs.size(); ++k) {
          const size_t m = op.in_shapes[k].numel();
          std::memcpy(d, in[k] + s0 * m, m * sizeof(float));
          d += m;
        }
      }
      break;
    }
    case OpType::GlobalAvgPool: {
      const size_t c = op.in.d[0], hw = in_sz / c;
      for (size_t s0 = 0; s0 < n; ++s0) global_avgpool_f32(cur + s0 * in_sz, nxt + s0 * out_sz, c, hw);
      break;
    }
    case OpType::Pad:
      for (size_t s0 = 0; s0 < n; ++s0)
        pad_f32(cur + s0 * in_sz, nxt + s0 * out_sz, op.in.d[0], op.in.d[1], op.in.d[2], op.p[0], op.p[1], op.p[2],
                op.p[3]);
      break;
    case OpType::MaxPool: case OpType::AvgPool: {
      const PoolGeom g{op.in.d[0], op.in.d[1], op.in.d[2], op.out.d[1], op.out.d[2],
                       op.p[0], op.p[1], op.p[2], op.p[3], op.p[4], op.p[5]};
      const auto pool = op.type == OpType::MaxPool ? maxpool_f32 : avgpool_f32;
      if (tasks == 1) {
        for (size_t s = 0; s < n; ++s) pool(g, cur + s * in_sz, nxt + s * out_sz, 0, g.c);
      } else {
        par(n * g.c, [&](size_t t, unsigned) {
          const size_t s = t / g.c;
          const uint32_t c = uint32_t(t % g.c);
          pool(g, cur + s * in_sz, nxt + s * out_sz, c, c + 1);
        });
      }
      break;
    }
    case OpType::Lrn: {
      const size_t hw = size_t(op.in.d[1]) * op.in.d[2];
      par(n, [&](size_t s, unsigned) {
        lrn_f32(cur + s * in_sz, nxt + s * out_sz, op.in.d[0], hw, op.p[0], op.f[1], op.f[2], op.f[3]);
      });
      break;
    }
    case OpType::Softmax: {
      const uint32_t c = op.in.d[0];
      const size_t hw = in_sz / c;
      for (size_t s = 0; s < n; ++s) softmax_f32(cur + s * in_sz, nxt + s * out_sz, c, hw);
      break;
    }
    case OpType::Flatten: case OpType::Dropout:
      if (nxt != cur) std::memcpy(nxt, cur, n * in_sz * sizeof(float));  // always aliased by plan_tensors
      break;
  }
}

}  // namespace dcrt
