// CRC-32 (ISO-HDLC, as zlib.crc32) for .dcz section checksums (format.md §1). Every section is
// checked on every load, so the checksum runs at memory speed where the CPU can: carry-less
// multiply folding (PCLMULQDQ), with the table forms as its reference twins (registry "crc32").
#pragma once
#include <cstddef>
#include <cstdint>

namespace dcrt {
using Crc32Fn = uint32_t (*)(const uint8_t* data, size_t n, uint32_t crc);

// The runtime's pick (the fastest registered variant this CPU runs), as zlib.crc32(data, crc).
uint32_t crc32(const uint8_t* data, size_t n, uint32_t crc = 0);

uint32_t crc32_bytewise__ref(const uint8_t* data, size_t n, uint32_t crc);  // one table step per byte
uint32_t crc32_slice8__generic(const uint8_t* data, size_t n, uint32_t crc);  // slicing-by-8
#if DCRT_HAVE_AVX2
// Folds 64 bytes per step with carry-less multiplies; inputs under 64 bytes and the final 16
// bytes plus tail go through the slicing-by-8 form (the folded value is a message with the same
// CRC, so no Barrett reduction is needed).
uint32_t crc32_fold__pclmul(const uint8_t* data, size_t n, uint32_t crc);
bool cpu_has_pclmul();
#endif
}  // namespace dcrt
