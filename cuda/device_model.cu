// CUDA backend: device Huffman decoding, device layouts, quantized sparse kernels, dense ops.
// See device_model.hpp for the contract. Every kernel has a CPU twin in csrc/ that the GPU tests
// compare against (tests/test_cuda.py): decode vs huffman_decode__ref, rows layout vs
// csc_to_conv_rows, every op vs the CPU executor on the zoo networks.
#include <cuda_runtime.h>

#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "device_model.hpp"
#include "huffman.hpp"

namespace dcrt {
namespace cuda {
namespace {

using clk = std::chrono::steady_clock;
double secs(clk::time_point a, clk::time_point b) { return std::chrono::duration<double>(b - a).count(); }

void check(cudaError_t e, const char* what, const char* file, int line) {
  if (e == cudaSuccess) return;
  cudaGetLastError();  // clear a sticky launch error so the next call reports its own
  throw CudaError(std::string("CUDA error ") + cudaGetErrorName(e) + ": " + cudaGetErrorString(e) + " (" + what +
                  " at " + file + ":" + std::to_string(line) + ")");
}
#define CK(call) check((call), #call, __FILE__, __LINE__)
#define CK_LAUNCH() check(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)

// Owning device buffer (move-only); freed on every path, so a failed load leaves nothing behind.
template <class T>
struct DBuf {
  T* p = nullptr;
  size_t n = 0;
  DBuf() = default;
  DBuf(const DBuf&) = delete;
  DBuf& operator=(const DBuf&) = delete;
  DBuf(DBuf&& o) noexcept : p(o.p), n(o.n) { o.p = nullptr; o.n = 0; }
  DBuf& operator=(DBuf&& o) noexcept {
    if (this != &o) { reset(); p = o.p; n = o.n; o.p = nullptr; o.n = 0; }
    return *this;
  }
  ~DBuf() { reset(); }
  void reset() {
    if (p) cudaFree(p);
    p = nullptr;
    n = 0;
  }
  void alloc(size_t count) {
    reset();
    if (count) CK(cudaMalloc(&p, count * sizeof(T)));
    n = count;
  }
  void grow(size_t count) {
    if (count > n) alloc(count);
  }
  void upload(const T* src, size_t count, cudaStream_t s = 0) {
    alloc(count);
    if (count) CK(cudaMemcpyAsync(p, src, count * sizeof(T), cudaMemcpyHostToDevice, s));
  }
  size_t bytes() const { return n * sizeof(T); }
};

struct DeviceGuard {  // restores the caller's current device
  int prev = 0;
  explicit DeviceGuard(int dev) {
    CK(cudaGetDevice(&prev));
    CK(cudaSetDevice(dev));
  }
  ~DeviceGuard() { cudaSetDevice(prev); }
};

// ---------------------------------------------------------------- Huffman decoding
// One chunk of one stream: MSB-first canonical codes, peek table over max_len-bit windows
// ((symbol << 4) | length, length 0 = invalid), the same checks as huff_decode_checked: every
// code valid and inside the chunk, no spare byte, zero padding.
struct ChunkJob {
  uint64_t src;    // byte offset of the chunk in the arena
  uint32_t bytes;  // chunk length
  uint32_t n;      // symbols
  uint64_t out;    // output offset in the symbol arena
  uint32_t peek;   // offset of the table in the peek arena (uint16 elements)
  uint32_t len;    // max code length (1..15)
};

__global__ void k_huff_decode(const ChunkJob* __restrict jobs, uint32_t n_jobs, const uint8_t* __restrict arena,
                              const uint16_t* __restrict peeks, uint8_t* __restrict out,
                              unsigned long long* __restrict first_bad) {
  const uint32_t j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= n_jobs) return;
  const ChunkJob jb = jobs[j];
  const uint8_t* p = arena + jb.src;
  const uint8_t* end = p + jb.bytes;
  const uint16_t* peek = peeks + jb.peek;
  const int L = int(jb.len);
  uint8_t* o = out + jb.out;
  uint64_t buf = 0;
  int have = 0;
  bool ok = L > 0 || jb.n == 0;
  for (uint32_t i = 0; ok && i < jb.n; ++i) {
    while (have <= 56 && p < end) {
      buf |= uint64_t(*p++) << (56 - have);
      have += 8;
    }
    const uint16_t e = peek[buf >> (64 - L)];
    const int len = e & 15;
    if (len == 0 || len > have) {
      ok = false;
      break;
    }
    o[i] = uint8_t(e >> 4);
    buf <<= len;
    have -= len;
  }
  if (ok) ok = p == end && have < 8 && buf == 0;
  if (!ok) atomicMin(first_bad, (unsigned long long)j);
}

// ---------------------------------------------------------------- layout building
__global__ void k_nonzero_flags(const uint8_t* __restrict codes, uint64_t n, uint32_t* __restrict flags) {
  for (uint64_t e = blockIdx.x * uint64_t(blockDim.x) + threadIdx.x; e < n; e += uint64_t(gridDim.x) * blockDim.x)
    flags[e] = codes[e] != 0;
}

// One thread per column: absolute rows from the gaps (row += gap + 1), bounds check, and the
// non-filler entries written compacted (CSC for zero-input skipping, and sort keys for the rows
// layout).
__global__ void k_columns(const uint32_t* __restrict colptr, uint32_t cols, uint32_t rows, const uint8_t* __restrict codes,
                          const uint8_t* __restrict gaps, const uint32_t* __restrict pos, uint32_t* __restrict ccolptr,
                          uint32_t* __restrict crow, uint8_t* __restrict ccode, unsigned long long* __restrict keys,
                          unsigned long long* __restrict bad_col) {
  const uint32_t c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  const uint32_t e0 = colptr[c], e1 = colptr[c + 1];
  ccolptr[c] = pos[e0];
  uint64_t row = uint64_t(-1);
  for (uint32_t e = e0; e < e1; ++e) {
    row += uint64_t(gaps[e]) + 1;
    if (row >= rows) {
      atomicMin(bad_col, (unsigned long long)c);
      return;
    }
    const uint8_t code = codes[e];
    if (code) {
      const uint32_t q = pos[e];
      crow[q] = uint32_t(row);
      ccode[q] = code;
      keys[q] = (row << 32) | c;
    }
  }
}

__global__ void k_rowptr(const unsigned long long* __restrict keys, uint64_t nnz, uint32_t rows, uint32_t* __restrict rowptr,
                         uint32_t* __restrict rcol) {
  for (uint64_t i = blockIdx.x * uint64_t(blockDim.x) + threadIdx.x; i < nnz; i += uint64_t(gridDim.x) * blockDim.x) {
    const uint32_t r = uint32_t(keys[i] >> 32);
    rcol[i] = uint32_t(keys[i]);
    const int64_t prev = i ? int64_t(keys[i - 1] >> 32) : -1;
    for (int64_t q = prev + 1; q <= int64_t(r); ++q) rowptr[q] = uint32_t(i);
    if (i + 1 == nnz)
      for (uint32_t q = r + 1; q <= rows; ++q) rowptr[q] = uint32_t(nnz);
  }
}

// ---------------------------------------------------------------- inference kernels
// Weight of entry e: codebook[code] (sparse) or the stored fp32 value (plain layers).
struct WeightsQ {
  const uint8_t* code;
  const float* codebook;
  __device__ float operator()(uint32_t e) const { return __ldg(codebook + code[e]); }
};
struct WeightsF {
  const float* value;
  __device__ float operator()(uint32_t e) const { return __ldg(value + e); }
};

__device__ inline float warp_sum(float v) {
  for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Small batches: one warp per output row, lanes over its entries, samples in a loop.
// `live` (batch 1 only, may be null): the number of non-zero inputs; below `skip_below` the
// column kernel does the work instead and this one returns.
template <class W>
__global__ void k_linear_rows(const uint32_t* __restrict rowptr, const uint32_t* __restrict rcol, W w, const float* __restrict bias,
                              const float* __restrict x, float* __restrict y, uint32_t rows, uint32_t cols, uint32_t n,
                              const uint32_t* __restrict live, uint32_t skip_below) {
  if (live && *live < skip_below) return;
  const uint32_t r = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x & 31;
  if (r >= rows) return;
  const uint32_t e0 = rowptr[r], e1 = rowptr[r + 1];
  for (uint32_t s = 0; s < n; ++s) {
    const float* xs = x + size_t(s) * cols;
    float acc = 0.f;
    for (uint32_t e = e0 + lane; e < e1; e += 32) acc += w(e) * __ldg(xs + rcol[e]);
    acc = warp_sum(acc);
    if (lane == 0) y[size_t(s) * rows + r] = bias[r] + acc;
  }
}

// Batch 1 with mostly-zero input: one warp per live column, scatter into y (pre-set to bias).
template <class W>
__global__ void k_linear_cols_skip(const uint32_t* __restrict ccolptr, const uint32_t* __restrict crow, W w,
                                   const float* __restrict x, float* __restrict y, uint32_t cols,
                                   const uint32_t* __restrict live, uint32_t skip_below) {
  if (*live >= skip_below) return;
  const uint32_t c = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x & 31;
  if (c >= cols) return;
  const float xv = x[c];
  if (xv == 0.f) return;  // the whole column costs one load
  for (uint32_t e = ccolptr[c] + lane; e < ccolptr[c + 1]; e += 32) atomicAdd(y + crow[e], w(e) * xv);
}

__global__ void k_count_live(const float* __restrict x, uint32_t n, uint32_t* __restrict live) {
  uint32_t k = 0;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) k += x[i] != 0.f;
  for (int o = 16; o; o >>= 1) k += __shfl_xor_sync(0xffffffffu, k, o);
  if ((threadIdx.x & 31) == 0 && k) atomicAdd(live, k);
}

// Batches: inputs transposed to [cols, np] (np = n rounded up to 32); one warp per output row,
// lane = sample, so every entry's input read is one coalesced 128-byte line.
template <class W>
__global__ void k_linear_rows_t(const uint32_t* __restrict rowptr, const uint32_t* __restrict rcol, W w, const float* __restrict bias,
                                const float* __restrict xt, float* __restrict yt, uint32_t rows, uint32_t np) {
  const uint32_t r = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x & 31;
  if (r >= rows) return;
  const uint32_t e0 = rowptr[r], e1 = rowptr[r + 1];
  for (uint32_t s0 = 0; s0 < np; s0 += 32) {
    float acc = bias[r];
    for (uint32_t e = e0; e < e1; ++e) acc += w(e) * __ldg(xt + size_t(rcol[e]) * np + s0 + lane);
    yt[size_t(r) * np + s0 + lane] = acc;
  }
}

// dst[c * ld_dst + r] = src[r * ld_src + c], 32 x 32 tiles through shared memory.
__global__ void k_transpose(const float* __restrict src, size_t ld_src, float* __restrict dst, size_t ld_dst, uint32_t nr,
                            uint32_t nc) {
  __shared__ float t[32][33];
  const uint32_t c0 = blockIdx.x * 32, r0 = blockIdx.y * 32;
  for (uint32_t i = threadIdx.y; i < 32; i += blockDim.y) {
    const uint32_t r = r0 + i, c = c0 + threadIdx.x;
    t[i][threadIdx.x] = r < nr && c < nc ? src[size_t(r) * ld_src + c] : 0.f;
  }
  __syncthreads();
  for (uint32_t i = threadIdx.y; i < 32; i += blockDim.y) {
    const uint32_t c = c0 + i, r = r0 + threadIdx.x;
    if (c < nc && r < nr) dst[size_t(c) * ld_dst + r] = t[threadIdx.x][i];
  }
}

struct ConvG {
  uint32_t in_c, in_h, in_w, out_c, out_h, out_w, kh, kw, sh, sw, ph, pw, groups;
};

// Direct sparse convolution: block = 128 output pixels of one output channel and sample; the
// channel's entries are staged through shared memory; column c is tap (c / (kh kw), ky, kx) of
// the channel's group. Zero padding by bounds checks.
template <class W>
__global__ void k_conv_rows(const uint32_t* __restrict rowptr, const uint32_t* __restrict rcol, W w, const float* __restrict bias,
                            const float* __restrict x, float* __restrict y, ConvG g) {
  __shared__ int32_t s_icg[256];
  __shared__ int16_t s_ky[256], s_kx[256];
  __shared__ float s_w[256];
  const uint32_t oc = blockIdx.y, s = blockIdx.z;
  const uint32_t pix = blockIdx.x * blockDim.x + threadIdx.x, npix = g.out_h * g.out_w;
  const uint32_t icg = g.in_c / g.groups, ocg = g.out_c / g.groups, taps = g.kh * g.kw;
  const float* xg = x + (size_t(s) * g.in_c + size_t(oc / ocg) * icg) * g.in_h * g.in_w;
  const int oy = pix < npix ? int(pix / g.out_w) : 0, ox = pix < npix ? int(pix % g.out_w) : 0;
  const int iy0 = oy * int(g.sh) - int(g.ph), ix0 = ox * int(g.sw) - int(g.pw);
  float acc = bias[oc];
  const uint32_t e0 = rowptr[oc], e1 = rowptr[oc + 1];
  for (uint32_t b = e0; b < e1; b += 256) {
    const uint32_t m = min(256u, e1 - b);
    __syncthreads();
    for (uint32_t i = threadIdx.x; i < m; i += blockDim.x) {
      const uint32_t c = rcol[b + i];
      s_icg[i] = int32_t(c / taps);
      s_ky[i] = int16_t((c / g.kw) % g.kh);
      s_kx[i] = int16_t(c % g.kw);
      s_w[i] = w(b + i);
    }
    __syncthreads();
    if (pix < npix)
      for (uint32_t i = 0; i < m; ++i) {
        const int iy = iy0 + s_ky[i], ix = ix0 + s_kx[i];
        if (iy >= 0 && iy < int(g.in_h) && ix >= 0 && ix < int(g.in_w))
          acc += s_w[i] * __ldg(xg + (size_t(s_icg[i]) * g.in_h + iy) * g.in_w + ix);
      }
  }
  if (pix < npix) y[(size_t(s) * g.out_c + oc) * npix + pix] = acc;
}

__global__ void k_relu(float* x, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    x[i] = x[i] > 0.f ? x[i] : 0.f;
}

struct PoolG {
  uint32_t c, h, w, oh, ow, kh, kw, sh, sw, ph, pw;
};

// Same windows as csrc/kernels/dense.cpp: max over the clipped window; average divided by the
// window clipped to the padded extent (Caffe).
__global__ void k_pool(const float* __restrict x, float* __restrict y, PoolG g, size_t total, bool is_max) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < total; i += size_t(gridDim.x) * blockDim.x) {
    const uint32_t ox = uint32_t(i % g.ow), oy = uint32_t((i / g.ow) % g.oh);
    const size_t plane = i / (size_t(g.ow) * g.oh);  // sample * c + channel
    const float* xc = x + plane * g.h * g.w;
    const int64_t hs = int64_t(oy) * g.sh - g.ph, ws = int64_t(ox) * g.sw - g.pw;
    const int64_t y0 = max(hs, int64_t(0)), y1 = min(hs + int64_t(g.kh), int64_t(g.h));
    const int64_t x0 = max(ws, int64_t(0)), x1 = min(ws + int64_t(g.kw), int64_t(g.w));
    if (is_max) {
      float m = -INFINITY;
      for (int64_t iy = y0; iy < y1; ++iy)
        for (int64_t ix = x0; ix < x1; ++ix) m = fmaxf(m, xc[iy * g.w + ix]);
      y[i] = m;
    } else {
      const int64_t he = min(hs + int64_t(g.kh), int64_t(g.h) + g.ph), we = min(ws + int64_t(g.kw), int64_t(g.w) + g.pw);
      float sum = 0.f;
      for (int64_t iy = y0; iy < y1; ++iy)
        for (int64_t ix = x0; ix < x1; ++ix) sum += xc[iy * g.w + ix];
      y[i] = sum / float((he - hs) * (we - ws));
    }
  }
}

