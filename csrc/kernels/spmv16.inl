// Bodies of the batch-1 kernels on the 16-bit tiled layouts (spmv16.hpp), included once per ISA
// build: spmv16.cpp (portable shifts and masks) and spmv16_bmi2.cpp (BEXTR, FMA). The including
// file defines `struct Fields` with idx(h, j) and code(h, j): entry j (0 or 1) of the 32-bit half
// h of a group (two halves: the BEXTR build then needs four control registers, not eight, which
// keeps the whole inner loop in registers).
// Four accumulators (row form) or four independent read-modify-writes (column form) per group
// keep the FMA latency and the store-to-load path off the critical path.

inline void spmv_rows_body(const QTiles16& w, const float* __restrict x, float* __restrict y, uint32_t p0,
                           uint32_t p1) {
  const Fields f(w.field_bits, w.code_bits);
  const float* __restrict cb = w.codebook;
  for (uint32_t k = 0; k < w.tiles; ++k) {
    const float* __restrict xt = x + size_t(k) * w.tile;
    const uint32_t* gp = w.gptr + size_t(k) * (w.lines + 1);
    const uint32_t* ord = w.order + size_t(k) * w.rows;
    for (uint32_t p = p0; p < p1; ++p) {
      const uint16_t* e = w.entries + size_t(gp[p]) * kGroup;
      const uint16_t* end = w.entries + size_t(gp[p + 1]) * kGroup;
      float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
      for (; e < end; e += kGroup) {
        uint64_t q;
        std::memcpy(&q, e, 8);
        const uint64_t h = q >> 32;
        a0 += cb[f.code(q, 0)] * xt[f.idx(q, 0)];
        a1 += cb[f.code(q, 1)] * xt[f.idx(q, 1)];
        a2 += cb[f.code(h, 0)] * xt[f.idx(h, 0)];
        a3 += cb[f.code(h, 1)] * xt[f.idx(h, 1)];
      }
      y[ord[p]] += (a0 + a1) + (a2 + a3);
    }
  }
}

inline void spmv_cols_body(const QTiles16& w, const float* __restrict x, const uint32_t* __restrict live,
                           uint32_t nlive, float* __restrict y, uint32_t t0, uint32_t t1) {
  const Fields f(w.field_bits, w.code_bits);
  const float* __restrict cb = w.codebook;
  for (uint32_t k = t0; k < t1; ++k) {
    float* __restrict yt = y + size_t(k) * w.tile;
    const uint32_t* gp = w.gptr + size_t(k) * (w.lines + 1);
    for (uint32_t i = 0; i < nlive; ++i) {
      const uint32_t c = live[i];
      const float xv = x[c];
      const uint16_t* e = w.entries + size_t(gp[c]) * kGroup;
      const uint16_t* end = w.entries + size_t(gp[c + 1]) * kGroup;
      for (; e < end; e += kGroup) {
        uint64_t q;
        std::memcpy(&q, e, 8);
        const uint64_t h = q >> 32;
        yt[f.idx(q, 0)] += cb[f.code(q, 0)] * xv;
        yt[f.idx(q, 1)] += cb[f.code(q, 1)] * xv;
        yt[f.idx(h, 0)] += cb[f.code(h, 0)] * xv;
        yt[f.idx(h, 1)] += cb[f.code(h, 1)] * xv;
      }
    }
  }
}
