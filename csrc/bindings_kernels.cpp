// The kernel entry points of dcrt._core for tests and benchmarks: every registered kernel by
// name, on validated inputs (no crash on any), with the GIL released while it runs.
#include <cmath>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "format.hpp"
#include "huffman.hpp"
#include "py_common.hpp"
#include "registry.hpp"
#include "relidx.hpp"

namespace py = pybind11;

namespace dcrt {
namespace {

QSparseMatrix checked_matrix(uint32_t rows, const py::array_t<uint32_t, py::array::c_style>& colptr,
                             const py::array_t<uint16_t, py::array::c_style>& entries, uint32_t code_bits,
                             const py::array_t<float, py::array::c_style>& codebook) {
  if (code_bits < 1 || code_bits > 8) throw py::value_error("code_bits must be in 1..8");
  if (colptr.ndim() != 1 || colptr.size() < 1) throw py::value_error("colptr must be 1-D, non-empty");
  if (codebook.size() != (py::ssize_t(1) << code_bits)) throw py::value_error("codebook must have 2^code_bits entries");
  const uint32_t cols = uint32_t(colptr.size() - 1);
  const uint32_t* cp = colptr.data();
  if (cp[0] != 0 || cp[cols] != uint64_t(entries.size())) throw py::value_error("colptr must run from 0 to len(entries)");
  for (uint32_t c = 0; c < cols; ++c)
    if (cp[c + 1] < cp[c]) throw py::value_error("colptr must be non-decreasing");
  if (check_rel16_columns(cp, cols, entries.data(), code_bits, rows) >= 0) throw py::value_error("entries run past rows");
  return QSparseMatrix{rows, cols, code_bits, cp, entries.data(), codebook.data()};
}

// x, tile and shares of the batch-1 entry points. tile: 0 (the runtime's choice) or a power of
// two the 16-bit field holds.
void check_spmv_args(const QSparseMatrix& w, const py::array_t<float, py::array::c_style>& x, uint32_t tile,
                     unsigned shares) {
  if (x.ndim() != 1 || uint64_t(x.size()) != w.cols) throw py::value_error("x must be [cols]");
  const uint32_t field = 1u << (16 - w.code_bits);
  if (tile && ((tile & (tile - 1)) || tile > field))
    throw py::value_error("tile must be 0 or a power of two <= 2^(16 - code_bits) = " + std::to_string(field));
  if (shares < 1 || shares > 1024) throw py::value_error("shares must be in 1..1024");
}

const KernelInfo& kernel(const std::string& name, const char* op) {
  const KernelInfo* k = find_kernel(name);
  if (!k || std::strcmp(k->op, op)) throw py::value_error("no " + std::string(op) + " kernel named '" + name + "'");
  if (k->supported && !k->supported()) throw py::value_error("kernel '" + name + "' is not supported on this CPU");
  return *k;
}

// The epilogue arguments of the conv entry points: res shaped like the output [c, oh, ow] (kept
// alive by `keep`), clamp a (lo, hi) pair; None for either leaves it out.
ConvEpilogue epilogue_arg(const py::object& res, const py::object& clamp, uint32_t c, uint32_t oh, uint32_t ow,
                          py::array_t<float, py::array::c_style>& keep) {
  ConvEpilogue ep;
  if (!res.is_none()) {
    keep = res.cast<py::array_t<float, py::array::c_style>>();
    if (keep.ndim() != 3 || uint32_t(keep.shape(0)) != c || uint32_t(keep.shape(1)) != oh ||
        uint32_t(keep.shape(2)) != ow)
      throw py::value_error("res must be shaped like the output");
    ep.res = keep.data();
  }
  if (!clamp.is_none()) {
    const auto lh = clamp.cast<std::pair<float, float>>();
    ep.clamp = true;
    ep.lo = lh.first;
    ep.hi = lh.second;
  }
  return ep;
}

// The output size of a conv entry point's geometry (padding pb / pr: -1 symmetric), checked as
// the runtime checks a file's; sets pbb, prr.
std::pair<uint32_t, uint32_t> checked_conv_out(uint32_t C, uint32_t H, uint32_t W, uint32_t kh, uint32_t kw, uint32_t sh,
                                               uint32_t sw, uint32_t ph, uint32_t pw, int64_t pb, int64_t pr, uint32_t dh,
                                               uint32_t dw, uint32_t& pbb, uint32_t& prr) {
  pbb = pb < 0 ? ph : uint32_t(pb), prr = pr < 0 ? pw : uint32_t(pr);
  if (pbb > 64 || prr > 64) throw py::value_error("pb, pr: at most 64 here");
  WindowOut wo;
  const std::string ge = check_conv_geometry(C, H, W, kh, kw, sh, sw, std::max(ph, pbb), std::max(pw, prr), dh, dw, wo);
  if (!ge.empty()) throw py::value_error("conv geometry: " + ge);
  const uint64_t ekh = uint64_t(dh) * (kh - 1) + 1, ekw = uint64_t(dw) * (kw - 1) + 1;
  if (ekh > uint64_t(H) + ph + pbb || ekw > uint64_t(W) + pw + prr) throw py::value_error("kernel larger than the padded input");
  return {uint32_t((H + ph + pbb - ekh) / sh + 1), uint32_t((W + pw + prr - ekw) / sw + 1)};
}

}  // namespace

void bind_kernels(py::module_& m) {
  m.def("kernels", [] {
    py::list out;
    for (const auto& k : kernel_registry()) {
      py::dict d;
      d["name"] = k.name; d["op"] = k.op; d["isa"] = k.isa; d["reference"] = k.reference;
      d["supported"] = !k.supported || k.supported();
      d["picked"] = &picked_kernel(k.op) == &k;
      d["ns_per_nz"] = py::none();
      for (const auto& t : kernel_timings(k.op))
        if (t.kernel == &k) {
          d["ns_per_nz"] = t.ns_per_nz;
          if (t.ns_per_symbol_hi > 0) {  // huffman: per symbol at both entropies it timed
            py::dict by_bits;
            const auto [lo, hi] = huffman_timed_bits();
            by_bits[py::float_(std::round(lo * 100) / 100)] = t.ns_per_nz;
            by_bits[py::float_(std::round(hi * 100) / 100)] = t.ns_per_symbol_hi;
            d["ns_per_symbol"] = by_bits;
          }
        }
      out.append(d);
    }
    return out;
  });

  // ---- kernel entry points for tests and benchmarks (inputs validated, no crash on any) ----
  // Dense codebook at batch 1: the dense codes are built here from rel16 CSC as the runtime
  // builds them, then rows [r0, r1) run (the rest of y stays 0).
  m.def(
      "dense_q8",
      [](const std::string& name, uint32_t rows, py::array_t<uint32_t, py::array::c_style> colptr,
         py::array_t<uint16_t, py::array::c_style> entries, uint32_t code_bits,
         py::array_t<float, py::array::c_style> codebook, py::array_t<float, py::array::c_style> x, int64_t r0,
         int64_t r1) {
        const KernelInfo& k = kernel(name, "dense_q8");
        const QSparseMatrix w = checked_matrix(rows, colptr, entries, code_bits, codebook);
        if (x.ndim() != 1 || uint64_t(x.shape(0)) != w.cols) throw py::value_error("x must be [cols]");
        if (r1 < 0) r1 = rows;
        if (r0 < 0 || r0 > r1 || r1 > int64_t(rows)) throw py::value_error("need 0 <= r0 <= r1 <= rows");
        py::array_t<float> y(rows);
        float* yp = y.mutable_data();
        std::fill(yp, yp + rows, 0.f);
        const float* xp = x.data();
        {
          py::gil_scoped_release nogil;
          std::vector<uint8_t> codes;
          build_dense8(w, codes);
          const QDense8 d{w.rows, w.cols, w.code_bits, dense8_ldc(w.cols), codes.data(), w.codebook};
          k.dense_q8(d, xp, yp, uint32_t(r0), uint32_t(r1));
        }
        return y;
      },
      py::arg("name"), py::arg("rows"), py::arg("colptr"), py::arg("entries"), py::arg("code_bits"),
      py::arg("codebook"), py::arg("x"), py::arg("r0") = 0, py::arg("r1") = -1);
  // The precision modes' dense codebook kernels: the same inputs as dense_q8; the tables (int8
  // codebook, scale and row sums, or the bf16 codebook) and the rounded input are built here as
  // the runtime builds them at load and per call.
  for (const char* op : {"dense_i8", "dense_bf16"}) {
    const bool i8 = std::strcmp(op, "dense_i8") == 0;
    m.def(
        op,
        [op, i8](const std::string& name, uint32_t rows, py::array_t<uint32_t, py::array::c_style> colptr,
                 py::array_t<uint16_t, py::array::c_style> entries, uint32_t code_bits,
                 py::array_t<float, py::array::c_style> codebook, py::array_t<float, py::array::c_style> x,
                 int64_t r0, int64_t r1, bool pack) {
          const KernelInfo& k = kernel(name, op);
          const QSparseMatrix w = checked_matrix(rows, colptr, entries, code_bits, codebook);
          if (x.ndim() != 1 || uint64_t(x.shape(0)) != w.cols) throw py::value_error("x must be [cols]");
          if (i8 && w.cols > kDenseI8MaxCols)
            throw py::value_error("dense_i8: at most " + std::to_string(kDenseI8MaxCols) + " columns");
          if (r1 < 0) r1 = rows;
          if (r0 < 0 || r0 > r1 || r1 > int64_t(rows)) throw py::value_error("need 0 <= r0 <= r1 <= rows");
          py::array_t<float> y(rows);
          float* yp = y.mutable_data();
          std::fill(yp, yp + rows, 0.f);
          const float* xp = x.data();
          {
            py::gil_scoped_release nogil;
            std::vector<uint8_t> codes;
            build_dense8(w, codes);
            QDense8 d{w.rows, w.cols, w.code_bits, dense8_ldc(w.cols), codes.data(), w.codebook};
            std::vector<int8_t> qcb;
            std::vector<int32_t> rowsum;
            std::vector<uint16_t> bcb, xb(d.ldc);
            std::vector<uint8_t> xq(d.ldc);
            std::vector<uint8_t> packed;
            if (i8) {
              build_dense8_i8(d, qcb, d.qscale, rowsum);
              d.qcodebook = qcb.data();
              d.qrowsum = rowsum.data();
              if (pack && dense8_packs(w.code_bits)) {  // the runtime's int8 layout
                pack_dense8(d, packed);
                d.codes = nullptr;
                d.packed = packed.data();
                d.ldp = dense8_ldp(d.cols, w.code_bits);
              }
              const QInputU8 q = quantize_input_u8(xp, d.cols, d.ldc, xq.data());
              k.dense_i8(d, q, yp, uint32_t(r0), uint32_t(r1));
            } else {
              build_dense8_bf16(w.codebook, w.code_bits, bcb);
              d.bcodebook = bcb.data();
              round_input_bf16(xp, d.cols, d.ldc, xb.data());
              k.dense_bf16(d, xb.data(), yp, uint32_t(r0), uint32_t(r1));
            }
          }
          return y;
        },
        py::arg("name"), py::arg("rows"), py::arg("colptr"), py::arg("entries"), py::arg("code_bits"),
        py::arg("codebook"), py::arg("x"), py::arg("r0") = 0, py::arg("r1") = -1, py::arg("pack") = true);
  }
  // The per-call rounding of the precision modes: (q, scale, zero) with x ~= scale * (q - zero),
  // and the bf16 bits of x.
  m.def("quantize_input_u8", [](py::array_t<float, py::array::c_style> x) {
    if (x.ndim() != 1) throw py::value_error("x must be 1-D");
    const uint32_t n = uint32_t(x.size());
    py::array_t<uint8_t> q(n);
    std::vector<uint8_t> buf(dense8_ldc(n));
    const QInputU8 r = quantize_input_u8(x.data(), n, buf.size(), buf.data());
    std::memcpy(q.mutable_data(), buf.data(), n);
    return py::make_tuple(q, r.scale, r.zero);
  });
  m.def("round_bf16", [](py::array_t<float, py::array::c_style> x) {
    if (x.ndim() != 1) throw py::value_error("x must be 1-D");
    const uint32_t n = uint32_t(x.size());
    py::array_t<uint16_t> b(n);
    for (uint32_t i = 0; i < n; ++i) b.mutable_data()[i] = bf16_round(x.data()[i]);
    return b;
  });
  // Batch-1 tiled kernels: the layout is built here from rel16 CSC exactly as the runtime builds it
  // (tile 0 = the runtime's choice), then every share of the split runs in turn.
  for (const char* op : {"spmv_rows", "spmv_cols"}) {
    const bool cols = std::strcmp(op, "spmv_cols") == 0;
    m.def(
        op,
        [op, cols](const std::string& name, uint32_t rows, py::array_t<uint32_t, py::array::c_style> colptr,
                   py::array_t<uint16_t, py::array::c_style> entries, uint32_t code_bits,
                   py::array_t<float, py::array::c_style> codebook, py::array_t<float, py::array::c_style> x,
                   uint32_t tile, unsigned shares) {
          const KernelInfo& k = kernel(name, op);
          const QSparseMatrix w = checked_matrix(rows, colptr, entries, code_bits, codebook);
          check_spmv_args(w, x, tile, shares);
          py::array_t<float> y(rows);
          float* yp = y.mutable_data();
          const float* xp = x.data();
          {
            py::gil_scoped_release nogil;
            Tiles16 t;
            (cols ? build_cols16 : build_rows16)(w, tile, shares, t);
            std::vector<uint32_t> live(w.cols);
            const uint32_t nlive = live_columns(xp, w.cols, live.data());
            std::fill(yp, yp + rows, 0.f);
            for (size_t s = 0; s + 1 < t.split.size(); ++s) {
              if (cols)
                k.spmv_cols(t.view(w.codebook), xp, live.data(), nlive, yp, t.split[s], t.split[s + 1]);
              else
                k.spmv_rows(t.view(w.codebook), xp, yp, t.split[s], t.split[s + 1]);
            }
          }
          return y;
        },
        py::arg("name"), py::arg("rows"), py::arg("colptr"), py::arg("entries"), py::arg("code_bits"),
        py::arg("codebook"), py::arg("x"), py::arg("tile") = 0, py::arg("shares") = 1);
  }
  m.def("spmm", [](const std::string& name, uint32_t rows, py::array_t<uint32_t, py::array::c_style> colptr,
                   py::array_t<uint16_t, py::array::c_style> entries, uint32_t code_bits,
                   py::array_t<float, py::array::c_style> codebook, py::array_t<float, py::array::c_style> xt) {
    const KernelInfo& k = kernel(name, "spmm");
    const QSparseMatrix w = checked_matrix(rows, colptr, entries, code_bits, codebook);
    if (xt.ndim() != 2 || uint64_t(xt.shape(0)) != w.cols) throw py::value_error("xt must be [cols, n]");
    const size_t n = size_t(xt.shape(1));
    py::array_t<float> yt({py::ssize_t(rows), py::ssize_t(n)});
    std::fill(yt.mutable_data(), yt.mutable_data() + rows * n, 0.f);
    float* yp = yt.mutable_data();
    const float* xp = xt.data();
    {
      py::gil_scoped_release nogil;
      k.spmm(w, xp, n, yp, n, n);
    }
    return yt;
  });
  m.def("crc32", [](const std::string& name, py::buffer data, uint32_t crc) {
    const KernelInfo& k = kernel(name, "crc32");
    const py::buffer_info b = data.request();
    const auto* p = static_cast<const uint8_t*>(b.ptr);
    const size_t n = size_t(b.size) * size_t(b.itemsize);
    py::gil_scoped_release nogil;
    return k.crc32(p, n, crc);
  }, py::arg("name"), py::arg("data"), py::arg("crc") = 0u, "zlib.crc32(data, crc) by the named crc32 kernel");
  m.def("transpose", [](const std::string& name, py::array_t<float, py::array::c_style> src, size_t nc,
                        size_t ld_dst) {
    // src [nr, ld_src]: its first nc columns land in dst [nc, ld_dst]; the rest of each dst row
    // keeps the fill value 7 so tests see a kernel that writes outside its block.
    const KernelInfo& k = kernel(name, "transpose");
    if (src.ndim() != 2) throw py::value_error("src must be 2-D");
    const size_t nr = size_t(src.shape(0)), ld_src = size_t(src.shape(1));
    if (nc > ld_src || ld_dst < nr) throw py::value_error("need nc <= src.shape[1] and ld_dst >= src.shape[0]");
    py::array_t<float> dst({py::ssize_t(nc), py::ssize_t(ld_dst)});
    std::fill(dst.mutable_data(), dst.mutable_data() + nc * ld_dst, 7.f);
    float* dp = dst.mutable_data();
    const float* sp = src.data();
    {
      py::gil_scoped_release nogil;
      k.transpose(sp, ld_src, dp, ld_dst, nr, nc);
    }
    return dst;
  }, py::arg("name"), py::arg("src"), py::arg("nc"), py::arg("ld_dst"));
  m.def("spmm_rows", [](const std::string& name, uint32_t rows, py::array_t<uint32_t, py::array::c_style> colptr,
                        py::array_t<uint16_t, py::array::c_style> entries, uint32_t code_bits,
                        py::array_t<float, py::array::c_style> codebook, py::array_t<float, py::array::c_style> xt,
                        uint32_t row_chunk) {
    const KernelInfo& k = kernel(name, "spmm_rows");
    const QSparseMatrix w = checked_matrix(rows, colptr, entries, code_bits, codebook);
    if (xt.ndim() != 2 || uint64_t(xt.shape(0)) != w.cols) throw py::value_error("xt must be [cols, n]");
    if (w.cols >= (1u << 24)) throw py::value_error("the rows layout holds columns < 2^24");
    const size_t n = size_t(xt.shape(1));
    std::vector<uint32_t> rowptr(size_t(rows) + 1), rows_e;
    uint64_t nnz = 0;
    for (py::ssize_t e = 0; e < entries.size(); ++e) nnz += (entries.data()[e] & ((1u << code_bits) - 1)) != 0;
    rows_e.resize(nnz);
    csc_to_conv_rows(w, rowptr.data(), rows_e.data());
    const QConvRows wr{rows, w.cols, code_bits, rowptr.data(), rows_e.data(), codebook.data()};
    py::array_t<float> yt({py::ssize_t(rows), py::ssize_t(n)});
    std::fill(yt.mutable_data(), yt.mutable_data() + size_t(rows) * n, 0.f);
    float* yp = yt.mutable_data();
    const float* xp = xt.data();
    if (!row_chunk) row_chunk = rows ? rows : 1;
    {
      py::gil_scoped_release nogil;
      for (uint32_t r0 = 0; r0 < rows; r0 += row_chunk)
        k.spmm_rows(wr, xp, n, yp, n, n, r0, std::min(rows, r0 + row_chunk));
    }
    return yt;
  }, py::arg("name"), py::arg("rows"), py::arg("colptr"), py::arg("entries"), py::arg("code_bits"),
     py::arg("codebook"), py::arg("xt"), py::arg("row_chunk") = 0);
  m.def("conv", [](const std::string& name, py::array_t<uint32_t, py::array::c_style> colptr,
                   py::array_t<uint16_t, py::array::c_style> entries, uint32_t code_bits,
                   py::array_t<float, py::array::c_style> codebook, py::array_t<float, py::array::c_style> bias,
                   py::array_t<float, py::array::c_style> x, uint32_t out_c, uint32_t kh, uint32_t kw, uint32_t sh,
                   uint32_t sw, uint32_t ph, uint32_t pw, uint32_t groups, uint32_t oc_chunk, uint32_t row_chunk,
                   uint32_t dh, uint32_t dw, int64_t pb, int64_t pr, py::object res, py::object clamp) {
    const KernelInfo* kp = find_kernel(name);
    if (!kp || (std::strcmp(kp->op, "conv") && std::strcmp(kp->op, "conv_dw")))
      throw py::value_error("no conv kernel named " + name);
    if (kp->supported && !kp->supported()) throw py::value_error(name + " is not supported on this CPU");
    const KernelInfo& k = *kp;
    if (x.ndim() != 3) throw py::value_error("x must be [C, H, W]");
    if (uint64_t(x.size()) > kMaxActivation) throw py::value_error("x exceeds 2^28 elements");
    const uint32_t C = uint32_t(x.shape(0)), H = uint32_t(x.shape(1)), W = uint32_t(x.shape(2));
    if (!groups || C % groups || out_c % groups) throw py::value_error("groups must divide in and out channels");
    if (!std::strcmp(k.op, "conv_dw") && (groups != C || out_c != C))
      throw py::value_error("conv_dw kernels take depthwise geometry only (groups = in = out channels)");
    // Bottom/right padding (pb, pr; -1: symmetric) as a pad folded into the conv at load makes it;
    // checked as the symmetric geometry with the larger of each pair.
    uint32_t pbb, prr;
    const auto [oh, ow] = checked_conv_out(C, H, W, kh, kw, sh, sw, ph, pw, pb, pr, dh, dw, pbb, prr);
    if (sat_mul(sat_mul(out_c, oh), ow) > kMaxActivation) throw py::value_error("output exceeds 2^28 elements");
    if (uint64_t(bias.size()) != out_c) throw py::value_error("bias must be [out_c]");
    const QSparseMatrix w = checked_matrix(out_c, colptr, entries, code_bits, codebook);
    if (w.cols != uint64_t(C / groups) * kh * kw) throw py::value_error("cols != C/groups*kh*kw");
    ConvGeom g{C, H, W, out_c, oh, ow, kh, kw, sh, sw, ph, pw, groups, pbb, prr, dh, dw};
    py::array_t<float, py::array::c_style> res_a;
    const ConvEpilogue ep = epilogue_arg(res, clamp, out_c, oh, ow, res_a);
    if (!oc_chunk) oc_chunk = out_c;
    if (!row_chunk) row_chunk = g.out_h;
    std::vector<uint32_t> rowptr(out_c + 1), rows_e;
    uint64_t nnz = 0;
    for (py::ssize_t e = 0; e < entries.size(); ++e) nnz += (entries.data()[e] & ((1u << code_bits) - 1)) != 0;
    rows_e.resize(nnz);
    csc_to_conv_rows(w, rowptr.data(), rows_e.data());
    const QConvRows wr{out_c, w.cols, code_bits, rowptr.data(), rows_e.data(), codebook.data()};
    std::vector<float> xpad(padded_size(g) + kConvSlack);
    std::vector<int64_t> tapoff(w.cols);
    py::array_t<float> y({py::ssize_t(out_c), py::ssize_t(g.out_h), py::ssize_t(g.out_w)});
    float* yp = y.mutable_data();
    const float* xp = x.data();
    const float* bp = bias.data();
    {
      py::gil_scoped_release nogil;
      pad_input(g, xp, xpad.data());
      conv_tap_offsets(g, w.cols, tapoff.data());
      for (uint32_t oc0 = 0; oc0 < out_c; oc0 += oc_chunk)
        for (uint32_t oy0 = 0; oy0 < g.out_h; oy0 += row_chunk)
          k.conv(wr, g, tapoff.data(), bp, xp, xpad.data(), yp, oc0, std::min(out_c, oc0 + oc_chunk), oy0,
                 std::min(g.out_h, oy0 + row_chunk), ep);
    }
    return y;
  }, py::arg("name"), py::arg("colptr"), py::arg("entries"), py::arg("code_bits"), py::arg("codebook"),
     py::arg("bias"), py::arg("x"), py::arg("out_c"), py::arg("kh"), py::arg("kw"), py::arg("sh"), py::arg("sw"),
     py::arg("ph"), py::arg("pw"), py::arg("groups"), py::arg("oc_chunk") = 0, py::arg("row_chunk") = 0,
     py::arg("dh") = 1, py::arg("dw") = 1, py::arg("pb") = -1, py::arg("pr") = -1, py::arg("res") = py::none(),
     py::arg("clamp") = py::none());
  // Depthwise small-map kernels: w [C, kh * kw] fp32 (zeros: pruned), x [C, H, W]; channel
  // ranges of oc_chunk run in turn.
  m.def("conv_dw_blocks", [](const std::string& name, py::array_t<float, py::array::c_style> w,
                             py::array_t<float, py::array::c_style> bias, py::array_t<float, py::array::c_style> x,
                             uint32_t kh, uint32_t kw, uint32_t sh, uint32_t sw, uint32_t ph, uint32_t pw, int64_t pb,
                             int64_t pr, uint32_t dh, uint32_t dw, uint32_t oc_chunk, py::object res, py::object clamp) {
    const KernelInfo& k = kernel(name, "conv_dw_blocks");
    if (x.ndim() != 3) throw py::value_error("x must be [C, H, W]");
    const uint32_t C = uint32_t(x.shape(0)), H = uint32_t(x.shape(1)), W = uint32_t(x.shape(2));
    if (size_t(H) * W > kDwMaxInPixels) throw py::value_error("the input map must have at most 256 pixels");
    if (size_t(kh) * kw > kDwMaxTaps) throw py::value_error("at most 64 taps");
    if (w.ndim() != 2 || uint32_t(w.shape(0)) != C || uint64_t(w.shape(1)) != uint64_t(kh) * kw)
      throw py::value_error("w must be [C, kh * kw]");
    if (uint32_t(bias.size()) != C) throw py::value_error("bias must be [C]");
    uint32_t pbb, prr;
    const auto [oh, ow] = checked_conv_out(C, H, W, kh, kw, sh, sw, ph, pw, pb, pr, dh, dw, pbb, prr);
    ConvGeom g{C, H, W, C, oh, ow, kh, kw, sh, sw, ph, pw, C, pbb, prr, dh, dw};
    py::array_t<float, py::array::c_style> res_a;
    const ConvEpilogue ep = epilogue_arg(res, clamp, C, oh, ow, res_a);
    if (!oc_chunk) oc_chunk = C;
    py::array_t<float> y({py::ssize_t(C), py::ssize_t(oh), py::ssize_t(ow)});
    float* yp = y.mutable_data();
    {
      py::gil_scoped_release nogil;
      for (uint32_t oc0 = 0; oc0 < C; oc0 += oc_chunk)
        k.dw_blocks(w.data(), g, bias.data(), x.data(), yp, oc0, std::min(C, oc0 + oc_chunk), ep);
    }
    return y;
  }, py::arg("name"), py::arg("w"), py::arg("bias"), py::arg("x"), py::arg("kh"), py::arg("kw"), py::arg("sh") = 1,
     py::arg("sw") = 1, py::arg("ph") = 0, py::arg("pw") = 0, py::arg("pb") = -1, py::arg("pr") = -1,
     py::arg("dh") = 1, py::arg("dw") = 1, py::arg("oc_chunk") = 0, py::arg("res") = py::none(),
     py::arg("clamp") = py::none());
  m.def("huffman_decode", [](const std::string& name, py::array_t<uint8_t, py::array::c_style> lengths,
                             const py::bytes& stream, py::array_t<uint32_t, py::array::c_style> offsets,
                             uint64_t n_symbols, uint32_t chunk_symbols) {
    const KernelInfo& k = kernel(name, "huffman");
    if (!chunk_symbols) throw py::value_error("chunk_symbols must be >= 1");
    const std::string s = stream;
    const uint64_t nch = n_symbols ? (n_symbols - 1) / chunk_symbols + 1 : 0;
    if (uint64_t(offsets.size()) != nch + 1) throw py::value_error("offsets must have n_chunks + 1 entries");
    const uint32_t* o = offsets.data();
    if (o[0] != 0 || o[nch] != s.size()) throw py::value_error("offsets must run from 0 to len(stream)");
    for (uint64_t c = 0; c < nch; ++c)
      if (o[c + 1] < o[c]) throw py::value_error("offsets must be non-decreasing");
    if (n_symbols > 8 * uint64_t(s.size())) throw FormatError("huffman: more symbols than bits");
    HuffTable t;
    build_huff_table(lengths.data(), uint32_t(lengths.size()), n_symbols, t, "lengths");
    py::array_t<uint8_t> out{py::ssize_t(n_symbols)};
    uint8_t* op = out.mutable_data();
    int64_t bad = -1;
    {
      py::gil_scoped_release nogil;
      const HuffStream hs{reinterpret_cast<const uint8_t*>(s.data()), o, chunk_symbols, n_symbols};
      bad = k.huff(t, hs, 0, nch, op);
    }
    if (bad >= 0) throw FormatError("huffman: chunk " + std::to_string(bad) + ": corrupt");
    return out;
  });
}

}  // namespace dcrt
