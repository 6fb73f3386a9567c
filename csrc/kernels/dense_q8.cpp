// Portable dense codebook kernels and the layout builder (dense_q8.hpp).
#include "kernels/dense_q8.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace dcrt {

size_t dense8_ldc(uint32_t cols) { return (size_t(cols) + 63) / 64 * 64; }

void build_dense8(const QSparseMatrix& w, std::vector<uint8_t>& codes) {
  const size_t ldc = dense8_ldc(w.cols);
  codes.assign(size_t(w.rows) * ldc, 0);  // absent weights are code 0
  if (!w.rows || !w.cols) return;
  // Bands of rows whose codes (band x ldc bytes, ~256 KiB) stay in L2 and in the TLB's reach;
  // every column resumes at its cursor, so each entry is read once. (Column by column over
  // all rows, every store landed on another page: 7 ns per entry on Zen 5.)
  const uint32_t b = w.code_bits, mask = (1u << b) - 1, kNone = UINT32_MAX;
  const uint32_t band = uint32_t(std::clamp<size_t>((256u << 10) / ldc, 8, 1024));
  std::vector<uint32_t> pos(w.cols), next(w.cols);  // a column's next entry and the row it is on
  for (uint32_t c = 0; c < w.cols; ++c) {
    pos[c] = w.colptr[c];
    next[c] = pos[c] < w.colptr[c + 1] ? uint32_t(w.entries[pos[c]] >> b) : kNone;
  }
  for (uint32_t r0 = 0; r0 < w.rows; r0 += band) {
    const uint32_t r1 = std::min(w.rows, r0 + band);
    for (uint32_t c = 0; c < w.cols; ++c) {
      uint32_t e = pos[c], r = next[c];
      const uint32_t end = w.colptr[c + 1];
      while (r < r1) {  // fillers carry code 0: writing it is harmless
        codes[size_t(r) * ldc + c] = uint8_t(w.entries[e] & mask);
        ++e;
        r = e < end ? r + (uint32_t(w.entries[e]) >> b) + 1 : kNone;
      }
      pos[c] = e;
      next[c] = r;
    }
  }
}

void dense_q8__ref(const QDense8& w, const float* x, float* y, uint32_t r0, uint32_t r1) {
  for (uint32_t r = r0; r < r1; ++r) {
    const uint8_t* cr = w.codes + size_t(r) * w.ldc;
    double s = 0;
    for (uint32_t c = 0; c < w.cols; ++c) s += double(w.codebook[cr[c]]) * x[c];
    y[r] += float(s);
  }
}

// Four rows share each input load; four partial sums per row break the FMA chain.
void dense_q8__generic(const QDense8& w, const float* x, float* y, uint32_t r0, uint32_t r1) {
  const float* cb = w.codebook;
  uint32_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    const uint8_t* c0 = w.codes + size_t(r) * w.ldc;
    const uint8_t *c1 = c0 + w.ldc, *c2 = c1 + w.ldc, *c3 = c2 + w.ldc;
    float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (uint32_t c = 0; c < w.cols; ++c) {
      const float xv = x[c];
      a0 += cb[c0[c]] * xv;
      a1 += cb[c1[c]] * xv;
      a2 += cb[c2[c]] * xv;
      a3 += cb[c3[c]] * xv;
    }
    y[r] += a0;
    y[r + 1] += a1;
    y[r + 2] += a2;
    y[r + 3] += a3;
  }
  for (; r < r1; ++r) {
    const uint8_t* cr = w.codes + size_t(r) * w.ldc;
    float a = 0;
    for (uint32_t c = 0; c < w.cols; ++c) a += cb[cr[c]] * x[c];
    y[r] += a;
  }
}

}  // namespace dcrt

