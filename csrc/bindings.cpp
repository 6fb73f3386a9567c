// Python bindings (dcrt._core): argument checks and array conversion only; no algorithms.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <string>

#include "huffman.hpp"
#include "model.hpp"
#include "ops/ops.hpp"
#include "py_common.hpp"
#include "registry.hpp"
#include "relidx.hpp"

namespace dcrt {
void bind_kernels(pybind11::module_& m);
}

namespace py = pybind11;
using namespace dcrt;

namespace {

using py_common::shape_tuple;

const char* op_name(OpType t) {
  switch (t) {
    case OpType::Linear: return "linear";
    case OpType::Conv2d: return "conv2d";
    case OpType::Relu: return "relu";
    case OpType::MaxPool: return "maxpool";
    case OpType::AvgPool: return "avgpool";
    case OpType::Lrn: return "lrn";
    case OpType::Flatten: return "flatten";
    case OpType::Softmax: return "softmax";
    case OpType::Dropout: return "dropout";
    case OpType::Add: return "add";
    case OpType::Mul: return "mul";
    case OpType::Concat: return "concat";
    case OpType::GlobalAvgPool: return "global_avgpool";
    case OpType::Pad: return "pad";
    case OpType::Clip: return "clip";
    case OpType::Sigmoid: return "sigmoid";
    case OpType::HardSigmoid: return "hardsigmoid";
    case OpType::HardSwish: return "hardswish";
    case OpType::Silu: return "silu";
    case OpType::Tanh: return "tanh";
    case OpType::Gelu: return "gelu";
  }
  return "?";
}

std::string shape_str(const Shape& s, bool batch) {
  std::string r = batch ? "[N, " : "[";
  for (uint32_t i = 0; i < s.ndim; ++i) r += (i ? ", " : "") + std::to_string(s.d[i]);
  return r + "]";
}

py::array_t<float> infer_impl(const Model& m, const py::array& x, double* op_seconds);
py::array_t<float> infer(const Model& m, const py::array& x) { return infer_impl(m, x, nullptr); }

// Per-op wall time of `repeat` inferences (seconds, averaged): where the time goes.
py::array_t<double> profile(const Model& m, const py::array& x, int repeat) {
  if (repeat < 1 || repeat > 100000) throw py::value_error("repeat must be in 1..100000");
  std::vector<double> t(m.ops().size(), 0.0);
  for (int r = 0; r < repeat; ++r) infer_impl(m, x, t.data());
  py::array_t<double> out(py::ssize_t(t.size()));
  for (size_t i = 0; i < t.size(); ++i) out.mutable_data()[i] = t[i] / repeat;
  return out;
}

py::array_t<float> infer_impl(const Model& m, const py::array& x, double* op_seconds) {
  if (!py::isinstance<py::array_t<float>>(x) || x.dtype().kind() != 'f' || x.itemsize() != 4)
    throw py::type_error("infer: expected a float32 array, got dtype " + std::string(py::str(x.dtype())) +
                         " (convert with x.astype(numpy.float32))");
  const Shape& in = m.input_shape();
  const bool single = size_t(x.ndim()) == in.ndim;
  bool ok = single || size_t(x.ndim()) == in.ndim + 1;
  for (uint32_t i = 0; ok && i < in.ndim; ++i) ok = size_t(x.shape(i + (single ? 0 : 1))) == in.d[i];
  if (!ok) {
    std::string got = "[";
    for (py::ssize_t i = 0; i < x.ndim(); ++i) got += (i ? ", " : "") + std::to_string(x.shape(i));
    throw py::value_error("infer: expected shape " + shape_str(in, true) + " or " + shape_str(in, false) + ", got " +
                          got + "]");
  }
  const size_t n = single ? 1 : size_t(x.shape(0));
  auto xc = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(x);
  const Shape& out = m.output_shape();
  std::vector<py::ssize_t> oshape;
  if (!single) oshape.push_back(py::ssize_t(n));
  for (uint32_t i = 0; i < out.ndim; ++i) oshape.push_back(out.d[i]);
  py::array_t<float> y(oshape);
  const float* xp = xc.data();
  float* yp = y.mutable_data();
  {
    py::gil_scoped_release nogil;
    m.infer(xp, n, yp, op_seconds);
  }
  return y;
}

// An int argument in [lo, hi] (bool refused): TypeError / ValueError naming it, never its value's
// neighbours.
uint64_t int_arg(const py::object& v, const char* name, int64_t lo, int64_t hi) {
  if (!PyLong_Check(v.ptr()) || PyBool_Check(v.ptr()))
    throw py::type_error(std::string(name) + " must be an int, got " + std::string(py::str(v.get_type().attr("__name__"))));
  int overflow = 0;
  const long long x = PyLong_AsLongLongAndOverflow(v.ptr(), &overflow);
  if (overflow || x < lo || x > hi)
    throw py::value_error(std::string(name) + " must be in " + std::to_string(lo) + ".." + std::to_string(hi) + ", got " +
                          std::string(py::str(v)).substr(0, 40));
  return uint64_t(x);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "dcrt native runtime (CPU): .dcz loader, quantized sparse kernels, graph executor";

  py::register_exception_translator(py_common::translate_core_errors);

  py::class_<Model>(m, "Model")
      .def(py::init([](const py::object& data, const py::object& threads, const py::object& max_activation,
                       const py::object& max_work, const py::object& fuse, const py::object& kernels,
                       const py::object& dense_codebook, const py::object& precision) {
             // Arguments are checked by hand: pybind11's own conversion error would quote every
             // argument, the whole file included.
             if (!PyBytes_Check(data.ptr()))
               throw py::type_error("Model: data must be bytes, got " + std::string(py::str(data.get_type().attr("__name__"))));
             LoadLimits lim;
             const unsigned t = unsigned(int_arg(threads, "threads", 0, kMaxThreads));
             lim.max_activation = int_arg(max_activation, "max_activation", 1, INT64_MAX);
             lim.max_work = int_arg(max_work, "max_work", 1, INT64_MAX);
             if (!PyBool_Check(fuse.ptr()))
               throw py::type_error("fuse must be True or False, got " + std::string(py::str(fuse.get_type().attr("__name__"))));
             const bool fz = fuse.ptr() == Py_True;
             std::vector<std::pair<std::string, std::string>> kn;
             if (!kernels.is_none()) {
               if (!PyDict_Check(kernels.ptr())) throw py::type_error("kernels must be a dict {op: kernel name}");
               for (const auto& [o, n] : py::reinterpret_borrow<py::dict>(kernels)) {
                 if (!PyUnicode_Check(o.ptr()) || !PyUnicode_Check(n.ptr()))
                   throw py::type_error("kernels must map op names to kernel names (str to str)");
                 kn.emplace_back(o.cast<std::string>(), n.cast<std::string>());
               }
             }
             // bytes are immutable: parse straight from the object's buffer, GIL released.
             char* buf = nullptr;
             py::ssize_t len = 0;
             if (PyBytes_AsStringAndSize(data.ptr(), &buf, &len) != 0) throw py::error_already_set();
             int dmode = -1;
             if (PyUnicode_Check(dense_codebook.ptr())) {
               const std::string v = dense_codebook.cast<std::string>();
               dmode = v == "auto" ? 0 : v == "always" ? 1 : v == "never" ? 2 : -1;
             }
             if (dmode < 0)
               throw py::value_error("dense_codebook must be 'auto', 'always' or 'never', got " +
                                     std::string(py::str(py::repr(dense_codebook))));
             int prec = -1;
             if (PyUnicode_Check(precision.ptr())) {
               const std::string v = precision.cast<std::string>();
               prec = v == "fp32" ? kPrecisionFp32 : v == "bf16" ? kPrecisionBf16 : v == "int8" ? kPrecisionInt8 : -1;
             }
             if (prec < 0)
               throw py::value_error("precision must be 'fp32', 'bf16' or 'int8', got " +
                                     std::string(py::str(py::repr(precision))).substr(0, 40));
             py::gil_scoped_release nogil;
             return new Model(reinterpret_cast<const uint8_t*>(buf), size_t(len), t, lim, fz, kn, dmode, prec);
           }),
           py::arg("data"), py::arg("threads") = 0, py::arg("max_activation") = py::int_(kMaxActivation),
           py::arg("max_work") = py::int_(INT64_MAX), py::arg("fuse") = true, py::arg("kernels") = py::none(),
           py::arg("dense_codebook") = "auto", py::arg("precision") = "fp32")
      .def("infer", &infer, py::arg("x"), "Run the network; releases the GIL.")
      .def("profile", &profile, py::arg("x"), py::arg("repeat") = 10,
           "Seconds per op (mean of `repeat` inferences of x); releases the GIL.")
      .def_property_readonly("input_shape", [](const Model& m) { return shape_tuple(m.input_shape()); })
      .def_property_readonly("output_shape", [](const Model& m) { return shape_tuple(m.output_shape()); })
      .def_property_readonly("meta_json", [](const Model& m) { return py::bytes(m.meta_json()); })
      .def_property_readonly("threads", &Model::threads)
      .def_property_readonly("precision", [](const Model& m) {
        return std::string(m.precision() == kPrecisionInt8 ? "int8" : m.precision() == kPrecisionBf16 ? "bf16" : "fp32");
      })
      .def_property_readonly("pool_stats",
                             [](const Model& m) {
                               py::dict d;
                               d["wakeups"] = m.pool().wakeups();
                               d["caller_blocks"] = m.pool().caller_blocks();
                               return d;
                             })
      .def_property_readonly("plan",
                             [](const Model& m) {
                               const BufferPlan& p = m.plan();
                               py::dict d;
                               d["activation"] = p.activation; d["arena"] = p.arena; d["padded"] = p.padded;
                               d["lin_cols"] = p.lin_cols; d["lin_rows"] = p.lin_rows;
                               d["work"] = p.work; d["bytes_per_sample"] = p.bytes_per_sample();
                               return d;
                             })
      .def_property_readonly("load_stats",
                             [](const Model& m) {
                               const auto& s = m.load_stats();
                               py::dict d;
                               d["parse_s"] = s.parse_s; d["decode_s"] = s.decode_s;
                               d["layout_s"] = s.layout_s; d["total_s"] = s.total_s;
                               d["symbols_decoded"] = s.symbols_decoded;
                               py::dict hs;
                               for (const auto& [k, n] : s.huffman_symbols) hs[k->name] = n;
                               d["huffman_symbols"] = hs;
                               return d;
                             })
      .def_property_readonly("layers",
                             [](const Model& m) {
                               py::list out;
                               for (const auto& L : m.layers()) {
                                 py::dict d;
                                 d["name"] = L.name;
                                 d["kind"] = L.kind == kLayerLinear ? "linear" : "conv2d";
                                 d["storage"] = L.storage == kStoragePlain ? "plain" : "sparse";
                                 d["rows"] = L.rows; d["cols"] = L.cols; d["kh"] = L.kh; d["kw"] = L.kw;
                                 d["code_bits"] = L.code_bits; d["index_bits"] = L.index_bits;
                                 d["nnz"] = L.nnz; d["n_entries"] = L.n_entries;
                                 const bool conv = L.kind == kLayerConv2d;
                                 d["precision"] = "fp32";  // set below for a dense-codebook layer
                                 d["kernel"] = L.storage == kStoragePlain ? (conv ? "conv_f32" : "linear_f32")
                                               : conv ? (L.kh == 1 && L.kw == 1
                                                             ? std::string(m.spmm_rows().name) + " (stride 1) / " + m.conv().name
                                                             : std::string(m.conv().name))
                                                      : std::string(m.spmv_rows().name) + " / " + m.spmv_cols().name +
                                                            " / " + m.spmm_rows().name;
                                 if (conv && L.pixel_form)  // a conv on a one-pixel output map
                                   d["kernel"] = std::string(L.has_dense8() ? m.dense_q8().name : m.spmv_rows().name) +
                                                 " (batch 1, 1x1 map) / " +
                                                 d["kernel"].cast<std::string>();
                                 if (conv && !L.small_w.empty())  // a small map: dense fp32
                                   d["kernel"] = std::string(m.conv_small().name) + " (small map)";
                                 if (L.storage == kStorageSparse && !conv) {
                                   // What batch 1 runs, and when: the runtime's own model of both forms.
                                   d["spmv_cols_below"] = L.cols16_density;
                                   d["plan"] = "batch 1: " + std::string(m.spmv_rows().name) + " (row form, " +
                                               std::to_string(L.rows16.tiles) + " column tiles of " +
                                               std::to_string(L.rows16.tile) + ") when at least " +
                                               std::to_string(int(L.cols16_density * 100 + 0.5f)) +
                                               "% of inputs are non-zero, else " + m.spmv_cols().name +
                                               " (column form, zero inputs skipped, " + std::to_string(L.cols16.tiles) +
                                               " row tiles of " + std::to_string(L.cols16.tile) + "); batch > 1: " +
                                               m.spmm_rows().name + " (rows form, column tiles of " +
                                               std::to_string(row_tile_cols(L.rows, L.cols, L.nnz)) +
                                               ", 64 batch lanes per pass)";
                                   static const char* const prec_names[] = {"fp32", "bf16", "int8"};
                                   const char* dk = L.dense8_prec == kPrecisionInt8   ? m.dense_i8().name
                                                    : L.dense8_prec == kPrecisionBf16 ? m.dense_bf16().name
                                                                                      : m.dense_q8().name;
                                   if (L.has_dense8())
                                     d["kernel"] = std::string(dk) + " / " + m.spmv_cols().name + " / " + m.spmm_rows().name;
                                   if (L.has_dense8())
                                     d["plan"] = "batch 1: " + std::string(dk) + " (dense codebook, " +
                                                 (L.dense8_packed.empty() ? std::string("a byte per weight, ")
                                                                          : std::to_string(L.code_bits) + " bits per weight, ") +
                                                 prec_names[L.dense8_prec] + " products; " + L.dense8_why + ")" +
                                                 (L.dense8_cols_density > 0
                                                      ? " when at least " + std::to_string(int(L.dense8_cols_density * 100 + 0.5f)) +
                                                            "% of inputs are non-zero, else " + m.spmv_cols().name + " (column form)"
                                                      : std::string(" on every input")) +
                                                 "; batch > 1: " + m.spmm_rows().name;
                                   d["dense_codebook"] = L.has_dense8();
                                   d["dense_codebook_below"] = L.dense8_cols_density;  // input density: column form below
                                   // The precision batch 1 multiplies this layer's weights in.
                                   d["precision"] = prec_names[L.has_dense8() ? L.dense8_prec : 0];
                                   if (!L.dense8_why.empty()) d["dense_codebook_why"] = L.dense8_why;
                                   d["layout_bytes"] = L.rows16.bytes() + L.cols16.bytes() + L.dense8.size() + L.dense8_packed.size();
                                 }
                                 out.append(d);
                               }
                               return out;
                             })
      .def_property_readonly("ops",
                             [](const Model& m) {
                               py::list out;
                               for (size_t i = 0; i < m.ops().size(); ++i) {
                                 const OpDesc& o = m.ops()[i];
                                 const ExecOp& x = m.exec_ops()[i];
                                 py::dict d;
                                 d["fused_into"] = x.fused_into;
                                 d["absorbed"] = x.absorbed;
                                 if (o.type == OpType::Conv2d) {
                                   const ConvGeom& g = x.geom;
                                   d["padding"] = py::make_tuple(g.ph, g.pb, g.pw, g.pr);  // top, bottom, left, right
                                   const ExecLayer& L = m.layers()[o.layer];
                                   d["kernel"] = L.pixel_form ? std::string(L.has_dense8() ? m.dense_q8().name : m.spmv_rows().name) + " (1-pixel map)"
                                                 : !x.small_off.empty() ? std::string(m.conv_small().name) + " (small map)"
                                                 : conv_channel_scale(L, g) ? std::string("channel scale (depthwise 1x1)")
                                                 : conv_small_depthwise(L, g) ? std::string(m.dw_blocks().name) + " (small map)"
                                                 : !x.padded && !x.plane
                                                     ? std::string("spmm_rows (pointwise)")
                                                 : L.storage == kStoragePlain ? "conv_f32"
                                                 : conv_is_depthwise(g) ? m.conv_dw().name : m.conv().name;
                                 }
                                 d["type"] = op_name(o.type);
                                 d["layer"] = o.layer;
                                 d["in_shape"] = shape_tuple(o.in);
                                 d["inputs"] = o.inputs;
                                 d["work"] = o.work;
                                 d["threads_b1"] = m.op_threads(o, 1);
                                 d["wakes_b1"] = m.op_wakes(i, 1);
                                 d["solo_us"] = m.op_solo_us(i);
                                 d["out_shape"] = shape_tuple(o.out);
                                 out.append(d);
                               }
                               return out;
                             })
      .def(
          "layer_entries",
          [](const Model& m, size_t i) {
            if (i >= m.layers().size()) throw py::index_error("layer index out of range");
            const ExecLayer& L = m.layers()[i];
            if (L.storage != kStorageSparse) throw py::value_error("layer '" + L.name + "' is stored plain");
            py::array_t<uint32_t> colptr(L.colptr.size());
            std::memcpy(colptr.mutable_data(), L.colptr.data(), L.colptr.size() * 4);
            py::array_t<uint8_t> codes(L.entries.size()), gaps(L.entries.size());
            const uint16_t mask = uint16_t((1u << L.code_bits) - 1);
            for (size_t e = 0; e < L.entries.size(); ++e) {
              codes.mutable_data()[e] = uint8_t(L.entries[e] & mask);
              gaps.mutable_data()[e] = uint8_t(L.entries[e] >> L.code_bits);
            }
            py::array_t<float> cb(L.codebook.size());
            std::memcpy(cb.mutable_data(), L.codebook.data(), L.codebook.size() * 4);
            return py::make_tuple(colptr, codes, gaps, cb);
          },
          py::arg("index"), "The decoded execution layout of a sparse layer: (colptr, codes, gaps, codebook).");

  bind_kernels(m);  // bindings_kernels.cpp
}
