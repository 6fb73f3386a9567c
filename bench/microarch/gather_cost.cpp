// What an AVX-512 gather costs on this CPU (issue 15): throughput and latency of vpgatherdd
// (16 dwords) and vpgatherqq (8 qwords) from an L1-resident 8 KiB table, one thread. The
// AVX-512 batch-1 row form (one vgatherdps per 16 non-zeros) and the 16-lane Huffman decoder
// (one vpgatherdd per 16 symbols) are bound by it where it is slow; the runtime times them
// against the BMI2 kernels at load and keeps the faster (README, "Kernel names").
//
//   g++ -O2 -mavx512f -mavx512bw bench/microarch/gather_cost.cpp -o /tmp/gather_cost && /tmp/gather_cost
#include <immintrin.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <vector>

namespace {
using clk = std::chrono::steady_clock;
double since(clk::time_point t0) { return std::chrono::duration<double>(clk::now() - t0).count(); }

// Cycles per second from a chain of dependent adds (one per cycle on every x86 core here).
double clock_hz() {
  uint64_t v = 1;
  const uint64_t n = 400'000'000;
  const auto t0 = clk::now();
  for (uint64_t i = 0; i < n; ++i) asm volatile("add $1, %0" : "+r"(v));
  return double(n) / since(t0);
}
}  // namespace

int main() {
  std::vector<uint32_t> tab(2048);
  for (uint32_t i = 0; i < tab.size(); ++i) tab[i] = (i * 2654435761u) >> 21;  // < 2048
  const double hz = clock_hz();
  const int n = 1 << 22;
  std::printf("clock (dependent adds)        %.2f GHz\n", hz / 1e9);
  for (int rep = 0; rep < 3; ++rep) {
    // Throughput: the indices do not depend on earlier gathers.
    __m512i idx = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    __m512i acc = _mm512_setzero_si512();
    const __m512i step = _mm512_set1_epi32(17), mask = _mm512_set1_epi32(2047);
    auto t0 = clk::now();
    for (int i = 0; i < n; ++i) {
      idx = _mm512_and_si512(_mm512_add_epi32(idx, step), mask);
      acc = _mm512_add_epi32(acc, _mm512_i32gather_epi32(idx, tab.data(), 4));
    }
    const double dd = since(t0) / n;
    // Latency: each gather's indices are the previous gather's result.
    __m512i chain = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    t0 = clk::now();
    for (int i = 0; i < n / 4; ++i) chain = _mm512_and_si512(_mm512_i32gather_epi32(chain, tab.data(), 4), mask);
    const double lat = since(t0) / (n / 4);
    __m512i q = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0), qacc = _mm512_setzero_si512();
    const __m512i qstep = _mm512_set1_epi64(17), qmask = _mm512_set1_epi64(1023);
    t0 = clk::now();
    for (int i = 0; i < n; ++i) {
      q = _mm512_and_si512(_mm512_add_epi64(q, qstep), qmask);
      qacc = _mm512_add_epi64(qacc, _mm512_i64gather_epi64(q, tab.data(), 8));
    }
    const double qq = since(t0) / n;
    std::printf("vpgatherdd zmm  %5.1f cycles per 16 (%.2f per element), latency %5.1f cycles\n", dd * hz, dd * hz / 16,
                lat * hz);
    std::printf("vpgatherqq zmm  %5.1f cycles per 8  (%.2f per element)   [checksum %d]\n", qq * hz, qq * hz / 8,
                _mm512_reduce_add_epi32(acc) ^ _mm512_reduce_add_epi32(chain) ^ int(_mm512_reduce_add_epi64(qacc)));
  }
}
