// Canonical Huffman decoding of .dcz streams (docs/format.md §5): MSB-first bits,
// independently decodable chunks. Pure functions; the caller owns all memory.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace dcrt {

struct HuffTable {
  int max_len = 0;                 // longest code; 0 for an empty stream
  // Peek table over max_len-bit windows: (symbol << 4) | length; length 0 = invalid code.
  std::vector<uint16_t> peek;
  // Canonical description, used by the reference decoder.
  uint16_t count[16] = {0};        // codes per length
  uint32_t first_code[16] = {0};   // first canonical code of each length
  uint16_t first_index[16] = {0};  // index into `sorted` of that code
  std::vector<uint8_t> sorted;     // symbols by (length, symbol)
};

// Validates `lengths` (alphabet of n_alpha symbols) for a stream of n_symbols
// (spec §5.1) and builds the tables. Throws FormatError naming `where`.
void build_huff_table(const uint8_t* lengths, uint32_t n_alpha, uint64_t n_symbols, HuffTable& t,
                      const std::string& where);

// Decode exactly n symbols from one chunk of src_len bytes. Returns false if the chunk
// is corrupt: an invalid code, running past its end, a spare byte, or non-zero padding.
using HuffDecodeFn = bool (*)(const HuffTable& t, const uint8_t* src, size_t src_len, uint8_t* out, size_t n);

bool huffman_decode__ref(const HuffTable& t, const uint8_t* src, size_t src_len, uint8_t* out, size_t n);
bool huffman_decode_table__generic(const HuffTable& t, const uint8_t* src, size_t src_len, uint8_t* out, size_t n);

}  // namespace dcrt
