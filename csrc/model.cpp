// Load (parse, limits, threads) and inference (prologue, the op loop); decoding and layouts are
// in layout.cpp, fusion and the buffer plan in plan.cpp, the ops in ops/.
#include "model.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "ops/ops.hpp"

namespace dcrt {

namespace {
using clk = std::chrono::steady_clock;
double secs(clk::time_point a, clk::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// Work below this many multiply-adds runs on one thread: handing it over costs more.
constexpr uint64_t kParallelMin = 1 << 13;
// Until an op has run, only ops of this much work (OpDesc::work, all samples) wake a sleeping
// worker: measured with bench/gap_latency.py on Zen 3, waking one for LeNet-300-100's ip1
// (~19k entries) made calls after a 1 ms gap 15-20% slower than threads=1, while LeNet-5's
// conv2 (~200k) gained.
constexpr uint64_t kWakeMin = 1 << 16;
// Once it has run, its measured time decides: a woken vCPU starts 20-50 us after the futex
// wake on the KVM guests here, so an op shorter than this alone is faster on the caller (on
// Zen 5 LeNet-5's conv2 takes ~15 us, and waking for it cost 13-28% after gaps; same CPU,
// bench/gap_latency.py).
constexpr float kWakeWorthUs = 60.f;
}  // namespace

namespace {
unsigned checked_threads(unsigned threads) {
  if (threads > kMaxThreads)
    throw InputError("threads must be in 1.." + std::to_string(kMaxThreads) + ", got " + std::to_string(threads));
  if (threads == 0) threads = std::min(kMaxThreads, std::max(1u, std::thread::hardware_concurrency()));
  return threads;
}
}  // namespace

Model::Model(const uint8_t* data, size_t size, unsigned threads, const LoadLimits& limits, bool fuse,
             const std::vector<std::pair<std::string, std::string>>& kernels, int dense_codebook, int precision)
    : dense8_mode_(dense_codebook), precision_(precision), spmv_rows_(&picked_kernel("spmv_rows")),
      spmv_cols_(&picked_kernel("spmv_cols")), dense_q8_(&best_kernel("dense_q8")), dense_i8_(&best_kernel("dense_i8")),
      dense_bf16_(&best_kernel("dense_bf16")), spmm_(&best_kernel("spmm")),
      spmm_rows_(&best_kernel("spmm_rows")), conv_(&best_kernel("conv")), conv_dw_(&best_kernel("conv_dw")),
      dw_blocks_(&best_kernel("conv_dw_blocks")), conv_small_(&best_kernel("conv_small")),
      huff_(&picked_kernel("huffman")), transpose_(&best_kernel("transpose")) {
  for (const auto& [op, name] : kernels) {
    const std::pair<const char*, const KernelInfo**> slots[] = {
        {"spmv_rows", &spmv_rows_}, {"spmv_cols", &spmv_cols_}, {"dense_q8", &dense_q8_},
        {"dense_i8", &dense_i8_},   {"dense_bf16", &dense_bf16_},
        {"spmm", &spmm_},           {"spmm_rows", &spmm_rows_},
        {"conv", &conv_},           {"conv_dw", &conv_dw_},     {"conv_dw_blocks", &dw_blocks_}, {"conv_small", &conv_small_},     {"huffman", &huff_}, {"transpose", &transpose_}};
    const KernelInfo** slot = nullptr;
    std::string known;
    for (const auto& [o, p] : slots) {
      known += std::string(known.empty() ? "" : ", ") + o;
      if (op == o) slot = p;
    }
    if (!slot) throw InputError("kernels: unknown op '" + op + "' (one of " + known + ")");
    const KernelInfo* k = find_kernel(name);
    if (!k) throw InputError("kernels: no kernel named '" + name + "' is registered (see dcrt.kernels())");
    if (op != k->op) throw InputError("kernels: '" + name + "' is a " + k->op + " kernel, not " + op);
    if (k->supported && !k->supported()) throw InputError("kernels: '" + name + "' needs " + k->isa + ", which this CPU does not have");
    *slot = k;
    if (op == "huffman") huff_fixed_ = true;
  }
  threads = checked_threads(threads);
  if (precision < kPrecisionFp32 || precision > kPrecisionInt8)
    throw InputError("precision must be fp32 (0), bf16 (1) or int8 (2), got " + std::to_string(precision));
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
  fuse_ops(f, fuse);
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
      const uint64_t padded = std::max(exec_[i].padded, exec_[i].plane);  // a folded pad included
      plan_.padded = std::max(plan_.padded, exec_[i].padded);
      plan_.scratch = std::max(plan_.scratch, sat_mul(exec_[i].plane, threads));
      if (padded > limits.max_activation)
        throw LimitError("op[" + std::to_string(i) + "] (conv2d)'s padded input needs " + std::to_string(padded) +
                         " elements per sample, over max_activation=" + std::to_string(limits.max_activation));
    }
  }
  if (plan_.activation > limits.max_activation)
    throw LimitError(biggest + " needs " + std::to_string(plan_.activation) +
                     " elements per sample, over max_activation=" + std::to_string(limits.max_activation));
  if (plan_.work > limits.max_work)
    throw LimitError("the network needs " + std::to_string(plan_.work) +
                     " multiply-adds per sample, over max_work=" + std::to_string(limits.max_work));
  plan_tensors();
  op_us_ = std::make_unique<std::atomic<float>[]>(ops_.size());
  for (size_t i = 0; i < ops_.size(); ++i) op_us_[i].store(-1.f);
  pool_ = std::make_unique<ThreadPool>(threads);
  decode_layers(f);
  for (size_t i = 0; i < ops_.size(); ++i)
    if (ops_[i].type == OpType::Conv2d && (exec_[i].padded || exec_[i].plane)) {
      const uint32_t cols = layers_[ops_[i].layer].cols;
      exec_[i].tapoff.resize(cols);
      conv_tap_offsets(exec_[i].geom, cols, exec_[i].tapoff.data());
    }
  const auto t3 = clk::now();
  stats_.parse_s = secs(t0, t1);
  stats_.layout_s = secs(t1, t3) - stats_.decode_s;  // decode_s: set by decode_layers
  stats_.total_s = secs(t0, t3);
}

