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

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
// AVX-512: a row of the pixel block is one 16-lane register, and a block has up to 8 rows
// (R * kTile = 128 multiply-adds per decoded tap, 8 accumulators): one broadcast, one offset
// and eight loads feed eight FMAs. Tails are a lane mask on the loads and stores.
constexpr uint32_t kRows = 8;

inline void conv_store_row512(float* yo, const float* ro, __mmask16 m, bool last, const ::dcrt::ConvEpilogue& ep,
                              __m512 v) {
  if (last && ep.res) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, ro));
  if (last && ep.clamp) v = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(ep.lo)), _mm512_set1_ps(ep.hi));
  _mm512_mask_storeu_ps(yo, m, v);
}

template <uint32_t R>
inline void conv_block(const ::dcrt::QConvRows& w, const uint32_t* e0, const uint32_t* e1,
                       const int64_t* __restrict coloff, float b, bool first, bool last, const float* __restrict xb,
                       size_t rs, float* __restrict yo, const float* ro, size_t ys, uint32_t n,
                       const ::dcrt::ConvEpilogue& ep) {
  static_assert(kTile == 16 && R >= 1 && R <= 8, "one AVX-512 vector per row, up to 8 rows");
  const uint32_t mask = (1u << w.code_bits) - 1;
  const __mmask16 m = __mmask16((1u << n) - 1);
  const __m512 bv = _mm512_set1_ps(b);
  __m512 a0 = bv, a1 = bv, a2 = bv, a3 = bv, a4 = bv, a5 = bv, a6 = bv, a7 = bv;
  if (!first) {
    a0 = _mm512_maskz_loadu_ps(m, yo);
    if constexpr (R > 1) a1 = _mm512_maskz_loadu_ps(m, yo + ys);
    if constexpr (R > 2) a2 = _mm512_maskz_loadu_ps(m, yo + 2 * ys);
    if constexpr (R > 3) a3 = _mm512_maskz_loadu_ps(m, yo + 3 * ys);
    if constexpr (R > 4) a4 = _mm512_maskz_loadu_ps(m, yo + 4 * ys);
    if constexpr (R > 5) a5 = _mm512_maskz_loadu_ps(m, yo + 5 * ys);
    if constexpr (R > 6) a6 = _mm512_maskz_loadu_ps(m, yo + 6 * ys);
    if constexpr (R > 7) a7 = _mm512_maskz_loadu_ps(m, yo + 7 * ys);
  }
  for (const uint32_t* e = e0; e < e1; ++e) {
    const __m512 v = _mm512_set1_ps(w.codebook[*e & mask]);
    const float* xp = xb + coloff[*e >> 8];
    a0 = _mm512_fmadd_ps(v, _mm512_loadu_ps(xp), a0);
    if constexpr (R > 1) a1 = _mm512_fmadd_ps(v, _mm512_loadu_ps(xp + rs), a1);
    if constexpr (R > 2) a2 = _mm512_fmadd_ps(v, _mm512_loadu_ps(xp + 2 * rs), a2);
    if constexpr (R > 3) a3 = _mm512_fmadd_ps(v, _mm512_loadu_ps(xp + 3 * rs), a3);
    if constexpr (R > 4) a4 = _mm512_fmadd_ps(v, _mm512_loadu_ps(xp + 4 * rs), a4);
    if constexpr (R > 5) a5 = _mm512_fmadd_ps(v, _mm512_loadu_ps(xp + 5 * rs), a5);
    if constexpr (R > 6) a6 = _mm512_fmadd_ps(v, _mm512_loadu_ps(xp + 6 * rs), a6);
    if constexpr (R > 7) a7 = _mm512_fmadd_ps(v, _mm512_loadu_ps(xp + 7 * rs), a7);
  }
  const auto rrow = [&](size_t r) { return ro ? ro + r * ys : nullptr; };
  conv_store_row512(yo, ro, m, last, ep, a0);
  if constexpr (R > 1) conv_store_row512(yo + ys, rrow(1), m, last, ep, a1);
  if constexpr (R > 2) conv_store_row512(yo + 2 * ys, rrow(2), m, last, ep, a2);
  if constexpr (R > 3) conv_store_row512(yo + 3 * ys, rrow(3), m, last, ep, a3);
  if constexpr (R > 4) conv_store_row512(yo + 4 * ys, rrow(4), m, last, ep, a4);
  if constexpr (R > 5) conv_store_row512(yo + 5 * ys, rrow(5), m, last, ep, a5);
  if constexpr (R > 6) conv_store_row512(yo + 6 * ys, rrow(6), m, last, ep, a6);
  if constexpr (R > 7) conv_store_row512(yo + 7 * ys, rrow(7), m, last, ep, a7);
}

