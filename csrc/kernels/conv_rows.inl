// The direct sparse convolution loop, compiled once per ISA (qsparse.cpp: portable,
// qsparse_avx2.cpp: -mavx2 -mfma). Include inside a per-ISA namespace only: the same template
// built with different flags must not be merged by the linker (ODR).
// Contract: see ConvFn in qsparse.hpp. The includer provides <algorithm>, <cstdint>, <vector>,
// kernels/qsparse.hpp (and <immintrin.h> in AVX2 builds) before the namespace it includes
// this in.

// A block of R output rows x kTile pixels at a time; its accumulators
// (R * kTile floats: 8 AVX2 registers at R = 4) live in registers while every non-zero tap of
// the channel adds codebook[code] * (R contiguous runs of the padded input, one per row). The
// tap's decode (entry, codebook, offset) is shared by R * kTile multiply-adds. No output traffic
// per tap. Reads up to kTile - 1 floats past a row's end: the workspace has slack after xpad.
constexpr uint32_t kTile = 16;
constexpr uint32_t kRows = ::dcrt::kConvRowBlock;

#if defined(__AVX2__) && defined(__FMA__)
// Eight named accumulators, not an array: GCC keeps a __m256 array in memory and stores
// it every iteration, which chains each tap through store forwarding (~13 cycles per tap
// measured instead of ~5).
inline void conv_load_row(const float* yo, bool first, float b, uint32_t n, __m256& lo, __m256& hi) {
  if (first) {
    lo = hi = _mm256_set1_ps(b);
  } else if (n == kTile) {
    lo = _mm256_loadu_ps(yo);
    hi = _mm256_loadu_ps(yo + 8);
  } else {
    alignas(32) float t[kTile] = {};
    for (uint32_t i = 0; i < n; ++i) t[i] = yo[i];
    lo = _mm256_load_ps(t);
    hi = _mm256_load_ps(t + 8);
  }
}

inline void conv_store_row(float* yo, uint32_t n, __m256 lo, __m256 hi) {
  if (n == kTile) {
    _mm256_storeu_ps(yo, lo);
    _mm256_storeu_ps(yo + 8, hi);
  } else {
    alignas(32) float t[kTile];
    _mm256_store_ps(t, lo);
    _mm256_store_ps(t + 8, hi);
    for (uint32_t i = 0; i < n; ++i) yo[i] = t[i];
  }
}