__global__ void k_lrn(const float* __restrict x, float* __restrict y, uint32_t c, size_t hw, size_t total, uint32_t size,
                      float alpha, float beta, float k) {
  const int64_t half = size / 2;
  const float a = alpha / float(size);
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < total; i += size_t(gridDim.x) * blockDim.x) {
    const size_t p = i % hw;
    const int64_t ch = int64_t((i / hw) % c);
    const float* xs = x + (i / (hw * c)) * hw * c;
    float acc = 0.f;
    for (int64_t j = max(int64_t(0), ch - half); j <= min(int64_t(c) - 1, ch + half); ++j) {
      const float v = xs[size_t(j) * hw + p];
      acc += v * v;
    }
    y[i] = x[i] * powf(k + a * acc, -beta);
  }
}

__global__ void k_softmax(const float* __restrict x, float* __restrict y, uint32_t c, size_t hw, size_t total) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < total; i += size_t(gridDim.x) * blockDim.x) {
    const size_t base = (i / hw) * hw * c + i % hw;
    float m = -INFINITY;
    for (uint32_t ch = 0; ch < c; ++ch) m = fmaxf(m, x[base + ch * hw]);
    float s = 0.f;
    for (uint32_t ch = 0; ch < c; ++ch) s += expf(x[base + ch * hw] - m);
    const float inv = 1.f / s;
    for (uint32_t ch = 0; ch < c; ++ch) y[base + ch * hw] = expf(x[base + ch * hw] - m) * inv;
  }
}

