// BMI2 + FMA build of the batch-1 tiled kernels (this file alone is compiled with -mbmi -mbmi2
// -mfma -mavx2; registry.cpp calls it only where the CPU has them; x86-64 GCC/Clang only). A
// field is one BEXTR. Measured on Zen 3 in a standalone prototype: ~1.4 cycles per non-zero for
// the row form, where shifts and masks take ~1.6 and an 8-lane vpgatherdd alone takes ~11 cycles
// (so there is no AVX2 gather variant: on this CPU it loses to scalar loads).
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/spmv16.hpp"

namespace dcrt {
namespace {

// The inner loops in inline assembly: compiled from C, GCC spills the four BEXTR controls (the
// kernel has ~16 live values) and reloads them from the stack for every entry, which doubles the
// time. Here they stay in registers: per group of four entries, one load, a shift, eight BEXTRs,
// four codebook loads and four FMAs (row form) or four load-FMA-stores (column form).
struct Ctl {
  uint64_t i0, i1, k0, k1;  // BEXTR controls (start | length << 8): index and code of the two entries of a half
  Ctl(uint32_t fb, uint32_t cbits)
      : i0(uint64_t(fb) << 8), i1(uint64_t(fb) << 8 | 16), k0(uint64_t(cbits) << 8 | fb),
        k1(uint64_t(cbits) << 8 | (16 + fb)) {}
};

inline float row_dot(const uint16_t* e, const uint16_t* end, const float* xt, const float* cb, const Ctl& c) {
  float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f, w0, w1;
  uint64_t q, t;
  asm("cmpq %[end], %[e]\n\t"
      "jae 2f\n\t"
      ".p2align 4\n"
      "1:\n\t"
      "movq (%[e]), %[q]\n\t"
      "bextrq %[k0], %[q], %[t]\n\t"
      "vmovss (%[cb],%[t],4), %[w0]\n\t"
      "bextrq %[i0], %[q], %[t]\n\t"
      "vfmadd231ss (%[xt],%[t],4), %[w0], %[a0]\n\t"
      "bextrq %[k1], %[q], %[t]\n\t"
      "vmovss (%[cb],%[t],4), %[w1]\n\t"
      "bextrq %[i1], %[q], %[t]\n\t"
      "vfmadd231ss (%[xt],%[t],4), %[w1], %[a1]\n\t"
      "shrq $32, %[q]\n\t"
      "bextrq %[k0], %[q], %[t]\n\t"
      "vmovss (%[cb],%[t],4), %[w0]\n\t"
      "bextrq %[i0], %[q], %[t]\n\t"
      "vfmadd231ss (%[xt],%[t],4), %[w0], %[a2]\n\t"
      "bextrq %[k1], %[q], %[t]\n\t"
      "vmovss (%[cb],%[t],4), %[w1]\n\t"
      "bextrq %[i1], %[q], %[t]\n\t"
      "vfmadd231ss (%[xt],%[t],4), %[w1], %[a3]\n\t"
      "addq $8, %[e]\n\t"
      "cmpq %[end], %[e]\n\t"
      "jb 1b\n"
      "2:"
      : [e] "+r"(e), [q] "=&r"(q), [t] "=&r"(t), [w0] "=&x"(w0), [w1] "=&x"(w1), [a0] "+x"(a0), [a1] "+x"(a1),
        [a2] "+x"(a2), [a3] "+x"(a3)
      : [end] "r"(end), [cb] "r"(cb), [xt] "r"(xt), [i0] "r"(c.i0), [i1] "r"(c.i1), [k0] "r"(c.k0), [k1] "r"(c.k1)
      : "cc", "memory");
  return (a0 + a1) + (a2 + a3);
}

inline void col_scatter(const uint16_t* e, const uint16_t* end, float xv, float* yt, const float* cb, const Ctl& c) {
  float w;
  uint64_t q, r, k;
  asm volatile(
      "cmpq %[end], %[e]\n\t"
      "jae 2f\n\t"
      ".p2align 4\n"
      "1:\n\t"
      "movq (%[e]), %[q]\n\t"
      "bextrq %[i0], %[q], %[r]\n\t"
      "bextrq %[k0], %[q], %[k]\n\t"
      "vmovss (%[yt],%[r],4), %[w]\n\t"
      "vfmadd231ss (%[cb],%[k],4), %[xv], %[w]\n\t"
      "vmovss %[w], (%[yt],%[r],4)\n\t"
      "bextrq %[i1], %[q], %[r]\n\t"
      "bextrq %[k1], %[q], %[k]\n\t"
      "vmovss (%[yt],%[r],4), %[w]\n\t"
      "vfmadd231ss (%[cb],%[k],4), %[xv], %[w]\n\t"
      "vmovss %[w], (%[yt],%[r],4)\n\t"
      "shrq $32, %[q]\n\t"
      "bextrq %[i0], %[q], %[r]\n\t"
      "bextrq %[k0], %[q], %[k]\n\t"
      "vmovss (%[yt],%[r],4), %[w]\n\t"
      "vfmadd231ss (%[cb],%[k],4), %[xv], %[w]\n\t"
      "vmovss %[w], (%[yt],%[r],4)\n\t"
      "bextrq %[i1], %[q], %[r]\n\t"
      "bextrq %[k1], %[q], %[k]\n\t"
      "vmovss (%[yt],%[r],4), %[w]\n\t"
      "vfmadd231ss (%[cb],%[k],4), %[xv], %[w]\n\t"
      "vmovss %[w], (%[yt],%[r],4)\n\t"
      "addq $8, %[e]\n\t"
      "cmpq %[end], %[e]\n\t"
      "jb 1b\n"
      "2:"
      : [e] "+r"(e), [q] "=&r"(q), [r] "=&r"(r), [k] "=&r"(k), [w] "=&x"(w)
      : [end] "r"(end), [cb] "r"(cb), [yt] "r"(yt), [xv] "x"(xv), [i0] "r"(c.i0), [i1] "r"(c.i1), [k0] "r"(c.k0),
        [k1] "r"(c.k1)
      : "cc", "memory");
}

}  // namespace

void spmv_rows_q_t16__bmi2(const QTiles16& w, const float* x, float* y, uint32_t p0, uint32_t p1) {
  const Ctl c(w.field_bits, w.code_bits);
  for (uint32_t k = 0; k < w.tiles; ++k) {
    const float* xt = x + size_t(k) * w.tile;
    const uint32_t* gp = w.gptr + size_t(k) * (w.lines + 1);
    const uint32_t* ord = w.order + size_t(k) * w.rows;
    for (uint32_t p = p0; p < p1; ++p)
      y[ord[p]] += row_dot(w.entries + size_t(gp[p]) * kGroup, w.entries + size_t(gp[p + 1]) * kGroup, xt,
                           w.codebook, c);
  }
}

void spmv_cols_q_t16__bmi2(const QTiles16& w, const float* x, const uint32_t* live, uint32_t nlive, float* y,
                           uint32_t t0, uint32_t t1) {
  const Ctl c(w.field_bits, w.code_bits);
  for (uint32_t k = t0; k < t1; ++k) {
    float* yt = y + size_t(k) * w.tile;
    const uint32_t* gp = w.gptr + size_t(k) * (w.lines + 1);
    for (uint32_t i = 0; i < nlive; ++i) {
      const uint32_t col = live[i];
      col_scatter(w.entries + size_t(gp[col]) * kGroup, w.entries + size_t(gp[col + 1]) * kGroup, x[col], yt,
                  w.codebook, c);
    }
  }
}

bool cpu_has_bmi2_fma() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("avx2");
#else
  return false;
#endif
}

}  // namespace dcrt
