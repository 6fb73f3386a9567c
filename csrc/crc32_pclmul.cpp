// CRC-32 by carry-less multiply folding (compiled with -mpclmul -msse4.1; run only where
// cpu_has_pclmul). The reflected CRC register after a message M (initial value 0) is
// M(x) * x^32 mod P(x); folding a 128-bit block A over the distance d to the block B after it
// replaces A||B by (A * x^d mod P) xor B, a message of the same length that is congruent to
// the original, so it has the same CRC. Four lanes fold over 512 bits per step, are combined
// over 128 bits, and the last 16 folded bytes plus the tail go through the table form.
#include <immintrin.h>

#include <cstring>

#include "crc32.hpp"

namespace dcrt {
namespace {
// One fold: the low 64 bits times k.lo, the high 64 bits times k.hi. The constants are
// x^(d+32) mod P and x^(d-32) mod P, bit-reflected, for the distances d = 512 and 128 (Intel,
// "Fast CRC Computation for Generic Polynomials Using PCLMULQDQ").
inline __m128i fold(__m128i a, __m128i k) {
  return _mm_xor_si128(_mm_clmulepi64_si128(a, k, 0x00), _mm_clmulepi64_si128(a, k, 0x11));
}
inline __m128i load(const uint8_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }
}  // namespace

uint32_t crc32_fold__pclmul(const uint8_t* p, size_t n, uint32_t crc) {
  if (n < 64) return crc32_slice8__generic(p, n, crc);
  const __m128i k512 = _mm_set_epi64x(0x1c6e41596ll, 0x154442bd4ll);  // fold over 512 bits
  const __m128i k128 = _mm_set_epi64x(0x0ccaa009ell, 0x1751997d0ll);  // fold over 128 bits
  // The initial register (zlib's pre-inverted value) enters as the first 32 message bits.
  __m128i x0 = _mm_xor_si128(load(p), _mm_cvtsi32_si128(int(~crc)));
  __m128i x1 = load(p + 16), x2 = load(p + 32), x3 = load(p + 48);
  p += 64;
  n -= 64;
  for (; n >= 64; p += 64, n -= 64) {
    x0 = _mm_xor_si128(fold(x0, k512), load(p));
    x1 = _mm_xor_si128(fold(x1, k512), load(p + 16));
    x2 = _mm_xor_si128(fold(x2, k512), load(p + 32));
    x3 = _mm_xor_si128(fold(x3, k512), load(p + 48));
  }
  __m128i x = _mm_xor_si128(fold(x0, k128), x1);
  x = _mm_xor_si128(fold(x, k128), x2);
  x = _mm_xor_si128(fold(x, k128), x3);
  for (; n >= 16; p += 16, n -= 16) x = _mm_xor_si128(fold(x, k128), load(p));
  // What is left is a message of 16 + n bytes with the original's CRC, the register already
  // folded in: its CRC from a zero register (zlib form: initial ~0u inverted back to 0).
  alignas(16) uint8_t last[16 + 16];
  _mm_store_si128(reinterpret_cast<__m128i*>(last), x);
  std::memcpy(last + 16, p, n);
  return crc32_slice8__generic(last, 16 + n, 0xFFFFFFFFu);
}

bool cpu_has_pclmul() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
}
}  // namespace dcrt
