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
  bool complete = false;           // Kraft sum 1: every bit pattern starts with a code
  // Peek table over max_len-bit windows: (symbol << 4) | length; length 0 = invalid code.
  std::vector<uint16_t> peek;
  // Multi-symbol table over multi_bits-bit windows (multi_bits >= max_len, built only for
  // complete codes): every whole code that fits in the window, up to 3 of them.
  //   bits 0..5 bits consumed, 6..7 count, 8..31 the symbols (first in the low byte).
  int multi_bits = 0;
  std::vector<uint32_t> multi;
  // Canonical description, used by the reference decoder.
  uint16_t count[16] = {0};        // codes per length
  uint32_t first_code[16] = {0};   // first canonical code of each length
  uint16_t first_index[16] = {0};  // index into `sorted` of that code
  std::vector<uint8_t> sorted;     // symbols by (length, symbol)
};

// Window width of the multi-symbol table: at least this, more when codes are longer.
constexpr int kHuffMultiBits = 12;

// Validates `lengths` (alphabet of n_alpha symbols) for a stream of n_symbols
// (spec §5.1) and builds the tables. Throws FormatError naming `where`.
void build_huff_table(const uint8_t* lengths, uint32_t n_alpha, uint64_t n_symbols, HuffTable& t,
                      const std::string& where);

// One Huffman-coded stream cut into chunks (format.md §5.2).
struct HuffStream {
  const uint8_t* data;       // the stream's bytes
  const uint32_t* offsets;   // n_chunks + 1 byte offsets, validated non-decreasing
  uint64_t chunk_symbols;    // symbols per chunk (the last may hold fewer)
  uint64_t n_symbols;        // symbols in the whole stream
};

// Decodes chunks [c0, c1) of `s` into `out` (the whole stream's symbols: chunk c fills
// out[c * chunk_symbols ...]). Returns -1 when every chunk decodes, else the lowest chunk
// index in the range that is corrupt: an invalid code, running past its end, a spare byte,
// or non-zero padding. Chunks are independent, so decoders may interleave several.
using HuffDecodeFn = int64_t (*)(const HuffTable& t, const HuffStream& s, uint64_t c0, uint64_t c1, uint8_t* out);

// The checked single-symbol decoder, resumable: decodes the n symbols that start `bitpos` bits
// into a chunk of src_len bytes, then checks the chunk's end (no spare byte, zero padding).
bool huff_decode_checked(const HuffTable& t, const uint8_t* src, size_t src_len, uint64_t bitpos, uint8_t* out,
                         size_t n);

int64_t huffman_decode__ref(const HuffTable& t, const HuffStream& s, uint64_t c0, uint64_t c1, uint8_t* out);
int64_t huffman_decode_table__generic(const HuffTable& t, const HuffStream& s, uint64_t c0, uint64_t c1, uint8_t* out);
int64_t huffman_decode_multi__generic(const HuffTable& t, const HuffStream& s, uint64_t c0, uint64_t c1, uint8_t* out);
#if DCRT_HAVE_AVX2
int64_t huffman_decode_multi__bmi2(const HuffTable& t, const HuffStream& s, uint64_t c0, uint64_t c1, uint8_t* out);
// 16 chunks per register in lockstep, 48 in flight (huffman_avx512.cpp); fewer than 16 chunks, or
// an incomplete code, go to huffman_decode_multi__bmi2.
int64_t huffman_decode_lanes__avx512vbmi(const HuffTable& t, const HuffStream& s, uint64_t c0, uint64_t c1,
                                         uint8_t* out);
bool cpu_has_avx512_vbmi();
#endif

}  // namespace dcrt