// Depthwise rows in 16-lane registers (rows at least 12 pixels wide; narrower ones take the
// 8-lane blocks below): the channel's decoded taps times R rows x 16 pixels, masked tails.
template <uint32_t R>
inline void dw_block512(const float* __restrict tw, const int64_t* __restrict to, uint32_t nt, float b,
                        const float* __restrict xb, size_t rs, float* __restrict yo, const float* ro, size_t ys,
                        uint32_t n, const ::dcrt::ConvEpilogue& ep) {
  const __mmask16 m = __mmask16((1u << n) - 1);
  __m512 a0 = _mm512_set1_ps(b), a1 = a0, a2 = a0, a3 = a0;
  for (uint32_t t = 0; t < nt; ++t) {
    const __m512 v = _mm512_set1_ps(tw[t]);
    const float* xp = xb + to[t];
    a0 = _mm512_fmadd_ps(v, _mm512_loadu_ps(xp), a0);
    if constexpr (R > 1) a1 = _mm512_fmadd_ps(v, _mm512_loadu_ps(xp + rs), a1);
    if constexpr (R > 2) a2 = _mm512_fmadd_ps(v, _mm512_loadu_ps(xp + 2 * rs), a2);
    if constexpr (R > 3) a3 = _mm512_fmadd_ps(v, _mm512_loadu_ps(xp + 3 * rs), a3);
  }
  const __m512 acc[4] = {a0, a1, a2, a3};
  for (uint32_t r = 0; r < R; ++r) conv_store_row512(yo + r * ys, ro ? ro + r * ys : nullptr, m, true, ep, acc[r]);
}
constexpr uint32_t kDwWide = 16;
#elif defined(__AVX2__) && defined(__FMA__)
constexpr uint32_t kRows = ::dcrt::kConvRowBlock;
#else
constexpr uint32_t kRows = ::dcrt::kConvRowBlock;
#endif

