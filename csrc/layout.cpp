// Decoding the Huffman streams and building the kernels' execution layouts (rel16 columns,
// conv rows, spmv16 tiles, the batched rows tiles).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <map>
#include <numeric>
#include <mutex>
#include <string>
#include <tuple>
#include <unistd.h>

#include "huffman.hpp"
#include "model.hpp"
#include "ops/ops.hpp"
#include "relidx.hpp"

namespace dcrt {

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

// The batch-1 cost model: seconds per work unit of the row and column forms (rows16_units,
// cols16_units: groups plus segments) and per code of the dense codebook (dense_k: a dense_q8,
// dense_i8 or dense_bf16 kernel, for the model's precision), measured once per
// process (and per kernel triple and code width) on a synthetic 256 x 2048 layer at 25%
// density, one thread, every input live, best of 5 after a warm-up: about a millisecond the
// first time a model with a sparse linear layer loads, nothing after. The constants this
// replaced were fitted on Zen 3 and put the crossovers far off on AVX-512 CPUs (AlexNet fc6 at
// half-zero input took the column form at 0.78 ms where the row form takes 0.51 ms, Zen 5).
struct Batch1Costs {
  double row_unit = 0, col_unit = 0, per_code = 0, per_dense_row = 0;
};

namespace {
// A synthetic rel16 layer of rows x cols at about one row in (max_gap + 2) / 2 (gaps
// 0..max_gap; the default 6, one in four, is encodable at any code width; wider gaps need
// index_bits that hold them), codes 1..2^bits-1.
struct SyntheticLayer {
  std::vector<uint32_t> colptr;
  std::vector<uint16_t> entries;
  std::vector<float> cb, x, y;
  QSparseMatrix w;
  SyntheticLayer(uint32_t rows, uint32_t cols, uint32_t code_bits, uint32_t max_gap = 6) : colptr(cols + 1, 0) {
    uint64_t lcg = 0x9E3779B97F4A7C15ull ^ (uint64_t(rows) << 32 | cols);
    const auto next = [&lcg] { return uint32_t((lcg = lcg * 6364136223846793005ull + 1442695040888963407ull) >> 33); };
    const uint32_t cmask = (1u << code_bits) - 1;
    for (uint32_t c = 0; c < cols; ++c) {
      int64_t row = -1;
      for (;;) {
        const uint32_t gap = next() % (max_gap + 1);
        row += gap + 1;
        if (row >= rows) break;
        entries.push_back(uint16_t(gap << code_bits | (1 + next() % cmask)));
      }
      colptr[c + 1] = uint32_t(entries.size());
    }
    cb.resize(size_t(1) << code_bits);
    for (size_t i = 1; i < cb.size(); ++i) cb[i] = float(i) / float(cb.size()) - 0.5f;
    x.resize(cols);
    for (auto& v : x) v = float(1 + next() % 1000) / 1000.f;  // no zeros: every column live
    y.resize(rows);
    w = QSparseMatrix{rows, cols, code_bits, colptr.data(), entries.data(), cb.data()};
  }
};

// Best of 5 timed runs after at least a millisecond of warm-up runs (caches, and the core's
// clock, which a process that has just started may find low).
template <class Fn>
double best_time(Fn&& fn) {
  using sclk = std::chrono::steady_clock;
  const auto warm_end = sclk::now() + std::chrono::milliseconds(1);
  do fn(); while (sclk::now() < warm_end);
  double b = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = sclk::now();
    fn();
    b = std::min(b, std::chrono::duration<double>(sclk::now() - t0).count());
  }
  return b;
}
}  // namespace