// Normalisation and the NaN/Inf check in one pass; the first bad flat index wins.
__global__ void k_prologue(const float* __restrict x, float* __restrict y, size_t total, size_t per, uint32_t C,
                           size_t inner, const float* __restrict mean, const float* __restrict inv_std,
                           unsigned long long* __restrict first_bad) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < total; i += size_t(gridDim.x) * blockDim.x) {
    const float v = x[i];
    if (!isfinite(v)) atomicMin(first_bad, (unsigned long long)i);
    if (C) {
      const uint32_t ch = uint32_t((i % per) / inner);
      y[i] = (v - mean[ch]) * inv_std[ch];
    } else {
      y[i] = v;
    }
  }
}

unsigned grid_for(size_t n, unsigned block = 256) {
  return unsigned(std::min<size_t>((n + block - 1) / block, 65535 * 4));
}

}  // namespace

// ---------------------------------------------------------------- the model
struct DLayer {
  std::string name;
  uint32_t storage = 0, kind = 0, rows = 0, cols = 0, kh = 1, kw = 1, code_bits = 0, index_bits = 0;
  uint64_t nnz = 0, n_entries = 0;
  DBuf<float> bias, codebook, values;       // values: plain layers (fp32 per stored entry)
  DBuf<uint32_t> rowptr, rcol;              // rows layout
  DBuf<uint8_t> rcode;
  DBuf<uint32_t> ccolptr, crow;             // sparse linear: compacted CSC for zero-input skipping
  DBuf<uint8_t> ccode;
  uint64_t sym_offset = 0;                  // this layer's codes in the symbol arena (gaps follow)
};

