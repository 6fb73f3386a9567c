// Relative-index CSC packing and validation (format.md §4.3).
#include "relidx.hpp"

namespace dcrt {

void pack_rel16(const uint8_t* codes, const uint8_t* gaps, size_t n, uint32_t code_bits, uint16_t* entries) {
  for (size_t i = 0; i < n; ++i) entries[i] = uint16_t(uint32_t(gaps[i]) << code_bits | codes[i]);
}

int64_t check_rel16_columns(const uint32_t* colptr, uint32_t cols, const uint16_t* entries, uint32_t code_bits,
                            uint32_t rows) {
  for (uint32_t c = 0; c < cols; ++c) {
    // Rows advanced by a column = entries + sum of gaps; the last entry sits at that - 1.
    uint64_t span = 0;
    for (uint32_t e = colptr[c]; e < colptr[c + 1]; ++e) span += (entries[e] >> code_bits) + 1;
    if (span > rows) return c;
  }
  return -1;
}

}  // namespace dcrt
