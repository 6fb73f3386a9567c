// .dcz version 1 reader (docs/format.md §1-§4): structural validation, bounds first.
#include "format.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "crc32.hpp"

namespace dcrt {
namespace {

static_assert(std::numeric_limits<float>::is_iec559, "IEEE-754 floats required");

bool little_endian() {
  const uint16_t x = 1;
  uint8_t b;
  std::memcpy(&b, &x, 1);
  return b == 1;
}

[[noreturn]] void fail(const std::string& msg) { throw FormatError(msg); }

template <class T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

bool all_zero(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (p[i]) return false;
  return true;
}

// Strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF), as Python's decoder.
bool valid_utf8(const uint8_t* s, size_t n) {
  size_t i = 0;
  while (i < n) {
    const uint8_t c = s[i];
    if (c < 0x80) { ++i; continue; }
    int len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
    else return false;
    if (i + len > n) return false;
    for (int k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return false;
      cp = cp << 6 | (s[i + k] & 0x3F);
    }
    static const uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

// Bounded array reads inside one section (mirror of format.py's _Cursor).
struct Cursor {
  const uint8_t* base;
  uint64_t size, pos;
  std::string where;
  template <class T>
  std::vector<T> array(uint64_t count, const char* name, const uint8_t** raw = nullptr) {
    uint64_t start = align_up(pos, kArrayAlign);
    if (start > size || count > (size - start) / sizeof(T))
      fail(where + ": " + name + ": needs " + std::to_string(count) + " x " + std::to_string(sizeof(T)) +
           " bytes at offset " + std::to_string(start) + " but the section has " + std::to_string(size));
    if (!all_zero(base + pos, start - pos)) fail(where + ": padding before " + name + " is not zero");
    pos = start + count * sizeof(T);
    if (raw) {
      *raw = base + start;
      return {};
    }
    std::vector<T> v(count);
    if (count) std::memcpy(v.data(), base + start, count * sizeof(T));
    return v;
  }
  void done() {
    if (pos != size) fail(where + ": " + std::to_string(size - pos) + " trailing bytes after the last field");
  }
};

float bits_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Caffe: round up, but the last window must start inside input + pad. Callers have checked
// k <= n + 2p and 1 <= s <= n + 2p, so nothing here can wrap (n + 2p < 2^34).
uint64_t pool_out(uint64_t n, uint64_t k, uint64_t s, uint64_t p, bool ceil_mode) {
  if (ceil_mode) {
    uint64_t out = (n + 2 * p - k + s - 1) / s + 1;
    if (p > 0 && (out - 1) * s >= n + p) --out;
    return out;
  }
  return (n + 2 * p - k) / s + 1;
}

// The rules conv and pool windows share (§3.3).
std::string check_window(uint64_t h, uint64_t w, uint64_t kh, uint64_t kw, uint64_t sh, uint64_t sw, uint64_t ph,
                         uint64_t pw) {
  if (!kh || !kw) return "kernel must be >= 1";
  if (!sh || !sw) return "stride must be >= 1";
  if (ph >= kh || pw >= kw)
    return "padding " + std::to_string(ph) + "x" + std::to_string(pw) + " must be smaller than the kernel " +
           std::to_string(kh) + "x" + std::to_string(kw);
  const uint64_t hp = h + 2 * ph, wp = w + 2 * pw;  // < 2^34: h, w <= 2^28, p < 2^32
  if (kh > hp || kw > wp)
    return "kernel " + std::to_string(kh) + "x" + std::to_string(kw) + " larger than the padded input " +
           std::to_string(hp) + "x" + std::to_string(wp);
  if (sh > hp || sw > wp)
    return "stride " + std::to_string(sh) + "x" + std::to_string(sw) + " larger than the padded input " +
           std::to_string(hp) + "x" + std::to_string(wp);
  return "";
}

}  // namespace

std::string check_conv_geometry(uint64_t c, uint64_t h, uint64_t w, uint64_t kh, uint64_t kw, uint64_t sh,
                                uint64_t sw, uint64_t ph, uint64_t pw, uint64_t dh, uint64_t dw, WindowOut& out) {
  if (!dh || !dw) return "dilation must be >= 1";
  if (!kh || !kw) return "kernel must be >= 1";
  // The window's extent; saturated, so a huge dilation fails "larger than the padded input".
  kh = sat_add(sat_mul(dh, kh - 1), 1);
  kw = sat_add(sat_mul(dw, kw - 1), 1);
  std::string e = check_window(h, w, kh, kw, sh, sw, ph, pw);
  if (!e.empty()) return (dh > 1 || dw > 1) ? e + " (the kernel's extent at dilation " + std::to_string(dh) + "x" +
                                                   std::to_string(dw) + ")"
                                             : e;
  const uint64_t hp = h + 2 * ph, wp = w + 2 * pw;
  // PadGeom (kernels/qsparse.hpp): sw phase planes of hp x ceil(wp / sw) per input channel.
  out.padded = sat_mul(sat_mul(sat_mul(c, sw), hp), (wp + sw - 1) / sw);
  if (out.padded > kMaxActivation)
    return "padded input " + std::to_string(c) + "x" + std::to_string(hp) + "x" + std::to_string(wp) + " (stride " +
           std::to_string(sw) + ") needs " + std::to_string(out.padded) + " elements, over 2^28";
  out.out_h = (hp - kh) / sh + 1;
  out.out_w = (wp - kw) / sw + 1;
  return "";
}

std::string check_pool_geometry(uint64_t c, uint64_t h, uint64_t w, uint64_t kh, uint64_t kw, uint64_t sh,
                                uint64_t sw, uint64_t ph, uint64_t pw, bool ceil_mode, WindowOut& out) {
  std::string e = check_window(h, w, kh, kw, sh, sw, ph, pw);
  if (!e.empty()) return e;
  const uint64_t hp = h + 2 * ph, wp = w + 2 * pw;
  out.padded = sat_mul(hp, wp);  // bounds every window (and avgpool's divisor) below 2^28
  if (out.padded > kMaxActivation)
    return "padded input " + std::to_string(hp) + "x" + std::to_string(wp) + " exceeds 2^28 elements";
  out.out_h = pool_out(h, kh, sh, ph, ceil_mode);
  out.out_w = pool_out(w, kw, sw, pw, ceil_mode);
  (void)c;
  return "";
}

namespace {

// Normalisation values a real input pipeline uses, with room to spare: |mean| <= 2^24 and
// 2^-24 <= std <= 2^24. A denormal std makes 1/std infinite and every output NaN.
constexpr float kNormMax = 16777216.f, kStdMin = 1.f / 16777216.f;

void parse_graph(const uint8_t* b, uint64_t len, ParsedFile& f) {
  const std::string w = "GRAPH";
  if (len < sizeof(GraphHeader))
    fail(w + ": section is " + std::to_string(len) + " bytes, shorter than its 32-byte header");
  auto gh = load<GraphHeader>(b);
  if (gh.reserved) fail(w + ": reserved must be zero");
  if (gh.input_ndim < 1 || gh.input_ndim > 3) fail(w + ": input_ndim " + std::to_string(gh.input_ndim) + " not in 1..3");
  uint64_t numel = 1;
  for (uint32_t i = 0; i < 4; ++i) {
    if (i < gh.input_ndim) {
      if (gh.input_shape[i] == 0) fail(w + ": input_shape: dims must be >= 1");
      numel *= gh.input_shape[i];
      if (numel > kMaxActivation) fail(w + ": input_shape exceeds 2^28 elements");
    } else if (gh.input_shape[i]) {
      fail(w + ": input_shape: unused dims must be 0");
    }
  }
  f.input.ndim = gh.input_ndim;
  for (uint32_t i = 0; i < gh.input_ndim; ++i) f.input.d[i] = gh.input_shape[i];
  const uint32_t nn = gh.norm_count;
  if (nn != 0 && nn != 1 && nn != gh.input_shape[0])
    fail(w + ": norm_count " + std::to_string(nn) + " must be 0, 1 or input_shape[0]");
  const uint64_t head = sizeof(GraphHeader) + 8ull * nn + uint64_t(sizeof(OpRecord)) * gh.op_count;
  if (len < head)
    fail(w + ": op_count " + std::to_string(gh.op_count) + " and norm_count " + std::to_string(nn) + " need at least " +
         std::to_string(head) + " bytes, section has " + std::to_string(len));
  const uint8_t* ops = b + sizeof(GraphHeader) + 8ull * nn;
  uint64_t listed = 0;  // < 2^16 * 2^32: no wrap
  for (uint32_t i = 0; i < gh.op_count; ++i) listed += load<OpRecord>(ops + uint64_t(i) * sizeof(OpRecord)).n_inputs;
  if (len != head + 4 * listed)
    fail(w + ": op_count " + std::to_string(gh.op_count) + ", norm_count " + std::to_string(nn) + " and " +
         std::to_string(listed) + " listed inputs need " + std::to_string(head + 4 * listed) + " bytes, section has " +
         std::to_string(len));
  f.mean.resize(nn);
  f.std.resize(nn);
  if (nn) {
    std::memcpy(f.mean.data(), b + sizeof(GraphHeader), 4 * nn);
    std::memcpy(f.std.data(), b + sizeof(GraphHeader) + 4 * nn, 4 * nn);
  }
  for (uint32_t i = 0; i < nn; ++i)
    if (!(std::fabs(f.mean[i]) <= kNormMax) || !(f.std[i] >= kStdMin && f.std[i] <= kNormMax))
      fail(w + ": normalisation[" + std::to_string(i) + "]: mean must be finite with |mean| <= 2^24, std in [2^-24, 2^24]");
  const uint8_t* table = b + head;
  uint64_t pos = 0;
  f.ops.resize(gh.op_count);
  for (uint32_t i = 0; i < gh.op_count; ++i) {
    auto r = load<OpRecord>(ops + uint64_t(i) * sizeof(OpRecord));
    const std::string wo = w + ": op[" + std::to_string(i) + "]";
    if (r.type < 1 || r.type > kOpTypeMax) fail(wo + ": unknown op type " + std::to_string(r.type));
    OpDesc& o = f.ops[i];
    o.type = OpType(r.type);
    o.layer = r.layer;
    std::memcpy(o.p, r.p, sizeof o.p);
    const bool binary = o.type == OpType::Add || o.type == OpType::Mul, concat = o.type == OpType::Concat;
    if (r.n_inputs == 0) {
      o.inputs.assign(1, i);
    } else {
      o.inputs.resize(r.n_inputs);
      std::memcpy(o.inputs.data(), table + 4 * pos, 4ull * r.n_inputs);
      pos += r.n_inputs;
    }
    const size_t k = o.inputs.size();
    if ((binary ? k != 2 : concat ? k < 2 : k != 1) || (r.n_inputs == 0 && (binary || concat)))
      fail(wo + ": " + std::to_string(r.n_inputs) + " inputs listed; " +
           (binary ? "needs exactly 2" : concat ? "needs 2 or more" : "takes 1 (or 0: the previous op's output)"));
    for (uint32_t t : o.inputs)
      if (t > i)
        fail(wo + ": input tensor " + std::to_string(t) + " is not produced before this op (ops in topological order)");
    int nparams = 0;
    switch (o.type) {
      case OpType::Conv2d: nparams = 7; break;
      case OpType::MaxPool: case OpType::AvgPool: nparams = 7; break;
      case OpType::Lrn: case OpType::Pad: nparams = 4; break;
      case OpType::Clip: case OpType::HardSigmoid: nparams = 2; break;
      case OpType::Dropout: case OpType::Gelu: nparams = 1; break;
      default: break;
    }
    for (int q = nparams; q < 8; ++q)
      if (r.p[q]) fail(wo + ": unused params must be zero");
    const bool weighted = o.type == OpType::Linear || o.type == OpType::Conv2d;
    if (weighted ? r.layer < 0 : r.layer != -1)
      fail(wo + ": layer " + std::to_string(r.layer) + (weighted ? ": needs a layer index" : ": must be -1"));
    for (int q = 0; q < 4; ++q) o.f[q] = 0.f;
    if (o.type == OpType::Lrn) {
      o.f[1] = bits_f32(r.p[1]); o.f[2] = bits_f32(r.p[2]); o.f[3] = bits_f32(r.p[3]);
    } else if (o.type == OpType::Dropout) {
      o.f[0] = bits_f32(r.p[0]);
      if (!(o.f[0] >= 0.f && o.f[0] < 1.f)) fail(wo + " (dropout): p must be in [0, 1)");
    } else if ((o.type == OpType::MaxPool || o.type == OpType::AvgPool) && r.p[6] > 1) {
      fail(wo + ": ceil_mode must be 0 or 1");
    } else if (o.type == OpType::Clip) {
      o.f[0] = bits_f32(r.p[0]); o.f[1] = bits_f32(r.p[1]);
      if (!std::isfinite(o.f[0]) || !std::isfinite(o.f[1]) || !(o.f[0] <= o.f[1]))
        fail(wo + " (clip): min and max must be finite, min <= max");
    } else if (o.type == OpType::HardSigmoid) {
      o.f[0] = bits_f32(r.p[0]); o.f[1] = bits_f32(r.p[1]);
      if (!std::isfinite(o.f[0]) || !std::isfinite(o.f[1])) fail(wo + " (hardsigmoid): alpha and beta must be finite");
    } else if (o.type == OpType::Gelu && r.p[0] > 1) {
      fail(wo + " (gelu): approximate must be 0 (erf) or 1 (tanh)");
    }
  }
}

void parse_layer(const uint8_t* b, uint64_t len, uint32_t index, LayerDesc& L) {
  std::string w = "LAYER[" + std::to_string(index) + "]";
  if (len < sizeof(LayerHeader)) fail(w + ": section is " + std::to_string(len) + " bytes, shorter than its 96-byte header");
  auto h = load<LayerHeader>(b);
  size_t nlen = 0;
  while (nlen < 32 && h.name[nlen]) ++nlen;
  if (!valid_utf8(reinterpret_cast<const uint8_t*>(h.name), nlen)) fail(w + ": name is not UTF-8");
  L.name.assign(h.name, nlen);
  for (size_t k = nlen; k < 32; ++k)
    if (h.name[k]) fail(w + ": name: NUL inside the name");
  L.index = index;
  L.storage = h.storage; L.kind = h.kind; L.rows = h.rows; L.cols = h.cols; L.kh = h.kh; L.kw = h.kw;
  const std::string wl = L.where();
  if (h.storage != kStoragePlain && h.storage != kStorageSparse)
    fail(wl + ": storage " + std::to_string(h.storage) + " unknown (1 plain, 2 sparse)");
  if (h.kind != kLayerLinear && h.kind != kLayerConv2d) fail(wl + ": kind " + std::to_string(h.kind) + " unknown (1 linear, 2 conv2d)");
  if (h.reserved) fail(wl + ": reserved must be zero");
  if (!h.rows || !h.cols || !h.kh || !h.kw) fail(wl + ": rows/cols/kh/kw must be >= 1");
  if (h.kind == kLayerLinear && (h.kh != 1 || h.kw != 1)) fail(wl + ": kh/kw must be 1 for a linear layer");
  if (h.cols % (uint64_t(h.kh) * h.kw)) fail(wl + ": cols is not a multiple of kh*kw");
  Cursor cur{b, len, sizeof(LayerHeader), wl};
  L.bias = cur.array<float>(h.rows, "bias");
  for (float v : L.bias)
    if (!std::isfinite(v)) fail(wl + ": bias: non-finite value");
  if (h.storage == kStoragePlain) {
    if (h.code_bits || h.index_bits || h.count_bits || h.chunk_symbols || h.n_entries || h.nnz ||
        h.code_stream_bytes || h.index_stream_bytes)
      fail(wl + ": a plain layer must have zero code_bits/index_bits/count_bits/chunk/entry/stream fields");
    if (uint64_t(h.rows) * h.cols > len / 4) fail(wl + ": weight: rows*cols floats do not fit in the section");
    L.weight = cur.array<float>(uint64_t(h.rows) * h.cols, "weight");
    for (float v : L.weight)
      if (!std::isfinite(v)) fail(wl + ": weight: non-finite value");
    cur.done();
    return;
  }
  if (h.code_bits < 1 || h.code_bits > 8 || h.index_bits < 1 || h.index_bits > 8)
    fail(wl + ": code_bits " + std::to_string(h.code_bits) + " / index_bits " + std::to_string(h.index_bits) +
         " must be in 1..8");
  if (!h.chunk_symbols) fail(wl + ": chunk_symbols must be >= 1");
  if (h.code_stream_bytes > len || h.index_stream_bytes > len) fail(wl + ": stream lengths exceed the section");
  if (h.n_entries > 8 * h.code_stream_bytes || h.n_entries > 8 * h.index_stream_bytes)
    fail(wl + ": n_entries " + std::to_string(h.n_entries) + " cannot fit in streams of " +
         std::to_string(h.code_stream_bytes) + "/" + std::to_string(h.index_stream_bytes) + " bytes");
  if (h.nnz > h.n_entries) fail(wl + ": nnz > n_entries");
  if (h.n_entries >= (uint64_t(1) << 32)) fail(wl + ": n_entries >= 2^32");
  if (h.count_bits < 1 || h.count_bits > 32)
    fail(wl + ": count_bits " + std::to_string(h.count_bits) + " must be in 1..32");
  const uint64_t count_bytes = (uint64_t(h.cols) * h.count_bits + 7) / 8;
  if (count_bytes > len) fail(wl + ": col_counts: cols x count_bits bits do not fit in the section");
  L.code_bits = h.code_bits; L.index_bits = h.index_bits; L.count_bits = h.count_bits;
  L.chunk_symbols = h.chunk_symbols;
  L.n_entries = h.n_entries; L.nnz = h.nnz;
  L.n_chunks = h.n_entries ? (h.n_entries - 1) / h.chunk_symbols + 1 : 0;
  if (L.n_chunks + 1 > len / 4) fail(wl + ": chunk offsets do not fit in the section");
  L.codebook = cur.array<float>(1u << h.code_bits, "codebook");
  for (float v : L.codebook)
    if (!std::isfinite(v)) fail(wl + ": codebook: non-finite centroid");
  uint32_t c0;
  std::memcpy(&c0, &L.codebook[0], 4);
  if (c0 != 0) fail(wl + ": codebook[0] must be +0.0 (code 0 is the filler / pruned zero)");
  L.code_lengths = cur.array<uint8_t>(1u << h.code_bits, "code_lengths");
  L.index_lengths = cur.array<uint8_t>(1u << h.index_bits, "index_lengths");
  const uint8_t* counts = nullptr;
  cur.array<uint8_t>(count_bytes, "col_counts", &counts);
  L.code_offsets = cur.array<uint32_t>(L.n_chunks + 1, "code_offsets");
  L.index_offsets = cur.array<uint32_t>(L.n_chunks + 1, "index_offsets");
  cur.array<uint8_t>(h.code_stream_bytes, "code_stream", &L.code_stream);
  cur.array<uint8_t>(h.index_stream_bytes, "index_stream", &L.index_stream);
  cur.done();
  L.code_stream_bytes = h.code_stream_bytes;
  L.index_stream_bytes = h.index_stream_bytes;
  // Packed column counts, MSB first -> column pointers (cols is bounded by count_bytes above).
  const unsigned spare = unsigned((8 - (uint64_t(h.cols) * h.count_bits) % 8) % 8);
  if (spare && (counts[count_bytes - 1] & ((1u << spare) - 1))) fail(wl + ": col_counts: non-zero padding bits");
  L.colptr.resize(uint64_t(h.cols) + 1);
  L.colptr[0] = 0;
  uint64_t bitpos = 0, total = 0;
  for (uint32_t c = 0; c < h.cols; ++c) {
    uint64_t v = 0;
    for (unsigned k = 0; k < h.count_bits; ++k, ++bitpos) v = v << 1 | ((counts[bitpos >> 3] >> (7 - (bitpos & 7))) & 1);
    total += v;
    if (total > h.n_entries) fail(wl + ": col_counts: sum exceeds n_entries " + std::to_string(h.n_entries));
    L.colptr[c + 1] = uint32_t(total);
  }
  if (total != h.n_entries)
    fail(wl + ": col_counts: sum " + std::to_string(total) + " != n_entries " + std::to_string(h.n_entries));
  auto check_offsets = [&](const std::vector<uint32_t>& o, uint64_t n, const char* nm) {
    if (o[0] != 0 || o.back() != n) fail(wl + ": " + nm + ": must rise from 0 to the stream length " + std::to_string(n));
    for (size_t k = 1; k < o.size(); ++k)
      if (o[k] < o[k - 1]) fail(wl + ": " + nm + ": must rise from 0 to the stream length " + std::to_string(n));
  };
  check_offsets(L.code_offsets, h.code_stream_bytes, "code_offsets");
  check_offsets(L.index_offsets, h.index_stream_bytes, "index_offsets");
}

void check_graph(ParsedFile& f) {
  std::vector<int> used(f.layers.size(), 0);
  std::vector<Shape> tensors{f.input};  // by tensor id
  std::vector<uint32_t> readers(f.ops.size() + 1, 0);
  for (size_t i = 0; i < f.ops.size(); ++i) {
    OpDesc& o = f.ops[i];
    const std::string w = "GRAPH: op[" + std::to_string(i) + "]";
    o.in_shapes.clear();
    for (uint32_t t : o.inputs) {
      o.in_shapes.push_back(tensors[t]);
      readers[t]++;
    }
    Shape s = o.in_shapes[0];
    o.in = s;
    const LayerDesc* L = nullptr;
    if (o.layer >= 0) {
      if (size_t(o.layer) >= f.layers.size())
        fail(w + ": layer " + std::to_string(o.layer) + " does not exist (" + std::to_string(f.layers.size()) + " layers)");
      L = &f.layers[o.layer];
      used[o.layer]++;
      const uint32_t want = o.type == OpType::Linear ? kLayerLinear : kLayerConv2d;
      if (L->kind != want) fail(w + ": layer " + std::to_string(o.layer) + " '" + L->name + "' has the wrong kind");
    }
    auto need3 = [&] {
      if (s.ndim != 3) fail(w + ": needs a [C, H, W] input, got " + std::to_string(s.ndim) + " dims");
    };
    switch (o.type) {
      case OpType::Linear:
        if (s.numel() != L->cols)
          fail(w + ": input has " + std::to_string(s.numel()) + " features but layer '" + L->name + "' expects " +
               std::to_string(L->cols));
        s = Shape{1, {L->rows, 0, 0}};
        o.work = L->storage == kStoragePlain ? sat_mul(L->rows, L->cols) : sat_add(L->n_entries, L->rows);
        break;
      case OpType::Conv2d: {
        need3();
        const uint32_t sh = o.p[0], sw = o.p[1], ph = o.p[2], pw = o.p[3], g = o.p[4];
        const uint64_t dh = uint64_t(o.p[5]) + 1, dw = uint64_t(o.p[6]) + 1;  // stored as dilation - 1
        const uint64_t c = s.d[0], h = s.d[1], wd = s.d[2];
        if (!g || c % g || L->rows % g) fail(w + ": groups must be >= 1 and divide the in/out channels");
        if ((c / g) * L->kh * L->kw != L->cols) fail(w + ": in_channels/groups*kh*kw != layer cols");
        WindowOut wo;
        const std::string e = check_conv_geometry(c, h, wd, L->kh, L->kw, sh, sw, ph, pw, dh, dw, wo);
        if (!e.empty()) fail(w + ": " + e);
        if (sat_mul(sat_mul(L->rows, wo.out_h), wo.out_w) > kMaxActivation) fail(w + ": output exceeds 2^28 elements per sample");
        s = Shape{3, {L->rows, uint32_t(wo.out_h), uint32_t(wo.out_w)}};
        const uint64_t per_pixel = L->storage == kStoragePlain ? sat_mul(L->rows, L->cols) : L->nnz;
        o.work = sat_add(sat_mul(per_pixel, wo.out_h * wo.out_w), wo.padded);
        break;
      }
      case OpType::MaxPool: case OpType::AvgPool: {
        need3();
        const uint32_t kh = o.p[0], kw = o.p[1], sh = o.p[2], sw = o.p[3], ph = o.p[4], pw = o.p[5];
        WindowOut wo;
        const std::string e = check_pool_geometry(s.d[0], s.d[1], s.d[2], kh, kw, sh, sw, ph, pw, o.p[6] != 0, wo);
        if (!e.empty()) fail(w + ": " + e);
        if (sat_mul(sat_mul(s.d[0], wo.out_h), wo.out_w) > kMaxActivation) fail(w + ": output exceeds 2^28 elements per sample");
        // Windows are clipped to the input: at most min(k, n) taps per side.
        o.work = sat_mul(sat_mul(uint64_t(s.d[0]) * wo.out_h * wo.out_w, std::min<uint64_t>(kh, s.d[1])),
                         std::min<uint64_t>(kw, s.d[2]));
        s.d[1] = uint32_t(wo.out_h);
        s.d[2] = uint32_t(wo.out_w);
        break;
      }
      case OpType::Lrn:
        need3();
        if (o.p[0] % 2 == 0 || !std::isfinite(o.f[1]) || !std::isfinite(o.f[2]) || !std::isfinite(o.f[3]) ||
            !(o.f[3] >= std::numeric_limits<float>::min()) || !(o.f[1] >= 0))
          fail(w + ": size must be odd, alpha >= 0, k a normal float > 0, all finite");
        o.work = sat_mul(s.numel(), std::min<uint64_t>(o.p[0], s.d[0]));
        break;
      case OpType::Flatten:
        s = Shape{1, {uint32_t(s.numel()), 0, 0}};
        break;
      case OpType::Add: case OpType::Mul: {
        const Shape& a = o.in_shapes[0];
        const Shape& b = o.in_shapes[1];
        const bool same = a.ndim == b.ndim && a.d[0] == b.d[0] && a.d[1] == b.d[1] && a.d[2] == b.d[2];
        if (!same) {
          const bool bcast = a.ndim == 3 && b.ndim == 3 && a.d[0] == b.d[0] &&
                             ((a.d[1] == 1 && a.d[2] == 1) || (b.d[1] == 1 && b.d[2] == 1));
          if (!bcast) fail(w + ": input shapes do not match (equal, or [C, H, W] and [C, 1, 1])");
          s = (b.d[1] == 1 && b.d[2] == 1) ? a : b;
        }
        break;
      }
      case OpType::Concat: {
        const Shape& a = o.in_shapes[0];
        uint64_t c = 0;
        for (const Shape& q : o.in_shapes) {
          if (q.ndim != a.ndim || (a.ndim == 3 ? q.d[1] != a.d[1] || q.d[2] != a.d[2] : a.ndim != 1))
            fail(w + ": inputs must all be [C_k, H, W] with the same H, W (or all 1-D)");
          c += q.d[0];  // <= 2^16 inputs x 2^28: no wrap
        }
        if (c > kMaxActivation) fail(w + ": output exceeds 2^28 elements per sample");
        s.d[0] = uint32_t(c);
        break;
      }
      case OpType::GlobalAvgPool:
        need3();
        s = Shape{3, {s.d[0], 1, 1}};
        break;
      case OpType::Pad: {
        need3();
        const uint64_t h = uint64_t(s.d[1]) + o.p[0] + o.p[1], wd = uint64_t(s.d[2]) + o.p[2] + o.p[3];
        if (sat_mul(sat_mul(s.d[0], h), wd) > kMaxActivation) fail(w + ": output exceeds 2^28 elements per sample");
        s = Shape{3, {s.d[0], uint32_t(h), uint32_t(wd)}};
        break;
      }
      default:
        break;
    }
    if (s.numel() > kMaxActivation) fail(w + ": output exceeds 2^28 elements per sample");
    if (!o.work) o.work = std::max(o.in.numel(), s.numel());  // elementwise ops
    o.out = s;
    tensors.push_back(s);
  }
  for (size_t t = 1; t < f.ops.size(); ++t)
    if (!readers[t])
      fail("GRAPH: op[" + std::to_string(t - 1) + "]'s output is read by no op (only the last op's output may be unread)");
  for (size_t li = 0; li < used.size(); ++li)
    if (used[li] != 1)
      fail("GRAPH: layer " + std::to_string(li) + " '" + f.layers[li].name + "' is used by " + std::to_string(used[li]) +
           " ops (must be exactly 1)");
}

}  // namespace

std::string LayerDesc::where() const { return "LAYER[" + std::to_string(index) + "] '" + name + "'"; }

ParsedFile parse_file(const uint8_t* data, size_t size) {
  if (!little_endian()) fail("this reader needs a little-endian host");
  if (size < sizeof(FileHeader))
    fail("header: file is " + std::to_string(size) + " bytes, shorter than the 64-byte header");
  auto fh = load<FileHeader>(data);
  static const char kMagic[8] = {'\x89', 'D', 'C', 'Z', '\r', '\n', '\x1a', '\n'};
  if (std::memcmp(fh.magic, kMagic, 8) != 0) fail("header: magic: not a .dcz file");
  if (crc32(data, 60) != fh.header_crc32) fail("header: header_crc32 mismatch (header corrupt)");
  if (fh.version_major != 1)
    fail("header: version_major " + std::to_string(fh.version_major) + " is not supported (this reader reads 1)");
  if (fh.flags || !all_zero(fh.reserved, sizeof fh.reserved)) fail("header: flags/reserved must be zero");
  if (fh.file_size != size)
    fail("header: file_size says " + std::to_string(fh.file_size) + " bytes but the file has " + std::to_string(size) +
         " (truncated or padded)");
  if (fh.section_count < 1 || fh.section_count > 65536) fail("header: section_count out of range 1..65536");
  if (fh.table_offset != sizeof(FileHeader)) fail("header: section_table_offset must be 64");
  const uint64_t table_len = uint64_t(fh.section_count) * sizeof(SectionEntry);
  if (fh.table_offset + table_len > size) fail("header: section table runs past the end of the file");
  if (crc32(data + fh.table_offset, table_len) != fh.table_crc32) fail("section table: table_crc32 mismatch");

  ParsedFile f;
  f.version_major = fh.version_major;
  f.version_minor = fh.version_minor;
  uint64_t prev_end = fh.table_offset + table_len;
  const uint8_t* graph = nullptr; uint64_t graph_len = 0;
  const uint8_t* meta = nullptr; uint64_t meta_len = 0;
  std::vector<std::pair<const uint8_t*, uint64_t>> layer_secs;
  std::vector<int> seen;
  for (uint32_t i = 0; i < fh.section_count; ++i) {
    auto e = load<SectionEntry>(data + fh.table_offset + uint64_t(i) * sizeof(SectionEntry));
    const std::string w = "section table[" + std::to_string(i) + "]";
    if (e.reserved) fail(w + ": reserved must be zero");
    if (e.offset != align_up(prev_end, kSectionAlign))
      fail(w + ": offset " + std::to_string(e.offset) + ": expected " + std::to_string(align_up(prev_end, kSectionAlign)) +
           " (sections follow each other in table order, each at the next 64-byte boundary)");
    if (e.offset > size || e.length > size - e.offset)
      fail(w + ": section runs past the end of the file (" + std::to_string(size) + ")");
    if (!all_zero(data + prev_end, e.offset - prev_end)) fail(w + ": alignment padding before the section is not zero");
    const uint8_t* body = data + e.offset;
    if (crc32(body, e.length) != e.crc32) {
      const char* nm = e.kind == kSectionGraph ? "GRAPH" : e.kind == kSectionMeta ? "META" : e.kind == kSectionLayer ? "LAYER" : "section";
      fail(std::string(nm) + "[" + std::to_string(e.index) + "]: crc32 mismatch (section corrupt)");
    }
    prev_end = e.offset + e.length;
    if (e.kind == kSectionGraph) {
      if (graph || e.index) fail(w + ": more than one GRAPH section (or index != 0)");
      graph = body; graph_len = e.length;
    } else if (e.kind == kSectionMeta) {
      if (meta || e.index) fail(w + ": more than one META section (or index != 0)");
      meta = body; meta_len = e.length;
    } else if (e.kind == kSectionLayer) {
      if (e.index >= fh.section_count) fail(w + ": LAYER index " + std::to_string(e.index) + " out of range");
      if (seen.size() <= e.index) seen.resize(e.index + 1, -1);
      if (seen[e.index] >= 0) fail(w + ": duplicate LAYER index " + std::to_string(e.index));
      seen[e.index] = int(layer_secs.size());
      layer_secs.push_back({body, e.length});
    } else if (!(e.kind & kAncillary)) {
      fail(w + ": unknown critical section kind " + std::to_string(e.kind));
    }
  }
  if (prev_end != size) fail("header: " + std::to_string(size - prev_end) + " bytes after the last section");
  if (!graph || !meta) fail("section table: a GRAPH and a META section are required");
  if (seen.size() != layer_secs.size())
    fail("section table: LAYER indices must be 0.." + std::to_string(layer_secs.size()) + "-1 without gaps");
  parse_graph(graph, graph_len, f);
  f.meta_json.assign(reinterpret_cast<const char*>(meta), meta_len);
  f.layers.resize(layer_secs.size());
  for (uint32_t i = 0; i < layer_secs.size(); ++i) {
    auto [b, len] = layer_secs[seen[i]];
    parse_layer(b, len, i, f.layers[i]);
  }
  check_graph(f);
  return f;
}

}  // namespace dcrt