namespace {
// The variants picked_kernel times: every supported non-reference one, the generic one only
// where nothing else runs.
std::vector<const KernelInfo*> candidates(const char* op) {
  std::vector<const KernelInfo*> all, fast;
  for (const auto& k : kernel_registry())
    if (!std::strcmp(k.op, op) && !k.reference && (!k.supported || k.supported())) {
      all.push_back(&k);
      if (std::strcmp(k.isa, "generic")) fast.push_back(&k);
    }
  return fast.empty() ? all : fast;
}

struct Picks {
  std::vector<KernelTiming> rows, cols;
  const KernelInfo *rows_k = nullptr, *cols_k = nullptr;
};

// Times every candidate of spmv_rows and spmv_cols on a synthetic 512 x 4096 layer at about
// 5% density and 5-bit codes (the paper's FC layers: 4-9%, 5 bits), one thread; the column
// form with every fourth input live. Rounds alternate between the variants (a guest's clock
// drifts) and each keeps its best of 7: ~3 ms, once per process.
const Picks& batch1_picks() {
  static const Picks p = [] {
    Picks r;
    SyntheticLayer s(512, 4096, 5, 38);
    Tiles16 rt, ct;
    build_rows16(s.w, 0, 1, rt);
    build_cols16(s.w, 0, 1, ct);
    std::vector<uint32_t> live;
    for (uint32_t c = 0; c < s.w.cols; c += 4) live.push_back(c);
    const QTiles16 rv = rt.view(s.cb.data()), cv = ct.view(s.cb.data());
    const double nnz = double(s.entries.size());
    const auto run = [&](const char* op, std::vector<KernelTiming>& out) -> const KernelInfo* {
      const auto ks = candidates(op);
      if (ks.empty()) throw std::logic_error(std::string("no kernel registered for ") + op);
      if (ks.size() == 1) return ks[0];
      const bool cols = !std::strcmp(op, "spmv_cols");
      std::vector<double> best(ks.size(), 1e30);
      using sclk = std::chrono::steady_clock;
      for (int round = 0; round < 8; ++round)
        for (size_t i = 0; i < ks.size(); ++i) {
          const auto t0 = sclk::now();
          if (cols) ks[i]->spmv_cols(cv, s.x.data(), live.data(), uint32_t(live.size()), s.y.data(), 0, ct.tiles);
          else ks[i]->spmv_rows(rv, s.x.data(), s.y.data(), 0, s.w.rows);
          const double t = std::chrono::duration<double>(sclk::now() - t0).count();
          if (round > 0) best[i] = std::min(best[i], t);  // round 0 warms caches and clock
        }
      size_t b = 0;
      for (size_t i = 0; i < ks.size(); ++i) {
        out.push_back(KernelTiming{ks[i], 1e9 * best[i] / (cols ? nnz / 4 : nnz)});
        if (best[i] < best[b]) b = i;
      }
      return ks[b];
    };
    r.rows_k = run("spmv_rows", r.rows);
    r.cols_k = run("spmv_cols", r.cols);
    return r;
  }();
  return p;
}

// Times every candidate Huffman decoder on two synthetic streams like a layer's: complete codes
// whose symbols are drawn with probability 2^-length, so the mean code length is the entropy,
// limited to 11 bits as the compressor's (the 16-lane decoder's steps per refill are 57 / the
// longest code) — 35 symbols of lengths 2-11 (3.57 bits per symbol: FC codes and gaps) and 256
// of lengths 6-11 (7.25 bits: 8-bit conv codes); 48 chunks of 4096 symbols each (one job of the 16-lane
// decoder's 48 in flight; the format's chunk size, whose 4 KiB-apart outputs matter to it), one
// thread, rounds alternating, best of 3: ~4 ms once per process.
// The AVX-512 decoder takes one symbol per gathered element where the scalar one takes up to 3
// per table load, so which wins depends on the CPU's gathers and on the stream's entropy (AMD
// Zen 4, one core: 0.64 against 0.35 ns per symbol at 3.6 bits, 0.64 against 0.75 at 7.25;
// VGG-16's 8-bit conv codes, 6.3 bits: 1.44 against 1.53 G symbols/s).
struct HuffPick {
  std::vector<KernelTiming> timings;
  const KernelInfo* k = nullptr;
  double lo_bits = 0, hi_bits = 0;  // the synthetic streams' bits per symbol
};

struct SyntheticStream {
  HuffTable t;
  std::vector<uint8_t> data;
  std::vector<uint32_t> offsets{0};
  double bits = 0;  // expected bits per symbol
  static constexpr uint64_t kChunk = 4096, kChunks = 48, n = kChunk * kChunks;
  // `spec`: (length, count) pairs of a complete code; the alphabet's other symbols unused.
  SyntheticStream(std::initializer_list<std::pair<int, int>> spec, uint32_t alpha, uint64_t seed) {
    std::vector<uint8_t> lengths;
    for (const auto& [len, count] : spec) {
      lengths.insert(lengths.end(), size_t(count), uint8_t(len));
      bits += count * len * std::ldexp(1.0, -len);
    }
    if (lengths.size() > alpha) throw std::logic_error("synthetic huffman code: alphabet too small");
    lengths.resize(alpha, 0);
    build_huff_table(lengths.data(), alpha, n, t, "synthetic huffman stream");
    // Random bits are a random symbol sequence of that distribution: each chunk keeps the bits
    // of its first kChunk codes, zero-padded to a byte.
    uint64_t rng = seed;
    std::vector<uint8_t> bits(kChunk * 2 + 16);
    for (uint64_t c = 0; c < kChunks; ++c) {
      for (auto& b : bits) {
        rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
        b = uint8_t(rng >> 24);
      }
      uint64_t pos = 0;
      for (uint64_t i = 0; i < kChunk; ++i) {  // the 17+ bits from pos hold the code (max_len <= 15)
        const uint8_t* q = &bits[pos >> 3];
        const uint32_t v = (uint32_t(q[0]) << 16 | uint32_t(q[1]) << 8 | q[2]) << (pos & 7);
        pos += t.peek[(v >> (24 - t.max_len)) & ((1u << t.max_len) - 1)] & 15;
      }
      const uint64_t bytes = (pos + 7) / 8;
      if (pos & 7) bits[bytes - 1] &= uint8_t(0xff << (8 - (pos & 7)));
      data.insert(data.end(), bits.begin(), bits.begin() + ptrdiff_t(bytes));
      offsets.push_back(uint32_t(data.size()));
    }
  }
};

const HuffPick& huffman_pick() {
  static const HuffPick p = [] {
    HuffPick r;
    const auto ks = candidates("huffman");
    if (ks.empty()) throw std::logic_error("no kernel registered for huffman");
    if (ks.size() == 1) { r.k = ks[0]; return r; }
    const SyntheticStream lo({{2, 2}, {4, 4}, {5, 2}, {6, 8}, {8, 15}, {9, 1}, {10, 1}, {11, 2}}, 64,
                             0x9e3779b97f4a7c15ull);
    const SyntheticStream hi({{6, 32}, {8, 96}, {9, 1}, {10, 125}, {11, 2}}, 256, 0xd1b54a32d192ed03ull);
    r.lo_bits = lo.bits;
    r.hi_bits = hi.bits;
    std::vector<uint8_t> out(SyntheticStream::n);
    using sclk = std::chrono::steady_clock;
    const auto time = [&](const SyntheticStream& st) {
      const HuffStream hs{st.data.data(), st.offsets.data(), SyntheticStream::kChunk, SyntheticStream::n};
      std::vector<double> best(ks.size(), 1e30);
      for (int round = 0; round < 4; ++round)
        for (size_t i = 0; i < ks.size(); ++i) {
          const auto t0 = sclk::now();
          const int64_t bad = ks[i]->huff(st.t, hs, 0, SyntheticStream::kChunks, out.data());
          const double dt = std::chrono::duration<double>(sclk::now() - t0).count();
          if (bad >= 0) throw std::logic_error(std::string(ks[i]->name) + " rejected the synthetic stream");
          if (round > 0) best[i] = std::min(best[i], dt);
        }
      for (auto& b : best) b *= 1e9 / double(SyntheticStream::n);
      return best;
    };
    const std::vector<double> tl = time(lo), th = time(hi);
    size_t b = 0;
    for (size_t i = 0; i < ks.size(); ++i) {
      r.timings.push_back(KernelTiming{ks[i], tl[i], th[i]});
      if (tl[i] < tl[b]) b = i;
    }
    r.k = ks[b];
    return r;
  }();
  return p;
}
}  // namespace

