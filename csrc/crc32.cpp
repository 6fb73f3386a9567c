// CRC-32 table forms and the dispatch (the PCLMULQDQ form is in crc32_pclmul.cpp).
#include "crc32.hpp"

#include <cstring>

#include "registry.hpp"

namespace dcrt {
namespace {
struct Tables {
  uint32_t t[8][256];
  Tables() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i)
      for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFF];
  }
};
const Tables& tables() {
  static const Tables tb;
  return tb;
}
}  // namespace

uint32_t crc32_bytewise__ref(const uint8_t* p, size_t n, uint32_t crc) {
  const auto& T = tables().t[0];
  crc = ~crc;
  while (n--) crc = T[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

uint32_t crc32_slice8__generic(const uint8_t* p, size_t n, uint32_t crc) {
  const auto& T = tables().t;
  crc = ~crc;
  while (n >= 8) {
    uint32_t lo, hi;
    std::memcpy(&lo, p, 4);  // little-endian host (checked in format.cpp)
    std::memcpy(&hi, p + 4, 4);
    lo ^= crc;
    crc = T[7][lo & 0xFF] ^ T[6][(lo >> 8) & 0xFF] ^ T[5][(lo >> 16) & 0xFF] ^ T[4][lo >> 24] ^
          T[3][hi & 0xFF] ^ T[2][(hi >> 8) & 0xFF] ^ T[1][(hi >> 16) & 0xFF] ^ T[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n--) crc = T[0][(crc ^ *p++) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

uint32_t crc32(const uint8_t* data, size_t n, uint32_t crc) {
  static const Crc32Fn fn = best_kernel("crc32").crc32;
  return fn(data, n, crc);
}
}  // namespace dcrt
