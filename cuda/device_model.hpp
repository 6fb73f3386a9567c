// CUDA backend of dcrt (dcrt._cuda): a .dcz model kept compressed-layout on one GPU.
//
// Host side (this header) is plain C++ so the pybind11 bindings compile with the host compiler;
// everything that touches CUDA lives in device_model.cu. Load: the file is parsed and validated
// on the host (csrc/format.cpp, CRCs included), only the Huffman streams, their chunk offsets,
// the decode tables, column counts and codebooks cross PCIe; the streams are decoded on the
// device (one thread per chunk, every chunk of every layer in one launch) and each sparse layer
// is laid out there as output rows of (column, code) entries sorted by column (the same order
// as the CPU's conv/batched rows layout), plus a column-compacted copy for zero-input skipping.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "format.hpp"

namespace dcrt {
namespace cuda {

// A CUDA runtime error; the message carries the CUDA error name and string and the call site.
struct CudaError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Devices the CUDA runtime sees; 0 (never an exception) without a driver or a GPU.
int device_count();
// "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.1 GiB)"; throws CudaError.
std::string device_description(int device);

struct DeviceLoadStats {
  double parse_s = 0, upload_s = 0, decode_s = 0, layout_s = 0, total_s = 0;
  uint64_t symbols_decoded = 0, bytes_uploaded = 0, device_bytes = 0;
};

struct DeviceLayerInfo {
  std::string name, kind, storage, kernel;
  uint32_t rows = 0, cols = 0, kh = 1, kw = 1, code_bits = 0, index_bits = 0;
  uint64_t nnz = 0, n_entries = 0;
};

class DeviceModel {
 public:
  // Throws FormatError for a malformed file (same messages as the CPU loader, Huffman chunk
  // errors included), CudaError for CUDA failures. Nothing is left allocated on failure.
  DeviceModel(const uint8_t* data, size_t size, int device);
  ~DeviceModel();
  DeviceModel(const DeviceModel&) = delete;
  DeviceModel& operator=(const DeviceModel&) = delete;

  // y = network(x) for n samples. x and y are device pointers when on_device, else host
  // pointers (copied through pinned staging). `stream` is a cudaStream_t (0: the workspace's own
  // stream); the call returns when y is complete. Thread-safe: concurrent calls take separate
  // workspaces, each with its own stream, so requests overlap on the device.
  void infer(const float* x, size_t n, float* y, bool on_device, uintptr_t stream) const;

  const Shape& input_shape() const;
  const Shape& output_shape() const;
  const std::string& meta_json() const;
  int device() const;
  const DeviceLoadStats& load_stats() const;
  std::vector<DeviceLayerInfo> layers() const;
  // Decodes every Huffman stream of the model again on the device `reps` times (outputs
  // discarded) and returns {seconds per pass (median), decoded bytes per pass}: the decoder's
  // throughput without PCIe or parsing.
  std::pair<double, uint64_t> time_decode(int reps) const;
  // The decoded (code, gap) symbols of one sparse layer, copied back: tests compare them with
  // the CPU decoder.
  void decoded_symbols(uint32_t layer, std::vector<uint8_t>& codes, std::vector<uint8_t>& gaps) const;
  // One sparse layer's device rows layout copied back: rowptr [rows + 1] and entries
  // column << 8 | code (the CPU's csc_to_conv_rows order).
  void rows_layout(uint32_t layer, std::vector<uint32_t>& rowptr, std::vector<uint32_t>& entries) const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace cuda
}  // namespace dcrt