std::pair<double, double> huffman_timed_bits() { return {huffman_pick().lo_bits, huffman_pick().hi_bits}; }

const KernelInfo& huffman_for_stream(double bits_per_symbol) {
  const HuffPick& p = huffman_pick();
  if (p.timings.empty()) return *p.k;
  // Another decoder than the pick (the faster at low entropy) only where it is predicted 10%
  // faster: the line through two synthetic points is that far off on real streams (Zen 4, the
  // 16-lane decoder on VGG-16's 6.3-bit conv codes: 0.69 ns per symbol against 0.64 predicted).
  const double f = (bits_per_symbol - p.lo_bits) / (p.hi_bits - p.lo_bits);
  const auto at = [&](const KernelTiming& t) { return t.ns_per_nz + f * (t.ns_per_symbol_hi - t.ns_per_nz); };
  const KernelInfo* best = p.k;
  double best_t = 0;
  for (const auto& t : p.timings)
    if (t.kernel == p.k) best_t = 0.9 * at(t);
  for (const auto& t : p.timings)
    if (at(t) < best_t) { best = t.kernel; best_t = at(t); }
  return *best;
}

const KernelInfo& picked_kernel(const char* op) {
  if (!std::strcmp(op, "spmv_rows")) return *batch1_picks().rows_k;
  if (!std::strcmp(op, "spmv_cols")) return *batch1_picks().cols_k;
  if (!std::strcmp(op, "huffman")) return *huffman_pick().k;
  return best_kernel(op);
}