struct Work {
  cudaStream_t stream = nullptr;
  DBuf<float> a, b, xt, yt, mean, inv_std, in, out;  // in/out: staging for host arrays
  DBuf<uint32_t> live;
  DBuf<unsigned long long> bad;
  size_t cap = 0;
  ~Work() {
    if (stream) cudaStreamDestroy(stream);
  }
};

struct DeviceModel::Impl {
  int device = 0;
  Shape input, output;
  std::string meta;
  std::vector<OpDesc> ops;
  std::vector<float> mean, inv_std;
  std::vector<DLayer> layers;
  size_t max_act = 0, max_lin_cols = 0, max_lin_rows = 0;
  DeviceLoadStats stats;
  // Decoding state kept for time_decode / decoded_symbols.
  DBuf<uint8_t> arena, symbols;
  DBuf<uint16_t> peeks;
  DBuf<ChunkJob> jobs;
  uint32_t n_jobs = 0;
  uint64_t n_symbols = 0;
  static constexpr float kSkipBelow = 0.25f;  // batch-1 zero skipping below this input density
  mutable std::mutex mu;
  mutable std::vector<std::unique_ptr<Work>> free_work;

  std::unique_ptr<Work> acquire(size_t n) const;
  void release(std::unique_ptr<Work> w) const;
  void run(Work& w, cudaStream_t s, size_t n, const float* x_dev, float* y_dev) const;
};

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

std::string device_description(int device) {
  cudaDeviceProp p{};
  CK(cudaGetDeviceProperties(&p, device));
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s (sm_%d%d, %d SMs, %.1f GiB)", p.name, p.major, p.minor, p.multiProcessorCount,
                double(p.totalGlobalMem) / (1u << 30));
  return buf;
}

