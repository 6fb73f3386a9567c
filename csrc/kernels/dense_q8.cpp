// Portable dense codebook kernels and the layout builder (dense_q8.hpp).
#include "kernels/dense_q8.hpp"

#include <algorithm>

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