std::vector<KernelTiming> kernel_timings(const char* op) {
  if (!std::strcmp(op, "spmv_rows")) return batch1_picks().rows;
  if (!std::strcmp(op, "spmv_cols")) return batch1_picks().cols;
  if (!std::strcmp(op, "huffman")) return huffman_pick().timings;
  return {};
}

Batch1Costs batch1_costs(const KernelInfo& rows_k, const KernelInfo& cols_k, const KernelInfo& dense_k,
                         uint32_t code_bits) {
  // Two caches: the sparse forms' units per (row kernel, column kernel, code width), the dense
  // codebook's per (dense kernel, code width), so that models of one process that differ only
  // in precision (or dense kernel) get the same crossovers between the sparse forms.
  static std::mutex mu;
  static std::map<std::tuple<const KernelInfo*, const KernelInfo*, uint32_t>, std::pair<double, double>> sparse_cache;
  static std::map<std::pair<const KernelInfo*, uint32_t>, std::pair<double, double>> dense_cache;
  std::lock_guard<std::mutex> lock(mu);
  Batch1Costs c;
  const auto skey = std::make_tuple(&rows_k, &cols_k, code_bits);
  if (const auto it = sparse_cache.find(skey); it != sparse_cache.end()) {
    std::tie(c.row_unit, c.col_unit) = it->second;
  } else {
    SyntheticLayer s(256, 2048, code_bits);
    Tiles16 rt, ct;
    build_rows16(s.w, 0, 1, rt);
    build_cols16(s.w, 0, 1, ct);
    std::vector<uint32_t> live(s.w.cols);
    const uint32_t nlive = live_columns(s.x.data(), s.w.cols, live.data());
    const QTiles16 rv = rt.view(s.cb.data()), cv = ct.view(s.cb.data());
    c.row_unit = best_time([&] { rows_k.spmv_rows(rv, s.x.data(), s.y.data(), 0, s.w.rows); }) / rows16_units(rt);
    c.col_unit = best_time([&] { cols_k.spmv_cols(cv, s.x.data(), live.data(), nlive, s.y.data(), 0, ct.tiles); }) /
                 cols16_units(ct);
    sparse_cache[skey] = {c.row_unit, c.col_unit};
  }
  const auto dkey = std::make_pair(&dense_k, code_bits);
  if (const auto it = dense_cache.find(dkey); it != dense_cache.end()) {
    std::tie(c.per_code, c.per_dense_row) = it->second;
    return c;
  }
  // The dense codebook on long and short rows (256 x 2048, 1024 x 256): a cost per code and a
  // cost per row (the row's reduction and tail), so that narrow layers are not mispredicted.
  // In a precision mode the input's rounding is left out: once per call, O(cols), it would be
  // charged per code here (on the synthetic 2048 columns it was a fifth of the int8 time, and
  // VGG-16 fc7 kept the slower row form).
  const auto time_dense = [&](uint32_t rows, uint32_t cols) {
    SyntheticLayer s(rows, cols, code_bits);
    std::vector<uint8_t> codes;
    build_dense8(s.w, codes);
    QDense8 d{s.w.rows, s.w.cols, code_bits, dense8_ldc(s.w.cols), codes.data(), s.cb.data()};
    std::vector<int8_t> qcb;
    std::vector<int32_t> rowsum;
    std::vector<uint16_t> bcb, xb(d.ldc);
    std::vector<uint8_t> xq(d.ldc);
    std::vector<uint8_t> packed;
    if (dense_k.dense_i8) {
      build_dense8_i8(d, qcb, d.qscale, rowsum);
      d.qcodebook = qcb.data();
      d.qrowsum = rowsum.data();
      if (dense8_packs(code_bits)) {  // as the runtime will run it
        pack_dense8(d, packed);
        d.packed = packed.data();
        d.ldp = dense8_ldp(d.cols, code_bits);
      }
      const QInputU8 q = quantize_input_u8(s.x.data(), d.cols, d.ldc, xq.data());
      return best_time([&] { dense_k.dense_i8(d, q, s.y.data(), 0, d.rows); });
    }
    if (dense_k.dense_bf16) {
      build_dense8_bf16(s.cb.data(), code_bits, bcb);
      d.bcodebook = bcb.data();
      round_input_bf16(s.x.data(), d.cols, d.ldc, xb.data());
      return best_time([&] { dense_k.dense_bf16(d, xb.data(), s.y.data(), 0, d.rows); });
    }
    return best_time([&] { dense_k.dense_q8(d, s.x.data(), s.y.data(), 0, s.w.rows); });
  };
  const double t_long = time_dense(256, 2048), t_short = time_dense(1024, 256);
  // t = rows * (per_row + ldc * per_code) for both shapes.
  const double a = t_long / 256, b = t_short / 1024;  // per row
  c.per_code = std::max(0.0, (a - b) / (2048.0 - 256.0));
  c.per_dense_row = std::max(0.0, b - 256.0 * c.per_code);
  dense_cache[dkey] = {c.per_code, c.per_dense_row};
  return c;
}