DeviceModel::DeviceModel(const uint8_t* data, size_t size, int device) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  if (device < 0 || device >= device_count())
    throw CudaError("CUDA device " + std::to_string(device) + " does not exist (" + std::to_string(device_count()) +
                    " visible)");
  DeviceGuard guard(device);
  m.device = device;
  const auto t0 = clk::now();
  ParsedFile f = parse_file(data, size);
  const auto t1 = clk::now();
  // Format 1.2 graphs (branches, ops 10-21) run on the CPU executor only, so far.
  for (size_t i = 0; i < f.ops.size(); ++i)
    if (uint16_t(f.ops[i].type) > uint16_t(OpType::Dropout) || f.ops[i].inputs.size() != 1 || f.ops[i].inputs[0] != i)
      throw CudaError("op[" + std::to_string(i) + "]: the CUDA backend runs chains of the format 1.0 ops only (this "
                      "graph has branches or 1.2 ops); load it with device='cpu'");
    else if (f.ops[i].type == OpType::Conv2d && (f.ops[i].p[5] || f.ops[i].p[6]))
      throw CudaError("op[" + std::to_string(i) + "] (conv2d): the CUDA backend has no dilated convolution yet; "
                      "load it with device='cpu'");
  m.input = f.input;
  m.ops = f.ops;
  m.meta = std::move(f.meta_json);
  m.mean = f.mean;
  for (float s : f.std) m.inv_std.push_back(1.f / s);
  m.max_act = m.input.numel();
  for (const OpDesc& op : m.ops) {
    m.max_act = std::max<size_t>({m.max_act, op.in.numel(), op.out.numel()});
    if (op.type == OpType::Linear) {
      m.max_lin_cols = std::max<size_t>(m.max_lin_cols, op.in.numel());
      m.max_lin_rows = std::max<size_t>(m.max_lin_rows, op.out.numel());
    }
  }
  m.output = m.ops.empty() ? m.input : m.ops.back().out;

  // One arena for every stream, one for the decode tables, one job per chunk.
  std::vector<uint8_t> h_arena;
  std::vector<uint16_t> h_peeks;
  std::vector<ChunkJob> h_jobs;
  struct JobWhere { uint32_t layer; bool index; uint64_t chunk; };
  std::vector<JobWhere> where;
  m.layers.resize(f.layers.size());
  uint64_t sym = 0;
  for (uint32_t i = 0; i < f.layers.size(); ++i) {
    const LayerDesc& d = f.layers[i];
    DLayer& L = m.layers[i];
    L.name = d.name; L.storage = d.storage; L.kind = d.kind; L.rows = d.rows; L.cols = d.cols; L.kh = d.kh;
    L.kw = d.kw; L.code_bits = d.code_bits; L.index_bits = d.index_bits; L.nnz = d.nnz; L.n_entries = d.n_entries;
    if (d.storage != kStorageSparse) continue;
    L.sym_offset = sym;
    for (int s = 0; s < 2; ++s) {
      const bool idx = s == 1;
      HuffTable t;
      build_huff_table(idx ? d.index_lengths.data() : d.code_lengths.data(), 1u << (idx ? d.index_bits : d.code_bits),
                       d.n_entries, t, d.where() + (idx ? ": index_lengths" : ": code_lengths"));
      const uint32_t peek_at = uint32_t(h_peeks.size());
      h_peeks.insert(h_peeks.end(), t.peek.begin(), t.peek.end());
      const uint8_t* stream = idx ? d.index_stream : d.code_stream;
      const uint64_t bytes = idx ? d.index_stream_bytes : d.code_stream_bytes;
      const uint64_t base = h_arena.size();
      h_arena.insert(h_arena.end(), stream, stream + bytes);
      const auto& off = idx ? d.index_offsets : d.code_offsets;
      for (uint64_t c = 0; c < d.n_chunks; ++c) {
        const uint64_t s0 = c * d.chunk_symbols;
        const uint32_t n = uint32_t(std::min<uint64_t>(d.chunk_symbols, d.n_entries - s0));
        h_jobs.push_back({base + off[c], off[c + 1] - off[c], n, sym + (idx ? d.n_entries : 0) + s0, peek_at,
                          uint32_t(t.max_len)});
        where.push_back({i, idx, c});
      }
    }
    sym += 2 * d.n_entries;
    m.stats.symbols_decoded += 2 * d.n_entries;
  }
  m.n_symbols = sym;
  m.n_jobs = uint32_t(h_jobs.size());

  const auto t2 = clk::now();
  m.arena.upload(h_arena.data(), h_arena.size());
  m.peeks.upload(h_peeks.data(), h_peeks.size());
  m.jobs.upload(h_jobs.data(), h_jobs.size());
  m.symbols.alloc(sym);
  DBuf<unsigned long long> bad;
  bad.alloc(1);
  for (uint32_t i = 0; i < f.layers.size(); ++i) {
    const LayerDesc& d = f.layers[i];
    DLayer& L = m.layers[i];
    L.bias.upload(d.bias.data(), d.bias.size());
    if (d.storage == kStorageSparse) {
      L.codebook.upload(d.codebook.data(), d.codebook.size());
      L.ccolptr.upload(d.colptr.data(), d.colptr.size());  // the file's colptr (fillers included) for now
    } else {
      // Plain layers as rows of every non-zero weight (column order), fp32 values.
      std::vector<uint32_t> rp(size_t(d.rows) + 1, 0), rc;
      std::vector<float> v;
      for (uint32_t r = 0; r < d.rows; ++r) {
        for (uint32_t c = 0; c < d.cols; ++c)
          if (d.weight[size_t(r) * d.cols + c] != 0.f) {
            rc.push_back(c);
            v.push_back(d.weight[size_t(r) * d.cols + c]);
          }
        rp[r + 1] = uint32_t(rc.size());
      }
      L.rowptr.upload(rp.data(), rp.size());
      L.rcol.upload(rc.data(), rc.size());
      L.values.upload(v.data(), v.size());
      L.nnz = v.size();
    }
    m.stats.bytes_uploaded += d.bias.size() * 4 + d.codebook.size() * 4 + d.colptr.size() * 4 + d.weight.size() * 4;
  }
  m.stats.bytes_uploaded += h_arena.size() + h_peeks.size() * 2 + h_jobs.size() * sizeof(ChunkJob);
  CK(cudaMemset(bad.p, 0xff, sizeof(unsigned long long)));
  CK(cudaDeviceSynchronize());
  const auto t3 = clk::now();

  if (m.n_jobs) {
    k_huff_decode<<<(m.n_jobs + 127) / 128, 128>>>(m.jobs.p, m.n_jobs, m.arena.p, m.peeks.p, m.symbols.p, bad.p);
    CK_LAUNCH();
  }
  unsigned long long first_bad = 0;
  CK(cudaMemcpy(&first_bad, bad.p, sizeof first_bad, cudaMemcpyDeviceToHost));
  const auto t4 = clk::now();
  if (first_bad != ~0ull) {
    const JobWhere& w = where[first_bad];
    throw FormatError(f.layers[w.layer].where() + ": " + (w.index ? "index_stream" : "code_stream") + ": chunk " +
                      std::to_string(w.chunk) +
                      ": corrupt (invalid code, runs past the chunk's end, spare bytes or non-zero padding)");
  }

  // Layouts: compacted CSC and sorted rows for every sparse layer.
  for (uint32_t i = 0; i < f.layers.size(); ++i) {
    DLayer& L = m.layers[i];
    if (L.storage != kStorageSparse) continue;
    const LayerDesc& d = f.layers[i];
    const uint8_t* codes = m.symbols.p + L.sym_offset;
    const uint8_t* gaps = codes + L.n_entries;
    DBuf<uint32_t> flags, pos, colptr;
    colptr = std::move(L.ccolptr);
    flags.alloc(L.n_entries + 1);
    pos.alloc(L.n_entries + 1);
    CK(cudaMemset(flags.p + L.n_entries, 0, sizeof(uint32_t)));
    if (L.n_entries) k_nonzero_flags<<<grid_for(L.n_entries), 256>>>(codes, L.n_entries, flags.p);
    CK_LAUNCH();
    size_t tmp_bytes = 0;
    CK(cub::DeviceScan::ExclusiveSum(nullptr, tmp_bytes, flags.p, pos.p, L.n_entries + 1));
    DBuf<uint8_t> tmp;
    tmp.alloc(std::max<size_t>(tmp_bytes, 1));
    CK(cub::DeviceScan::ExclusiveSum(tmp.p, tmp_bytes, flags.p, pos.p, L.n_entries + 1));
    uint32_t real = 0;  // non-zero codes actually decoded; checked against the header after the columns
    CK(cudaMemcpy(&real, pos.p + L.n_entries, sizeof real, cudaMemcpyDeviceToHost));
    L.ccolptr.alloc(size_t(L.cols) + 1);
    L.crow.alloc(real);
    L.ccode.alloc(real);
    DBuf<unsigned long long> keys, keys_sorted;
    keys.alloc(real);
    keys_sorted.alloc(real);
    CK(cudaMemcpy(L.ccolptr.p + L.cols, pos.p + L.n_entries, sizeof(uint32_t), cudaMemcpyDeviceToDevice));
    CK(cudaMemset(bad.p, 0xff, sizeof(unsigned long long)));
    if (L.cols)
      k_columns<<<(L.cols + 127) / 128, 128>>>(colptr.p, L.cols, L.rows, codes, gaps, pos.p, L.ccolptr.p, L.crow.p,
                                               L.ccode.p, keys.p, bad.p);
    CK_LAUNCH();
    CK(cudaMemcpy(&first_bad, bad.p, sizeof first_bad, cudaMemcpyDeviceToHost));
    if (first_bad != ~0ull)
      throw FormatError(d.where() + ": column " + std::to_string(first_bad) + " runs past rows=" + std::to_string(L.rows));
    if (real != L.nnz)  // the CPU loader's order: columns first, then the count
      throw FormatError(d.where() + ": nnz says " + std::to_string(L.nnz) + " but the code stream has " +
                        std::to_string(real) + " non-zero codes");
    L.rcode.alloc(L.nnz);
    L.rcol.alloc(L.nnz);
    L.rowptr.alloc(size_t(L.rows) + 1);
    CK(cudaMemset(L.rowptr.p, 0, L.rowptr.bytes()));
    if (L.nnz) {
      int end_bit = 32;
      while (end_bit < 64 && (uint64_t(1) << (end_bit - 32)) <= L.rows) ++end_bit;
      tmp_bytes = 0;
      CK(cub::DeviceRadixSort::SortPairs(nullptr, tmp_bytes, keys.p, keys_sorted.p, L.ccode.p, L.rcode.p, L.nnz, 0,
                                         end_bit));
      tmp.alloc(std::max<size_t>(tmp_bytes, 1));
      CK(cub::DeviceRadixSort::SortPairs(tmp.p, tmp_bytes, keys.p, keys_sorted.p, L.ccode.p, L.rcode.p, L.nnz, 0,
                                         end_bit));
      k_rowptr<<<grid_for(L.nnz), 256>>>(keys_sorted.p, L.nnz, L.rows, L.rowptr.p, L.rcol.p);
      CK_LAUNCH();
    }
    CK(cudaDeviceSynchronize());
  }
  const auto t5 = clk::now();
  for (const DLayer& L : m.layers)
    m.stats.device_bytes += L.bias.bytes() + L.codebook.bytes() + L.values.bytes() + L.rowptr.bytes() + L.rcol.bytes() +
                            L.rcode.bytes() + L.ccolptr.bytes() + L.crow.bytes() + L.ccode.bytes();
  m.stats.device_bytes += m.arena.bytes() + m.symbols.bytes() + m.peeks.bytes() + m.jobs.bytes();
  m.stats.parse_s = secs(t0, t1);
  m.stats.upload_s = secs(t2, t3);
  m.stats.decode_s = secs(t3, t4);
  m.stats.layout_s = secs(t4, t5);
  m.stats.total_s = secs(t0, t5);
}

