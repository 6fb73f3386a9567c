// Load-time planning: op fusion (ExecOp) and the activation arena's liveness plan.
#include <algorithm>
#include <limits>

#include "model.hpp"

namespace dcrt {

namespace {
bool is_unary(OpType t) {
  switch (t) {
    case OpType::Relu: case OpType::Clip: case OpType::Sigmoid: case OpType::HardSigmoid: case OpType::HardSwish:
    case OpType::Silu: case OpType::Tanh: case OpType::Gelu:
      return true;
    default:
      return false;
  }
}
bool has_epilogue(OpType t) { return t == OpType::Conv2d || t == OpType::Linear; }
}  // namespace

// Fusion, in one pass over the ops in order (each rule looks back at the op that feeds it):
//   pad -> conv2d        the pad's sides join the conv's padding (ConvGeom pb, pr may differ from
//                        ph, pw): MobileNet-style asymmetric "same" padding costs no extra pass
//   conv/linear -> add   the other operand (same shape, computed before the conv) is added in the
//                        producer's epilogue
//   conv/linear [-> add] -> relu | clip   the clamp runs in the epilogue
// Each rule needs the fed tensor to have no other reader, so nothing else sees the difference.
// With fuse = false every ExecOp is the file's op as it is (the twin the tests compare with).
void Model::fuse_ops(const ParsedFile& f, bool fuse) {
  const size_t N = ops_.size();
  exec_.assign(N, ExecOp{});
  std::vector<uint32_t> readers(N + 1, 0);
  for (const OpDesc& op : ops_)
    for (uint32_t t : op.inputs) readers[t]++;
  for (size_t i = 0; i < N; ++i) {
    const OpDesc& op = ops_[i];
    ExecOp& x = exec_[i];
    x.reads = op.inputs;
    if (op.type == OpType::Conv2d) {
      const uint32_t kh = f.layers[op.layer].kh, kw = f.layers[op.layer].kw;
      x.geom = ConvGeom{op.in.d[0], op.in.d[1], op.in.d[2], op.out.d[0], op.out.d[1], op.out.d[2], kh, kw,
                        op.p[0], op.p[1], op.p[2], op.p[3], op.p[4], op.p[2], op.p[3], op.p[5] + 1, op.p[6] + 1};
    }
  }
  if (fuse) {
    for (size_t i = 0; i < N; ++i) {
      const OpDesc& op = ops_[i];
      ExecOp& x = exec_[i];
      const uint32_t t = op.inputs[0];
      if (op.type == OpType::Conv2d && t > 0 && ops_[t - 1].type == OpType::Pad && readers[t] == 1) {
        const OpDesc& pad = ops_[t - 1];
        ConvGeom& g = x.geom;
        g.in_c = pad.in.d[0]; g.in_h = pad.in.d[1]; g.in_w = pad.in.d[2];
        g.ph += pad.p[0]; g.pb += pad.p[1]; g.pw += pad.p[2]; g.pr += pad.p[3];
        x.reads[0] = pad.inputs[0];
        exec_[t - 1].fused_into = int32_t(i);
        x.absorbed.push_back(t - 1);
      } else if (op.type == OpType::Add && op.in_shapes[0].numel() == op.out.numel() &&
                 op.in_shapes[1].numel() == op.out.numel() && op.inputs[0] != op.inputs[1]) {
        for (int k = 0; k < 2; ++k) {
          const uint32_t a = op.inputs[k], b = op.inputs[1 - k];
          if (a == 0 || readers[a] != 1) continue;
          const size_t p = a - 1;
          ExecOp& px = exec_[p];
          // b must exist before the producer runs: tensor b is written by op b - 1 < p.
          if (!has_epilogue(ops_[p].type) || px.fused_into >= 0 || px.residual >= 0 || px.clamp || b > p) continue;
          px.residual = int32_t(b);
          px.reads.push_back(b);
          px.absorbed.push_back(uint32_t(i));
          x.fused_into = int32_t(p);
          break;
        }
      } else if ((op.type == OpType::Relu || op.type == OpType::Clip) && t > 0 && readers[t] == 1) {
        const size_t q = t - 1;  // the producer, or an add fused into one
        const size_t p = exec_[q].fused_into >= 0 && ops_[q].type == OpType::Add ? size_t(exec_[q].fused_into) : q;
        ExecOp& px = exec_[p];
        if (!has_epilogue(ops_[p].type) || px.fused_into >= 0 || px.clamp) continue;
        px.clamp = true;
        px.lo = op.type == OpType::Relu ? 0.f : op.f[0];
        px.hi = op.type == OpType::Relu ? std::numeric_limits<float>::infinity() : op.f[1];
        px.absorbed.push_back(uint32_t(i));
        x.fused_into = int32_t(p);
      }
    }
  }
  // The padded input each conv builds (none on the pointwise path, ops/conv.cpp) and its taps.
  for (size_t i = 0; i < N; ++i)
    if (ops_[i].type == OpType::Conv2d) {
      const LayerDesc& L = f.layers[ops_[i].layer];
      const ConvGeom& g = exec_[i].geom;
      if (L.storage == kStorageSparse && conv_is_depthwise(g)) {
        ConvGeom g1 = g;
        g1.in_c = g1.out_c = g1.groups = 1;
        exec_[i].plane = padded_size(g1) + kConvSlack;
      } else if (!conv_is_pointwise(L.storage, L.kh, L.kw, g)) {
        exec_[i].padded = padded_size(g);
      }
    }
}

// Arena plan by liveness. A tensor lives from the op that writes it to the last op that reads it
// (or one of its aliases); flatten and dropout alias their input, fused ops the op they run in
// (a folded pad: its input, never touched), and an elementwise op whose input dies there runs
// in place. Buffers are placed biggest first at the lowest offset that
// overlaps no buffer alive at the same time (TFLite's greedy-by-size).
void Model::plan_tensors() {
  const size_t T = ops_.size() + 1;
  std::vector<uint64_t> size(T), last(T, 0);
  std::vector<size_t> root(T);
  size[0] = input_.numel();
  for (size_t i = 0; i < ops_.size(); ++i) {
    size[i + 1] = ops_[i].out.numel();
    if (exec_[i].fused_into < 0)
      for (uint32_t t : exec_[i].reads) last[t] = std::max<uint64_t>(last[t], i);
  }
  last[T - 1] = ops_.size();  // the output outlives every op
  for (size_t t = 0; t < T; ++t) root[t] = t;
  for (size_t i = 0; i < ops_.size(); ++i) {
    const OpDesc& op = ops_[i];
    const ExecOp& x = exec_[i];
    if (x.fused_into >= 0) {
      const size_t p = size_t(x.fused_into);
      root[i + 1] = op.type == OpType::Pad ? root[op.inputs[0]] : root[p + 1];
      continue;
    }
    const size_t in = x.reads[0], r = root[in];
    if (op.type == OpType::Flatten || op.type == OpType::Dropout) {
      root[i + 1] = r;
    } else if (is_unary(op.type)) {
      bool dies = true;  // no reader of r's buffer after this op
      for (size_t u = 0; u <= i && dies; ++u)
        if (root[u] == r && last[u] > i) dies = false;
      if (dies) root[i + 1] = r;
    }
  }
  struct Buf { size_t r; uint64_t size, start, end, off; };
  std::vector<Buf> bufs;
  std::vector<size_t> buf_of(T, SIZE_MAX);
  for (size_t t = 0; t < T; ++t) {
    const size_t r = root[t];
    if (buf_of[r] == SIZE_MAX) {
      buf_of[r] = bufs.size();
      bufs.push_back({r, size[r], r == 0 ? 0 : r - 1, 0, 0});  // tensor r is written by op r - 1
    }
    Buf& b = bufs[buf_of[r]];
    b.end = std::max(b.end, last[t]);
  }
  std::vector<size_t> order(bufs.size());
  for (size_t k = 0; k < order.size(); ++k) order[k] = k;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return bufs[a].size > bufs[b].size; });
  std::vector<size_t> placed;
  uint64_t peak = 0;
  for (size_t k : order) {
    Buf& b = bufs[k];
    std::vector<std::pair<uint64_t, uint64_t>> busy;  // [off, off + size) of overlapping lifetimes
    for (size_t q : placed)
      if (bufs[q].start <= b.end && b.start <= bufs[q].end) busy.push_back({bufs[q].off, bufs[q].off + bufs[q].size});
    std::sort(busy.begin(), busy.end());
    uint64_t off = 0;
    for (const auto& iv : busy) {
      if (iv.first >= off + b.size) break;  // the gap before this one fits
      off = std::max(off, iv.second);
    }
    b.off = off;
    peak = std::max(peak, off + b.size);
    placed.push_back(k);
  }
  tensor_off_.resize(T);
  for (size_t t = 0; t < T; ++t) tensor_off_[t] = bufs[buf_of[root[t]]].off;
  plan_.arena = peak;
}

}  // namespace dcrt
