"""PyTorch front end: an ``nn.Module`` -> :class:`dcrt.graph.GraphNet` through ``torch.export``.

The module is exported in eval mode on the caller's example input, and the ATen graph is
mapped op by op onto dcrt's ops (docs/format.md §3.2). Batch norms are folded into the
convolution or linear layer that feeds them (before any pruning, so the stored weights are the
folded ones); one that cannot be folded becomes a depthwise 1x1 convolution (a per-channel
scale and shift). Weighted layers are named after the module path of their weight, e.g.
``resnet.encoder.stages.0.layers.1.layer.0.convolution``: the keys of ``density=``, ``bits=``
and ``storage=`` dicts. Anything dcrt cannot run raises :class:`UnsupportedModelError` naming
the ATen op, the graph node, the module and the user's source line -- never a silent wrong
graph. ``torch`` is imported only here (``pip install "dcrt[torch]"``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import UnsupportedModelError
from ..graph import GraphNet, Node, affine_node, batchnorm_affine, channel_constant, constant_affine, fold_affine
from ..nn import Conv2d, Linear

__all__ = ["from_torch", "UnsupportedModelError"]


@dataclass
class _T:  # a tensor of the dcrt graph
    id: int
    shape: tuple  # per sample (no batch axis)


@dataclass
class _C:  # a constant (parameter, buffer)
    value: np.ndarray
    fqn: str = ""


def _where(node) -> str:
    mod = node.meta.get("nn_module_stack")
    path = list(mod.values())[-1][0] if mod else ""
    trace = node.meta.get("stack_trace") or ""
    lines = [l.strip() for l in trace.strip().splitlines() if l.strip()]
    src = ""
    frames = [k for k, l in enumerate(lines) if l.startswith("File ")]
    # the innermost frame outside torch itself (the user's or their library's model code)
    mine = [k for k in frames if "/torch/" not in lines[k]] or frames
    if mine:
        k = mine[-1]
        src = lines[k] + (f": {lines[k + 1]}" if k + 1 < len(lines) else "")
    return f"node {node.name!r}" + (f" in module {path!r}" if path else "") + (f"\n  at {src}" if src else "")


class _Importer:
    def __init__(self, ep, name, keep_affine=()):
        self.ep, self.name = ep, name
        self.keep_affine = set(keep_affine)  # layers whose following affine is not folded in
        self.nodes: list[Node] = []
        self.env: dict = {}
        self.users = {n.name: len(n.users) for n in ep.graph.nodes}
        self.producer: dict = {}  # dcrt tensor id -> index into self.nodes (weighted ones, for BN folding)
        self.input_shape = None

    def fail(self, node, why):
        raise UnsupportedModelError(f"torch import ({self.name}): {node.target} is not supported: {why}\n"
                                    f"  {_where(node)}")

    def emit(self, node: Node, shape) -> _T:
        self.nodes.append(node)
        t = _T(len(self.nodes), tuple(int(d) for d in shape))
        return t

    def tensor(self, node, v, what="input") -> _T:
        if not isinstance(v, _T):
            self.fail(node, f"its {what} is a constant or a shape computation, not an activation")
        return v

    def const(self, node, v, what) -> np.ndarray:
        if not isinstance(v, _C):
            self.fail(node, f"{what} must be a parameter or buffer of the module")
        return v.value

    def out_shape(self, node):
        val = node.meta.get("val")
        if val is None or not hasattr(val, "shape"):
            self.fail(node, "its output has no static shape")
        shape = tuple(int(d) for d in val.shape)
        return shape[1:]

    # ------------------------------------------------------------------ the walk
    def run(self):
        import torch
        sig = self.ep.graph_signature
        lifted = {**sig.inputs_to_parameters, **sig.inputs_to_buffers,
                  **getattr(sig, "inputs_to_lifted_tensor_constants", {})}
        state = dict(self.ep.state_dict)
        state.update(getattr(self.ep, "constants", {}) or {})
        user_inputs = list(sig.user_inputs)
        if len(user_inputs) != 1:
            raise UnsupportedModelError(f"torch import ({self.name}): the module takes {len(user_inputs)} tensor "
                                        "inputs; dcrt runs networks of one input tensor")
        out = None
        for node in self.ep.graph.nodes:
            if node.op == "placeholder":
                if node.name in lifted:
                    fqn = lifted[node.name]
                    v = state[fqn]
                    self.env[node.name] = _C(v.detach().to(torch.float32).cpu().numpy() if v.is_floating_point()
                                             else v.detach().cpu().numpy(), fqn)
                elif node.name == user_inputs[0]:
                    shape = self.out_shape(node)
                    self.input_shape = shape
                    self.env[node.name] = _T(0, shape)
                else:
                    self.env[node.name] = None  # a non-tensor input (unused or an error where used)
            elif node.op == "get_attr":
                v = getattr(self.ep.graph_module, node.target)
                self.env[node.name] = _C(v.detach().to(torch.float32).cpu().numpy(), str(node.target))
            elif node.op == "call_function":
                self.env[node.name] = self.call(node)
            elif node.op == "output":
                outs = node.args[0]
                first = outs[0] if isinstance(outs, (tuple, list)) else outs
                out = self.env.get(getattr(first, "name", None))
                if not isinstance(out, _T):
                    raise UnsupportedModelError(f"torch import ({self.name}): the first output is not an activation")
        if out is None or out.id == 0:
            raise UnsupportedModelError(f"torch import ({self.name}): the module's output is its input")
        if out.id != len(self.nodes):  # the output must be the last op: append an identity
            self.nodes.append(Node("dropout", {"p": 0.0}, [out.id]))
        return GraphNet(self.nodes, self.input_shape, self.name)

    def arg(self, a):
        if hasattr(a, "name") and hasattr(a, "op"):  # an fx Node
            return self.env[a.name]
        if isinstance(a, (list, tuple)):
            return type(a)(self.arg(x) for x in a)
        return a

    def call(self, node):
        target = str(node.target)
        op = target.split(".")[1] if target.startswith("aten.") else target
        args = [self.arg(a) for a in node.args]
        kw = {k: self.arg(v) for k, v in node.kwargs.items()}
        h = getattr(self, "op_" + op.rstrip("_"), None)
        if target == "<built-in function getitem>" or op == "getitem":
            base, idx = args
            if isinstance(base, tuple):
                return base[idx]
            self.fail(node, "indexing into an op's outputs that dcrt does not produce")
        if h is None:
            self.fail(node, "dcrt has no such op (docs/importers.md lists what imports)")
        return h(node, *args, **kw)

    # ------------------------------------------------------------------ identities
    def _same(self, node, x, *a, **k):
        return self.tensor(node, x)

    op_clone = op_contiguous = op_alias = op_detach = op_dropout = op_feature_dropout = op_alpha_dropout = _same
    op_lift_fresh_copy = _same

    def op_native_dropout(self, node, x, *a, **k):
        return (self.tensor(node, x), None)

    def op__assert_tensor_metadata(self, node, *a, **k):
        return None

    # ------------------------------------------------------------------ weighted layers
    def op_conv2d(self, node, x, w, b=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
        x = self.tensor(node, x)
        wv = self.const(node, w, "the weight")
        pair = lambda v: (int(v), int(v)) if isinstance(v, (int, float)) else tuple(int(q) for q in v)
        stride, dilation = pair(stride), pair(dilation)
        if isinstance(padding, str):
            if padding == "valid":
                padding = (0, 0)
            elif padding == "same" and all(s == 1 for s in stride) and all(
                    d * (k - 1) % 2 == 0 for d, k in zip(dilation, wv.shape[2:])):
                padding = tuple(d * (k - 1) // 2 for d, k in zip(dilation, wv.shape[2:]))
            else:
                self.fail(node, f"padding={padding!r} with this kernel/stride (use explicit padding)")
        padding = pair(padding)
        if min(dilation) < 1:
            self.fail(node, f"dilation {dilation}")
        if len(x.shape) != 3:
            self.fail(node, f"a conv2d on a {len(x.shape) + 1}-D tensor (dcrt runs [N, C, H, W])")
        out_c, icg, kh, kw = wv.shape
        name = w.fqn[:-len(".weight")] if w.fqn.endswith(".weight") else w.fqn
        layer = Conv2d(icg * int(groups), out_c, (kh, kw), stride, padding, int(groups), name, dilation)
        layer.weight = np.ascontiguousarray(wv, np.float32)
        layer.bias = (np.zeros(out_c, np.float32) if b is None else self.const(node, b, "the bias").astype(np.float32))
        t = self.emit(Node("conv2d", {"stride": stride, "padding": padding, "groups": int(groups), "dilation": dilation},
                           [x.id], layer),
                      self.out_shape(node))
        self.producer[t.id] = (len(self.nodes) - 1, node.name)
        return t

    def op_linear(self, node, x, w, b=None):
        x = self.tensor(node, x)
        wv = self.const(node, w, "the weight")
        if len(x.shape) != 1:
            self.fail(node, f"a linear layer on per-sample shape {list(x.shape)} (dcrt's linear flattens its input; "
                            "flatten first)")
        name = w.fqn[:-len(".weight")] if w.fqn.endswith(".weight") else w.fqn
        layer = Linear(wv.shape[1], wv.shape[0], name)
        layer.weight = np.ascontiguousarray(wv, np.float32)
        layer.bias = (np.zeros(wv.shape[0], np.float32) if b is None else self.const(node, b, "the bias").astype(np.float32))
        inputs = [x.id]
        t = self.emit(Node("linear", {}, inputs, layer), self.out_shape(node))
        self.producer[t.id] = (len(self.nodes) - 1, node.name)
        return t

    def _bn(self, node, x, weight, bias, mean, var, eps):
        x = self.tensor(node, x)
        c = x.shape[0]
        g = np.ones(c, np.float32) if weight is None else self.const(node, weight, "the weight")
        beta = np.zeros(c, np.float32) if bias is None else self.const(node, bias, "the bias")
        mu, v = self.const(node, mean, "running_mean"), self.const(node, var, "running_var")
        scale, shift = batchnorm_affine(g, beta, mu, v, eps)
        return self._affine(node, x, node.args[0], scale, shift, "a batch norm")

    def _affine(self, node, x, src, scale, shift, what):
        """Per-channel ``scale * x + shift``: folded into the conv/linear that produced x where
        only this node reads it, else a depthwise 1x1 conv (3-D tensors only)."""
        prod = self.producer.get(x.id)
        keep = prod is not None and getattr(self.nodes[prod[0]].layer, "name", None) in self.keep_affine
        if prod is not None and not keep and self.users.get(src.name, 0) == 1:  # only this node reads the conv
            fold_affine(self.nodes[prod[0]].layer, scale, shift)
            return x
        if len(x.shape) != 3:
            self.fail(node, f"{what} on a 1-D tensor that does not follow a linear layer")
        t = self.emit(affine_node(x.id, x.shape[0], scale, shift, f"{node.name}.scale_shift"), x.shape)
        self.producer[t.id] = (len(self.nodes) - 1, node.name)  # a following affine folds into this one
        return t

    def _constant_operand(self, node, v):
        if isinstance(v, (int, float)):
            return np.float32(v)
        if isinstance(v, _C):
            return v.value
        return None

    def op_batch_norm(self, node, x, weight, bias, mean, var, training=False, momentum=0.1, eps=1e-5, *a, **k):
        if training:
            self.fail(node, "a batch norm in training mode (call module.eval() first)")
        return self._bn(node, x, weight, bias, mean, var, eps)

    def op__native_batch_norm_legit_no_training(self, node, x, weight, bias, mean, var, momentum=0.1, eps=1e-5):
        return (self._bn(node, x, weight, bias, mean, var, eps), None, None)

    # ------------------------------------------------------------------ activations
    def _unary(self, node, x, op, params=None):
        x = self.tensor(node, x)
        return self.emit(Node(op, params or {}, [x.id]), self.out_shape(node))

    def op_relu(self, node, x):
        return self._unary(node, x, "relu")

    def op_hardtanh(self, node, x, lo=-1.0, hi=1.0):
        return self._unary(node, x, "clip", {"min": float(lo), "max": float(hi)})

    def op_relu6(self, node, x):
        return self._unary(node, x, "clip", {"min": 0.0, "max": 6.0})

    def op_clamp(self, node, x, lo=None, hi=None):
        if lo is None or hi is None:
            if lo == 0 and hi is None:
                return self._unary(node, x, "relu")
            self.fail(node, "clamp with one bound (other than clamp(min=0))")
        return self._unary(node, x, "clip", {"min": float(lo), "max": float(hi)})

    def op_sigmoid(self, node, x):
        return self._unary(node, x, "sigmoid")

    def op_tanh(self, node, x):
        return self._unary(node, x, "tanh")

    def op_silu(self, node, x):
        return self._unary(node, x, "silu")

    def op_hardswish(self, node, x):
        return self._unary(node, x, "hardswish")

    def op_hardsigmoid(self, node, x):
        return self._unary(node, x, "hardsigmoid", {"alpha": 1 / 6, "beta": 0.5})

    def op_gelu(self, node, x, approximate="none"):
        return self._unary(node, x, "gelu", {"approximate": approximate})

    def op_softmax(self, node, x, dim, *a, **k):
        x = self.tensor(node, x)
        if dim not in (1, 1 - len(x.shape) - 1):
            self.fail(node, f"softmax over dim {dim} (dcrt's softmax is over channels, dim 1)")
        return self._unary(node, x, "softmax")

    op__softmax = op_softmax

    # ------------------------------------------------------------------ binary, structure
    def _binary(self, node, a, b, op, alpha=1):
        if alpha != 1 and not (isinstance(a, _T) and not isinstance(b, _T)):
            self.fail(node, f"{op} with alpha={alpha}")  # x op alpha * c is the one form taken
        if not isinstance(a, _T) and isinstance(b, _T) and op in ("add", "mul"):
            a, b = b, a  # commutative: the activation first
        if isinstance(a, _T) and not isinstance(b, _T) or op in ("sub", "div") and isinstance(b, _T) and \
                not isinstance(a, _T):
            return self._with_constant(node, a, b, op, alpha)
        if not (isinstance(a, _T) and isinstance(b, _T)):
            self.fail(node, f"{op} of two constants")
        if op in ("sub", "div"):
            self.fail(node, f"{op} of two activations (dcrt has add and mul)")
        return self.emit(Node(op, {}, [a.id, b.id]), self.out_shape(node))

    def _with_constant(self, node, a, b, op, alpha):
        """x + c, x * c, x - c, c - x, x / c with c a scalar or one value per channel: a per-channel
        affine (folded into the producing conv/linear where possible)."""
        x_first = isinstance(a, _T)
        x, cv = (a, b) if x_first else (b, a)
        c = self._constant_operand(node, cv)
        per = None if c is None else channel_constant(c, x.shape)
        if per is None:
            self.fail(node, f"{op} with a constant that is not a scalar or one value per channel "
                            f"(dcrt's {op} takes two activations)")
        ab = constant_affine(op, per * np.float32(alpha), x_first)  # alpha != 1 only as x op alpha * c
        if ab is None:
            self.fail(node, "a constant divided by an activation")
        scale, shift = ab
        return self._affine(node, x, node.args[0] if x_first else node.args[1], scale, shift, f"{op} with a constant")

    def op_add(self, node, a, b, alpha=1):
        return self._binary(node, a, b, "add", alpha)

    def op_sub(self, node, a, b, alpha=1):
        return self._binary(node, a, b, "sub", alpha)

    def op_rsub(self, node, a, b, alpha=1):  # b - alpha * a
        return self._binary(node, b, a, "sub", alpha) if alpha == 1 else self.fail(node, f"rsub with alpha={alpha}")

    def op_mul(self, node, a, b):
        return self._binary(node, a, b, "mul")

    def op_div(self, node, a, b, rounding_mode=None):
        if rounding_mode is not None:
            self.fail(node, f"division with rounding_mode={rounding_mode!r}")
        return self._binary(node, a, b, "div")

    def op_cat(self, node, xs, dim=0):
        xs = [self.tensor(node, x) for x in xs]
        if dim not in (1, -len(xs[0].shape)):
            self.fail(node, f"concatenation along dim {dim} (dcrt concatenates channels, dim 1)")
        if len(xs) == 1:
            return xs[0]
        return self.emit(Node("concat", {}, [x.id for x in xs]), self.out_shape(node))

    op_concat = op_cat

    def op_flatten(self, node, x, start=0, end=-1):
        x = self.tensor(node, x)
        if start != 1 or end not in (-1, len(x.shape)):
            self.fail(node, f"flatten({start}, {end}) (dcrt flattens everything but the batch axis)")
        return self._unary(node, x, "flatten") if len(x.shape) != 1 else x

    def _reshape(self, node, x, shape):
        x = self.tensor(node, x)
        out = self.out_shape(node)
        if out == x.shape:
            return x
        if len(out) == 1 and out[0] == math.prod(x.shape):
            return self._unary(node, x, "flatten")
        self.fail(node, f"reshape of {list(x.shape)} to {list(out)} (only [N, -1] flattening)")

    op_view = op_reshape = op__unsafe_view = _reshape

    def op_adaptive_avg_pool2d(self, node, x, size):
        x = self.tensor(node, x)
        size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
        if size == (1, 1):
            return self._unary(node, x, "global_avgpool")
        if size == tuple(x.shape[1:]):
            return x
        self.fail(node, f"adaptive average pooling to {size} (only to 1x1)")

    def op_mean(self, node, x, dims=None, keepdim=False, *a, **k):
        x = self.tensor(node, x)
        nd = len(x.shape) + 1
        dims = sorted(d % nd for d in (dims if isinstance(dims, (list, tuple)) else [dims]))
        if len(x.shape) != 3 or dims != [2, 3]:
            self.fail(node, f"mean over dims {dims} (only over H, W of [N, C, H, W])")
        t = self.emit(Node("global_avgpool", {}, [x.id]), (x.shape[0], 1, 1))
        return t if keepdim else self.emit(Node("flatten", {}, [t.id]), (x.shape[0],))

    def op_max_pool2d(self, node, x, kernel, stride=(), padding=0, dilation=1, ceil_mode=False):
        x = self.tensor(node, x)
        pair = lambda v: (int(v), int(v)) if isinstance(v, int) else tuple(int(q) for q in v)
        kernel = pair(kernel)
        stride = pair(stride) if stride not in ((), [], None) else kernel
        if pair(dilation) != (1, 1):
            self.fail(node, "max pooling with dilation")
        return self.emit(Node("maxpool", {"kernel": kernel, "stride": stride, "padding": pair(padding),
                                          "ceil_mode": int(bool(ceil_mode))}, [x.id]), self.out_shape(node))

    def op_avg_pool2d(self, node, x, kernel, stride=(), padding=0, ceil_mode=False, count_include_pad=True,
                      divisor_override=None):
        x = self.tensor(node, x)
        pair = lambda v: (int(v), int(v)) if isinstance(v, int) else tuple(int(q) for q in v)
        kernel, padding = pair(kernel), pair(padding)
        stride = pair(stride) if stride not in ((), [], None) else kernel
        if divisor_override is not None or (not count_include_pad and padding != (0, 0)):
            self.fail(node, "average pooling that excludes padding from the divisor, or a divisor override")
        return self.emit(Node("avgpool", {"kernel": kernel, "stride": stride, "padding": padding,
                                          "ceil_mode": int(bool(ceil_mode))}, [x.id]), self.out_shape(node))

    def op_pad(self, node, x, pads, mode="constant", value=None):
        x = self.tensor(node, x)
        if mode != "constant" or (value not in (None, 0, 0.0)):
            self.fail(node, f"{mode} padding with value {value} (only zero padding)")
        pads = [int(p) for p in pads] + [0] * (4 - len(pads))
        if len(x.shape) != 3 or any(p < 0 for p in pads) or len(pads) > 4:
            self.fail(node, f"padding {pads} of a {len(x.shape) + 1}-D tensor (H and W of [N, C, H, W] only)")
        left, right, top, bottom = pads
        if not any(pads):
            return x
        return self.emit(Node("pad", {"pads": (top, bottom, left, right)}, [x.id]), self.out_shape(node))

    def op_constant_pad_nd(self, node, x, pads, value=0):
        return self.op_pad(node, x, pads, "constant", value)


def from_torch(module, example_input, name: str | None = None, keep_affine=()) -> GraphNet:
    """Trace ``module`` (in eval mode) on ``example_input`` (a tensor or array with the batch
    axis, e.g. ``[1, 3, 224, 224]``) and translate it into a :class:`GraphNet`. A batch norm or
    constant scale after a layer named in ``keep_affine`` stays a per-channel op of its own."""
    try:
        import torch
    except ImportError as e:  # pragma: no cover - exercised where torch is absent
        raise ImportError("importing a PyTorch module needs torch: pip install \"dcrt[torch]\"") from e
    x = example_input if isinstance(example_input, torch.Tensor) else torch.as_tensor(np.asarray(example_input))
    x = x.to(torch.float32)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            ep = torch.export.export(module, (x,))
    finally:
        module.train(was_training)
    return _Importer(ep, name or type(module).__name__, keep_affine).run()
