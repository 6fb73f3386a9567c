// Huffman decoding of 16 chunks per register, in lockstep (AVX-512 F/BW + VBMI).
//
// The scalar decoders (huffman_multi.inl) follow each chunk's chain window -> table load ->
// shift one lookup at a time, six chunks interleaved. Here each 64-bit lane of a register holds
// one chunk's window: a step decodes one symbol in each of 16 chunks (two vpgatherqq from a
// 2^max_len table of `symbol | length << 8`, two variable shifts), and kGroups such registers'
// chains interleave, so the gathers' latency is hidden behind each other. Every lane writes
// exactly one symbol per step, so there is no variable-length store: the symbols of a block of
// steps are staged [step][lane] (vpmovqb) and transposed to [lane][step] 16 x 16 bytes at a
// time by vpermt2b (VBMI) before one 16-byte store per chunk.
//
// A round refills every lane's window from its chunk (one 8-byte gather per lane, only where the
// load ends inside the chunk) and then takes K = 57 / max_len steps from it. The vector loop
// stops at the first round where some lane's load would leave its chunk, or when a block would
// write past the shortest chunk's symbols; each chunk is then finished from where it stopped by
// the checked single-symbol decoder, which also validates its end (format.md §5.2). Incomplete
// codes (where a bit pattern may be invalid) and chunks left over after whole groups of 16 go to
// huffman_decode_multi__bmi2.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "huffman.hpp"