Model::~Model() = default;

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
  for (size_t i = 0; i < ops_.size(); ++i) {
    if (exec_[i].fused_into >= 0) continue;  // ran inside another op (its time is that op's)
    if (op_seconds) {
      const auto t0 = clk::now();
      run_op(i, ws, n, arena);
      op_seconds[i] += secs(t0, clk::now());
    } else {
      run_op(i, ws, n, arena);
    }
  }
  std::memcpy(y, arena + n * tensor_off_.back(), n * output_shape().numel() * sizeof(float));
  pool_->note_activity();
}

unsigned Model::op_threads(const OpDesc& op, size_t n) const {
  return sat_mul(op.work, n) < kParallelMin ? 1 : pool_->size();
}
bool Model::op_wakes(size_t i, size_t n) const {
  const OpDesc& op = ops_[i];
  if (op_threads(op, n) == 1) return false;
  const float us = op_us_[i].load(std::memory_order_relaxed);
  return us < 0 ? sat_mul(op.work, n) >= kWakeMin : us * float(n) >= kWakeWorthUs;
}

void Model::run_op(size_t i, Workspace& ws, size_t n, float* arena) const {
  const OpDesc& op = ops_[i];
  const ExecOp& x = exec_[i];
  // The input pointers, one per read (the workspace's vector grows once, to the widest concat).
  ws.ins.resize(x.reads.size());
  const float** in = ws.ins.data();
  for (size_t k = 0; k < x.reads.size(); ++k) in[k] = arena + n * tensor_off_[x.reads[k]];
  // Sleeping workers are woken only for ops big enough to pay for the wake-up (a futex call on
  // this thread, and tens of microseconds before a woken vCPU runs); smaller ops use the workers
  // that are awake anyway (the previous op's), or run here alone.
  const bool wake = op_wakes(i, n);
  // Split only where someone will help: alone, the caller runs the op's unsplit form.
  const bool splits = op_threads(op, n) > 1;
  const unsigned tasks = splits && pool_->helpers_available(wake) ? pool_->size() : 1;
  const float* res = x.residual >= 0 ? arena + n * tensor_off_[x.residual] : nullptr;
  const OpCtx c{*this, op, x, ws, n, in, arena + n * tensor_off_[i + 1], res, tasks, wake};
  if (!splits) {  // never split, never wakes: nothing to learn
    op_function(op.type)(c);
    return;
  }
  const auto t0 = clk::now();
  op_function(op.type)(c);
  const float us = float(1e6 * secs(t0, clk::now()) / double(n)) * (tasks > 1 ? 0.8f * float(tasks) : 1.f);
  const float old = op_us_[i].load(std::memory_order_relaxed);
  op_us_[i].store(old < 0 ? us : 0.75f * old + 0.25f * us, std::memory_order_relaxed);
}

}  // namespace dcrt
