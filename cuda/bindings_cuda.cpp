// Python bindings of the CUDA backend (dcrt._cuda): argument checks and pointers only.
// Array handling (numpy copies, CuPy zero-copy through __cuda_array_interface__) is in
// python/dcrt/cuda.py; this module sees raw pointers and releases the GIL while the GPU runs.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>

#include "device_model.hpp"
#include "py_common.hpp"

namespace py = pybind11;
using namespace dcrt;
using dcrt::cuda::DeviceModel;

using py_common::shape_tuple;

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "dcrt CUDA backend: device Huffman decoding, quantized sparse kernels, graph executor";
  py::register_exception_translator(py_common::translate_core_errors);
  py::register_exception_translator([](std::exception_ptr p) {  // tried first
    try {
      if (p) std::rethrow_exception(p);
    } catch (const cuda::CudaError& e) {
      py_common::set_dcrt_error("CudaError", e.what());
    }
  });
  m.def("device_count", &cuda::device_count, "CUDA devices visible (0 without a driver or GPU; never raises)");
  m.def("device_description", &cuda::device_description, py::arg("device"));
  py::class_<DeviceModel>(m, "DeviceModel")
      .def(py::init([](py::bytes data, int device) {
             std::string buf = data;  // the parser keeps no pointers past the constructor
             py::gil_scoped_release nogil;
             return std::make_unique<DeviceModel>(reinterpret_cast<const uint8_t*>(buf.data()), buf.size(), device);
           }),
           py::arg("data"), py::arg("device") = 0)
      .def("infer_ptr",
           [](const DeviceModel& dm, uintptr_t x, size_t n, uintptr_t y, bool on_device, uintptr_t stream) {
             // Shapes, dtype and contiguity are checked by the caller (dcrt.cuda.CudaModel).
             if (!x || !y) throw py::value_error("infer_ptr: null pointer");
             py::gil_scoped_release nogil;
             dm.infer(reinterpret_cast<const float*>(x), n, reinterpret_cast<float*>(y), on_device, stream);
           },
           py::arg("x"), py::arg("n"), py::arg("y"), py::arg("on_device"), py::arg("stream") = 0)
      .def_property_readonly("input_shape", [](const DeviceModel& dm) { return shape_tuple(dm.input_shape()); })
      .def_property_readonly("output_shape", [](const DeviceModel& dm) { return shape_tuple(dm.output_shape()); })
      .def_property_readonly("meta_json", &DeviceModel::meta_json)
      .def_property_readonly("device", &DeviceModel::device)
      .def_property_readonly("load_stats",
                             [](const DeviceModel& dm) {
                               const auto& s = dm.load_stats();
                               py::dict d;
                               d["parse_s"] = s.parse_s; d["upload_s"] = s.upload_s; d["decode_s"] = s.decode_s;
                               d["layout_s"] = s.layout_s; d["total_s"] = s.total_s;
                               d["symbols_decoded"] = s.symbols_decoded; d["bytes_uploaded"] = s.bytes_uploaded;
                               d["device_bytes"] = s.device_bytes;
                               return d;
                             })
      .def_property_readonly("layers",
                             [](const DeviceModel& dm) {
                               py::list out;
                               for (const auto& L : dm.layers()) {
                                 py::dict d;
                                 d["name"] = L.name; d["kind"] = L.kind; d["storage"] = L.storage;
                                 d["rows"] = L.rows; d["cols"] = L.cols; d["kh"] = L.kh; d["kw"] = L.kw;
                                 d["code_bits"] = L.code_bits; d["index_bits"] = L.index_bits;
                                 d["nnz"] = L.nnz; d["n_entries"] = L.n_entries; d["kernel"] = L.kernel;
                                 out.append(d);
                               }
                               return out;
                             })
      .def("time_decode",
           [](const DeviceModel& dm, int reps) {
             py::gil_scoped_release nogil;
             return dm.time_decode(reps);
           },
           py::arg("reps") = 20, "(seconds per pass, decoded bytes per pass) of the on-device Huffman decoder")
      .def("decoded_symbols",
           [](const DeviceModel& dm, uint32_t layer) {
             std::vector<uint8_t> c, g;
             dm.decoded_symbols(layer, c, g);
             return py::make_tuple(py::bytes(reinterpret_cast<const char*>(c.data()), c.size()),
                                   py::bytes(reinterpret_cast<const char*>(g.data()), g.size()));
           },
           py::arg("layer"))
      .def("rows_layout",
           [](const DeviceModel& dm, uint32_t layer) {
             std::vector<uint32_t> rp, e;
             dm.rows_layout(layer, rp, e);
             return py::make_tuple(rp, e);
           },
           py::arg("layer"));
}
