// Canonical Huffman decoders (format.md §5): bit-by-bit reference and a peek-table decoder.
#include "huffman.hpp"

#include <algorithm>
#include <cstring>

#include "common.hpp"

namespace dcrt {

namespace {
// Every whole code that fits in each multi_bits-bit window, up to 3 (HuffTable::multi).
void build_multi_table(HuffTable& t) {
  const int L = t.max_len, TB = std::max(L, kHuffMultiBits);
  const uint32_t mask = (1u << TB) - 1;
  t.multi_bits = TB;
  t.multi.resize(size_t(1) << TB);
  for (uint32_t w = 0; w <= mask; ++w) {
    uint32_t syms = 0, cnt = 0;
    int used = 0;
    while (cnt < 3) {
      // The remaining TB - used bits, top-aligned, zeros below: a code of length
      // <= TB - used is read correctly from the top max_len bits.
      const uint32_t v = (w << used) & mask;
      const uint16_t e = t.peek[v >> (TB - L)];
      const int len = e & 15;
      if (len > TB - used) break;
      syms |= uint32_t(e >> 4) << (8 * cnt);
      ++cnt;
      used += len;
    }
    t.multi[w] = syms << 8 | cnt << 6 | uint32_t(used);
  }
}
}  // namespace

void build_huff_table(const uint8_t* lengths, uint32_t n_alpha, uint64_t n_symbols, HuffTable& t,
                      const std::string& where) {
  t = HuffTable{};
  uint32_t used = 0, last = 0;
  for (uint32_t s = 0; s < n_alpha; ++s) {
    if (lengths[s] > 15)
      throw FormatError(where + "[" + std::to_string(s) + "]: code length " + std::to_string(lengths[s]) + " > 15");
    if (lengths[s]) {
      ++used;
      last = s;
      t.count[lengths[s]]++;
      t.max_len = std::max<int>(t.max_len, lengths[s]);
    }
  }
  if (n_symbols == 0) {
    if (used) throw FormatError(where + ": lengths must all be 0 for an empty stream");
    return;
  }
  if (used == 0)
    throw FormatError(where + ": all code lengths are 0 but the stream has " + std::to_string(n_symbols) + " symbols");
  if (used == 1) {
    if (lengths[last] != 1) throw FormatError(where + ": a single used symbol must have length 1");
  } else {
    uint64_t kraft = 0;
    for (int l = 1; l <= 15; ++l) kraft += uint64_t(t.count[l]) << (15 - l);
    if (kraft != (1u << 15))
      throw FormatError(where + ": Kraft sum != 1 (" + (kraft > (1u << 15) ? "over-subscribed" : "incomplete") + " code)");
  }
  // Canonical codes: by length, then symbol.
  uint32_t code = 0;
  uint16_t idx = 0;
  for (int l = 1; l <= 15; ++l) {
    t.first_code[l] = code;
    t.first_index[l] = idx;
    code = (code + t.count[l]) << 1;
    idx += t.count[l];
  }
  t.sorted.resize(used);
  uint16_t fill[16];
  std::memcpy(fill, t.first_index, sizeof fill);
  for (uint32_t s = 0; s < n_alpha; ++s)
    if (lengths[s]) t.sorted[fill[lengths[s]]++] = uint8_t(s);
  const int L = t.max_len;
  t.peek.assign(size_t(1) << L, 0);
  for (int l = 1; l <= L; ++l)
    for (uint32_t k = 0; k < t.count[l]; ++k) {
      const uint32_t c = t.first_code[l] + k;
      const uint16_t e = uint16_t(t.sorted[t.first_index[l] + k]) << 4 | uint16_t(l);
      const size_t lo = size_t(c) << (L - l), hi = lo + (size_t(1) << (L - l));
      std::fill(t.peek.begin() + lo, t.peek.begin() + hi, e);
    }
  t.complete = used > 1;
  if (t.complete) build_multi_table(t);
}


namespace {
// Bit-by-bit canonical decode of one chunk: the specification, not fast.
bool decode_chunk_ref(const HuffTable& t, const uint8_t* src, size_t src_len, uint8_t* out, size_t n) {
  const uint64_t nbits = uint64_t(src_len) * 8;
  uint64_t pos = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t code = 0;
    int l = 0;
    for (;;) {
      if (pos >= nbits || l >= 15) return false;
      code = code << 1 | ((src[pos >> 3] >> (7 - (pos & 7))) & 1);
      ++pos;
      ++l;
      if (code - t.first_code[l] < t.count[l]) {  // unsigned wrap rejects code < first
        out[i] = t.sorted[t.first_index[l] + (code - t.first_code[l])];
        break;
      }
    }
  }
  if ((pos + 7) / 8 != src_len) return false;  // spare bytes
  for (; pos < nbits; ++pos)
    if ((src[pos >> 3] >> (7 - (pos & 7))) & 1) return false;  // padding must be zero
  return true;
}
}  // namespace

