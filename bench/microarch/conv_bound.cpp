// What bounds the sparse direct convolution's inner loop on this CPU (issue 15): throughput of
// FMAs with register operands, of 512-bit loads, of FMAs that take one operand from memory,
// and of the conv kernel's own loop shape (conv_rows.inl: per stored tap one codebook broadcast,
// one offset lookup, eight row loads, eight FMAs) against a register-reuse shape (four output
// channels share each loaded row: six loads, four broadcasts, 24 FMAs). All in L1, one thread.
//
//   g++ -O2 -mavx512f -mfma bench/microarch/conv_bound.cpp -o /tmp/conv_bound && /tmp/conv_bound
//
// Accumulators are named variables, not arrays: GCC keeps a __m512 array in memory and
// chains every FMA through store forwarding, which measures the wrong thing.
#include <immintrin.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

namespace {
using clk = std::chrono::steady_clock;
double since(clk::time_point t0) { return std::chrono::duration<double>(clk::now() - t0).count(); }
float sink(__m512 v) { return _mm512_reduce_add_ps(v); }

double ghz() {  // dependent integer adds: one per cycle
  const long n = 400000000;
  long x = 0;
  const auto t0 = clk::now();
  for (long i = 0; i < n; ++i) asm volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0" : "+r"(x));
  return 4.0 * n / since(t0) / 1e9;
}

#define Z8 __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0
#define SUM8 _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)), _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)))

double fma_reg() {  // 8 independent accumulate chains, register operands
  const long n = 100000000;
  Z8;
  __m512 m = _mm512_set1_ps(0.999f), x = _mm512_set1_ps(1.f);
  const auto t0 = clk::now();
  for (long i = 0; i < n; ++i) {
    asm volatile("" : "+v"(x));
    a0 = _mm512_fmadd_ps(m, x, a0); a1 = _mm512_fmadd_ps(m, x, a1); a2 = _mm512_fmadd_ps(m, x, a2); a3 = _mm512_fmadd_ps(m, x, a3);
    a4 = _mm512_fmadd_ps(m, x, a4); a5 = _mm512_fmadd_ps(m, x, a5); a6 = _mm512_fmadd_ps(m, x, a6); a7 = _mm512_fmadd_ps(m, x, a7);
  }
  const double s = since(t0);
  std::printf("%s", sink(SUM8) == 1.f ? " " : "");
  return 8.0 * n / s / 1e9;
}

double loads(const float* p, int off) {  // 512-bit loads summed into 8 chains (FADD); off 0: aligned
  const long n = 100000000;
  Z8;
  const auto t0 = clk::now();
  for (long i = 0; i < n; ++i) {
    const float* q = p + (i & 31) * 16 + off;
    a0 = _mm512_add_ps(a0, _mm512_loadu_ps(q)); a1 = _mm512_add_ps(a1, _mm512_loadu_ps(q + 512));
    a2 = _mm512_add_ps(a2, _mm512_loadu_ps(q + 1024)); a3 = _mm512_add_ps(a3, _mm512_loadu_ps(q + 1536));
    a4 = _mm512_add_ps(a4, _mm512_loadu_ps(q + 2048)); a5 = _mm512_add_ps(a5, _mm512_loadu_ps(q + 2560));
    a6 = _mm512_add_ps(a6, _mm512_loadu_ps(q + 3072)); a7 = _mm512_add_ps(a7, _mm512_loadu_ps(q + 3584));
  }
  const double s = since(t0);
  std::printf("%s", sink(SUM8) == 1.f ? " " : "");
  return 8.0 * n / s / 1e9;
}

double fma_mem(const float* p, int off) {  // FMAs with one memory operand, 8 chains
  const long n = 100000000;
  Z8;
  const __m512 m = _mm512_set1_ps(0.999f);
  const auto t0 = clk::now();
  for (long i = 0; i < n; ++i) {
    const float* q = p + (i & 31) * 16 + off;
    a0 = _mm512_fmadd_ps(m, _mm512_loadu_ps(q), a0); a1 = _mm512_fmadd_ps(m, _mm512_loadu_ps(q + 512), a1);
    a2 = _mm512_fmadd_ps(m, _mm512_loadu_ps(q + 1024), a2); a3 = _mm512_fmadd_ps(m, _mm512_loadu_ps(q + 1536), a3);
    a4 = _mm512_fmadd_ps(m, _mm512_loadu_ps(q + 2048), a4); a5 = _mm512_fmadd_ps(m, _mm512_loadu_ps(q + 2560), a5);
    a6 = _mm512_fmadd_ps(m, _mm512_loadu_ps(q + 3072), a6); a7 = _mm512_fmadd_ps(m, _mm512_loadu_ps(q + 3584), a7);
  }
  const double s = since(t0);
  std::printf("%s", sink(SUM8) == 1.f ? " " : "");
  return 8.0 * n / s / 1e9;
}

struct Taps {  // 16 input channels x 3x3 taps of a 56x56 map (58 padded), random stored taps
  size_t wq = 58, plane = 58 * 58;
  std::vector<float> x, cb, w4;
  std::vector<int64_t> coloff;
  std::vector<uint32_t> ent;
  Taps() : x(16 * plane + 4096, 1.f), cb(32, 0.5f), w4(4 * 4096, 0.5f), coloff(16 * 9), ent(4096) {
    std::mt19937 g(1);
    for (size_t c = 0; c < 16; ++c)
      for (int t = 0; t < 9; ++t) coloff[c * 9 + t] = int64_t(c * plane + (t / 3) * wq + (t % 3));
    for (auto& e : ent) e = uint32_t((g() % (16 * 9)) << 8 | (g() % 31 + 1));
  }
};

__attribute__((noinline)) __m512 conv_loop(const Taps& t) {  // the shape of conv_block<8>
  Z8;
  const float* xb = t.x.data();
  const size_t rs = t.wq;
  for (const uint32_t e : t.ent) {
    const __m512 v = _mm512_set1_ps(t.cb[e & 31]);
    const float* xp = xb + t.coloff[e >> 8];
    a0 = _mm512_fmadd_ps(v, _mm512_loadu_ps(xp), a0); a1 = _mm512_fmadd_ps(v, _mm512_loadu_ps(xp + rs), a1);
    a2 = _mm512_fmadd_ps(v, _mm512_loadu_ps(xp + 2 * rs), a2); a3 = _mm512_fmadd_ps(v, _mm512_loadu_ps(xp + 3 * rs), a3);
    a4 = _mm512_fmadd_ps(v, _mm512_loadu_ps(xp + 4 * rs), a4); a5 = _mm512_fmadd_ps(v, _mm512_loadu_ps(xp + 5 * rs), a5);
    a6 = _mm512_fmadd_ps(v, _mm512_loadu_ps(xp + 6 * rs), a6); a7 = _mm512_fmadd_ps(v, _mm512_loadu_ps(xp + 7 * rs), a7);
  }
  return SUM8;
}

__attribute__((noinline)) __m512 reuse4_loop(const Taps& t) {  // 4 channels x 6 rows per loaded row
  const __m512 z = _mm512_setzero_ps();
  __m512 a0 = z, a1 = z, a2 = z, a3 = z, a4 = z, a5 = z, b0 = z, b1 = z, b2 = z, b3 = z, b4 = z, b5 = z;
  __m512 c0 = z, c1 = z, c2 = z, c3 = z, c4 = z, c5 = z, d0 = z, d1 = z, d2 = z, d3 = z, d4 = z, d5 = z;
  const float* xb = t.x.data();
  const float* w = t.w4.data();
  const size_t rs = t.wq;
  for (const uint32_t e : t.ent) {
    const __m512 p = _mm512_set1_ps(w[0]), q = _mm512_set1_ps(w[1]), r = _mm512_set1_ps(w[2]), s = _mm512_set1_ps(w[3]);
    w += 4;
    const float* xp = xb + t.coloff[e >> 8];
    __m512 x;
#define ROW(i, A, B, C, D)                                                                                        \
  x = _mm512_loadu_ps(xp + (i) * rs);                                                                             \
  A = _mm512_fmadd_ps(p, x, A); B = _mm512_fmadd_ps(q, x, B); C = _mm512_fmadd_ps(r, x, C); D = _mm512_fmadd_ps(s, x, D);
    ROW(0, a0, b0, c0, d0) ROW(1, a1, b1, c1, d1) ROW(2, a2, b2, c2, d2)
    ROW(3, a3, b3, c3, d3) ROW(4, a4, b4, c4, d4) ROW(5, a5, b5, c5, d5)
#undef ROW
  }
  const __m512 sa = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)), _mm512_add_ps(a4, a5));
  const __m512 sb = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(b0, b1), _mm512_add_ps(b2, b3)), _mm512_add_ps(b4, b5));
  const __m512 sc = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c0, c1), _mm512_add_ps(c2, c3)), _mm512_add_ps(c4, c5));
  const __m512 sd = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(d0, d1), _mm512_add_ps(d2, d3)), _mm512_add_ps(d4, d5));
  return _mm512_add_ps(_mm512_add_ps(sa, sb), _mm512_add_ps(sc, sd));
}