namespace dcrt {
namespace {

constexpr int kGroups = 3;     // registers of 16 chunks whose chains interleave
constexpr int kMaxK = 8;       // steps per refill at most (K = 57 / max_len, capped)
constexpr int kRounds = 16;    // rounds per block: a block is 16 * K steps, whole 16-step tiles

// The [lane][step] transpose of one 16-step tile of the stage ([step][16 lanes] bytes).
struct TileIdx {
  __m512i first, second;
  TileIdx() {
    alignas(64) uint8_t a[64], b[64];
    for (int l = 0; l < 8; ++l)
      for (int s = 0; s < 8; ++s) a[l * 8 + s] = uint8_t((s / 4) * 64 + (s % 4) * 16 + l);
    for (int l = 0; l < 4; ++l)
      for (int s = 0; s < 16; ++s) b[l * 16 + s] = uint8_t(s < 8 ? l * 8 + s : 64 + l * 8 + (s - 8));
    first = _mm512_load_si512(a);
    second = _mm512_load_si512(b);
  }
};

// Lanes' rows of the transposed block: kRow bytes apart.
constexpr int kRow = kRounds * kMaxK;

inline void store_lanes4(__m512i v, uint8_t* o, uint64_t at) {
  _mm_store_si128(reinterpret_cast<__m128i*>(o + at), _mm512_castsi512_si128(v));
  _mm_store_si128(reinterpret_cast<__m128i*>(o + kRow + at), _mm512_extracti32x4_epi32(v, 1));
  _mm_store_si128(reinterpret_cast<__m128i*>(o + 2 * kRow + at), _mm512_extracti32x4_epi32(v, 2));
  _mm_store_si128(reinterpret_cast<__m128i*>(o + 3 * kRow + at), _mm512_extracti32x4_epi32(v, 3));
}

// Stage tile (16 steps x 16 lanes, step-major) -> 16 bytes per lane at o + lane * kRow + at.
inline void write_tile(const uint8_t* st, uint8_t* o, uint64_t at, const TileIdx& ix) {
  const __m512i z0 = _mm512_load_si512(st), z1 = _mm512_load_si512(st + 64);
  const __m512i z2 = _mm512_load_si512(st + 128), z3 = _mm512_load_si512(st + 192);
  const __m512i eight = _mm512_set1_epi8(8), tt = _mm512_set1_epi8(32);
  const __m512i i1b = _mm512_add_epi8(ix.first, eight);
  const __m512i p = _mm512_permutex2var_epi8(z0, ix.first, z1);   // lanes 0-7, steps 0-7
  const __m512i q = _mm512_permutex2var_epi8(z0, i1b, z1);        // lanes 8-15, steps 0-7
  const __m512i p2 = _mm512_permutex2var_epi8(z2, ix.first, z3);  // lanes 0-7, steps 8-15
  const __m512i q2 = _mm512_permutex2var_epi8(z2, i1b, z3);       // lanes 8-15, steps 8-15
  const __m512i i2b = _mm512_add_epi8(ix.second, tt);
  store_lanes4(_mm512_permutex2var_epi8(p, ix.second, p2), o, at);
  store_lanes4(_mm512_permutex2var_epi8(p, i2b, p2), o + 4 * kRow, at);
  store_lanes4(_mm512_permutex2var_epi8(q, ix.second, q2), o + 8 * kRow, at);
  store_lanes4(_mm512_permutex2var_epi8(q, i2b, q2), o + 12 * kRow, at);
}

// Chunks [c0, c0 + 16 G) of s. Returns the lowest corrupt chunk, or -1.
template <int G>
int64_t decode_groups(const HuffTable& t, const uint32_t* tab, const HuffStream& s, uint64_t c0, uint8_t* out,
                      const TileIdx& ix) {
  const int L = t.max_len;
  const int K = std::min(kMaxK, 57 / L);
  alignas(64) int64_t base[G][16], bits[G][16], lim[G][16];
  uint8_t* o[G][16];
  uint64_t n[G][16];
  uint64_t least = ~uint64_t(0);
  for (int g = 0; g < G; ++g)
    for (int l = 0; l < 16; ++l) {
      const uint64_t c = c0 + uint64_t(16 * g + l);
      const uint64_t s0 = c * s.chunk_symbols;
      n[g][l] = std::min(s.chunk_symbols, s.n_symbols - s0);
      least = std::min(least, n[g][l]);
      const int64_t bytes = int64_t(s.offsets[c + 1]) - int64_t(s.offsets[c]);
      base[g][l] = int64_t(s.offsets[c]);
      bits[g][l] = 0;
      lim[g][l] = bytes * 8 - 64;  // an 8-byte load at bit position <= lim ends inside the chunk
      o[g][l] = out + s0;
    }
  __m512i bp[G][2], w[G][2];
  for (int g = 0; g < G; ++g)
    for (int h = 0; h < 2; ++h) bp[g][h] = _mm512_setzero_si512();
  const __m512i bswap = _mm512_set_epi8(56, 57, 58, 59, 60, 61, 62, 63, 48, 49, 50, 51, 52, 53, 54, 55, 40, 41, 42, 43,
                                        44, 45, 46, 47, 32, 33, 34, 35, 36, 37, 38, 39, 24, 25, 26, 27, 28, 29, 30, 31,
                                        16, 17, 18, 19, 20, 21, 22, 23, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5,
                                        6, 7);
  const __m512i seven = _mm512_set1_epi64(7);
  const __m128i top = _mm_cvtsi32_si128(64 - L);
  alignas(64) uint8_t stage[G][kRounds * kMaxK][16];
  alignas(64) uint8_t rows[16][kRow];  // one group's block as [lane][step]: each chunk's output
                                       // then written in one go (the chunks' outputs are often
                                       // 4 KiB apart: 48 lanes storing 16 bytes at a time into
                                       // one L1 set evicted each other's lines)
  uint64_t done = 0;  // symbols every lane has written
  for (;;) {
    const uint64_t rmax = std::min<uint64_t>(kRounds, (least - done) / uint64_t(K));
    uint64_t r = 0;
    for (; r < rmax; ++r) {
      __mmask8 out_of_chunk = 0;
      for (int g = 0; g < G; ++g)
        for (int h = 0; h < 2; ++h)
          out_of_chunk |= _mm512_cmpgt_epi64_mask(bp[g][h], _mm512_load_si512(&lim[g][8 * h]));
      if (out_of_chunk) break;
      for (int g = 0; g < G; ++g)
        for (int h = 0; h < 2; ++h) {
          const __m512i at = _mm512_add_epi64(_mm512_load_si512(&base[g][8 * h]), _mm512_srli_epi64(bp[g][h], 3));
          const __m512i v = _mm512_shuffle_epi8(_mm512_i64gather_epi64(at, s.data, 1), bswap);
          w[g][h] = _mm512_sllv_epi64(v, _mm512_and_si512(bp[g][h], seven));
        }
      for (int k = 0; k < K; ++k) {
        const uint64_t step = r * uint64_t(K) + uint64_t(k);
        for (int g = 0; g < G; ++g) {
          const __m512i idx = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi64_epi32(_mm512_srl_epi64(w[g][0], top))),
                                                 _mm512_cvtepi64_epi32(_mm512_srl_epi64(w[g][1], top)), 1);
          const __m512i e = _mm512_i32gather_epi32(idx, tab, 4);
          const __m512i len = _mm512_srli_epi32(e, 8);
          const __m512i la = _mm512_cvtepu32_epi64(_mm512_castsi512_si256(len));
          const __m512i lb = _mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(len, 1));
          w[g][0] = _mm512_sllv_epi64(w[g][0], la);
          w[g][1] = _mm512_sllv_epi64(w[g][1], lb);
          bp[g][0] = _mm512_add_epi64(bp[g][0], la);
          bp[g][1] = _mm512_add_epi64(bp[g][1], lb);
          _mm_storeu_si128(reinterpret_cast<__m128i*>(&stage[g][step][0]), _mm512_cvtepi32_epi8(e));
        }
      }
    }
    const uint64_t steps = r * uint64_t(K);
    for (int g = 0; g < G; ++g) {
      if (r == kRounds) {
        for (int j = 0; j < K; ++j) write_tile(&stage[g][16 * j][0], &rows[0][0], uint64_t(16 * j), ix);
        const __mmask64 m0 = steps >= 64 ? ~__mmask64(0) : (__mmask64(1) << steps) - 1;
        const __mmask64 m1 = steps > 64 ? (steps >= 128 ? ~__mmask64(0) : (__mmask64(1) << (steps - 64)) - 1) : 0;
        for (int l = 0; l < 16; ++l) {
          _mm512_mask_storeu_epi8(o[g][l] + done, m0, _mm512_load_si512(&rows[l][0]));
          if (m1) _mm512_mask_storeu_epi8(o[g][l] + done + 64, m1, _mm512_load_si512(&rows[l][64]));
        }
      } else {
        for (int l = 0; l < 16; ++l)
          for (uint64_t i = 0; i < steps; ++i) o[g][l][done + i] = stage[g][i][l];
      }
    }
    done += steps;
    if (r < kRounds) break;
  }
  for (int g = 0; g < G; ++g)
    for (int h = 0; h < 2; ++h) _mm512_store_si512(&bits[g][8 * h], bp[g][h]);
  int64_t bad = -1;
  for (int g = 0; g < G; ++g)
    for (int l = 0; l < 16; ++l) {
      const uint64_t c = c0 + uint64_t(16 * g + l);
      if (!huff_decode_checked(t, s.data + base[g][l], s.offsets[c + 1] - s.offsets[c], uint64_t(bits[g][l]),
                               o[g][l] + done, n[g][l] - done) &&
          bad < 0)
        bad = int64_t(c);
    }
  return bad;
}

}  // namespace