bool huff_decode_checked(const HuffTable& t, const uint8_t* src, size_t src_len, uint64_t bitpos, uint8_t* out,
                         size_t n) {
  const uint8_t* p = src + (bitpos >> 3);
  const uint8_t* end = src + src_len;
  if (p > end) return false;
  uint64_t buf = 0;  // valid bits are the top `have` bits; the rest are zero
  int have = 0;
  if ((bitpos & 7) && p < end) {  // the first byte is partly consumed
    const int k = int(bitpos & 7);
    buf = uint64_t(*p++) << (56 + k);
    have = 8 - k;
  }
  const int L = t.max_len;
  const uint16_t* peek = t.peek.data();
  for (size_t i = 0; i < n; ++i) {
    if (have < L) {
      if (end - p >= 8) {  // branch-free refill: load 8 bytes big-endian, keep what fits
        uint64_t v;
        std::memcpy(&v, p, 8);
        v = __builtin_bswap64(v);
        buf |= v >> have;
        const int take = (63 - have) >> 3;
        p += take;
        have += take * 8;
        buf &= have >= 64 ? ~uint64_t(0) : ~(~uint64_t(0) >> have);
      } else {
        while (have <= 56 && p < end) {
          buf |= uint64_t(*p++) << (56 - have);
          have += 8;
        }
      }
    }
    const uint16_t e = peek[buf >> (64 - L)];
    const int len = e & 15;
    if (len == 0 || len > have) return false;  // invalid code, or past the chunk's end
    out[i] = uint8_t(e >> 4);
    buf <<= len;
    have -= len;
  }
  // The chunk must end within the last byte, and its padding bits must be zero.
  return p == end && have < 8 && buf == 0;
}

int64_t huffman_decode__ref(const HuffTable& t, const HuffStream& s, uint64_t c0, uint64_t c1, uint8_t* out) {
  for (uint64_t c = c0; c < c1; ++c) {
    const uint64_t s0 = c * s.chunk_symbols, n = std::min(s.chunk_symbols, s.n_symbols - s0);
    if (!decode_chunk_ref(t, s.data + s.offsets[c], s.offsets[c + 1] - s.offsets[c], out + s0, n)) return int64_t(c);
  }
  return -1;
}

int64_t huffman_decode_table__generic(const HuffTable& t, const HuffStream& s, uint64_t c0, uint64_t c1,
                                      uint8_t* out) {
  for (uint64_t c = c0; c < c1; ++c) {
    const uint64_t s0 = c * s.chunk_symbols, n = std::min(s.chunk_symbols, s.n_symbols - s0);
    if (!huff_decode_checked(t, s.data + s.offsets[c], s.offsets[c + 1] - s.offsets[c], 0, out + s0, n))
      return int64_t(c);
  }
  return -1;
}

}  // namespace dcrt

#define DCRT_HUFF_MULTI_NAME huffman_decode_multi__generic
#include "huffman_multi.inl"
