// A loaded .dcz: execution layout derived from the file, ops fused and buffers planned at load,
// and the graph executor. Immutable after load; infer() is safe from many threads at once.
//
// Where things live (a new op is one file in ops/ plus one line in ops/table.cpp):
//   model.cpp   load (parse, limits, threads) and infer (prologue, the op loop)
//   layout.cpp  decoding the Huffman streams and the kernels' execution layouts
//   plan.cpp    load-time fusion (ExecOp) and the liveness plan of the activation arena
//   ops/        one file per op family: how an op splits over threads and which kernel runs it
//   kernels/    the micro-kernels: plain pointers in, outputs out (qsparse, spmv16, dense, ...)
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "format.hpp"
#include "kernels/dense_q8.hpp"
#include "kernels/qsparse.hpp"
#include "kernels/spmv16.hpp"
#include "registry.hpp"
#include "threadpool.hpp"

namespace dcrt {

// Column-tile width of a sparse linear layer's batched rows layout (model.cpp).
uint32_t row_tile_cols(uint32_t rows, uint32_t cols, uint64_t nnz);

struct ExecLayer {
  std::string name;
  uint32_t storage, kind, rows, cols, kh, kw;
  uint32_t code_bits = 0, index_bits = 0;
  uint64_t nnz = 0, n_entries = 0;
  std::vector<float> bias;
  std::vector<float> weight;        // plain fp32 [rows, cols]
  std::vector<float> codebook;      // sparse: [1 << code_bits]
  std::vector<uint32_t> colptr;     // sparse: [cols + 1]
  std::vector<uint16_t> entries;    // sparse: rel16 (gap << code_bits | code)
  // Batch 1 (spmv16.hpp), built at load: the row form for dense inputs, the column form (zero
  // inputs skipped) for inputs sparser than cols16_density.
  Tiles16 rows16, cols16;
  float cols16_density = 0.f;
  // Dense codebook (dense_q8.hpp), built at load where the cost model says walking every code
  // beats the row form: dense8 holds the codes, dense8_cols_density the input density below
  // which the column form still wins, dense8_why what the model measured.
  std::vector<uint8_t> dense8;
  float dense8_cols_density = 0.f;
  std::string dense8_why;
  // The precision the dense codebook runs in (kPrecision*: the model's mode where this layer
  // can, else fp32) and that mode's tables (dense_q8.hpp).
  int dense8_prec = 0;
  std::vector<int8_t> dense8_qcb;
  float dense8_qscale = 0.f;
  std::vector<int32_t> dense8_rowsum;
  std::vector<uint16_t> dense8_bcb;
  std::vector<uint8_t> dense8_packed;  // int8 at <= 7 bits: the codes packed (the bytes are then freed)
  bool has_dense8() const { return !dense8.empty() || !dense8_packed.empty(); }
  QDense8 dense8_view() const {
    QDense8 w{rows, cols, code_bits, dense8_ldc(cols), dense8.data(), codebook.data()};
    w.qcodebook = dense8_qcb.data();
    w.qscale = dense8_qscale;
    w.qrowsum = dense8_rowsum.data();
    w.bcodebook = dense8_bcb.data();
    if (!dense8_packed.empty()) {
      w.codes = nullptr;
      w.packed = dense8_packed.data();
      w.ldp = dense8_ldp(cols, code_bits);
    }
    return w;
  }
  // Rows layout (QConvRows): conv layers build it at load (one tile); sparse linear layers on
  // their first batched infer (rows_once), in column tiles of row_tile_cols() so that a tile's
  // input block stays in L2: conv_rowptr holds `row_tiles` row-pointer arrays of rows + 1
  // (absolute into conv_entries), row_work the non-zeros per row summed over tiles.
  mutable std::vector<uint32_t> conv_rowptr, conv_entries, row_work;
  mutable uint32_t row_tiles = 1, row_tile_cols = 0;
  std::unique_ptr<std::once_flag> rows_once = std::make_unique<std::once_flag>();
  // Sparse depthwise convs of small maps (ops/conv.cpp, conv_dw_blocks): the weights decoded to
  // [channels][taps] fp32 at load, zeros where pruned.
  std::vector<float> dw_dense;
  // Convs on a one-pixel output map (groups 1): batch 1 is the row form (rows16) over the
  // columns whose tap lands inside the input; pixel_in the input offset each of those columns
  // reads (empty: the identity, a pointwise conv), pixel_cols their indices (until built).
  bool pixel_form = false;
  std::vector<uint32_t> pixel_in, pixel_cols;
  // Convs of small output maps (2-63 pixels, groups 1, any kernel size) where the dense
  // product is the cheaper one (ops/conv.cpp, kernels/conv_small.hpp): the weights
  // as fp32 [taps][in_c][out_c], zeros where pruned (ExecOp::small_off: what each tap reads).
  std::vector<float> small_w;
  QSparseMatrix view() const {
    return QSparseMatrix{rows, cols, code_bits, colptr.data(), entries.data(), codebook.data()};
  }
  QConvRows conv_view() const {
    return QConvRows{rows, cols, code_bits, conv_rowptr.data(), conv_entries.data(), codebook.data()};
  }
};

struct LoadStats {
  // parse: header, tables, checks; decode: the Huffman streams; layout: everything else
  // (execution layouts, their validation, the buffer plan).
  double parse_s = 0, decode_s = 0, layout_s = 0, total_s = 0;
  uint64_t symbols_decoded = 0;
  std::vector<std::pair<const KernelInfo*, uint64_t>> huffman_symbols;  // symbols per decoder that ran
};

// What a caller allows a file to make the runtime do (checked at load; a server's cap on an
// uploaded model). Defaults: the format's own bounds (docs/format.md §3.3).
struct LoadLimits {
  uint64_t max_activation = kMaxActivation;  // elements per sample of any planned buffer
  uint64_t max_work = UINT64_MAX;             // multiply-adds (and element visits) per sample
};
constexpr unsigned kMaxThreads = 256;
// Precision modes (load(precision=...)): where a product runs in lower precision. Today the
// dense codebook at batch 1 (int8 on VNNI, bf16 on AVX512-BF16); everything else stays fp32.
enum Precision : int { kPrecisionFp32 = 0, kPrecisionBf16 = 1, kPrecisionInt8 = 2 };

// The per-sample buffer plan, fixed at load: infer(n) allocates n times these and nothing else.
struct BufferPlan {
  uint64_t activation = 0;  // elements: the largest tensor (input or op output)
  uint64_t arena = 0;       // elements: the tensors' arena, planned by liveness (its peak)
  uint64_t padded = 0;      // elements: the largest padded conv input
  uint64_t scratch = 0;     // elements, not per sample: the workers' padded planes (depthwise convs)
  uint64_t lin_cols = 0, lin_rows = 0;  // batched linear layers' transposed blocks
  uint64_t work = 0;        // multiply-adds and element visits per sample, all ops
  uint64_t bytes_per_sample() const { return 4 * (arena + padded + lin_cols + lin_rows); }  // + 4 * scratch once
};

struct Workspace;

// A 1x1 stride-1 unpadded sparse conv runs as the sparse product W x X[C, H*W] (ops/conv.cpp).
inline bool conv_is_pointwise(uint32_t storage, uint32_t kh, uint32_t kw, const ConvGeom& g) {
  return storage == kStorageSparse && kh == 1 && kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0 &&
         g.pb == 0 && g.pr == 0 && g.groups == 1;
}

// One op as the executor runs it: what load-time fusion (plan.cpp) made of the file's op.
// A zero pad read only by a conv is folded into the conv's padded-input builder; an add (of a
// same-shaped tensor) and a relu/clip that read only a conv's or linear's output run in its
// epilogue (kernels/qsparse.hpp ConvEpilogue). Fused ops do not run; their outputs alias the
// op they were fused into.
struct ExecOp {
  int32_t fused_into = -1;          // >= 0: this op runs inside that op
  std::vector<uint32_t> reads;      // tensor ids read when it runs (a folded pad: the pad's input)
  std::vector<uint32_t> absorbed;   // the ops fused into this one
  int32_t residual = -1;            // epilogue: tensor id added to the output, before the clamp
  bool clamp = false;               // epilogue: y = min(max(y, lo), hi)
  float lo = 0.f, hi = 0.f;
  ConvGeom geom{};                  // conv2d: its geometry, any folded pad included
  std::vector<int64_t> tapoff;      // conv2d: conv_tap_offsets(geom)
  // conv2d on a small map (conv_small_dense_pays): per (tap, output pixel) the input
  // pixel it reads, -1 in padding (the layer's small_w holds the weights). Empty otherwise.
  std::vector<int32_t> small_off;
  uint64_t padded = 0;              // conv2d: padded_size(geom) per sample (0: pointwise, depthwise)
  uint64_t plane = 0;               // depthwise conv2d: one padded channel plane + kConvSlack
};

class Model {
 public:
  // Parses, validates and decodes. Throws FormatError on any defect of the bytes.
  // threads: 1..kMaxThreads (0: the hardware's count, capped). Throws FormatError on any
  // defect of the bytes, LimitError where the valid network exceeds `limits`, and
  // std::system_error (after stopping the threads it started) where a worker cannot start.
  // fuse = false runs every op of the file on its own (the fused executor's reference twin).
  // kernels: (op, registered kernel name) pairs that replace the runtime's pick for those ops
  // (benchmarks and tests run each variant through the whole executor); an unknown name, a
  // kernel of another op or one this CPU cannot run throws InputError.
  Model(const uint8_t* data, size_t size, unsigned threads, const LoadLimits& limits = LoadLimits(),
        bool fuse = true, const std::vector<std::pair<std::string, std::string>>& kernels = {},
        int dense_codebook = 0, int precision = kPrecisionFp32);  // precision: a Precision (the dense codebook at batch 1)
  ~Model();