int64_t huffman_decode_lanes__avx512vbmi(const HuffTable& t, const HuffStream& s, uint64_t c0, uint64_t c1,
                                         uint8_t* out) {
  if (!t.complete || c1 - c0 < 16) return huffman_decode_multi__bmi2(t, s, c0, c1, out);
  const int L = t.max_len;
  thread_local std::vector<uint32_t> tab;
  tab.resize(size_t(1) << L);
  for (size_t v = 0; v < tab.size(); ++v) {
    const uint16_t e = t.peek[v];
    tab[v] = uint32_t(e >> 4) | uint32_t(e & 15) << 8;
  }
  static const TileIdx ix;
  uint64_t c = c0;
  for (; c + 16 * kGroups <= c1; c += 16 * kGroups) {
    const int64_t bad = decode_groups<kGroups>(t, tab.data(), s, c, out, ix);
    if (bad >= 0) return bad;
  }
  for (; c + 16 <= c1; c += 16) {
    const int64_t bad = decode_groups<1>(t, tab.data(), s, c, out, ix);
    if (bad >= 0) return bad;
  }
  return c < c1 ? huffman_decode_multi__bmi2(t, s, c, c1, out) : -1;
}

bool cpu_has_avx512_vbmi() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("bmi2");
#else
  return false;
#endif
}

}  // namespace dcrt