// The last-level cache the process may count on: the largest cache level the kernel lists for
// cpu0 in sysfs (what one core sees: glibc's sysconf reports the whole host's L3 in a VM, 384
// MB on the 2-core Zen 5 guest here where sysfs says 32 MB), else sysconf, else 8 MiB.
double last_level_cache_bytes() {
  static const double b = [] {
    double best = 0;
    for (int i = 0; i < 8; ++i) {
      const std::string path = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/size";
      if (FILE* f = std::fopen(path.c_str(), "r")) {
        unsigned long v = 0;
        char unit = 0;
        if (std::fscanf(f, "%lu%c", &v, &unit) >= 1)
          best = std::max(best, double(v) * (unit == 'K' ? 1024.0 : unit == 'M' ? 1048576.0 : 1.0));
        std::fclose(f);
      }
    }
#ifdef _SC_LEVEL3_CACHE_SIZE
    if (best <= 0) best = double(std::max(sysconf(_SC_LEVEL3_CACHE_SIZE), sysconf(_SC_LEVEL2_CACHE_SIZE)));
#endif
    return best > 0 ? best : double(8 << 20);
  }();
  return b;
}

// Whether a sparse linear layer runs the dense codebook at batch 1 (mode 0: the cost model,
// 1: always, 2: never), and why (L.dense8_why); returns the model's time ratio of the dense
// codebook to the row form when it is to be used, 0 when not. The measured costs hold while
// the codes stay in cache; a layer whose codes are bigger than the last-level cache streams
// them from memory, a byte per code against the row form's two per non-zero, and the model
// takes the larger of the two ratios.
double choose_dense8(ExecLayer& L, const Batch1Costs& c, int mode) {
  const double weights = double(L.rows) * L.cols, density = weights > 0 ? double(L.nnz) / weights : 0.0;
  // A byte per weight: never for a layer whose codes would not fit in 256 MiB, and the model is
  // only asked from 8% density up in fp32 (below it the sparse forms win on any CPU measured),
  // from 2% in the precision modes (int8 walks 64 codes per lookup and dot product).
  const double floor = L.dense8_prec == kPrecisionFp32 ? 0.08 : 0.02;
  if (mode == 2 || weights > double(1u << 28) || (mode == 0 && density < floor)) return 0.0;
  if (mode == 1) {
    L.dense8_why = "forced (dense_codebook=\"always\")";
    return 1.0;
  }
  char why[320];
  const double t_dense = double(L.rows) * (c.per_dense_row + c.per_code * double(dense8_ldc(L.cols)));
  const double t_rows = c.row_unit * rows16_units_est(L.nnz, L.rows, L.cols, L.code_bits);
  double ratio = t_rows > 0 ? t_dense / t_rows : 1e9;
  int n = std::snprintf(why, sizeof why, "measured %.3f ns per code + %.1f ns per row vs %.3f ns per non-zero: %.2fx the "
                        "row form's time at %.0f%% density", 1e9 * c.per_code, 1e9 * c.per_dense_row,
                        L.nnz ? 1e9 * t_rows / double(L.nnz) : 0.0, ratio, 100 * density);
  const double llc = last_level_cache_bytes();
  // int8 at <= 7 bits reads the packed codes: code_bits / 8 bytes per weight.
  const double per_weight = L.dense8_prec == kPrecisionInt8 && dense8_packs(L.code_bits) ? L.code_bits / 8.0 : 1.0;
  if (weights * per_weight > llc && L.nnz > 0) {
    const double streamed = weights * per_weight / (2.0 * double(L.nnz));
    if (streamed > ratio) ratio = streamed;
    std::snprintf(why + n, sizeof why - n, "; its %.1f MB of codes exceed the %.0f MB cache: streamed, %.2fx the row form's bytes",
                  weights * per_weight / 1e6, llc / 1e6, streamed);
  }
  if (ratio >= 0.9) {
    L.dense8_why = std::string("not used: ") + why;
    return 0.0;
  }
  L.dense8_why = why;
  return ratio;
}