  // x: [n, input] float32, y: [n, output]. Throws InputError on non-finite input.
  void infer(const float* x, size_t n, float* y) const { infer(x, n, y, nullptr); }
  // The same, adding each op's wall time (seconds) to op_seconds[i] (ops().size() entries).
  void infer(const float* x, size_t n, float* y, double* op_seconds) const;

  const Shape& input_shape() const { return input_; }
  const Shape& output_shape() const { return ops_.empty() ? input_ : ops_.back().out; }
  const std::string& meta_json() const { return meta_json_; }
  const std::vector<ExecLayer>& layers() const { return layers_; }
  const std::vector<OpDesc>& ops() const { return ops_; }
  const std::vector<ExecOp>& exec_ops() const { return exec_; }
  const LoadStats& load_stats() const { return stats_; }
  const BufferPlan& plan() const { return plan_; }
  const std::vector<uint64_t>& tensor_offsets() const { return tensor_off_; }
  unsigned threads() const { return pool_->size(); }
  const ThreadPool& pool() const { return *pool_; }
  // Per op and batch size: the threads it is split over (1 below a work threshold), and whether
  // it wakes sleeping workers (only where it takes long enough to pay for the wake-up: its
  // time alone per sample, as measured on the calls so far, else its work).
  unsigned op_threads(const OpDesc& op, size_t n) const;
  bool op_wakes(size_t i, size_t n) const;
  float op_solo_us(size_t i) const { return op_us_[i].load(std::memory_order_relaxed); }  // -1: not yet run
  const KernelInfo& spmv_rows() const { return *spmv_rows_; }
  const KernelInfo& spmv_cols() const { return *spmv_cols_; }
  const KernelInfo& dense_q8() const { return *dense_q8_; }
  const KernelInfo& conv_small() const { return *conv_small_; }
  const KernelInfo& dense_i8() const { return *dense_i8_; }
  const KernelInfo& dense_bf16() const { return *dense_bf16_; }
  int precision() const { return precision_; }
  const KernelInfo& spmm() const { return *spmm_; }
  const KernelInfo& spmm_rows() const { return *spmm_rows_; }
  const KernelInfo& conv() const { return *conv_; }
  const KernelInfo& conv_dw() const { return *conv_dw_; }
  const KernelInfo& dw_blocks() const { return *dw_blocks_; }
  const KernelInfo& transpose() const { return *transpose_; }
  ThreadPool& workers() const { return *pool_; }
  const KernelInfo& huff() const { return *huff_; }