DeviceModel::~DeviceModel() {
  if (!impl_) return;
  int prev = 0;
  if (cudaGetDevice(&prev) == cudaSuccess) {
    cudaSetDevice(impl_->device);
    impl_.reset();  // buffers and streams released on the model's device
    cudaSetDevice(prev);
  }
}

std::unique_ptr<Work> DeviceModel::Impl::acquire(size_t n) const {
  std::unique_ptr<Work> w;
  {
    std::lock_guard<std::mutex> lk(mu);
    if (!free_work.empty()) {
      w = std::move(free_work.back());
      free_work.pop_back();
    }
  }
  if (!w) {
    w = std::make_unique<Work>();
    CK(cudaStreamCreateWithFlags(&w->stream, cudaStreamNonBlocking));
    w->live.alloc(1);
    w->bad.alloc(1);
    if (!mean.empty()) {
      w->mean.upload(mean.data(), mean.size());
      w->inv_std.upload(inv_std.data(), inv_std.size());
    }
  }
  if (n > w->cap) {
    const size_t np = (n + 31) / 32 * 32;
    w->a.alloc(n * max_act);
    w->b.alloc(n * max_act);
    w->xt.alloc(np * max_lin_cols);
    w->yt.alloc(np * max_lin_rows);
    w->cap = n;
  }
  return w;
}

void DeviceModel::Impl::release(std::unique_ptr<Work> w) const {
  std::lock_guard<std::mutex> lk(mu);
  free_work.push_back(std::move(w));
}