#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
// Lane masks for a tile of n < kTile pixels: maskload/maskstore (a scalar copy through a stack
// array per row cost more than the taps at widths 7, 14 and 28).
inline void conv_masks(uint32_t n, __m256i& mlo, __m256i& mhi) {
  alignas(32) static const int32_t ramp[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  const __m256i nn = _mm256_set1_epi32(int32_t(n));
  mlo = _mm256_cmpgt_epi32(nn, _mm256_load_si256(reinterpret_cast<const __m256i*>(ramp)));
  mhi = _mm256_cmpgt_epi32(nn, _mm256_load_si256(reinterpret_cast<const __m256i*>(ramp + 8)));
}

inline void conv_load_row(const float* p, uint32_t n, __m256i mlo, __m256i mhi, __m256& lo, __m256& hi) {
  if (n == kTile) {
    lo = _mm256_loadu_ps(p);
    hi = _mm256_loadu_ps(p + 8);
  } else {
    lo = _mm256_maskload_ps(p, mlo);
    hi = _mm256_maskload_ps(p + 8, mhi);
  }
}

// The epilogue on the last channel block: + residual, then the clamp (relu, relu6, clip).
inline void conv_store_row(float* yo, const float* ro, uint32_t n, __m256i mlo, __m256i mhi, bool last,
                           const ::dcrt::ConvEpilogue& ep, __m256 lo, __m256 hi) {
  if (last && ep.res) {
    __m256 r0, r1;
    conv_load_row(ro, n, mlo, mhi, r0, r1);
    lo = _mm256_add_ps(lo, r0);
    hi = _mm256_add_ps(hi, r1);
  }
  if (last && ep.clamp) {
    const __m256 a = _mm256_set1_ps(ep.lo), b = _mm256_set1_ps(ep.hi);
    lo = _mm256_min_ps(_mm256_max_ps(lo, a), b);
    hi = _mm256_min_ps(_mm256_max_ps(hi, a), b);
  }
  if (n == kTile) {
    _mm256_storeu_ps(yo, lo);
    _mm256_storeu_ps(yo + 8, hi);
  } else {
    _mm256_maskstore_ps(yo, mlo, lo);
    _mm256_maskstore_ps(yo + 8, mhi, hi);
  }
}

// Eight named accumulators, not an array: GCC keeps a __m256 array in memory and stores
// it every iteration, which chains each tap through store forwarding (~13 cycles per tap
// measured instead of ~5).
template <uint32_t R>
inline void conv_block(const ::dcrt::QConvRows& w, const uint32_t* e0, const uint32_t* e1,
                       const int64_t* __restrict coloff, float b, bool first, bool last, const float* __restrict xb,
                       size_t rs, float* __restrict yo, const float* ro, size_t ys, uint32_t n,
                       const ::dcrt::ConvEpilogue& ep) {
  static_assert(kTile == 16 && R >= 1 && R <= 4, "two AVX2 vectors per row, up to 4 rows");
  const uint32_t mask = (1u << w.code_bits) - 1;
  __m256i mlo, mhi;
  conv_masks(n, mlo, mhi);
  const __m256 bv = _mm256_set1_ps(b);
  __m256 a0 = bv, a1 = bv, a2 = bv, a3 = bv, a4 = bv, a5 = bv, a6 = bv, a7 = bv;
  if (!first) {
    conv_load_row(yo, n, mlo, mhi, a0, a1);
    if constexpr (R > 1) conv_load_row(yo + ys, n, mlo, mhi, a2, a3);
    if constexpr (R > 2) conv_load_row(yo + 2 * ys, n, mlo, mhi, a4, a5);
    if constexpr (R > 3) conv_load_row(yo + 3 * ys, n, mlo, mhi, a6, a7);
  }
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
  // ro is null without a residual: no arithmetic on it then (UB, and UBSan says so).
  const auto rrow = [&](size_t r) { return ro ? ro + r * ys : nullptr; };
  conv_store_row(yo, ro, n, mlo, mhi, last, ep, a0, a1);
  if constexpr (R > 1) conv_store_row(yo + ys, rrow(1), n, mlo, mhi, last, ep, a2, a3);
  if constexpr (R > 2) conv_store_row(yo + 2 * ys, rrow(2), n, mlo, mhi, last, ep, a4, a5);
  if constexpr (R > 3) conv_store_row(yo + 3 * ys, rrow(3), n, mlo, mhi, last, ep, a6, a7);
}

#endif

#if defined(__AVX2__) && defined(__FMA__)
// Depthwise rows (one input channel per output channel): the channel's few taps (3x3: at most
// 9) are decoded once into (weight, offset) pairs, then every R-row x 8-pixel block of the
// channel runs them: 8-lane tiles waste at most 7 lanes per row (the 16-lane tiles of the
// general kernel waste 9 of 16 at width 7), tails are masked, no per-block bookkeeping.
template <uint32_t R>
inline void dw_block(const float* __restrict tw, const int64_t* __restrict to, uint32_t nt, float b,
                     const float* __restrict xb, size_t rs, float* __restrict yo, const float* ro, size_t ys,
                     uint32_t n, const ::dcrt::ConvEpilogue& ep) {
  const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(int32_t(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  __m256 a0 = _mm256_set1_ps(b), a1 = a0, a2 = a0, a3 = a0;
  for (uint32_t t = 0; t < nt; ++t) {
    const __m256 v = _mm256_broadcast_ss(tw + t);
    const float* xp = xb + to[t];
    a0 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xp), a0);
    if constexpr (R > 1) a1 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xp + rs), a1);
    if constexpr (R > 2) a2 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xp + 2 * rs), a2);
    if constexpr (R > 3) a3 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xp + 3 * rs), a3);
  }
  __m256 acc[4] = {a0, a1, a2, a3};
  for (uint32_t r = 0; r < R; ++r) {
    __m256 v = acc[r];
    if (ep.res) v = _mm256_add_ps(v, n == 8 ? _mm256_loadu_ps(ro + r * ys) : _mm256_maskload_ps(ro + r * ys, m));
    if (ep.clamp) v = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(ep.lo)), _mm256_set1_ps(ep.hi));
    if (n == 8)
      _mm256_storeu_ps(yo + r * ys, v);
    else
      _mm256_maskstore_ps(yo + r * ys, m, v);
  }
}
constexpr uint32_t kDwTile = 8;
#endif
constexpr uint32_t kDwRows = 4;  // the depthwise blocks' rows (dw_block<1..4>)

