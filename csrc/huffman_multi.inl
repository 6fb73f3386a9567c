// Multi-symbol, 6-way interleaved Huffman decoder. Included once per ISA build with
// DCRT_HUFF_MULTI_NAME set to the public name (huffman.cpp: generic; huffman_bmi2.cpp: BMI2,
// where the variable shifts become single-uop SHLX/SHRX).
//
// Each lookup of HuffTable::multi (TB-bit window) yields up to 3 symbols, written as one
// 4-byte store, and the bits it consumed in the entry's low 6 bits, so the window shift
// (SHLX reads only those) follows the table load directly. Six chunks decode interleaved
// (their chains of window -> table load -> shift are independent), K = 57 / TB lookups
// per 8-byte reload. The fast loop runs only
// where its reloads stay inside the chunk and its stores inside the chunk's output, so it
// needs no checks; the checked single-symbol decoder finishes each chunk from where the
// fast loop stopped and validates its end (format.md §5.2). Codes with one symbol (where a
// bit pattern may be invalid) go to the checked decoder whole.
#include <algorithm>
#include <cstring>

#ifndef DCRT_HUFF_MULTI_NAME
#error "define DCRT_HUFF_MULTI_NAME before including huffman_multi.inl"
#endif

namespace dcrt {
namespace {

// Chunks decoded interleaved: 4 leave the lookup chains exposed, 8 spill (measured on Zen 3).
constexpr int NL = 6;

struct HuffLane {
  const uint8_t* src;
  uint64_t bytes;  // chunk length
  uint64_t bp;     // bits consumed
  uint8_t* out;    // next symbol
  uint8_t* end;    // end of this chunk's symbols
};

// Iterations of K lookups that lane `l` can run without a check: every 8-byte load at
// byte (bp >> 3) must end inside the chunk (an iteration consumes <= K*TB bits) and every
// 4-byte store must end inside the chunk's output (an iteration writes <= 3K symbols).
template <int K>
inline uint64_t safe_iters(const HuffLane& l, int TB) {
  if (l.bytes < 8) return 0;
  const uint64_t last_bit = (l.bytes - 8) * 8 + 7;  // loads may start at any bit <= this
  if (l.bp > last_bit) return 0;
  const uint64_t by_bits = (last_bit - l.bp) / uint64_t(K * TB) + 1;
  const uint64_t left = uint64_t(l.end - l.out);
  if (left < 3 * K + 1) return 0;
  const uint64_t by_out = (left - 3 * K - 1) / (3 * K) + 1;
  return std::min(by_bits, by_out);
}

// The window keeps a sentinel bit below its data: after a reload it holds 57 data bits
// [7, 63] and the sentinel at bit 6, so once the lookups have shifted it left by s bits,
// tzcnt(w) = 6 + s. The bit position is then needed only at the reload, which keeps two
// registers per lane (window, output) in the inner loop.
constexpr uint64_t kSentinel = 0x40;

template <int K, int NS>
void run_lanes(const uint32_t* __restrict tab, int TB, HuffLane* ln) {
  const int shift = 64 - TB;
  for (;;) {
    uint64_t iters = ~uint64_t(0);
    for (int s = 0; s < NS; ++s) iters = std::min(iters, safe_iters<K>(ln[s], TB));
    if (iters == 0) return;
    uint64_t w[NS];
    uint8_t* o[NS];
    for (int s = 0; s < NS; ++s) {
      w[s] = kSentinel;
      o[s] = ln[s].out;
    }
    for (uint64_t it = 0; it < iters; ++it) {
      for (int s = 0; s < NS; ++s) {
        const uint64_t bp = ln[s].bp + uint64_t(__builtin_ctzll(w[s]) - 6);
        ln[s].bp = bp;
        uint64_t v;
        std::memcpy(&v, ln[s].src + (bp >> 3), 8);
        w[s] = ((__builtin_bswap64(v) << (bp & 7)) & ~uint64_t(0x7f)) | kSentinel;
      }
      for (int k = 0; k < K; ++k)
        for (int s = 0; s < NS; ++s) {
          const uint32_t e = tab[w[s] >> shift];
          const uint32_t syms = e >> 8;
          std::memcpy(o[s], &syms, 4);
          o[s] += (e >> 6) & 3;
          w[s] <<= e & 63;  // SHLX reads the low 6 bits: the length, straight from the load
        }
    }
    for (int s = 0; s < NS; ++s) {
      ln[s].bp += uint64_t(__builtin_ctzll(w[s]) - 6);
      ln[s].out = o[s];
    }
  }
}

template <int K>
int64_t decode_multi(const HuffTable& t, const HuffStream& s, uint64_t c0, uint64_t c1, uint8_t* out) {
  const uint32_t* tab = t.multi.data();
  const int TB = t.multi_bits;
  auto lane = [&](uint64_t c) {
    const uint64_t s0 = c * s.chunk_symbols, n = std::min(s.chunk_symbols, s.n_symbols - s0);
    return HuffLane{s.data + s.offsets[c], uint64_t(s.offsets[c + 1] - s.offsets[c]), 0, out + s0, out + s0 + n};
  };
  int64_t bad = -1;
  auto finish = [&](uint64_t c, HuffLane& l) {
    run_lanes<K, 1>(tab, TB, &l);  // a lane that outlasted its group goes on alone
    if (!huff_decode_checked(t, l.src, l.bytes, l.bp, l.out, size_t(l.end - l.out)) && bad < 0) bad = int64_t(c);
  };
  uint64_t c = c0;
  for (; c + NL <= c1; c += NL) {
    HuffLane ln[NL];
    for (int i = 0; i < NL; ++i) ln[i] = lane(c + i);
    run_lanes<K, NL>(tab, TB, ln);
    for (int i = 0; i < NL; ++i) finish(c + i, ln[i]);
    if (bad >= 0) return bad;
  }
  for (; c < c1; ++c) {
    HuffLane l = lane(c);
    finish(c, l);
    if (bad >= 0) return bad;
  }
  return -1;
}

}  // namespace

int64_t DCRT_HUFF_MULTI_NAME(const HuffTable& t, const HuffStream& s, uint64_t c0, uint64_t c1, uint8_t* out) {
  if (!t.complete) return huffman_decode_table__generic(t, s, c0, c1, out);
  static_assert(kHuffMultiBits >= 12, "K = 57 / TB below assumes TB >= 12");
  // Lookups per 8-byte reload, K * TB <= 57: TB 12..14 -> 4, 15 -> 3.
  return t.multi_bits <= 14 ? decode_multi<4>(t, s, c0, c1, out) : decode_multi<3>(t, s, c0, c1, out);
}

}  // namespace dcrt

#undef DCRT_HUFF_MULTI_NAME
