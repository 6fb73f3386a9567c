// Batch-1 tiled layouts (spmv16.hpp): builders, reference twins, portable kernels.
#include "kernels/spmv16.hpp"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <stdexcept>
#include <string>

namespace dcrt {

namespace {

uint32_t ceil_div(uint64_t a, uint64_t b) { return uint32_t((a + b - 1) / b); }

// Walks the rel16 CSC, calling fn(col, row, code) for every entry in order, fillers (code 0)
// included: callers handle them without a branch (a filler is ~20% of the entries at 5-bit
// indices and 4% density, at random, so an `if` mispredicts on every few entries).
template <class Fn>
void for_each_entry(const QSparseMatrix& w, Fn&& fn) {
  const uint32_t b = w.code_bits, mask = (1u << b) - 1;
  for (uint32_t c = 0; c < w.cols; ++c) {
    uint32_t row = uint32_t(-1);
    const uint16_t* e = w.entries + w.colptr[c];
    const uint16_t* end = w.entries + w.colptr[c + 1];
    for (; e < end; ++e) {
      row += (*e >> b) + 1u;
      fn(c, row, uint32_t(*e & mask));
    }
  }
}

// Boundaries of `shares` contiguous ranges of units with about equal summed work.
std::vector<uint32_t> equal_work_split(const std::vector<uint64_t>& work, unsigned shares) {
  std::vector<uint64_t> pre(work.size() + 1, 0);
  std::partial_sum(work.begin(), work.end(), pre.begin() + 1);
  std::vector<uint32_t> split(shares + 1, uint32_t(work.size()));
  split[0] = 0;
  for (unsigned s = 1; s < shares; ++s) {
    const uint64_t target = pre.back() * s / shares;
    split[s] = uint32_t(std::lower_bound(pre.begin(), pre.end(), target) - pre.begin());
    split[s] = std::min(std::max(split[s], split[s - 1]), uint32_t(work.size()));
  }
  return split;
}

uint32_t log2_exact(uint32_t v) {
  if (!v || (v & (v - 1))) throw std::invalid_argument("tile must be a power of two, got " + std::to_string(v));
  uint32_t s = 0;
  while ((1u << s) < v) ++s;
  return s;
}

// Fills the rest of a run's last group with code 0 at the run's last index.
void pad_run(uint16_t* d, uint16_t* dend, uint32_t imask) {
  if (!d || d == dend) return;
  const uint16_t pad = uint16_t(d[-1] & imask);
  while (d < dend) *d++ = pad;
}

// Where an entry is stored: `real` for a real entry, `sink` for a filler, selected with masks.
// GCC compiles `code ? real : &sink` as a store address into a branch, which mispredicts on
// the fillers (~20% of the entries, at random).
inline uint16_t* pick(bool keep, uint16_t* real, uint16_t* sink) {
  const uintptr_t m = uintptr_t(0) - uintptr_t(keep);
  return reinterpret_cast<uint16_t*>((reinterpret_cast<uintptr_t>(real) & m) | (reinterpret_cast<uintptr_t>(sink) & ~m));
}

void check_code_bits(uint32_t code_bits) {
  if (code_bits < 1 || code_bits > 12)
    throw std::invalid_argument("16-bit tiled layouts need 1 <= code_bits <= 12, got " + std::to_string(code_bits));
}

}  // namespace

void build_rows16(const QSparseMatrix& w, uint32_t tile_cols, unsigned shares, Tiles16& t) {
  check_code_bits(w.code_bits);
  t = Tiles16{};
  t.rows = w.rows; t.cols = w.cols; t.code_bits = w.code_bits; t.field_bits = 16 - w.code_bits;
  t.tile = tile_cols ? tile_cols : 1u << t.field_bits;
  t.tiles = std::max(1u, ceil_div(w.cols, t.tile));
  t.lines = w.rows;
  const uint32_t R = w.rows, shift = log2_exact(t.tile);
  std::vector<uint32_t> cnt(size_t(t.tiles) * R, 0);
  for_each_entry(w, [&](uint32_t c, uint32_t r, uint32_t code) { cnt[size_t(c >> shift) * R + r] += code != 0; });
  // Order rows by their group count within each block; then group offsets in that order, and
  // each row's write cursor (entries, not groups).
  t.order.resize(size_t(t.tiles) * R);
  t.gptr.resize(size_t(t.tiles) * (R + 1));
  std::vector<uint32_t> cur(size_t(t.tiles) * R);
  uint32_t pos = 0;
  for (uint32_t k = 0; k < t.tiles; ++k) {
    const uint32_t* ck = cnt.data() + size_t(k) * R;
    uint32_t* ord = t.order.data() + size_t(k) * R;
    uint32_t* gp = t.gptr.data() + size_t(k) * (R + 1);
    std::iota(ord, ord + R, 0u);
    for (uint32_t b0 = 0; b0 < R; b0 += kOrderBlock)
      std::stable_sort(ord + b0, ord + std::min(R, b0 + kOrderBlock),
                       [&](uint32_t a, uint32_t b) { return ck[a] / kGroup < ck[b] / kGroup; });
    for (uint32_t p = 0; p < R; ++p) {
      gp[p] = pos;
      cur[size_t(k) * R + ord[p]] = pos * kGroup;
      pos += ceil_div(ck[ord[p]], kGroup);
    }
    gp[R] = pos;
  }
  t.entries.resize(size_t(pos) * kGroup);
  const uint32_t fb = t.field_bits, imask = (1u << fb) - 1;
  uint16_t* out = t.entries.data();
  uint16_t sink;  // fillers are written here
  for_each_entry(w, [&](uint32_t c, uint32_t r, uint32_t code) {
    uint32_t& cu = cur[size_t(c >> shift) * R + r];
    *pick(code != 0, out + cu, &sink) = uint16_t(code << fb | (c & (t.tile - 1)));
    cu += code != 0;
  });
  // Pad each segment (cursor = its fill end; cnt = its length) and sum the work per block.
  std::vector<uint64_t> work(ceil_div(R, kOrderBlock), 0);
  for (uint32_t k = 0; k < t.tiles; ++k)
    for (uint32_t r = 0; r < R; ++r) {
      const size_t i = size_t(k) * R + r;
      pad_run(cnt[i] ? out + cur[i] : nullptr, out + size_t(ceil_div(cur[i], kGroup)) * kGroup, imask);
      work[r / kOrderBlock] += ceil_div(cnt[i], kGroup) + 1;
    }
  // Thread shares: whole blocks, equal groups summed over the tiles.
  t.split = equal_work_split(work, std::max(1u, shares));
  for (auto& s : t.split) s = std::min(R, s * kOrderBlock);
}

void build_cols16(const QSparseMatrix& w, uint32_t tile_rows, unsigned shares, Tiles16& t) {
  check_code_bits(w.code_bits);
  t = Tiles16{};
  shares = std::max(1u, shares);
  t.rows = w.rows; t.cols = w.cols; t.code_bits = w.code_bits; t.field_bits = 16 - w.code_bits;
  t.tile = tile_rows ? tile_rows : 1u << t.field_bits;
  if (!tile_rows)
    while (ceil_div(w.rows, t.tile) < 2 * shares && t.tile > kOrderBlock) t.tile >>= 1;
  t.tiles = std::max(1u, ceil_div(w.rows, t.tile));
  t.lines = w.cols;
  const uint32_t C = w.cols, shift = log2_exact(t.tile), b = w.code_bits, mask = (1u << b) - 1;
  // Rows ascend within a column, so its entries of one row tile are one run: count runs, not
  // entries (a per-entry counter increment would chain through memory).
  // A filler may open a tile that has no entry of the column: its count stays 0.
  std::vector<uint32_t> cnt(size_t(t.tiles) * C, 0);
  for (uint32_t c = 0; c < C; ++c) {
    uint32_t row = uint32_t(-1), k = 0, n = 0;
    const uint16_t* e = w.entries + w.colptr[c];
    const uint16_t* end = w.entries + w.colptr[c + 1];
    for (; e < end; ++e) {
      row += (*e >> b) + 1u;
      if ((row >> shift) != k) {
        cnt[size_t(k) * C + c] = n;
        k = row >> shift;
        n = 0;
      }
      n += (*e & mask) != 0;
    }
    cnt[size_t(k) * C + c] = n;
  }
  t.gptr.resize(size_t(t.tiles) * (C + 1));
  std::vector<uint64_t> work(t.tiles, 0);
  uint32_t pos = 0;
  for (uint32_t k = 0; k < t.tiles; ++k) {
    uint32_t* gp = t.gptr.data() + size_t(k) * (C + 1);
    for (uint32_t c = 0; c < C; ++c) {
      gp[c] = pos;
      pos += ceil_div(cnt[size_t(k) * C + c], kGroup);
    }
    gp[C] = pos;
    work[k] = gp[C] - gp[0];
  }
  t.entries.resize(size_t(pos) * kGroup);
  const uint32_t fb = t.field_bits, imask = (1u << fb) - 1;
  uint16_t* out = t.entries.data();
  uint16_t sink;  // fillers are written here
  for (uint32_t c = 0; c < C; ++c) {
    uint32_t row = uint32_t(-1), k = uint32_t(-1);
    uint16_t *d = nullptr, *dend = nullptr;
    const uint16_t* e = w.entries + w.colptr[c];
    const uint16_t* end = w.entries + w.colptr[c + 1];
    for (; e < end; ++e) {
      row += (*e >> b) + 1u;
      const uint32_t code = *e & mask;
      if ((row >> shift) != k && code) {  // a real entry opens its tile's run
        pad_run(d, dend, imask);
        k = row >> shift;
        d = out + size_t(t.gptr[size_t(k) * (C + 1) + c]) * kGroup;
        dend = out + size_t(t.gptr[size_t(k) * (C + 1) + c + 1]) * kGroup;
      }
      *pick(code != 0, d, &sink) = uint16_t(code << fb | (row & (t.tile - 1)));
      d += code != 0;
    }
    pad_run(d, dend, imask);
  }
  t.split = equal_work_split(work, shares);
}

// Segments (a row or a column per tile) cost about a group each to visit: cycles per group and
// per segment on Zen 3 with the bmi2 kernels (bench/RESULTS-layers.md), as group-equivalents.
constexpr double kRowSegment = 6.0 / 5.6, kColSegment = 6.0 / 7.8;

double rows16_units(const Tiles16& r) {
  return (r.gptr.empty() ? 0.0 : double(r.entries.size() / kGroup)) + kRowSegment * double(r.tiles) * r.rows;
}

double rows16_units_est(uint64_t nnz, uint32_t rows, uint32_t cols, uint32_t code_bits) {
  // Each segment ends half a group short on average.
  const double segments = double(std::max(1u, ceil_div(cols, 1u << (16 - code_bits)))) * rows;
  return double(nnz) / kGroup + (0.5 + kRowSegment) * segments;
}

double cols16_units(const Tiles16& c) {
  return double(c.entries.size() / kGroup) + kColSegment * double(c.tiles) * c.cols;
}

uint32_t live_columns(const float* x, uint32_t cols, uint32_t* live) {
  uint32_t n = 0;
  for (uint32_t c = 0; c < cols; ++c) {
    live[n] = c;
    n += x[c] != 0.f;
  }
  return n;
}

// ---------------------------------------------------------------- references
void spmv_rows_q_t16__ref(const QTiles16& w, const float* x, float* y, uint32_t p0, uint32_t p1) {
  const uint32_t imask = (1u << w.field_bits) - 1;
  for (uint32_t k = 0; k < w.tiles; ++k)
    for (uint32_t p = p0; p < p1; ++p) {
      const uint32_t* gp = w.gptr + size_t(k) * (w.lines + 1);
      const uint32_t row = w.order[size_t(k) * w.rows + p];
      for (size_t e = size_t(gp[p]) * kGroup; e < size_t(gp[p + 1]) * kGroup; ++e)
        y[row] += w.codebook[w.entries[e] >> w.field_bits] * x[size_t(k) * w.tile + (w.entries[e] & imask)];
    }
}

void spmv_cols_q_t16__ref(const QTiles16& w, const float* x, const uint32_t* live, uint32_t nlive, float* y,
                          uint32_t t0, uint32_t t1) {
  const uint32_t imask = (1u << w.field_bits) - 1;
  for (uint32_t k = t0; k < t1; ++k)
    for (uint32_t i = 0; i < nlive; ++i) {
      const uint32_t c = live[i];
      const uint32_t* gp = w.gptr + size_t(k) * (w.lines + 1);
      for (size_t e = size_t(gp[c]) * kGroup; e < size_t(gp[c + 1]) * kGroup; ++e)
        y[size_t(k) * w.tile + (w.entries[e] & imask)] += w.codebook[w.entries[e] >> w.field_bits] * x[c];
    }
}

// ---------------------------------------------------------------- generic (portable)
// Shifts and masks; four accumulators (row form) or four independent read-modify-writes
// (column form) per group keep the FMA latency and the store-to-load path off the critical path.
// The BMI2 build (spmv16_bmi2.cpp) is the same loop in assembly.
namespace generic16 {
struct Fields {  // entry j (0 or 1) of the 32-bit half h of a group
  uint64_t fb, imask, kmask;
  Fields(uint32_t field_bits, uint32_t code_bits)
      : fb(field_bits), imask((1u << field_bits) - 1), kmask((1u << code_bits) - 1) {}
  uint64_t idx(uint64_t h, int j) const { return (h >> (16 * j)) & imask; }
  uint64_t code(uint64_t h, int j) const { return (h >> (16 * j + fb)) & kmask; }
};

inline void spmv_rows_body(const QTiles16& w, const float* __restrict x, float* __restrict y, uint32_t p0,
                           uint32_t p1) {
  const Fields f(w.field_bits, w.code_bits);
  const float* __restrict cb = w.codebook;
  for (uint32_t k = 0; k < w.tiles; ++k) {
    const float* __restrict xt = x + size_t(k) * w.tile;
    const uint32_t* gp = w.gptr + size_t(k) * (w.lines + 1);
    const uint32_t* ord = w.order + size_t(k) * w.rows;
    for (uint32_t p = p0; p < p1; ++p) {
      const uint16_t* e = w.entries + size_t(gp[p]) * kGroup;
      const uint16_t* end = w.entries + size_t(gp[p + 1]) * kGroup;
      float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
      for (; e < end; e += kGroup) {
        uint64_t q;
        std::memcpy(&q, e, 8);
        const uint64_t h = q >> 32;
        a0 += cb[f.code(q, 0)] * xt[f.idx(q, 0)];
        a1 += cb[f.code(q, 1)] * xt[f.idx(q, 1)];
        a2 += cb[f.code(h, 0)] * xt[f.idx(h, 0)];
        a3 += cb[f.code(h, 1)] * xt[f.idx(h, 1)];
      }
      y[ord[p]] += (a0 + a1) + (a2 + a3);
    }
  }
}

inline void spmv_cols_body(const QTiles16& w, const float* __restrict x, const uint32_t* __restrict live,
                           uint32_t nlive, float* __restrict y, uint32_t t0, uint32_t t1) {
  const Fields f(w.field_bits, w.code_bits);
  const float* __restrict cb = w.codebook;
  for (uint32_t k = t0; k < t1; ++k) {
    float* __restrict yt = y + size_t(k) * w.tile;
    const uint32_t* gp = w.gptr + size_t(k) * (w.lines + 1);
    for (uint32_t i = 0; i < nlive; ++i) {
      const uint32_t c = live[i];
      const float xv = x[c];
      const uint16_t* e = w.entries + size_t(gp[c]) * kGroup;
      const uint16_t* end = w.entries + size_t(gp[c + 1]) * kGroup;
      for (; e < end; e += kGroup) {
        uint64_t q;
        std::memcpy(&q, e, 8);
        const uint64_t h = q >> 32;
        yt[f.idx(q, 0)] += cb[f.code(q, 0)] * xv;
        yt[f.idx(q, 1)] += cb[f.code(q, 1)] * xv;
        yt[f.idx(h, 0)] += cb[f.code(h, 0)] * xv;
        yt[f.idx(h, 1)] += cb[f.code(h, 1)] * xv;
      }
    }
  }
}
}  // namespace generic16

void spmv_rows_q_t16__generic(const QTiles16& w, const float* x, float* y, uint32_t p0, uint32_t p1) {
  generic16::spmv_rows_body(w, x, y, p0, p1);
}
void spmv_cols_q_t16__generic(const QTiles16& w, const float* x, const uint32_t* live, uint32_t nlive, float* y,
                              uint32_t t0, uint32_t t1) {
  generic16::spmv_cols_body(w, x, live, nlive, y, t0, t1);
}

}  // namespace dcrt