#if !defined(__AVX2__) || !defined(__FMA__)
inline float conv_epi(float v, const float* ro, size_t i, const ::dcrt::ConvEpilogue& ep) {
  if (ep.res) v += ro[i];
  if (ep.clamp) v = std::min(std::max(v, ep.lo), ep.hi);
  return v;
}

template <uint32_t R>
inline void conv_block(const ::dcrt::QConvRows& w, const uint32_t* e0, const uint32_t* e1,
                       const int64_t* __restrict coloff, float b, bool first, bool last, const float* __restrict xb,
                       size_t rs, float* __restrict yo, const float* ro, size_t ys, uint32_t n,
                       const ::dcrt::ConvEpilogue& ep) {
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
    for (uint32_t i = 0; i < n; ++i) yo[r * ys + i] = last ? conv_epi(acc[r][i], ro, r * ys + i, ep) : acc[r][i];
}

template <uint32_t R>
inline void dw_block(const float* __restrict tw, const int64_t* __restrict to, uint32_t nt, float b,
                     const float* __restrict xb, size_t rs, float* __restrict yo, const float* ro, size_t ys,
                     uint32_t n, const ::dcrt::ConvEpilogue& ep) {
  constexpr uint32_t L = 8;
  float acc[R][L];
  for (uint32_t r = 0; r < R; ++r)
    for (uint32_t i = 0; i < L; ++i) acc[r][i] = b;
  for (uint32_t t = 0; t < nt; ++t)
    for (uint32_t r = 0; r < R; ++r)
      for (uint32_t i = 0; i < L; ++i) acc[r][i] += tw[t] * xb[to[t] + r * rs + i];
  for (uint32_t r = 0; r < R; ++r)
    for (uint32_t i = 0; i < n; ++i) yo[r * ys + i] = conv_epi(acc[r][i], ro, r * ys + i, ep);
}
constexpr uint32_t kDwTile = 8;
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
// conv_block<nr> for a run-time nr in 1..R.
template <uint32_t R, typename... A>
inline void conv_block_n(uint32_t nr, A&&... a) {
  if constexpr (R > 1) {
    if (nr < R) return conv_block_n<R - 1>(nr, a...);
  }
  conv_block<R>(a...);
}

