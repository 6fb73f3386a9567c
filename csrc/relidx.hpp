// Relative-index CSC (docs/format.md §4.3): pack decoded streams into the execution
// layout and validate every column against the row count.
#pragma once
#include <cstddef>
#include <cstdint>

namespace dcrt {

// entries[i] = gaps[i] << code_bits | codes[i]. code_bits + index_bits <= 16 always (both <= 8).
void pack_rel16(const uint8_t* codes, const uint8_t* gaps, size_t n, uint32_t code_bits, uint16_t* entries);

// Returns the first column whose entries run past `rows`, or -1 if all fit.
int64_t check_rel16_columns(const uint32_t* colptr, uint32_t cols, const uint16_t* entries, uint32_t code_bits,
                            uint32_t rows);

}  // namespace dcrt
