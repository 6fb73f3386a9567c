// Batch-1 execution layouts of a sparse quantized matrix and their kernels (issue 4).
//
// Both layouts hold 16-bit entries `code << field_bits | index` (field_bits = 16 - code_bits),
// four to a 64-bit group, fillers dropped; a segment shorter than a whole group is padded with
// code 0 (the codebook's zero) at an index the segment already uses. One 64-bit load feeds four
// products, and a field is one BEXTR (or shift and mask).
//
// * Row form (gather): column tiles of `tile` columns; within a tile, one segment per output row.
//   An output row accumulates in registers while its segment streams by and reads its inputs from
//   the tile's block of x (L1-resident). Rows are ordered by segment length within blocks of
//   kOrderBlock rows, so the loop-exit branch sees runs of equal trip counts; `order` maps
//   positions back to rows. Threads take whole blocks: their outputs never overlap. Cost is per
//   stored non-zero, whatever the input.
// * Column form (scatter): row tiles of `tile` rows; within a tile, one segment per input column.
//   A column whose input is zero is never read (EIE's activation sparsity): the kernel walks a list
//   of live columns. Threads take whole row tiles.
//
// Plain pointers in, outputs out (the XNNPACK habit); the builders and the choice between the two
// forms live here too, so the tests and the runtime use one definition.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/qsparse.hpp"

namespace dcrt {

constexpr uint32_t kGroup = 4;          // entries per 64-bit group
constexpr uint32_t kOrderBlock = 64;    // row form: rows are reordered only within these blocks

struct QTiles16 {
  uint32_t rows, cols, code_bits;
  uint32_t field_bits;    // 16 - code_bits
  uint32_t tile;          // columns (row form) or rows (column form) per tile: a power of two <= 1 << field_bits
  uint32_t tiles;
  uint32_t lines;         // segments per tile: rows (row form) or cols (column form)
  const uint32_t* gptr;   // [tiles][lines + 1]: group offsets, absolute into groups
  const uint32_t* order;  // row form: [tiles][rows], the row at each position; column form: null
  const uint16_t* entries;  // 4 * groups entries (8-byte aligned)
  const float* codebook;    // [1 << code_bits], codebook[0] == 0
};

// Owning storage for one layout (what the runtime keeps per layer).
struct Tiles16 {
  uint32_t rows = 0, cols = 0, code_bits = 0, field_bits = 0, tile = 0, tiles = 0, lines = 0;
  std::vector<uint32_t> gptr, order;
  std::vector<uint16_t> entries;
  std::vector<uint32_t> split;  // thread shares: row form, positions; column form, tiles
  QTiles16 view(const float* codebook) const {
    return QTiles16{rows,  cols,        code_bits,     field_bits,     tile, tiles, lines,
                    gptr.data(), order.empty() ? nullptr : order.data(), entries.data(), codebook};
  }
  size_t bytes() const { return gptr.size() * 4 + order.size() * 4 + entries.size() * 2 + split.size() * 4; }
};

// Row form (code_bits <= 12, so that a field keeps at least 4 bits; the .dcz format caps it at 8) from rel16 CSC. tile_cols: 0 = the widest the field allows. `shares` thread shares of
// equal work (whole kOrderBlock blocks).
void build_rows16(const QSparseMatrix& w, uint32_t tile_cols, unsigned shares, Tiles16& out);
// Column form from rel16 CSC. tile_rows: 0 = the widest the field allows, narrowed until there
// are at least 2 * shares tiles (but not below kOrderBlock rows).
void build_cols16(const QSparseMatrix& w, uint32_t tile_rows, unsigned shares, Tiles16& out);

// y[row] += sum over the row's entries in every tile, for positions [p0, p1) of each tile
// (p0, p1 multiples of kOrderBlock, or rows).
using SpmvRowsFn = void (*)(const QTiles16& w, const float* x, float* y, uint32_t p0, uint32_t p1);
// y[row] += ... for row tiles [t0, t1), reading only the columns listed in live (ascending).
using SpmvColsFn = void (*)(const QTiles16& w, const float* x, const uint32_t* live, uint32_t nlive, float* y,
                            uint32_t t0, uint32_t t1);

// The batch-1 forms' work in group-equivalents (stored groups plus the segments a pass visits):
// times the measured seconds per unit of each kernel (layout.cpp) they model the two forms'
// times. A full pass of the column form (every input live); it scales with the live columns.
double rows16_units(const Tiles16& rows16);
double rows16_units_est(uint64_t nnz, uint32_t rows, uint32_t cols, uint32_t code_bits);  // not built
double cols16_units(const Tiles16& cols16);

// The columns of x that are not zero, ascending; returns how many (branch-free).
uint32_t live_columns(const float* x, uint32_t cols, uint32_t* live);

void spmv_rows_q_t16__ref(const QTiles16& w, const float* x, float* y, uint32_t p0, uint32_t p1);
void spmv_rows_q_t16__generic(const QTiles16& w, const float* x, float* y, uint32_t p0, uint32_t p1);
void spmv_rows_q_t16__bmi2(const QTiles16& w, const float* x, float* y, uint32_t p0, uint32_t p1);
void spmv_cols_q_t16__ref(const QTiles16& w, const float* x, const uint32_t* live, uint32_t nlive, float* y,
                          uint32_t t0, uint32_t t1);
void spmv_cols_q_t16__generic(const QTiles16& w, const float* x, const uint32_t* live, uint32_t nlive, float* y,
                              uint32_t t0, uint32_t t1);
void spmv_cols_q_t16__bmi2(const QTiles16& w, const float* x, const uint32_t* live, uint32_t nlive, float* y,
                           uint32_t t0, uint32_t t1);
bool cpu_has_bmi2_fma();
// AVX-512 F/BW/VL/DQ (+ FMA, BMI2): the Xeons' kernels (spmv16_avx512.cpp and the others).
void spmv_rows_q_t16__avx512(const QTiles16& w, const float* x, float* y, uint32_t p0, uint32_t p1);
void spmv_cols_q_t16__avx512(const QTiles16& w, const float* x, const uint32_t* live, uint32_t nlive, float* y,
                             uint32_t t0, uint32_t t1);
bool cpu_has_avx512();

}  // namespace dcrt