// The AVX-512 blocks are 8 rows high: their window over 32 channels (~60 KB for 3x3) would
// not fit L1, so they take 16 channels per block.
constexpr uint32_t kOcBlock = 64;
constexpr uint32_t kIcBlock = kRows > 4 ? 16 : 32;

inline void conv_rows(const ::dcrt::QConvRows& w, const ::dcrt::ConvGeom& g, const int64_t* __restrict coloff,
                      const float* bias, const float* __restrict xpad, float* __restrict y, uint32_t oc0,
                      uint32_t oc1, uint32_t oy0, uint32_t oy1, const ::dcrt::ConvEpilogue& ep) {
  const uint32_t icg = g.in_c / g.groups, ocg = g.out_c / g.groups, taps = g.kh * g.kw;
  const uint32_t nib = (icg + kIcBlock - 1) / kIcBlock;
  const ::dcrt::PadGeom pg = ::dcrt::pad_geom(g);
  const size_t rs = size_t(g.sh) * pg.wq, ys = g.out_w;
  std::vector<const uint32_t*> bnd(size_t(kOcBlock) * (nib + 1));  // per channel: channel-block starts
  uint32_t klast[kOcBlock];  // per channel: its last channel block with taps (the epilogue's)
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
      klast[oc - ob] = 0;
      for (uint32_t k = 1; k < nib; ++k)
        if (bo[k] != bo[k + 1]) klast[oc - ob] = k;
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
            const size_t yoff = (size_t(oc) * g.out_h + oy) * ys + ox0;
            float* yb = y + yoff;
            const float* rb = ep.res ? ep.res + yoff : nullptr;
            const bool first = k == 0, last = k == klast[oc - ob];
            conv_block_n<kRows>(nr, w, bo[k], bo[k + 1], coloff, bias[oc], first, last, xb, rs, yb, rb, ys, n, ep);
          }
      }
    }
  }
}

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
// conv_rows with every input load aligned. Zen 5 measured (bench/microarch/conv_bound.cpp): an
// FMA whose 64-byte memory operand crosses a cache line issues once per cycle, an aligned one
// 1.85 times per cycle; the taps at kx = 1, 2 of a 3x3 kernel always cross. So for each pixel
// block and block of input channels, the R*sh + ... input rows it reads are copied once into an
// aligned window, one 16-float row per (channel, kx, row): win[(ic * kw + kx) * nrows + row].
// Every output channel of the group then reads the window with aligned loads (row stride sh *
// 16 floats). The copy is kw * nrows vectors per channel, against the group's taps (64
// channels x ~40 taps x 8 rows per channel block).
// The window's share of L1 (48 KB on Zen 5). Measured on VGG-16's layers (Zen 5, one thread):
// 16-40 KB and channel groups of 16-64 are within 10% of each other; 24 KB x 64 the best. What
// is left is per call: ~120 cycles of accumulator loads and stores and the loop's exit per
// (channel, channel block, pixel block) against ~7 per tap, at 20-40 taps per call.
constexpr uint32_t kWinBytes = 24u << 10;