void DeviceModel::Impl::run(Work& w, cudaStream_t s, size_t n, const float* x, float* y) const {
  const size_t per = input.numel(), total = n * per;
  const uint32_t C = uint32_t(mean.size());
  CK(cudaMemsetAsync(w.bad.p, 0xff, sizeof(unsigned long long), s));
  float* cur = w.a.p;
  float* nxt = w.b.p;
  k_prologue<<<grid_for(total), 256, 0, s>>>(x, cur, total, per, C, C ? per / C : per, w.mean.p, w.inv_std.p, w.bad.p);
  CK_LAUNCH();
  for (const OpDesc& op : ops) {
    const size_t in_sz = op.in.numel(), out_sz = op.out.numel();
    switch (op.type) {
      case OpType::Linear: {
        const DLayer& L = layers[op.layer];
        const bool q = L.storage == kStorageSparse;
        const WeightsQ wq{L.rcode.p, L.codebook.p};
        const WeightsF wf{L.values.p};
        if (n < 8) {
          const uint32_t* live = nullptr;
          const uint32_t skip_below = uint32_t(kSkipBelow * L.cols);
          if (q && n == 1) {  // zero skipping decided on the device: no host round trip
            CK(cudaMemsetAsync(w.live.p, 0, sizeof(uint32_t), s));
            k_count_live<<<grid_for(L.cols), 256, 0, s>>>(cur, L.cols, w.live.p);
            CK(cudaMemcpyAsync(nxt, L.bias.p, L.rows * sizeof(float), cudaMemcpyDeviceToDevice, s));
            k_linear_cols_skip<<<(L.cols + 7) / 8, 256, 0, s>>>(L.ccolptr.p, L.crow.p, WeightsQ{L.ccode.p, L.codebook.p},
                                                                cur, nxt, L.cols, w.live.p, skip_below);
            live = w.live.p;
          }
          const unsigned blocks = (L.rows + 7) / 8;
          if (q)
            k_linear_rows<<<blocks, 256, 0, s>>>(L.rowptr.p, L.rcol.p, wq, L.bias.p, cur, nxt, L.rows, L.cols, uint32_t(n),
                                                 live, skip_below);
          else
            k_linear_rows<<<blocks, 256, 0, s>>>(L.rowptr.p, L.rcol.p, wf, L.bias.p, cur, nxt, L.rows, L.cols, uint32_t(n),
                                                 nullptr, 0);
          CK_LAUNCH();
        } else {
          const uint32_t np = uint32_t((n + 31) / 32 * 32);
          dim3 tb(32, 8);
          k_transpose<<<dim3((L.cols + 31) / 32, (uint32_t(n) + 31) / 32), tb, 0, s>>>(cur, in_sz, w.xt.p, np,
                                                                                       uint32_t(n), L.cols);
          if (np != n)  // padded lanes: zero inputs
            CK(cudaMemset2DAsync(w.xt.p + n, np * sizeof(float), 0, (np - n) * sizeof(float), L.cols, s));
          const unsigned blocks = (L.rows + 7) / 8;
          if (q)
            k_linear_rows_t<<<blocks, 256, 0, s>>>(L.rowptr.p, L.rcol.p, wq, L.bias.p, w.xt.p, w.yt.p, L.rows, np);
          else
            k_linear_rows_t<<<blocks, 256, 0, s>>>(L.rowptr.p, L.rcol.p, wf, L.bias.p, w.xt.p, w.yt.p, L.rows, np);
          k_transpose<<<dim3((uint32_t(n) + 31) / 32, (L.rows + 31) / 32), tb, 0, s>>>(w.yt.p, np, nxt, out_sz, L.rows,
                                                                                       uint32_t(n));
          CK_LAUNCH();
        }
        std::swap(cur, nxt);
        break;
      }
      case OpType::Conv2d: {
        const DLayer& L = layers[op.layer];
        const ConvG g{op.in.d[0], op.in.d[1], op.in.d[2], op.out.d[0], op.out.d[1], op.out.d[2],
                      L.kh, L.kw, op.p[0], op.p[1], op.p[2], op.p[3], op.p[4]};
        const dim3 grid((g.out_h * g.out_w + 127) / 128, g.out_c, uint32_t(n));
        if (L.storage == kStorageSparse)
          k_conv_rows<<<grid, 128, 0, s>>>(L.rowptr.p, L.rcol.p, WeightsQ{L.rcode.p, L.codebook.p}, L.bias.p, cur, nxt, g);
        else
          k_conv_rows<<<grid, 128, 0, s>>>(L.rowptr.p, L.rcol.p, WeightsF{L.values.p}, L.bias.p, cur, nxt, g);
        CK_LAUNCH();
        std::swap(cur, nxt);
        break;
      }
      case OpType::Relu:
        k_relu<<<grid_for(n * in_sz), 256, 0, s>>>(cur, n * in_sz);
        CK_LAUNCH();
        break;
      case OpType::MaxPool: case OpType::AvgPool: {
        const PoolG g{op.in.d[0], op.in.d[1], op.in.d[2], op.out.d[1], op.out.d[2],
                      op.p[0], op.p[1], op.p[2], op.p[3], op.p[4], op.p[5]};
        k_pool<<<grid_for(n * out_sz), 256, 0, s>>>(cur, nxt, g, n * out_sz, op.type == OpType::MaxPool);
        CK_LAUNCH();
        std::swap(cur, nxt);
        break;
      }
      case OpType::Lrn: {
        const size_t hw = size_t(op.in.d[1]) * op.in.d[2];
        k_lrn<<<grid_for(n * in_sz), 256, 0, s>>>(cur, nxt, op.in.d[0], hw, n * in_sz, op.p[0], op.f[1], op.f[2], op.f[3]);
        CK_LAUNCH();
        std::swap(cur, nxt);
        break;
      }
      case OpType::Softmax: {
        const uint32_t c = op.in.d[0];
        const size_t hw = in_sz / c;
        k_softmax<<<grid_for(n * hw), 256, 0, s>>>(cur, nxt, c, hw, n * hw);
        CK_LAUNCH();
        std::swap(cur, nxt);
        break;
      }
      case OpType::Flatten: case OpType::Dropout:
        break;
    }
  }
  CK(cudaMemcpyAsync(y, cur, n * output.numel() * sizeof(float), cudaMemcpyDeviceToDevice, s));
}