template <uint32_t R>
inline void conv_block(const ::dcrt::QConvRows& w, const uint32_t* e0, const uint32_t* e1,
                       const int64_t* __restrict coloff, float b, bool first, const float* __restrict xb,
                       size_t rs, float* __restrict yo, size_t ys, uint32_t n) {
  static_assert(kTile == 16 && R >= 1 && R <= 4, "two AVX2 vectors per row, up to 4 rows");
  const uint32_t mask = (1u << w.code_bits) - 1;
  __m256 a0, a1, a2 = _mm256_setzero_ps(), a3 = a2, a4 = a2, a5 = a2, a6 = a2, a7 = a2;
  conv_load_row(yo, first, b, n, a0, a1);
  if constexpr (R > 1) conv_load_row(yo + ys, first, b, n, a2, a3);
  if constexpr (R > 2) conv_load_row(yo + 2 * ys, first, b, n, a4, a5);
  if constexpr (R > 3) conv_load_row(yo + 3 * ys, first, b, n, a6, a7);
  for (const uint32_t* e = e0; e < e1; ++e) {
    const __m256 v = _mm256_broadcast_ss(w.codebook + (*e & mask));
    const float* xp = xb + coloff[*e >> 8];
    a0 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xp), a0);
    a1 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xp + 8), a1);
    if constexpr (R > 1) {
      a2 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xp + rs), a2);
      a3 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xp + rs + 8), a3);
    }
    if constexpr (R > 2) {
      a4 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xp + 2 * rs), a4);
      a5 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xp + 2 * rs + 8), a5);
    }
    if constexpr (R > 3) {
      a6 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xp + 3 * rs), a6);
      a7 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xp + 3 * rs + 8), a7);
    }
  }
  conv_store_row(yo, n, a0, a1);
  if constexpr (R > 1) conv_store_row(yo + ys, n, a2, a3);
  if constexpr (R > 2) conv_store_row(yo + 2 * ys, n, a4, a5);
  if constexpr (R > 3) conv_store_row(yo + 3 * ys, n, a6, a7);
}
#else
template <uint32_t R>
inline void conv_block(const ::dcrt::QConvRows& w, const uint32_t* e0, const uint32_t* e1,
                            const int64_t* __restrict coloff, float b, bool first, const float* __restrict xb,
                            size_t rs, float* __restrict yo, size_t ys, uint32_t n) {
  const uint32_t mask = (1u << w.code_bits) - 1;
  float acc[R][kTile];
  for (uint32_t r = 0; r < R; ++r)
    for (uint32_t i = 0; i < kTile; ++i) acc[r][i] = first ? b : i < n ? yo[r * ys + i] : 0.f;
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
// Loop order, for L1: groups of kOcBlock output channels, then pixel blocks, then blocks of
// kIcBlock input channels, then the group's channels. A pixel block's input window over one
// channel block ((R-1)*sh + kh rows x 2-3 cache lines x kIcBlock channels: ~24 KB for 3x3)
// stays in L1 while the group's channels read it; the output block carries the partial sums
// from one channel block to the next (R*kTile floats, once per kIcBlock channels' taps).
// Block sizes measured on VGG-16's layers (Zen 3, one thread): 64 x 32 gives 4.2-5.1 MACs per
// cycle; 16 x 16, 16 x 8 and 64 x 64 are 10-25% slower.
// Over all input channels at once the window is ~50-400 KB, and reading it once per output
// channel misses L1 on nearly every load (measured: ~19 cycles per tap instead of ~5).
constexpr uint32_t kOcBlock = 64;
constexpr uint32_t kIcBlock = 32;

inline void conv_rows(const ::dcrt::QConvRows& w, const ::dcrt::ConvGeom& g, const int64_t* __restrict coloff,
                      const float* bias, const float* __restrict xpad, float* __restrict y, uint32_t oc0,
                      uint32_t oc1, uint32_t oy0, uint32_t oy1) {
  static_assert(kRows == 4, "the switch below dispatches R = 1..4");
  const uint32_t icg = g.in_c / g.groups, ocg = g.out_c / g.groups, taps = g.kh * g.kw;
  const uint32_t nib = (icg + kIcBlock - 1) / kIcBlock;
  const ::dcrt::PadGeom pg = ::dcrt::pad_geom(g);
  const size_t rs = size_t(g.sh) * pg.wq, ys = g.out_w;
  std::vector<const uint32_t*> bnd(size_t(kOcBlock) * (nib + 1));  // per channel: channel-block starts
  for (uint32_t ob = oc0; ob < oc1; ob += kOcBlock) {
    const uint32_t ob1 = std::min(oc1, ob + kOcBlock);
    for (uint32_t oc = ob; oc < ob1; ++oc) {  // entries ascend by column, so by input channel
      const uint32_t* e = w.entries + w.rowptr[oc];
      const uint32_t* e1 = w.entries + w.rowptr[oc + 1];
      const uint32_t** bo = bnd.data() + size_t(oc - ob) * (nib + 1);
      for (uint32_t k = 0; k < nib; ++k) {
        bo[k] = e;
        const uint32_t col_end = std::min(icg, (k + 1) * kIcBlock) * taps;
        while (e < e1 && (*e >> 8) < col_end) ++e;
      }
      bo[nib] = e1;
    }
    for (uint32_t oy = oy0; oy < oy1; oy += kRows) {
      const uint32_t nr = std::min(kRows, oy1 - oy);
      for (uint32_t ox0 = 0; ox0 < g.out_w; ox0 += kTile) {
        const uint32_t n = std::min(kTile, g.out_w - ox0);
        for (uint32_t k = 0; k < nib; ++k)
          for (uint32_t oc = ob; oc < ob1; ++oc) {
            const uint32_t** bo = bnd.data() + size_t(oc - ob) * (nib + 1);
            if (k > 0 && bo[k] == bo[k + 1]) continue;  // no taps in this channel block
            const float* xb = xpad + size_t(oc / ocg) * icg * pg.plane + size_t(oy) * rs + ox0;
            float* yb = y + (size_t(oc) * g.out_h + oy) * ys + ox0;
            const bool first = k == 0;
            switch (nr) {
              case 4: conv_block<4>(w, bo[k], bo[k + 1], coloff, bias[oc], first, xb, rs, yb, ys, n); break;
              case 3: conv_block<3>(w, bo[k], bo[k + 1], coloff, bias[oc], first, xb, rs, yb, ys, n); break;
              case 2: conv_block<2>(w, bo[k], bo[k + 1], coloff, bias[oc], first, xb, rs, yb, ys, n); break;
              default: conv_block<1>(w, bo[k], bo[k + 1], coloff, bias[oc], first, xb, rs, yb, ys, n); break;
            }
          }
      }
    }
  }
}
