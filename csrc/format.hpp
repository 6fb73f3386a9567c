// .dcz version 1 reader: bytes in, validated views out (docs/format.md §1-§4).
// Nothing is allocated before the size it depends on is bounded by the file size.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common.hpp"

namespace dcrt {

// ---- on-disk structs (little-endian; read with memcpy, never cast in place) ----
struct FileHeader {           // §1, at offset 0
  char magic[8];              // "\x89DCZ\r\n\x1a\n"
  uint16_t version_major;     // 1
  uint16_t version_minor;     // any; readers of major 1 accept every minor
  uint32_t section_count;     // 1..65536
  uint64_t file_size;         // must equal the real size
  uint64_t table_offset;      // 64
  uint32_t table_crc32;       // CRC-32 of the section table
  uint32_t flags;             // 0
  uint8_t reserved[20];       // 0
  uint32_t header_crc32;      // CRC-32 of bytes [0, 60)
};
static_assert(sizeof(FileHeader) == 64, "FileHeader layout");

struct SectionEntry {         // §2, 32 bytes each, at table_offset
  uint32_t kind;              // 1 GRAPH, 2 META, 3 LAYER; top bit set: ancillary
  uint32_t index;             // LAYER: its index; else 0
  uint64_t offset;            // multiple of 64, = align64(end of previous)
  uint64_t length;            // bytes
  uint32_t crc32;             // CRC-32 of the section bytes
  uint32_t reserved;          // 0
};
static_assert(sizeof(SectionEntry) == 32, "SectionEntry layout");

struct GraphHeader {          // §3.1
  uint32_t op_count;
  uint32_t input_ndim;        // 1..3 (per sample)
  uint32_t input_shape[4];    // unused dims 0
  uint32_t norm_count;        // 0, 1 or input_shape[0]; then f32 mean[n], f32 std[n]
  uint32_t reserved;
};
static_assert(sizeof(GraphHeader) == 32, "GraphHeader layout");

struct OpRecord {             // §3.2, 40 bytes each after the normalisation arrays
  uint16_t type;              // OpType
  uint16_t n_inputs;          // 0: the previous op's output (1.0: reserved, 0); k: k ids in the input table
  int32_t layer;              // LAYER index for linear/conv2d, else -1
  uint32_t p[8];              // parameters by type; unused ones 0
};
// After the op records: uint32_t inputs[sum of n_inputs], each op's in op order. Tensor ids:
// 0 the (normalised) graph input, j + 1 the output of op j (j < the reading op).
static_assert(sizeof(OpRecord) == 40, "OpRecord layout");

struct LayerHeader {          // §4.1
  uint32_t storage;           // 1 plain fp32, 2 sparse quantized
  uint32_t kind;              // 1 linear, 2 conv2d
  uint32_t rows;              // output features / channels
  uint32_t cols;              // input features / (in_ch/groups)*kh*kw
  uint32_t kh, kw;            // 1, 1 for linear
  uint8_t code_bits;          // b: 1..8 (sparse), 0 (plain)
  uint8_t index_bits;         // 1..8 (sparse), 0 (plain)
  uint8_t count_bits;         // width of the packed column counts: 1..32 (sparse), 0 (plain)
  uint8_t reserved;           // 0
  uint32_t chunk_symbols;     // symbols per Huffman chunk (sparse)
  uint64_t n_entries;         // stored entries incl. fillers
  uint64_t nnz;               // entries with code != 0
  uint64_t code_stream_bytes;
  uint64_t index_stream_bytes;
  char name[32];              // UTF-8, NUL padded
};
static_assert(sizeof(LayerHeader) == 96, "LayerHeader layout");

enum class OpType : uint16_t {  // append-only
  Linear = 1, Conv2d = 2, Relu = 3, MaxPool = 4, AvgPool = 5, Lrn = 6, Flatten = 7, Softmax = 8, Dropout = 9,
  // 1.2
  Add = 10, Mul = 11, Concat = 12, GlobalAvgPool = 13, Pad = 14, Clip = 15, Sigmoid = 16, HardSigmoid = 17,
  HardSwish = 18, Silu = 19, Tanh = 20, Gelu = 21
};
constexpr uint16_t kOpTypeMax = 21;
enum : uint32_t { kStoragePlain = 1, kStorageSparse = 2, kLayerLinear = 1, kLayerConv2d = 2 };
enum : uint32_t { kSectionGraph = 1, kSectionMeta = 2, kSectionLayer = 3, kAncillary = 0x80000000u };
constexpr uint64_t kSectionAlign = 64, kArrayAlign = 16;
constexpr uint64_t kMaxActivation = uint64_t(1) << 28;  // elements per sample
constexpr int kMaxCodeLen = 15;

// ---- parsed views ----
struct Shape {
  uint32_t ndim = 0;
  uint32_t d[3] = {0, 0, 0};
  uint64_t numel() const { uint64_t n = 1; for (uint32_t i = 0; i < ndim; ++i) n *= d[i]; return n; }
};

struct OpDesc {
  OpType type;
  int32_t layer;
  uint32_t p[8];
  float f[4];  // float views of params (lrn: alpha beta k; dropout: p; clip: min max; hardsigmoid: alpha beta)
  std::vector<uint32_t> inputs;  // tensor ids (0 the graph input, j + 1 op j's output)
  std::vector<Shape> in_shapes;  // one per input
  Shape in, out;                 // in: in_shapes[0]
  uint64_t work = 0;  // per sample: multiply-adds (weighted ops) or element visits (others), saturating
};

struct LayerDesc {
  std::string name;
  uint32_t index = 0;
  uint32_t storage, kind, rows, cols, kh, kw;
  uint32_t code_bits = 0, index_bits = 0, count_bits = 0, chunk_symbols = 0;
  uint64_t n_entries = 0, nnz = 0, n_chunks = 0;
  std::vector<float> bias, weight, codebook;
  std::vector<uint8_t> code_lengths, index_lengths;
  std::vector<uint32_t> colptr, code_offsets, index_offsets;  // colptr: from the packed counts
  const uint8_t* code_stream = nullptr;   // into the caller's buffer
  const uint8_t* index_stream = nullptr;
  uint64_t code_stream_bytes = 0, index_stream_bytes = 0;
  std::string where() const;
};

struct ParsedFile {
  uint16_t version_major = 0, version_minor = 0;
  Shape input;
  std::vector<float> mean, std;  // empty: identity
  std::vector<OpDesc> ops;
  std::vector<LayerDesc> layers;
  std::string meta_json;
};

// ---- checked geometry (§3.3): exact 64-bit arithmetic, every planned size <= kMaxActivation ----
// Multiplication that saturates at UINT64_MAX instead of wrapping.
inline uint64_t sat_mul(uint64_t a, uint64_t b) {
  uint64_t r;
  return __builtin_mul_overflow(a, b, &r) ? UINT64_MAX : r;
}
inline uint64_t sat_add(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }

struct WindowOut {
  uint64_t out_h = 0, out_w = 0;
  uint64_t padded = 0;  // conv: the runtime's phase-split padded input (PadGeom); pool: (H+2ph)(W+2pw)
};
// Conv2d on a [c, h, w] input with a kh x kw kernel dilated by dh x dw (window extent
// e = d(k - 1) + 1). Returns "" or the rule the geometry breaks (padding < extent, extent <=
// padded input, 1 <= stride <= padded input, padded input and output <= 2^28 elements). Shared
// by the file reader and the kernel entry points.
std::string check_conv_geometry(uint64_t c, uint64_t h, uint64_t w, uint64_t kh, uint64_t kw, uint64_t sh,
                                uint64_t sw, uint64_t ph, uint64_t pw, uint64_t dh, uint64_t dw, WindowOut& out);
// Max/avg pooling (Caffe's sizes, §3.2): the same rules, padded input (h+2ph)(w+2pw) <= 2^28.
std::string check_pool_geometry(uint64_t c, uint64_t h, uint64_t w, uint64_t kh, uint64_t kw, uint64_t sh,
                                uint64_t sw, uint64_t ph, uint64_t pw, bool ceil_mode, WindowOut& out);

// Validates everything but the Huffman payloads (those are checked while decoding).
// Throws FormatError. `data` must outlive the returned stream pointers.
ParsedFile parse_file(const uint8_t* data, size_t size);

}  // namespace dcrt