inline void conv_rows_aligned(const ::dcrt::QConvRows& w, const ::dcrt::ConvGeom& g, const int64_t* __restrict coloff,
                              const float* bias, const float* __restrict xpad, float* __restrict y, uint32_t oc0,
                              uint32_t oc1, uint32_t oy0, uint32_t oy1, const ::dcrt::ConvEpilogue& ep) {
  const uint32_t icg = g.in_c / g.groups, ocg = g.out_c / g.groups, taps = g.kh * g.kw;
  const ::dcrt::PadGeom pg = ::dcrt::pad_geom(g);
  const size_t rs = size_t(g.sh) * pg.wq, ys = g.out_w;
  const uint32_t nrows = (kRows - 1) * g.sh + (g.kh - 1) * g.dh + 1;  // window rows of a full band
  const uint32_t icb = std::max<uint32_t>(1, std::min<uint32_t>(16, kWinBytes / (g.kw * nrows * 64)));
  const uint32_t nib = (icg + icb - 1) / icb;
  // Window offsets of every column (channel within its block, kx, ky) and the padded-input
  // offset of each (channel, kx) row 0 (coloff of ky = 0).
  // Per thread, grown once: a call must not allocate (LeNet-5's convs take microseconds).
  thread_local std::vector<int64_t> woff;
  thread_local std::vector<float> win_buf;
  thread_local std::vector<const uint32_t*> bnd;
  woff.resize(size_t(icg) * taps);
  for (uint32_t c = 0; c < icg * taps; ++c) {
    const uint32_t ic = c / taps, ky = c / g.kw % g.kh, kx = c % g.kw;
    woff[c] = int64_t(((ic % icb) * g.kw + kx) * nrows + ky * g.dh) * kTile;
  }
  win_buf.resize(size_t(icb) * g.kw * nrows * kTile + kTile);
  float* win = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(win_buf.data()) + 63) & ~uintptr_t(63));
  bnd.resize(size_t(kOcBlock) * (nib + 1));
  uint32_t klast[kOcBlock];
  for (uint32_t ob = oc0; ob < oc1; ob += kOcBlock) {
    const uint32_t ob1 = std::min(oc1, ob + kOcBlock);
    for (uint32_t oc = ob; oc < ob1; ++oc) {
      const uint32_t* e = w.entries + w.rowptr[oc];
      const uint32_t* e1 = w.entries + w.rowptr[oc + 1];
      const uint32_t** bo = bnd.data() + size_t(oc - ob) * (nib + 1);
      for (uint32_t k = 0; k < nib; ++k) {
        bo[k] = e;
        const uint32_t col_end = std::min(icg, (k + 1) * icb) * taps;
        while (e < e1 && (*e >> 8) < col_end) ++e;
      }
      bo[nib] = e1;
      klast[oc - ob] = 0;
      for (uint32_t k = 1; k < nib; ++k)
        if (bo[k] != bo[k + 1]) klast[oc - ob] = k;
    }
    for (uint32_t oy = oy0; oy < oy1; oy += kRows) {
      const uint32_t nr = std::min(kRows, oy1 - oy);
      const uint32_t rows_needed = (nr - 1) * g.sh + (g.kh - 1) * g.dh + 1;
      for (uint32_t ox0 = 0; ox0 < g.out_w; ox0 += kTile) {
        const uint32_t n = std::min(kTile, g.out_w - ox0);
        for (uint32_t k = 0; k < nib; ++k) {
          const uint32_t ic0 = k * icb, ic1 = std::min(icg, ic0 + icb);
          uint32_t group = uint32_t(-1);
          for (uint32_t oc = ob; oc < ob1; ++oc) {
            const uint32_t** bo = bnd.data() + size_t(oc - ob) * (nib + 1);
            if (k > 0 && bo[k] == bo[k + 1]) continue;  // no taps in this channel block
            if (oc / ocg != group) {  // (re)fill the window from this channel's input group
              group = oc / ocg;
              const float* xg = xpad + size_t(group) * icg * pg.plane + size_t(oy) * rs + ox0;
              for (uint32_t ic = ic0; ic < ic1; ++ic)
                for (uint32_t kx = 0; kx < g.kw; ++kx) {
                  const float* src = xg + coloff[size_t(ic) * taps + kx];  // (ic, ky = 0, kx)
                  float* dst = win + size_t(((ic - ic0) * g.kw + kx) * nrows) * kTile;
                  for (uint32_t r = 0; r < rows_needed; ++r)
                    _mm512_store_ps(dst + size_t(r) * kTile, _mm512_loadu_ps(src + size_t(r) * pg.wq));
                }
            }
            const size_t yoff = (size_t(oc) * g.out_h + oy) * ys + ox0;
            const float* rb = ep.res ? ep.res + yoff : nullptr;
            const bool first = k == 0, last = k == klast[oc - ob];
            conv_block_n<kRows>(nr, w, bo[k], bo[k + 1], woff.data(), bias[oc], first, last, win,
                                size_t(g.sh) * kTile, y + yoff, rb, ys, n, ep);
          }
        }
      }
    }
  }
}
#endif