// The column-tiled rows layout of a sparse linear layer (see ExecLayer).
void build_row_tiles(const ExecLayer& L) {  // also called by ops/linear.cpp
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


namespace {
using clk = std::chrono::steady_clock;
double secs(clk::time_point a, clk::time_point b) { return std::chrono::duration<double>(b - a).count(); }
}  // namespace

void Model::decode_layers(ParsedFile& f) {
  layers_.resize(f.layers.size());
  // Tables first (validates code lengths), then every chunk of every stream in parallel.
  // Each stream's decoder: the one given, else the one timed fastest at its bits per symbol.
  // Jobs of twice the chunks it keeps in flight (six for the scalar ones, 48 for AVX-512).
  struct Job { uint32_t layer; bool index; uint64_t c0, c1; const KernelInfo* dec; };
  std::map<const KernelInfo*, uint64_t> per_decoder;
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
    for (const bool index : {false, true}) {
      const uint64_t bytes = (index ? d.index_offsets : d.code_offsets)[d.n_chunks];
      const KernelInfo* dec =
          huff_fixed_ || d.n_entries == 0 ? huff_ : &huffman_for_stream(8.0 * double(bytes) / double(d.n_entries));
      for (uint64_t c = 0; c < d.n_chunks; c += dec->huff_job_chunks)
        jobs.push_back({i, index, c, std::min<uint64_t>(c + dec->huff_job_chunks, d.n_chunks), dec});
      per_decoder[dec] += d.n_entries;
    }
    stats_.symbols_decoded += 2 * d.n_entries;
  }
  stats_.huffman_symbols.assign(per_decoder.begin(), per_decoder.end());
  std::vector<int64_t> bad(jobs.size(), -1);
  const auto t0 = clk::now();
  pool_->parallel_for(jobs.size(), [&](size_t j, unsigned) {
    const Job& jb = jobs[j];
    const LayerDesc& d = f.layers[jb.layer];
    const HuffStream hs{jb.index ? d.index_stream : d.code_stream,
                        (jb.index ? d.index_offsets : d.code_offsets).data(), d.chunk_symbols, d.n_entries};
    bad[j] = jb.dec->huff(jb.index ? itab[jb.layer] : ctab[jb.layer], hs, jb.c0, jb.c1,
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
  std::vector<uint32_t> by_size(layers_.size());  // biggest first: no big layer starts last
  std::iota(by_size.begin(), by_size.end(), 0u);
  std::stable_sort(by_size.begin(), by_size.end(),
                   [&](uint32_t a, uint32_t b) { return layers_[a].n_entries > layers_[b].n_entries; });
  pool_->parallel_for(layers_.size(), [&](size_t j, unsigned) {
    const size_t i = by_size[j];
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
  // Batch-1 layouts of the sparse linear layers: the column form, and the row form or the
  // dense codebook (decided first: the cost model needs only the counts). Each (layer, form) is
  // one job, biggest first, so the biggest layer's forms build on separate threads.
  enum Form { kRows, kCols, kDense, kPixel };
  std::vector<double> d8ratio(layers_.size(), 0.0);
  std::vector<Batch1Costs> costs(layers_.size());
  std::vector<std::tuple<double, uint32_t, Form>> builds;  // (size, layer, form)
  for (uint32_t i = 0; i < layers_.size(); ++i) {
    ExecLayer& L = layers_[i];
    if (L.storage != kStorageSparse || L.kind != kLayerLinear) continue;
    // The precision the dense codebook would run in: int8 sums stay exact in int32 up to
    // kDenseI8MaxCols columns; wider layers run fp32.
    L.dense8_prec = precision_ == kPrecisionInt8 && L.cols > kDenseI8MaxCols ? int(kPrecisionFp32) : precision_;
    const KernelInfo& dk = L.dense8_prec == kPrecisionInt8   ? *dense_i8_
                           : L.dense8_prec == kPrecisionBf16 ? *dense_bf16_
                                                             : *dense_q8_;
    costs[i] = batch1_costs(*spmv_rows_, *spmv_cols_, dk, L.code_bits);
    d8ratio[i] = choose_dense8(L, costs[i], dense8_mode_);
    if (d8ratio[i] <= 0) L.dense8_prec = kPrecisionFp32;  // the sparse forms run fp32
    builds.push_back({double(L.nnz), i, kCols});
    if (d8ratio[i] > 0)
      builds.push_back({double(L.rows) * L.cols / 4, i, kDense});  // a byte store per code, ~4x cheaper than an entry
    else
      builds.push_back({double(L.nnz), i, kRows});
  }
  // Convs whose output map is one pixel (MobileNetV2's and ResNet-18's last blocks on small
  // inputs) are at batch 1 a matrix-vector product over the columns whose tap lands inside the
  // input (a 3x3 conv on a 1x1 map: the centre tap only): they get the row form of those
  // columns (ops/conv.cpp gathers the input they read), not the batched kernel on one lane.
  for (size_t j = 0; j < ops_.size(); ++j) {
    if (ops_[j].layer < 0) continue;
    const uint32_t i = uint32_t(ops_[j].layer);
    ExecLayer& L = layers_[i];
    const ConvGeom& g = exec_[j].geom;
    if (L.kind == kLayerConv2d && L.storage == kStorageSparse && (conv_small_depthwise(L, g) || conv_channel_scale(L, g)) &&
        L.dw_dense.empty()) {
      const uint32_t taps = L.kh * L.kw, mask = (1u << L.code_bits) - 1;
      L.dw_dense.assign(size_t(L.rows) * taps, 0.f);
      for (uint32_t r = 0; r < L.rows; ++r)
        for (uint32_t e = L.conv_rowptr[r]; e < L.conv_rowptr[r + 1]; ++e)
          L.dw_dense[size_t(r) * taps + (L.conv_entries[e] >> 8)] = L.codebook[L.conv_entries[e] & mask];
    }
    if (conv_small_dense_pays(L, g)) {
      const uint32_t taps = L.kh * L.kw, in_c = g.in_c, out_c = g.out_c;
      if (L.small_w.empty()) {  // [taps][in_c][out_c]; a file column is ic * taps + ky * kw + kx
        L.small_w.assign(size_t(taps) * in_c * out_c, 0.f);
        const uint32_t mask = (1u << L.code_bits) - 1;
        for (uint32_t r = 0; r < L.rows; ++r) {
          if (L.storage == kStoragePlain) {
            for (uint32_t col = 0; col < L.cols; ++col)
              L.small_w[(size_t(col % taps) * in_c + col / taps) * out_c + r] = L.weight[size_t(r) * L.cols + col];
          } else {
            for (uint32_t e = L.conv_rowptr[r]; e < L.conv_rowptr[r + 1]; ++e) {
              const uint32_t col = L.conv_entries[e] >> 8;
              L.small_w[(size_t(col % taps) * in_c + col / taps) * out_c + r] = L.codebook[L.conv_entries[e] & mask];
            }
          }
        }
      }
      const uint32_t P = g.out_h * g.out_w;
      std::vector<int32_t>& off = exec_[j].small_off;
      off.assign(size_t(taps) * P, -1);
      for (uint32_t t = 0; t < taps; ++t)
        for (uint32_t p = 0; p < P; ++p) {
          const int64_t iy = int64_t(p / g.out_w) * g.sh + int64_t(t / L.kw) * g.dh - g.ph;
          const int64_t ix = int64_t(p % g.out_w) * g.sw + int64_t(t % L.kw) * g.dw - g.pw;
          if (iy >= 0 && ix >= 0 && iy < int64_t(g.in_h) && ix < int64_t(g.in_w))
            off[size_t(t) * P + p] = int32_t(iy * g.in_w + ix);
        }
    }
    if (L.kind == kLayerConv2d && L.storage == kStorageSparse && g.groups == 1 && g.out_h == 1 && g.out_w == 1 &&
        !L.pixel_form && std::none_of(builds.begin(), builds.end(), [i](const auto& b) { return std::get<1>(b) == i; })) {
      const uint32_t taps = L.kh * L.kw;
      std::vector<uint32_t> cols;  // (column, input offset) of the columns read
      for (uint32_t c = 0; c < L.cols; ++c) {
        const int64_t iy = int64_t((c / L.kw) % L.kh) * g.dh - g.ph, ix = int64_t(c % L.kw) * g.dw - g.pw;
        if (iy >= 0 && ix >= 0 && iy < g.in_h && ix < g.in_w)
          cols.push_back(c), L.pixel_in.push_back(uint32_t((size_t(c / taps) * g.in_h + iy) * g.in_w + ix));
      }
      bool identity = cols.size() == L.cols;
      for (uint32_t k = 0; identity && k < L.cols; ++k) identity = L.pixel_in[k] == k;
      if (identity) std::vector<uint32_t>().swap(L.pixel_in);  // a pointwise conv reads x as it is
      L.pixel_form = true;
      // A pointwise one is a linear layer's batch 1: the dense codebook where the cost model (or
      // dense_codebook="always") takes it, as for linear layers (fp32; MobileNetV2's 1x1-map
      // 1x1 convs at 50% density: ~30% of its batch 1 on the row form, Zen 4).
      if (identity) {
        L.dense8_prec = kPrecisionFp32;
        if (choose_dense8(L, batch1_costs(*spmv_rows_, *spmv_cols_, *dense_q8_, L.code_bits), dense8_mode_) > 0) {
          builds.push_back({double(L.rows) * L.cols / 4, i, kDense});
          continue;
        }
      }
      L.pixel_cols = std::move(cols);
      builds.push_back({double(L.nnz), i, kPixel});
    }
  }
  std::stable_sort(builds.begin(), builds.end(), [](const auto& a, const auto& b) { return std::get<0>(a) > std::get<0>(b); });
  pool_->parallel_for(builds.size(), [&](size_t j, unsigned) {
    ExecLayer& L = layers_[std::get<1>(builds[j])];
    switch (std::get<2>(builds[j])) {
      case kCols: build_cols16(L.view(), 0, T, L.cols16); break;
      case kRows: build_rows16(L.view(), 0, T, L.rows16); break;
      case kPixel: {  // the columns of pixel_cols, each column's rel16 run as it is
        std::vector<uint32_t> cp(L.pixel_cols.size() + 1, 0);
        std::vector<uint16_t> en;
        for (size_t k = 0; k < L.pixel_cols.size(); ++k) {
          const uint32_t c = L.pixel_cols[k];
          en.insert(en.end(), L.entries.begin() + L.colptr[c], L.entries.begin() + L.colptr[c + 1]);
          cp[k + 1] = uint32_t(en.size());
        }
        const QSparseMatrix sub{L.rows, uint32_t(L.pixel_cols.size()), L.code_bits, cp.data(), en.data(),
                                L.codebook.data()};
        build_rows16(sub, 0, T, L.rows16);
        std::vector<uint32_t>().swap(L.pixel_cols);
        break;
      }
      case kDense:
        build_dense8(L.view(), L.dense8);
        if (L.dense8_prec == kPrecisionInt8) {
          const QDense8 d = L.dense8_view();
          build_dense8_i8(d, L.dense8_qcb, L.dense8_qscale, L.dense8_rowsum);
          if (dense8_packs(L.code_bits)) {  // the int8 kernels read the packed codes only
            pack_dense8(d, L.dense8_packed);
            std::vector<uint8_t>().swap(L.dense8);
          }
        } else if (L.dense8_prec == kPrecisionBf16) {
          build_dense8_bf16(L.codebook.data(), L.code_bits, L.dense8_bcb);
        }
        break;
    }
  });
  for (uint32_t i = 0; i < layers_.size(); ++i) {
    ExecLayer& L = layers_[i];
    if (L.storage != kStorageSparse || L.kind != kLayerLinear) continue;
    // The input density below which the column form (zero inputs skipped, its time scaling
    // with the live columns) beats the row form, or the dense codebook where that replaced it.
    const double t_cols = costs[i].col_unit * cols16_units(L.cols16);
    const double t_rows = costs[i].row_unit * (d8ratio[i] > 0 ? rows16_units_est(L.nnz, L.rows, L.cols, L.code_bits)
                                                                 : rows16_units(L.rows16));
    const auto below = [&](double t) { return float(t_cols > 0 ? std::min(1.0, t / t_cols) : 1.0); };
    L.cols16_density = below(t_rows);
    // dense_codebook="always" runs the dense codebook on every batch-1 input, however sparse: the
    // kernel, and so the output's bits, never depend on this load's timings.
    if (d8ratio[i] > 0) L.dense8_cols_density = dense8_mode_ == 1 ? 0.f : below(t_rows * d8ratio[i]);
  }
}

}  // namespace dcrt