template <class F>
double taps_per_s(F&& f, const Taps& t) {
  const int reps = 20000;
  float s = 0;
  const auto t0 = clk::now();
  for (int r = 0; r < reps; ++r) s += sink(f(t));
  const double sec = since(t0);
  std::printf("%s", s == 1.f ? " " : "");
  return double(reps) * t.ent.size() / sec;
}
}  // namespace

int main() {
  alignas(64) static float buf[8192];
  for (auto& v : buf) v = 1.f;
  const Taps t;
  const double f = ghz();
  const double reg = fma_reg(), lda = loads(buf, 0), ld = loads(buf, 1), mema = fma_mem(buf, 0), mem = fma_mem(buf, 1);
  const double conv = taps_per_s(conv_loop, t), reuse = taps_per_s(reuse4_loop, t);
  std::printf("\nclock (dependent adds)             %6.2f GHz\n", f);
  std::printf("FMA, register operands, 8 chains   %6.2f G/s  %.2f per cycle\n", reg, reg / f);
  std::printf("512-bit loads, aligned             %6.2f G/s  %.2f per cycle\n", lda, lda / f);
  std::printf("512-bit loads, off by one float    %6.2f G/s  %.2f per cycle\n", ld, ld / f);
  std::printf("FMA with a memory operand, aligned %6.2f G/s  %.2f per cycle\n", mema, mema / f);
  std::printf("FMA with a memory operand, +1      %6.2f G/s  %.2f per cycle\n", mem, mem / f);
  std::printf("conv_block<8> loop: 8 FMA per tap  %6.2f G FMA/s  %.1f cycles per tap, %.0f GMAC/s\n", 8 * conv / 1e9,
              f * 1e9 / conv, 128 * conv / 1e9);
  std::printf("4 channels share each row: 24/tap  %6.2f G FMA/s  %.1f cycles per tap, %.0f GMAC/s (all lanes)\n",
              24 * reuse / 1e9, f * 1e9 / reuse, 384 * reuse / 1e9);
}
