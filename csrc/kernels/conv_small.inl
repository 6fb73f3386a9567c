// The small-map dense conv (conv_small.hpp), included once per ISA build. Blocks of 16 output
// channels are GCC/Clang vector-extension values (one zmm on AVX-512, two ymm on AVX2, four
// xmm in the portable build), up to four blocks accumulated in registers per pixel across all
// its taps and channels; a tail of fewer than 16 channels runs scalar.
typedef float SmallV16 __attribute__((vector_size(64)));

// V blocks of 16 channels, each accumulated in S = 4 / V independent sums over alternating
// input channels (an FMA's latency is four cycles: one sum per block would wait on it), added
// together at the end.
template <int V>
inline void conv_small_block(const SmallConv& s, const float* __restrict x, float* __restrict yp, uint32_t p,
                             size_t oc0) {
  constexpr int S = 4 / V;
  SmallV16 acc[S][V];
  for (int v = 0; v < V; ++v) {
    std::memcpy(&acc[0][v], yp + oc0 + 16 * v, sizeof(SmallV16));
    for (int k = 1; k < S; ++k) acc[k][v] = SmallV16{};
  }
  const size_t oc_n = s.out_c;
  for (uint32_t t = 0; t < s.taps; ++t) {
    const int32_t o = s.off[size_t(t) * s.pixels + p];
    if (o < 0) continue;
    const float* xs = x + o;
    const float* wt = s.w + size_t(t) * s.in_c * oc_n + oc0;
    uint32_t ic = 0;
    for (; ic + S <= s.in_c; ic += S)
      for (int k = 0; k < S; ++k) {
        const float xv = xs[size_t(ic + k) * s.in_hw];
        const float* wr = wt + size_t(ic + k) * oc_n;
        for (int v = 0; v < V; ++v) {
          SmallV16 w;
          std::memcpy(&w, wr + 16 * v, sizeof(SmallV16));
          acc[k][v] += w * xv;
        }
      }
    for (; ic < s.in_c; ++ic) {
      const float xv = xs[size_t(ic) * s.in_hw];
      const float* wr = wt + size_t(ic) * oc_n;
      for (int v = 0; v < V; ++v) {
        SmallV16 w;
        std::memcpy(&w, wr + 16 * v, sizeof(SmallV16));
        acc[0][v] += w * xv;
      }
    }
  }
  for (int v = 0; v < V; ++v) {
    SmallV16 a = acc[0][v];
    for (int k = 1; k < S; ++k) a += acc[k][v];
    std::memcpy(yp + oc0 + 16 * v, &a, sizeof(SmallV16));
  }
}

inline void conv_small(const SmallConv& s, const float* __restrict x, float* __restrict yt, uint32_t p0,
                       uint32_t p1) {
  const size_t oc_n = s.out_c;
  for (uint32_t p = p0; p < p1; ++p) {
    float* yp = yt + size_t(p) * oc_n;
    size_t oc = 0;
    for (; oc + 64 <= oc_n; oc += 64) conv_small_block<4>(s, x, yp, p, oc);
    if (oc + 32 <= oc_n) {
      conv_small_block<2>(s, x, yp, p, oc);
      oc += 32;
    }
    if (oc + 16 <= oc_n) {
      conv_small_block<1>(s, x, yp, p, oc);
      oc += 16;
    }
    if (oc == oc_n) continue;
    for (uint32_t t = 0; t < s.taps; ++t) {  // the last < 16 channels
      const int32_t o = s.off[size_t(t) * s.pixels + p];
      if (o < 0) continue;
      for (uint32_t ic = 0; ic < s.in_c; ++ic) {
        const float xv = x[size_t(ic) * s.in_hw + size_t(o)];
        const float* wr = s.w + (size_t(t) * s.in_c + ic) * oc_n;
        for (size_t k = oc; k < oc_n; ++k) yp[k] += wr[k] * xv;
      }
    }
  }
}
