// CRC-32 (ISO-HDLC, as zlib.crc32) for .dcz section checksums (format.md §1).
#pragma once
#include <cstddef>
#include <cstdint>

namespace dcrt {
uint32_t crc32(const uint8_t* data, size_t n, uint32_t crc = 0);
}