// ---- Precision modes (dense_q8.hpp) ----
namespace dcrt {

uint16_t bf16_round(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return uint16_t((u >> 16) | 0x40);  // NaN: keep it quiet
  u += 0x7FFFu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

float bf16_float(uint16_t b) {
  const uint32_t u = uint32_t(b) << 16;
  float v;
  std::memcpy(&v, &u, 4);
  return v;
}

void build_dense8_i8(const QDense8& w, std::vector<int8_t>& qcodebook, float& qscale, std::vector<int32_t>& rowsum) {
  const uint32_t n = 1u << w.code_bits;
  float amax = 0.f;
  for (uint32_t k = 0; k < n; ++k)
    if (std::isfinite(w.codebook[k])) amax = std::max(amax, std::fabs(w.codebook[k]));
  qscale = amax > 0.f ? amax / 127.f : 1.f;
  qcodebook.assign(256, 0);
  for (uint32_t k = 1; k < n; ++k) {
    const float v = std::isfinite(w.codebook[k]) ? w.codebook[k] / qscale : 0.f;
    qcodebook[k] = int8_t(std::clamp(std::nearbyint(v), -127.f, 127.f));
  }
  qcodebook[0] = 0;  // the pruned weights (and the codes' padding)
  rowsum.assign(w.rows, 0);
  for (uint32_t r = 0; r < w.rows; ++r) {
    const uint8_t* cr = w.codes + size_t(r) * w.ldc;
    int32_t s = 0;
    for (uint32_t c = 0; c < w.cols; ++c) s += qcodebook[cr[c]];
    rowsum[r] = s;
  }
}

void pack_dense8(const QDense8& w, std::vector<uint8_t>& packed) {
  const uint32_t b = w.code_bits;
  const size_t ldp = dense8_ldp(w.cols, b);
  packed.assign(size_t(w.rows) * ldp + 64, 0);
  for (uint32_t r = 0; r < w.rows; ++r) {
    const uint8_t* cr = w.codes + size_t(r) * w.ldc;
    uint8_t* pr = packed.data() + size_t(r) * ldp;
    for (size_t g = 0; g < w.ldc / 8; ++g) {
      uint64_t q = 0;
      for (uint32_t j = 0; j < 8; ++j) q |= uint64_t(cr[8 * g + j]) << (j * b);
      for (uint32_t k = 0; k < b; ++k) pr[g * b + k] = uint8_t(q >> (8 * k));
    }
  }
}

void build_dense8_bf16(const float* codebook, uint32_t code_bits, std::vector<uint16_t>& bcodebook) {
  bcodebook.assign(256, 0);
  for (uint32_t k = 1; k < (1u << code_bits); ++k) bcodebook[k] = bf16_round(codebook[k]);
}

QInputU8 quantize_input_u8(const float* x, uint32_t cols, size_t ldc, uint8_t* q) {
  float lo = 0.f, hi = 0.f;
  for (uint32_t c = 0; c < cols; ++c) {
    const float v = x[c];
    if (std::isfinite(v)) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  }
  QInputU8 r{q, 0.f, 0};
  float qmin, qmax, inv;
  if (lo >= 0.f) {  // after a ReLU: 255 steps from 0
    r.scale = hi > 0.f ? hi / 255.f : 1.f;
    qmin = 0.f, qmax = 255.f;
  } else {
    r.zero = 128;
    r.scale = std::max(-lo, hi) / 127.f;
    qmin = -127.f, qmax = 127.f;
  }
  inv = 1.f / r.scale;
  for (uint32_t c = 0; c < cols; ++c) {
    const float v = x[c] * inv;
    // NaN fails both tests and lands on the zero point; +-inf clamps.
    const float t = v >= qmin ? (v <= qmax ? std::nearbyint(v) : qmax) : (v < qmin ? qmin : 0.f);
    q[c] = uint8_t(int32_t(t) + r.zero);
  }
  std::fill(q + cols, q + ldc, uint8_t(r.zero));
  return r;
}

void round_input_bf16(const float* x, uint32_t cols, size_t ldc, uint16_t* b) {
  for (uint32_t c = 0; c < cols; ++c) b[c] = bf16_round(x[c]);
  std::fill(b + cols, b + ldc, uint16_t(0));
}

void dense_i8__ref(const QDense8& w, const QInputU8& x, float* y, uint32_t r0, uint32_t r1) {
  const float s = x.scale * w.qscale;
  for (uint32_t r = r0; r < r1; ++r) {
    int64_t acc = 0;
    for (uint32_t c = 0; c < w.cols; ++c) {
      const uint32_t code = w.packed ? packed_code(w.packed + size_t(r) * w.ldp, c, w.code_bits)
                                     : w.codes[size_t(r) * w.ldc + c];
      acc += int64_t(x.q[c]) * w.qcodebook[code];
    }
    y[r] += dense_i8_out(acc, x.zero, w.qrowsum[r], s);
  }
}

// Four rows share each input byte; int32 sums (exact below kDenseI8MaxCols columns). Packed
// codes are unpacked 64 at a time into a byte buffer per row.
void dense_i8__generic(const QDense8& w, const QInputU8& x, float* y, uint32_t r0, uint32_t r1) {
  const float s = x.scale * w.qscale;
  const int8_t* cb = w.qcodebook;
  const uint32_t b = w.code_bits;
  uint8_t buf[4][64];
  const auto row_codes = [&](uint32_t r, size_t c0, int k) -> const uint8_t* {
    if (!w.packed) return w.codes + size_t(r) * w.ldc + c0;
    const uint8_t* pr = w.packed + size_t(r) * w.ldp + c0 / 8 * b;
    for (uint32_t g = 0; g < 8; ++g) {
      uint64_t q;
      std::memcpy(&q, pr + g * b, 8);
      for (uint32_t j = 0; j < 8; ++j) buf[k][8 * g + j] = uint8_t(q >> (j * b)) & uint8_t((1u << b) - 1);
    }
    return buf[k];
  };
  uint32_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (size_t c0 = 0; c0 < w.ldc; c0 += 64) {
      const uint8_t *k0 = row_codes(r, c0, 0), *k1 = row_codes(r + 1, c0, 1), *k2 = row_codes(r + 2, c0, 2),
                    *k3 = row_codes(r + 3, c0, 3);
      for (uint32_t c = 0; c < 64; ++c) {
        const int32_t xv = x.q[c0 + c];
        a0 += xv * cb[k0[c]];
        a1 += xv * cb[k1[c]];
        a2 += xv * cb[k2[c]];
        a3 += xv * cb[k3[c]];
      }
    }
    y[r] += dense_i8_out(a0, x.zero, w.qrowsum[r], s);
    y[r + 1] += dense_i8_out(a1, x.zero, w.qrowsum[r + 1], s);
    y[r + 2] += dense_i8_out(a2, x.zero, w.qrowsum[r + 2], s);
    y[r + 3] += dense_i8_out(a3, x.zero, w.qrowsum[r + 3], s);
  }
  for (; r < r1; ++r) {
    int32_t a = 0;
    for (size_t c0 = 0; c0 < w.ldc; c0 += 64) {
      const uint8_t* k0 = row_codes(r, c0, 0);
      for (uint32_t c = 0; c < 64; ++c) a += int32_t(x.q[c0 + c]) * cb[k0[c]];
    }
    y[r] += dense_i8_out(a, x.zero, w.qrowsum[r], s);
  }
}

void dense_bf16__ref(const QDense8& w, const uint16_t* x, float* y, uint32_t r0, uint32_t r1) {
  for (uint32_t r = r0; r < r1; ++r) {
    const uint8_t* cr = w.codes + size_t(r) * w.ldc;
    double s = 0;  // each bf16 product is exact in fp32; the sum here in double
    for (uint32_t c = 0; c < w.cols; ++c) s += double(bf16_float(w.bcodebook[cr[c]]) * bf16_float(x[c]));
    y[r] += float(s);
  }
}

void dense_bf16__generic(const QDense8& w, const uint16_t* x, float* y, uint32_t r0, uint32_t r1) {
  float cb[256];
  for (int k = 0; k < 256; ++k) cb[k] = bf16_float(w.bcodebook[k]);
  uint32_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    const uint8_t* c0 = w.codes + size_t(r) * w.ldc;
    const uint8_t *c1 = c0 + w.ldc, *c2 = c1 + w.ldc, *c3 = c2 + w.ldc;
    float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (uint32_t c = 0; c < w.cols; ++c) {
      const float xv = bf16_float(x[c]);
      a0 += cb[c0[c]] * xv;
      a1 += cb[c1[c]] * xv;
      a2 += cb[c2[c]] * xv;
      a3 += cb[c3[c]] * xv;
    }
    y[r] += a0;
    y[r + 1] += a1;
    y[r + 2] += a2;
    y[r + 3] += a3;
  }
  for (; r < r1; ++r) {
    const uint8_t* cr = w.codes + size_t(r) * w.ldc;
    float a = 0;
    for (uint32_t c = 0; c < w.cols; ++c) a += cb[cr[c]] * bf16_float(x[c]);
    y[r] += a;
  }
}

bool cpu_has_avx512_vnni_vbmi() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi");
#else
  return false;
#endif
}

bool cpu_has_avx512_bf16() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

}  // namespace dcrt