 private:
  void decode_layers(ParsedFile& f);
  void fuse_ops(const ParsedFile& f, bool fuse);
  void plan_tensors();
  void run_op(size_t i, Workspace& ws, size_t n, float* arena) const;
  Workspace* acquire(size_t n) const;
  void release(Workspace* ws) const;

  Shape input_;
  std::vector<float> mean_, inv_std_;
  std::vector<OpDesc> ops_;
  std::vector<ExecOp> exec_;  // per op, fused at load
  // Per op: its time per sample on one thread in microseconds, a running average over the calls
  // (a split run counts as its time x threads x 0.8); -1 until it first runs. Relaxed atomics:
  // calls on several threads may update it at once, any recent value will do.
  std::unique_ptr<std::atomic<float>[]> op_us_;
  std::vector<ExecLayer> layers_;
  std::string meta_json_;
  LoadStats stats_;
  BufferPlan plan_;
  // Per tensor id (0 the input, j + 1 op j's output): per-sample element offset in the arena.
  // Tensors that alias (flatten, dropout, an elementwise op run in place) share an offset.
  std::vector<uint64_t> tensor_off_;
  std::unique_ptr<ThreadPool> pool_;
  int dense8_mode_ = 0;  // dense codebook: 0 the cost model, 1 always, 2 never
  int precision_ = kPrecisionFp32;
  const KernelInfo *spmv_rows_, *spmv_cols_, *dense_q8_, *dense_i8_, *dense_bf16_, *spmm_, *spmm_rows_, *conv_, *conv_dw_, *dw_blocks_, *conv_small_, *huff_, *transpose_;
  bool huff_fixed_ = false;  // kernels={"huffman": ...}: that decoder for every stream
  mutable std::mutex ws_mutex_;
  mutable std::vector<std::unique_ptr<Workspace>> ws_free_;
};

}  // namespace dcrt