void DeviceModel::infer(const float* x, size_t n, float* y, bool on_device, uintptr_t stream) const {
  if (n == 0) return;
  const Impl& m = *impl_;
  DeviceGuard guard(m.device);
  struct Release {
    const Impl& m;
    std::unique_ptr<Work> w;
    ~Release() { if (w) m.release(std::move(w)); }
  } r{m, m.acquire(n)};
  Work& w = *r.w;
  cudaStream_t s = stream ? reinterpret_cast<cudaStream_t>(stream) : w.stream;
  const size_t in_n = n * m.input.numel(), out_n = n * m.output.numel();
  const float* xd = x;
  float* out_dev = y;
  if (!on_device) {  // host arrays: through the workspace's staging buffers
    w.in.grow(in_n);
    w.out.grow(out_n);
    CK(cudaMemcpyAsync(w.in.p, x, in_n * sizeof(float), cudaMemcpyHostToDevice, s));
    xd = w.in.p;
    out_dev = w.out.p;
  }
  m.run(w, s, n, xd, out_dev);
  unsigned long long first_bad = 0;
  CK(cudaMemcpyAsync(&first_bad, w.bad.p, sizeof first_bad, cudaMemcpyDeviceToHost, s));
  if (!on_device) CK(cudaMemcpyAsync(y, out_dev, out_n * sizeof(float), cudaMemcpyDeviceToHost, s));
  CK(cudaStreamSynchronize(s));
  if (first_bad != ~0ull) {
    const size_t per = m.input.numel();
    throw InputError("input contains NaN or Inf (sample " + std::to_string(first_bad / per) + ", flat index " +
                     std::to_string(first_bad % per) + ")");
  }
}

const Shape& DeviceModel::input_shape() const { return impl_->input; }
const Shape& DeviceModel::output_shape() const { return impl_->output; }
const std::string& DeviceModel::meta_json() const { return impl_->meta; }
int DeviceModel::device() const { return impl_->device; }
const DeviceLoadStats& DeviceModel::load_stats() const { return impl_->stats; }

std::vector<DeviceLayerInfo> DeviceModel::layers() const {
  std::vector<DeviceLayerInfo> out;
  for (const DLayer& L : impl_->layers) {
    DeviceLayerInfo d;
    d.name = L.name;
    d.kind = L.kind == kLayerLinear ? "linear" : "conv2d";
    d.storage = L.storage == kStoragePlain ? "plain" : "sparse";
    d.rows = L.rows; d.cols = L.cols; d.kh = L.kh; d.kw = L.kw; d.code_bits = L.code_bits; d.index_bits = L.index_bits;
    d.nnz = L.nnz; d.n_entries = L.n_entries;
    if (L.kind == kLayerConv2d)
      d.kernel = L.storage == kStorageSparse ? "cuda conv_rows (codebook)" : "cuda conv_rows (fp32)";
    else if (L.storage == kStorageSparse)
      d.kernel = "cuda linear_rows (codebook) / linear_cols_skip below 25% live inputs (batch 1) / linear_rows_t (batch >= 8)";
    else
      d.kernel = "cuda linear_rows (fp32)";
    out.push_back(d);
  }
  return out;
}

std::pair<double, uint64_t> DeviceModel::time_decode(int reps) const {
  const Impl& m = *impl_;
  DeviceGuard guard(m.device);
  if (!m.n_jobs || reps < 1) return {0.0, m.n_symbols};
  DBuf<uint8_t> out;
  out.alloc(m.n_symbols);
  DBuf<unsigned long long> bad;
  bad.alloc(1);
  CK(cudaMemset(bad.p, 0xff, sizeof(unsigned long long)));
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  std::vector<double> ts;
  for (int r = 0; r < reps + 1; ++r) {
    CK(cudaEventRecord(a));
    k_huff_decode<<<(m.n_jobs + 127) / 128, 128>>>(m.jobs.p, m.n_jobs, m.arena.p, m.peeks.p, out.p, bad.p);
    CK_LAUNCH();
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b));
    if (r) ts.push_back(ms * 1e-3);  // the first pass warms up
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(ts.begin(), ts.end());
  return {ts[ts.size() / 2], m.n_symbols};
}

void DeviceModel::decoded_symbols(uint32_t layer, std::vector<uint8_t>& codes, std::vector<uint8_t>& gaps) const {
  const Impl& m = *impl_;
  if (layer >= m.layers.size() || m.layers[layer].storage != kStorageSparse)
    throw InputError("layer " + std::to_string(layer) + " is not a sparse layer");
  DeviceGuard guard(m.device);
  const DLayer& L = m.layers[layer];
  codes.resize(L.n_entries);
  gaps.resize(L.n_entries);
  if (!L.n_entries) return;
  CK(cudaMemcpy(codes.data(), m.symbols.p + L.sym_offset, L.n_entries, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(gaps.data(), m.symbols.p + L.sym_offset + L.n_entries, L.n_entries, cudaMemcpyDeviceToHost));
}

void DeviceModel::rows_layout(uint32_t layer, std::vector<uint32_t>& rowptr, std::vector<uint32_t>& entries) const {
  const Impl& m = *impl_;
  if (layer >= m.layers.size() || m.layers[layer].storage != kStorageSparse)
    throw InputError("layer " + std::to_string(layer) + " is not a sparse layer");
  DeviceGuard guard(m.device);
  const DLayer& L = m.layers[layer];
  rowptr.resize(size_t(L.rows) + 1);
  std::vector<uint32_t> col(L.nnz);
  std::vector<uint8_t> code(L.nnz);
  CK(cudaMemcpy(rowptr.data(), L.rowptr.p, rowptr.size() * 4, cudaMemcpyDeviceToHost));
  if (L.nnz) {
    CK(cudaMemcpy(col.data(), L.rcol.p, L.nnz * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(code.data(), L.rcode.p, L.nnz, cudaMemcpyDeviceToHost));
  }
  entries.resize(L.nnz);
  for (uint64_t i = 0; i < L.nnz; ++i) entries[i] = col[i] << 8 | code[i];
}

}  // namespace cuda
}  // namespace dcrt