// Depthwise convolution (groups = in_c = out_c): same contract as conv_rows for that geometry.
inline void conv_dw_rows(const ::dcrt::QConvRows& w, const ::dcrt::ConvGeom& g, const int64_t* __restrict coloff,
                         const float* bias, const float* __restrict xpad, float* __restrict y, uint32_t oc0,
                         uint32_t oc1, uint32_t oy0, uint32_t oy1, const ::dcrt::ConvEpilogue& ep) {
  const uint32_t mask = (1u << w.code_bits) - 1;
  const ::dcrt::PadGeom pg = ::dcrt::pad_geom(g);
  const size_t rs = size_t(g.sh) * pg.wq, ys = g.out_w;
  const uint32_t taps = g.kh * g.kw;
  // The taps of one channel: on the stack up to 64 (3x3, 5x5, 7x7), this is called per channel.
  float tw_s[64];
  int64_t to_s[64];
  std::vector<float> tw_h;
  std::vector<int64_t> to_h;
  if (taps > 64) {
    tw_h.resize(taps);
    to_h.resize(taps);
  }
  float* tw = taps > 64 ? tw_h.data() : tw_s;
  int64_t* to = taps > 64 ? to_h.data() : to_s;
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
  const uint32_t tile = g.out_w >= 12 ? kDwWide : kDwTile;
#else
  const uint32_t tile = kDwTile;
#endif
  for (uint32_t oc = oc0; oc < oc1; ++oc) {
    uint32_t nt = 0;
    for (uint32_t e = w.rowptr[oc]; e < w.rowptr[oc + 1]; ++e, ++nt) {
      tw[nt] = w.codebook[w.entries[e] & mask];
      to[nt] = coloff[w.entries[e] >> 8];
    }
    const float* xc = xpad + size_t(oc) * pg.plane;
    for (uint32_t oy = oy0; oy < oy1; oy += kDwRows) {
      const uint32_t nr = std::min(kDwRows, oy1 - oy);
      for (uint32_t ox0 = 0; ox0 < g.out_w; ox0 += tile) {
        const uint32_t n = std::min(tile, g.out_w - ox0);
        const float* xb = xc + size_t(oy) * rs + ox0;
        const size_t yoff = (size_t(oc) * g.out_h + oy) * ys + ox0;
        const float* rb = ep.res ? ep.res + yoff : nullptr;
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
        if (tile == kDwWide) {
          switch (nr) {
            case 4: dw_block512<4>(tw, to, nt, bias[oc], xb, rs, y + yoff, rb, ys, n, ep); break;
            case 3: dw_block512<3>(tw, to, nt, bias[oc], xb, rs, y + yoff, rb, ys, n, ep); break;
            case 2: dw_block512<2>(tw, to, nt, bias[oc], xb, rs, y + yoff, rb, ys, n, ep); break;
            default: dw_block512<1>(tw, to, nt, bias[oc], xb, rs, y + yoff, rb, ys, n, ep); break;
          }
          continue;
        }
#endif
        switch (nr) {
          case 4: dw_block<4>(tw, to, nt, bias[oc], xb, rs, y + yoff, rb, ys, n, ep); break;
          case 3: dw_block<3>(tw, to, nt, bias[oc], xb, rs, y + yoff, rb, ys, n, ep); break;
          case 2: dw_block<2>(tw, to, nt, bias[oc], xb, rs, y + yoff, rb, ys, n, ep); break;
          default: dw_block<1>(tw, to, nt, bias[oc], xb, rs, y + yoff, rb, ys, n, ep); break;
        }
      }
    }
  }
}
