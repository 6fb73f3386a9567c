// The direct sparse convolution loop, compiled once per ISA (qsparse.cpp: portable,
// qsparse_avx2.cpp: -mavx2 -mfma). Include inside a per-ISA namespace only: the same template
// built with different flags must not be merged by the linker (ODR).
// Contract: see ConvFn in qsparse.hpp. The includer provides <algorithm>, <cstdint> and
// kernels/qsparse.hpp before the namespace it includes this in.

// A block of R output rows x kTile pixels at a time; its accumulators
// (R * kTile floats: 8 AVX2 registers at R = 4) live in registers while every non-zero tap of
// the channel adds codebook[code] * (R contiguous runs of the padded input, one per row). The
// tap's decode (entry, codebook, offset) is shared by R * kTile multiply-adds. No output traffic
// per tap. Reads up to kTile - 1 floats past a row's end: the workspace has slack after xpad.
constexpr uint32_t kTile = 16;
constexpr uint32_t kRows = 4;

#if defined(__AVX2__) && defined(__FMA__)
// Accumulators as named vectors: GCC keeps an indexed float array on the stack.
template <uint32_t R>
inline void conv_block(const ::dcrt::QConvRows& w, const uint32_t* e0, const uint32_t* e1,
                            const int64_t* __restrict coloff, float b, const float* __restrict xb, size_t rs,
                            float* __restrict yo, size_t ys, uint32_t n) {
  static_assert(kTile == 16, "two AVX2 vectors per row");
  const uint32_t mask = (1u << w.code_bits) - 1;
  __m256 acc[R][2];
  for (uint32_t r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_set1_ps(b);
  for (const uint32_t* e = e0; e < e1; ++e) {
    const __m256 v = _mm256_broadcast_ss(w.codebook + (*e & mask));
    const float* xp = xb + coloff[*e >> 8];
    for (uint32_t r = 0; r < R; ++r) {
      acc[r][0] = _mm256_fmadd_ps(v, _mm256_loadu_ps(xp + r * rs), acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(v, _mm256_loadu_ps(xp + r * rs + 8), acc[r][1]);
    }
  }
  for (uint32_t r = 0; r < R; ++r) {
    if (n == kTile) {
      _mm256_storeu_ps(yo + r * ys, acc[r][0]);
      _mm256_storeu_ps(yo + r * ys + 8, acc[r][1]);
    } else {
      alignas(32) float t[kTile];
      _mm256_store_ps(t, acc[r][0]);
      _mm256_store_ps(t + 8, acc[r][1]);
      for (uint32_t i = 0; i < n; ++i) yo[r * ys + i] = t[i];
    }
  }
}
#else
template <uint32_t R>
inline void conv_block(const ::dcrt::QConvRows& w, const uint32_t* e0, const uint32_t* e1,
                            const int64_t* __restrict coloff, float b, const float* __restrict xb, size_t rs,
                            float* __restrict yo, size_t ys, uint32_t n) {
  const uint32_t mask = (1u << w.code_bits) - 1;
  float acc[R][kTile];
  for (uint32_t r = 0; r < R; ++r)
    for (uint32_t i = 0; i < kTile; ++i) acc[r][i] = b;
  for (const uint32_t* e = e0; e < e1; ++e) {
    const float v = w.codebook[*e & mask];
    const float* xp = xb + coloff[*e >> 8];
    for (uint32_t r = 0; r < R; ++r)
      for (uint32_t i = 0; i < kTile; ++i) acc[r][i] += v * xp[r * rs + i];
  }
  for (uint32_t r = 0; r < R; ++r)
    for (uint32_t i = 0; i < n; ++i) yo[r * ys + i] = acc[r][i];
}
#endif

// Any stride: the PadGeom layout makes consecutive output pixels read consecutive floats.
inline void conv_rows(const ::dcrt::QConvRows& w, const ::dcrt::ConvGeom& g, const int64_t* __restrict coloff,
                      const float* bias, const float* __restrict xpad, float* __restrict y, uint32_t oc0,
                      uint32_t oc1) {
  static_assert(kRows == 4, "the switch below dispatches R = 1..4");
  const uint32_t icg = g.in_c / g.groups, ocg = g.out_c / g.groups;
  const ::dcrt::PadGeom pg = ::dcrt::pad_geom(g);
  const size_t plane = pg.plane, rs = size_t(g.sh) * pg.wq;
  for (uint32_t oc = oc0; oc < oc1; ++oc) {
    const float* xg = xpad + size_t(oc / ocg) * icg * plane;
    const uint32_t* e0 = w.entries + w.rowptr[oc];
    const uint32_t* e1 = w.entries + w.rowptr[oc + 1];
    float* yo = y + size_t(oc) * g.out_h * g.out_w;
    for (uint32_t oy = 0; oy < g.out_h; oy += kRows) {
      const uint32_t nr = std::min(kRows, g.out_h - oy);
      for (uint32_t ox0 = 0; ox0 < g.out_w; ox0 += kTile) {
        const uint32_t n = std::min(kTile, g.out_w - ox0);
        const float* xb = xg + size_t(oy) * rs + ox0;
        float* yb = yo + size_t(oy) * g.out_w + ox0;
        switch (nr) {
          case 4: conv_block<4>(w, e0, e1, coloff, bias[oc], xb, rs, yb, g.out_w, n); break;
          case 3: conv_block<3>(w, e0, e1, coloff, bias[oc], xb, rs, yb, g.out_w, n); break;
          case 2: conv_block<2>(w, e0, e1, coloff, bias[oc], xb, rs, yb, g.out_w, n); break;
          default: conv_block<1>(w, e0, e1, coloff, bias[oc], xb, rs, yb, g.out_w, n); break;
        }
      }
    }
  }
}
