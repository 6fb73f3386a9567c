// libFuzzer target: the native loader (parse, Huffman decode, layouts) and inference on any
// byte string, built with AddressSanitizer and UBSan (fuzz/build.sh). A FormatError or a
// LimitError is the expected answer to a bad or oversized file; anything else -- a crash, a
// sanitizer report, any other exception, a hang -- is a finding (fuzz/README.md).
//
// The custom mutator aims at fields, not bytes: random bytes almost never survive the CRCs,
// so every mutant gets its checksums (and, mostly, file_size) recomputed, and half of the
// mutations set one integer field of the header, section table, GRAPH header, an op or a
// LAYER header to a boundary value (0, 1, max, 2^31, 2^32-1, 2^28, a neighbour of its value).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "crc32.hpp"
#include "model.hpp"
#include "registry.hpp"

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

namespace {

template <class T>
T rd(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class T>
void wr(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof v);
}

struct Field {
  size_t off;
  unsigned bytes;
};

// Integer fields of the structure as far as it can be followed in `data` (docs/format.md).
std::vector<Field> fields(const uint8_t* d, size_t n) {
  std::vector<Field> f;
  if (n < 64) return f;
  for (size_t o : {8, 10}) f.push_back({o, 2});
  for (size_t o : {12, 36}) f.push_back({o, 4});
  for (size_t o : {16, 24}) f.push_back({o, 8});
  const uint32_t nsec = rd<uint32_t>(d + 12);
  for (uint32_t i = 0; i < nsec && 64 + 32ull * (i + 1) <= n; ++i) {
    const size_t e = 64 + 32ull * i;
    f.push_back({e, 4}); f.push_back({e + 4, 4}); f.push_back({e + 8, 8}); f.push_back({e + 16, 8});
    const uint32_t kind = rd<uint32_t>(d + e);
    const uint64_t off = rd<uint64_t>(d + e + 8), len = rd<uint64_t>(d + e + 16);
    if (off > n || len > n - off) continue;
    if (kind == 1 && len >= 32) {  // GRAPH
      for (unsigned k = 0; k < 8; ++k) f.push_back({off + 4 * k, 4});
      const uint64_t nnorm = rd<uint32_t>(d + off + 24), nops = rd<uint32_t>(d + off);
      for (uint64_t k = 0; k < 2 * nnorm && off + 32 + 4 * (k + 1) <= off + len; ++k) f.push_back({off + 32 + 4 * k, 4});
      const uint64_t base = off + 32 + 8 * nnorm;
      for (uint64_t j = 0; j < nops && base + 40 * (j + 1) <= off + len; ++j) {
        const size_t o = base + 40 * j;
        f.push_back({o, 2}); f.push_back({o + 4, 4});
        for (unsigned k = 0; k < 8; ++k) f.push_back({o + 8 + 4 * k, 4});
      }
    } else if (kind == 3 && len >= 96) {  // LAYER header
      for (unsigned k = 0; k < 6; ++k) f.push_back({off + 4 * k, 4});
      for (unsigned k = 0; k < 4; ++k) f.push_back({off + 24 + k, 1});
      f.push_back({off + 28, 4});
      for (unsigned k = 0; k < 4; ++k) f.push_back({off + 32 + 8 * k, 8});
    }
  }
  return f;
}

uint64_t rng_state = 0x9E3779B97F4A7C15ull;
uint64_t next(unsigned seed_mix) {
  rng_state ^= seed_mix;
  rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
  return rng_state;
}

void set_field(uint8_t* d, const Field& fd, uint64_t r) {
  uint64_t cur = 0;
  std::memcpy(&cur, d + fd.off, fd.bytes);
  const uint64_t max = fd.bytes == 8 ? UINT64_MAX : (uint64_t(1) << (8 * fd.bytes)) - 1;
  const uint64_t vals[] = {0, 1, 2, max, max - 1, uint64_t(1) << 31, (uint64_t(1) << 31) - 4, 0xFFFFFFFFull,
                           0xFFFFFFFEull, uint64_t(1) << 28, (uint64_t(1) << 28) + 1, uint64_t(1) << 30,
                           cur + 1, cur - 1, cur * 2, cur / 2, cur + 64, r >> 16};
  uint64_t v = vals[r % (sizeof vals / sizeof vals[0])] & max;
  std::memcpy(d + fd.off, &v, fd.bytes);
}

// Recompute every CRC the file claims (sections in bounds, table, header); mostly fix file_size.
void fix(uint8_t* d, size_t n, bool fix_size) {
  if (n < 64) return;
  if (fix_size) wr<uint64_t>(d + 16, n);
  const uint32_t nsec = rd<uint32_t>(d + 12);
  if (nsec <= 65536 && 64 + 32ull * nsec <= n) {
    for (uint32_t i = 0; i < nsec; ++i) {
      const size_t e = 64 + 32ull * i;
      const uint64_t off = rd<uint64_t>(d + e + 8), len = rd<uint64_t>(d + e + 16);
      if (off <= n && len <= n - off) wr<uint32_t>(d + e + 24, dcrt::crc32(d + off, len));
    }
    wr<uint32_t>(d + 32, dcrt::crc32(d + 64, 32ull * nsec));
  }
  wr<uint32_t>(d + 60, dcrt::crc32(d, 60));
}

}  // namespace

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned seed) {
  const uint64_t r = next(seed);
  switch (r % 8) {
    case 0: case 1: case 2: case 3: {  // one or two fields to boundary values
      const std::vector<Field> f = fields(data, size);
      if (f.empty()) break;
      set_field(data, f[(r >> 8) % f.size()], next(seed + 1));
      if ((r >> 40) & 1) set_field(data, f[(r >> 20) % f.size()], next(seed + 2));
      fix(data, size, (r >> 48) % 8 != 0);
      return size;
    }
    case 4: case 5: case 6:  // bytes, size kept or shrunk (the structure stays aligned)
      size = LLVMFuzzerMutate(data, size, size);
      fix(data, size, (r >> 48) % 8 != 0);
      return size;
    default:
      break;
  }
  size = LLVMFuzzerMutate(data, size, max_size);
  fix(data, size, (r >> 48) % 4 != 0);
  return size;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The caps a server would set (LoadLimits) keep every accepted file's inference short; a
  // valid file over them is a LimitError, not a finding.
  // Small caps: under ASan+UBSan a multiply-add costs ~20 ns, and slow units starve the search.
  dcrt::LoadLimits lim;
  lim.max_activation = 1 << 16;
  lim.max_work = 1 << 18;
  // One input in 16 (by its bytes, so a reproduction is exact) loads with two threads, the rest
  // with one: every exec otherwise starts and joins a thread, and ASan's thread registry slows
  // to a crawl after a few hundred thousand of them. The pool has its own tests.
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < size; i += 61) h = (h ^ data[i]) * 16777619u;
  const unsigned threads = (h & 15) == 0 ? 2 : 1;
  // One in four with the dense codebook forced in a precision mode (int8, bf16: mode 6, 7), so that the
  // dense layouts and the low-precision kernels see every file too.
  const unsigned mode = (h >> 4) & 7;
  const int dense = mode >= 6 ? 1 : 0;
  const int prec = mode == 6 ? dcrt::kPrecisionInt8 : mode == 7 ? dcrt::kPrecisionBf16 : dcrt::kPrecisionFp32;
  // One in four (other bits) decodes every stream with the 16-lane AVX-512 Huffman decoder where
  // the CPU has it: the timed pick would rarely give it these small streams.
  std::vector<std::pair<std::string, std::string>> kernels;
  static const dcrt::KernelInfo* lanes = dcrt::find_kernel("huffman_decode_lanes__avx512vbmi");
  if (((h >> 8) & 3) == 0 && lanes && (!lanes->supported || lanes->supported()))
    kernels.emplace_back("huffman", lanes->name);
  try {
    dcrt::Model m(data, size, threads, lim, true, kernels, dense, prec);
    const size_t in = m.input_shape().numel(), out = m.output_shape().numel();
    std::vector<float> x(2 * in), y(2 * out);
    for (size_t i = 0; i < x.size(); ++i) x[i] = float(int(i * 2654435761u % 2001) - 1000) * 1e-3f;
    m.infer(x.data(), 1, y.data());
    m.infer(x.data(), 2, y.data());
  } catch (const dcrt::FormatError&) {
  } catch (const dcrt::LimitError&) {
  }
  return 0;
}
