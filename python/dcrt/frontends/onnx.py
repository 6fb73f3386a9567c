"""ONNX front end: an ``.onnx`` file -> :class:`dcrt.graph.GraphNet` with the ``onnx`` package.

The graph is read with shape inference; nodes whose inputs are all constants (initializers,
``Constant`` nodes, ``Shape`` of a statically shaped tensor: the shape subgraphs exporters emit
around ``Reshape``) are folded with numpy; every other node is mapped onto dcrt's ops
(docs/format.md §3.2, docs/importers.md). Batch norms are folded into the Conv/Gemm feeding
them; one that cannot be folded becomes a depthwise 1x1 convolution. Asymmetric Conv padding
becomes a ``pad`` op. Weighted layers are named after their weight initializer (without its
``.weight`` suffix). Anything else raises :class:`UnsupportedModelError` naming the op type and
the node. ``onnx`` is imported only here (``pip install "dcrt[onnx]"``).
"""
from __future__ import annotations

import math
import os

import numpy as np

from ..graph import GraphNet, Node, affine_node, batchnorm_affine, channel_constant, constant_affine, fold_affine
from ..nn import Conv2d, Linear
from ..errors import UnsupportedModelError

MIN_OPSET = 13


class _T:  # an activation: dcrt tensor id and per-sample shape
    def __init__(self, id_, shape):
        self.id, self.shape = id_, tuple(int(d) for d in shape)


def _attrs(node):
    import onnx
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class _Importer:
    def __init__(self, model, name):
        import onnx
        from onnx import numpy_helper
        self.name = name
        opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
        if opset < MIN_OPSET:
            raise UnsupportedModelError(f"onnx import ({name}): opset {opset}; dcrt reads opset {MIN_OPSET} and later "
                                        "(re-export, or convert with onnx.version_converter)")
        self.inference_error = ""
        try:
            model = onnx.shape_inference.infer_shapes(model, strict_mode=False)
        except Exception as e:  # noqa: BLE001 - go on with the shapes the file states; say why if one is missing
            self.inference_error = f" (onnx shape inference failed: {e})"
        self.g = model.graph
        self.const = {i.name: numpy_helper.to_array(i) for i in self.g.initializer}
        self.shapes = {}
        for vi in list(self.g.value_info) + list(self.g.input) + list(self.g.output):
            t = vi.type.tensor_type
            if t.HasField("shape"):
                dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
                self.shapes[vi.name] = dims
        self.env = {}
        self.nodes = []
        self.consumers = {}
        for n in self.g.node:
            for i in n.input:
                self.consumers[i] = self.consumers.get(i, 0) + 1
        self.producer = {}  # dcrt tensor id -> node index of the weighted op that wrote it

    # ------------------------------------------------------------------ helpers
    def fail(self, node, why):
        raise UnsupportedModelError(f"onnx import ({self.name}): {node.op_type} is not supported: {why}\n"
                                    f"  node {node.name or '(unnamed)'!r}: inputs {list(node.input)}, "
                                    f"outputs {list(node.output)}")

    def emit(self, node, shape):
        """Append a graph node. shape None (onnx shape inference could not tell, e.g. behind a
        padding subgraph of the legacy exporter): dcrt's own, from the reference forward of the
        node on zeros of its input shapes."""
        if shape is None:
            ids = [len(self.nodes)] if node.inputs is None else node.inputs
            ins = [np.zeros((1,) + self.tshape[i], np.float32) for i in ids]
            shape = GraphNet._run(node, ins).shape[1:]
        self.nodes.append(node)
        t = _T(len(self.nodes), shape)
        self.tshape[t.id] = t.shape
        return t

    def act(self, node, name) -> _T:
        v = self.env.get(name)
        if not isinstance(v, _T):
            self.fail(node, f"input {name!r} is a constant, not an activation")
        return v

    def cst(self, node, name, what):
        if name == "":
            return None
        if name not in self.const:
            self.fail(node, f"{what} ({name!r}) must be a constant (an initializer or a folded subgraph)")
        return self.const[name]

    def out_shape(self, node, k=0, required=False):
        """The per-sample output shape onnx inferred, or None (emit then works it out) unless
        required."""
        dims = self.shapes.get(node.output[k])
        if dims is None or any(d is None for d in dims[1:]):
            if not required:
                return None
            self.fail(node, "its output has no static shape (export with static shapes)" + self.inference_error)
        return tuple(dims[1:])

    # ------------------------------------------------------------------ the walk
    def run(self):
        inputs = [i for i in self.g.input if i.name not in self.const]
        if len(inputs) != 1:
            raise UnsupportedModelError(f"onnx import ({self.name}): {len(inputs)} graph inputs; dcrt runs networks "
                                        "of one input tensor")
        dims = self.shapes.get(inputs[0].name)
        if not dims or any(d is None for d in dims[1:]):
            raise UnsupportedModelError(f"onnx import ({self.name}): input {inputs[0].name!r} has no static shape")
        self.input_shape = tuple(dims[1:])
        self.env[inputs[0].name] = _T(0, self.input_shape)
        self.tshape = {0: tuple(int(d) for d in self.input_shape)}
        for node in self.g.node:
            if node.domain not in ("", "ai.onnx"):
                self.fail(node, f"custom domain {node.domain!r}")
            if all(i == "" or i in self.const for i in node.input) and node.op_type != "Shape":
                self.fold(node)
                continue
            h = getattr(self, "op_" + node.op_type, None)
            if h is None:
                self.fail(node, "dcrt has no such op (docs/importers.md lists what imports)")
            out = h(node, _attrs(node))
            if isinstance(out, np.ndarray):
                self.const[node.output[0]] = out
            else:
                self.env[node.output[0]] = out
        out = self.env.get(self.g.output[0].name)
        if not isinstance(out, _T) or out.id == 0:
            raise UnsupportedModelError(f"onnx import ({self.name}): the first output is not computed from the input")
        if out.id != len(self.nodes):
            self.nodes.append(Node("dropout", {"p": 0.0}, [out.id]))
        return GraphNet(self.nodes, self.input_shape, self.name)

    def fold(self, node):
        """Evaluate a node on constants (shape subgraphs) with numpy."""
        a = _attrs(node)
        ins = [self.const.get(i) for i in node.input]
        t = node.op_type
        if t == "Constant":
            from onnx import numpy_helper
            if "value" in a:
                v = numpy_helper.to_array(a["value"])
            elif "value_float" in a:
                v = np.array(a["value_float"], np.float32)
            elif "value_int" in a:
                v = np.array(a["value_int"], np.int64)
            elif "value_ints" in a:
                v = np.array(a["value_ints"], np.int64)
            elif "value_floats" in a:
                v = np.array(a["value_floats"], np.float32)
            else:
                self.fail(node, "a Constant of this kind")
        elif t == "Identity":
            v = ins[0]
        elif t in ("Add", "Sub", "Mul", "Div"):
            v = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply,
                 "Div": np.floor_divide if ins[0].dtype.kind == "i" else np.divide}[t](ins[0], ins[1])
        elif t == "Gather":
            v = np.take(ins[0], ins[1], axis=a.get("axis", 0))
        elif t == "Unsqueeze":
            axes = a.get("axes", ins[1] if len(ins) > 1 else None)
            v = ins[0]
            for ax in sorted(int(q) for q in np.atleast_1d(axes)):
                v = np.expand_dims(v, ax)
        elif t == "Squeeze":
            axes = a.get("axes", ins[1] if len(ins) > 1 and ins[1] is not None else None)
            v = np.squeeze(ins[0], tuple(int(q) for q in np.atleast_1d(axes)) if axes is not None else None)
        elif t == "Concat":
            v = np.concatenate([np.atleast_1d(q) for q in ins], axis=a.get("axis", 0))
        elif t == "Cast":
            from onnx import helper
            v = ins[0].astype(helper.tensor_dtype_to_np_dtype(a["to"]))
        elif t == "Reshape":
            v = ins[0].reshape([int(q) for q in ins[1]])
        elif t == "ConstantOfShape":
            from onnx import numpy_helper
            fill = numpy_helper.to_array(a["value"]) if "value" in a else np.zeros(1, np.float32)
            v = np.full([int(q) for q in ins[0]], fill.reshape(-1)[0], fill.dtype)
        elif t == "Slice":
            data, starts, ends = ins[0], ins[1], ins[2]
            axes = ins[3] if len(ins) > 3 and ins[3] is not None else np.arange(len(starts))
            steps = ins[4] if len(ins) > 4 and ins[4] is not None else np.ones(len(starts), np.int64)
            sl = [slice(None)] * data.ndim
            for s_, e_, ax, st in zip(starts, ends, axes, steps):
                sl[int(ax)] = slice(int(s_), int(e_), int(st))
            v = data[tuple(sl)]
        elif t == "Transpose":
            perm = a.get("perm")
            v = np.transpose(ins[0], None if perm is None else [int(q) for q in perm])
        elif t in ("Neg", "Abs", "Floor", "Ceil", "Sqrt", "Not"):
            v = {"Neg": np.negative, "Abs": np.abs, "Floor": np.floor, "Ceil": np.ceil, "Sqrt": np.sqrt,
                 "Not": np.logical_not}[t](ins[0])
        elif t in ("Equal", "Less", "Greater", "Max", "Min", "Pow", "Mod"):
            f = {"Equal": np.equal, "Less": np.less, "Greater": np.greater, "Max": np.maximum, "Min": np.minimum,
                 "Pow": np.power, "Mod": np.mod}[t]
            v = ins[0]
            for q in ins[1:]:
                v = f(v, q)
        elif t == "Where":
            v = np.where(ins[0], ins[1], ins[2])
        elif t == "Range":
            v = np.arange(ins[0].item(), ins[1].item(), ins[2].item(), dtype=ins[0].dtype)
        elif t == "Expand":
            v = ins[0] * np.ones([int(q) for q in ins[1]], ins[0].dtype)
        elif t in ("ReduceProd", "ReduceSum"):
            axes = a.get("axes", ins[1] if len(ins) > 1 and ins[1] is not None else None)
            axes = None if axes is None else tuple(int(q) for q in np.atleast_1d(axes))
            v = (np.prod if t == "ReduceProd" else np.sum)(ins[0], axis=axes, keepdims=bool(a.get("keepdims", 1)))
        else:
            self.fail(node, "an op on constants that dcrt cannot fold")
        self.const[node.output[0]] = np.asarray(v)

    # ------------------------------------------------------------------ ops
    def op_Shape(self, node, a):
        dims = self.shapes.get(node.input[0])
        if dims is None or any(d is None for d in dims):
            self.fail(node, "Shape of a tensor without a static shape")
        v = np.array(dims, np.int64)
        return v[a.get("start", 0):a.get("end", len(v))]

    def op_Identity(self, node, a):
        return self.act(node, node.input[0])

    def op_Dropout(self, node, a):
        return self.act(node, node.input[0])

    def op_Conv(self, node, a):
        x = self.act(node, node.input[0])
        w = self.cst(node, node.input[1], "the weight")
        b = self.cst(node, node.input[2], "the bias") if len(node.input) > 2 else None
        if w.ndim != 4 or len(x.shape) != 3:
            self.fail(node, f"a {w.ndim - 2}-D convolution (dcrt runs 2-D ones on [N, C, H, W])")
        out_c, icg, kh, kw = w.shape
        dil = tuple(int(d) for d in a.get("dilations", [1, 1]))
        if len(dil) != 2 or min(dil) < 1:
            self.fail(node, f"dilations {list(dil)}")
        s = list(a.get("strides", [1, 1]))
        groups = int(a.get("group", 1))
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            pads = []
            for k, (n, st) in enumerate(zip(x.shape[1:], s)):
                total = max((math.ceil(n / st) - 1) * st + dil[k] * ((kh, kw)[k] - 1) + 1 - n, 0)
                lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
                pads.append((lo, total - lo))
            pt, pl, pb, pr = pads[0][0], pads[1][0], pads[0][1], pads[1][1]
        elif auto == "VALID":
            pt = pl = pb = pr = 0
        else:
            pt, pl, pb, pr = (list(a.get("pads", [0, 0, 0, 0])) + [0] * 4)[:4]
        ph, pw = min(pt, pb), min(pl, pr)
        if (pt, pb, pl, pr) != (ph, ph, pw, pw):  # asymmetric: the excess as an explicit pad op
            c, h, wd = x.shape
            extra = (pt - ph, pb - ph, pl - pw, pr - pw)
            x = self.emit(Node("pad", {"pads": extra}, [x.id]), (c, h + extra[0] + extra[1], wd + extra[2] + extra[3]))
        name = node.input[1][:-len(".weight")] if node.input[1].endswith(".weight") else (node.name or node.input[1])
        layer = Conv2d(icg * groups, out_c, (kh, kw), tuple(s), (ph, pw), groups, name, dil)
        layer.weight = np.ascontiguousarray(w, np.float32)
        layer.bias = np.zeros(out_c, np.float32) if b is None else b.astype(np.float32)
        t = self.emit(Node("conv2d", {"stride": tuple(s), "padding": (ph, pw), "groups": groups, "dilation": dil},
                           [x.id], layer),
                      self.out_shape(node))
        self.producer[t.id] = node.output[0]
        return t

    def _linear(self, node, x, w, b, name):
        if len(x.shape) != 1:
            self.fail(node, f"a matrix product on per-sample shape {list(x.shape)} (flatten first)")
        layer = Linear(w.shape[1], w.shape[0], name)
        layer.weight = np.ascontiguousarray(w, np.float32)
        layer.bias = np.zeros(w.shape[0], np.float32) if b is None else np.asarray(b, np.float32).reshape(-1)
        t = self.emit(Node("linear", {}, [x.id], layer), (w.shape[0],))
        self.producer[t.id] = node.output[0]
        return t

    def op_Gemm(self, node, a):
        if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
            self.fail(node, "Gemm with transA or alpha/beta != 1")
        x = self.act(node, node.input[0])
        w = self.cst(node, node.input[1], "B")
        w = w if a.get("transB", 0) else w.T
        b = self.cst(node, node.input[2], "C") if len(node.input) > 2 else None
        name = node.input[1][:-len(".weight")] if node.input[1].endswith(".weight") else (node.name or node.input[1])
        return self._linear(node, x, w, b, name)

    def op_MatMul(self, node, a):
        x = self.act(node, node.input[0])
        w = self.cst(node, node.input[1], "the right operand")
        if w.ndim != 2:
            self.fail(node, "MatMul with a non-2-D right operand")
        return self._linear(node, x, w.T, None, node.name or node.input[1])

    def op_BatchNormalization(self, node, a):
        x = self.act(node, node.input[0])
        g, beta, mu, var = (self.cst(node, node.input[k], n) for k, n in
                            ((1, "scale"), (2, "B"), (3, "mean"), (4, "var")))
        scale, shift = batchnorm_affine(g, beta, mu, var, a.get("epsilon", 1e-5))
        return self._affine(node, x, scale, shift, "a batch normalisation")

    def _affine(self, node, x, scale, shift, what):
        """Per-channel ``scale * x + shift``: folded into the conv/Gemm (or scale_shift) that
        produced x where only this node reads it, else a depthwise 1x1 conv (3-D tensors only)."""
        src = self.producer.get(x.id)
        if src is not None and self.consumers.get(src, 0) == 1 and x.id == len(self.nodes):
            fold_affine(self.nodes[-1].layer, scale, shift)
            return x
        if len(x.shape) != 3:
            self.fail(node, f"{what} of a 1-D tensor that does not follow a Gemm")
        t = self.emit(affine_node(x.id, x.shape[0], scale, shift, f"{node.name or node.output[0]}.scale_shift"),
                      x.shape)
        self.producer[t.id] = node.output[0]  # a following affine folds into this one
        return t

    def _unary(self, node, op, params=None):
        x = self.act(node, node.input[0])
        return self.emit(Node(op, params or {}, [x.id]), x.shape if op != "global_avgpool" else (x.shape[0], 1, 1))

    def op_Relu(self, node, a):
        return self._unary(node, "relu")

    def op_Sigmoid(self, node, a):
        return self._unary(node, "sigmoid")

    def op_Tanh(self, node, a):
        return self._unary(node, "tanh")

    def op_HardSwish(self, node, a):
        return self._unary(node, "hardswish")

    def op_HardSigmoid(self, node, a):
        return self._unary(node, "hardsigmoid", {"alpha": float(a.get("alpha", 0.2)), "beta": float(a.get("beta", 0.5))})

    def op_Gelu(self, node, a):
        appr = a.get("approximate", b"none")
        return self._unary(node, "gelu", {"approximate": appr.decode() if isinstance(appr, bytes) else appr})

    def op_Clip(self, node, a):
        lo = self.cst(node, node.input[1], "min") if len(node.input) > 1 and node.input[1] else a.get("min")
        hi = self.cst(node, node.input[2], "max") if len(node.input) > 2 and node.input[2] else a.get("max")
        if lo is None or hi is None:
            if lo is not None and float(lo) == 0 and hi is None:
                return self._unary(node, "relu")
            self.fail(node, "Clip with one bound (other than min 0)")
        return self._unary(node, "clip", {"min": float(lo), "max": float(hi)})

    def op_Softmax(self, node, a):
        x = self.act(node, node.input[0])
        axis = a.get("axis", -1)
        if axis not in (1, 1 - len(x.shape) - 1 if len(x.shape) == 1 else 1):
            self.fail(node, f"Softmax over axis {axis} (dcrt's softmax is over channels, axis 1)")
        return self._unary(node, "softmax")

    def op_LRN(self, node, a):
        return self._unary(node, "lrn", {"size": int(a["size"]), "alpha": float(a.get("alpha", 1e-4)),
                                         "beta": float(a.get("beta", 0.75)), "k": float(a.get("bias", 1.0))})

    def _binary(self, node, op):
        a, b = (self.env.get(i) for i in node.input[:2])
        if isinstance(a, _T) != isinstance(b, _T):
            return self._with_constant(node, op, a, b)
        if not isinstance(a, _T):
            self.fail(node, f"{node.op_type} of two constants that could not be folded")
        if op in ("sub", "div"):
            self.fail(node, f"{node.op_type} of two activations (dcrt has add and mul)")
        return self.emit(Node(op, {}, [a.id, b.id]), self.out_shape(node))

    def _with_constant(self, node, op, a, b):
        """x + c, x * c, x - c, c - x, x / c with c a scalar or one value per channel: a per-channel
        affine, folded into the conv/Gemm that produced x where only this node reads it."""
        x_first = isinstance(a, _T)
        x = a if x_first else b
        c = self.cst(node, node.input[1] if x_first else node.input[0], "the constant operand")
        per = channel_constant(c, x.shape)
        if per is None:
            self.fail(node, f"{node.op_type} with a constant that is not a scalar or one value per channel "
                            f"(dcrt's {op} takes two activations)")
        ab = constant_affine(op, per, x_first)
        if ab is None:
            self.fail(node, "a constant divided by an activation")
        return self._affine(node, x, *ab, f"{node.op_type} with a constant")

    def op_Add(self, node, a):
        return self._binary(node, "add")  # MatMul + Add(bias): the constant folds into the linear layer

    def op_Mul(self, node, a):
        return self._binary(node, "mul")

    def op_Sub(self, node, a):
        return self._binary(node, "sub")

    def op_Div(self, node, a):
        return self._binary(node, "div")

    def op_Concat(self, node, a):
        xs = [self.act(node, i) for i in node.input]
        if a.get("axis") not in (1, -len(xs[0].shape)):
            self.fail(node, f"Concat along axis {a.get('axis')} (dcrt concatenates channels, axis 1)")
        return self.emit(Node("concat", {}, [x.id for x in xs]), self.out_shape(node))

    def op_GlobalAveragePool(self, node, a):
        return self._unary(node, "global_avgpool")

    def op_ReduceMean(self, node, a):
        x = self.act(node, node.input[0])
        axes = a.get("axes")
        if axes is None and len(node.input) > 1:
            axes = self.cst(node, node.input[1], "axes")
        nd = len(x.shape) + 1
        axes = sorted(int(q) % nd for q in np.atleast_1d(axes)) if axes is not None else None
        if len(x.shape) != 3 or axes != [2, 3]:
            self.fail(node, f"ReduceMean over axes {axes} (only over H, W of [N, C, H, W])")
        t = self.emit(Node("global_avgpool", {}, [x.id]), (x.shape[0], 1, 1))
        return t if a.get("keepdims", 1) else self.emit(Node("flatten", {}, [t.id]), (x.shape[0],))

    def _pool(self, node, a, op):
        x = self.act(node, node.input[0])
        k = list(a["kernel_shape"])
        s = list(a.get("strides", [1, 1]))
        pt, pl, pb, pr = (list(a.get("pads", [0, 0, 0, 0])) + [0] * 4)[:4]
        auto = a.get("auto_pad", b"NOTSET")
        if (auto.decode() if isinstance(auto, bytes) else auto) != "NOTSET" or (pt, pl) != (pb, pr):
            self.fail(node, "asymmetric or automatic pooling padding")
        if list(a.get("dilations", [1, 1])) != [1, 1]:
            self.fail(node, "pooling with dilation")
        if op == "avgpool" and not a.get("count_include_pad", 0) and (pt or pl):
            self.fail(node, "AveragePool that excludes padding from the divisor (count_include_pad=0 with padding)")
        return self.emit(Node(op, {"kernel": tuple(k), "stride": tuple(s), "padding": (pt, pl),
                                   "ceil_mode": int(a.get("ceil_mode", 0))}, [x.id]), self.out_shape(node))

    def op_MaxPool(self, node, a):
        if len(node.output) > 1 and node.output[1]:
            self.fail(node, "MaxPool's indices output")
        return self._pool(node, a, "maxpool")

    def op_AveragePool(self, node, a):
        return self._pool(node, a, "avgpool")

    def op_Flatten(self, node, a):
        x = self.act(node, node.input[0])
        if a.get("axis", 1) != 1:
            self.fail(node, f"Flatten(axis={a.get('axis')}) (only axis 1)")
        return x if len(x.shape) == 1 else self._flat(node, x)

    def _flat(self, node, x):
        return self.emit(Node("flatten", {}, [x.id]), (math.prod(x.shape),))

    def op_Reshape(self, node, a):
        x = self.act(node, node.input[0])
        shape = [int(q) for q in self.cst(node, node.input[1], "the target shape")]
        n = math.prod(x.shape)
        if len(shape) == 2 and (shape[1] in (-1, n)) and shape[0] in (-1, 0, 1):
            return x if len(x.shape) == 1 else self._flat(node, x)
        out = self.out_shape(node, required=True)
        if out == x.shape:
            return x
        self.fail(node, f"Reshape of {list(x.shape)} to {shape} (only [N, -1] flattening)")

    def op_Pad(self, node, a):
        x = self.act(node, node.input[0])
        mode = a.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        pads = a.get("pads")
        if pads is None:
            pads = self.cst(node, node.input[1], "pads")
        value = self.cst(node, node.input[2], "constant_value") if len(node.input) > 2 and node.input[2] else 0
        if mode != "constant" or float(np.asarray(value).reshape(-1)[0] if np.size(value) else 0) != 0:
            self.fail(node, f"{mode} padding with value {value} (only zero padding)")
        pads = [int(p) for p in pads]
        if len(pads) != 8 or any(pads[:2]) or any(pads[4:6]) or any(p < 0 for p in pads):
            self.fail(node, f"pads {pads} (only H and W of [N, C, H, W], non-negative)")
        t, l_, b, r = pads[2], pads[3], pads[6], pads[7]
        c, h, w = x.shape
        return self.emit(Node("pad", {"pads": (t, b, l_, r)}, [x.id]), (c, h + t + b, w + l_ + r))


def from_onnx(path) -> GraphNet:
    """Read ``path`` (an .onnx file) into a :class:`GraphNet`."""
    try:
        import onnx
    except ImportError as e:  # pragma: no cover - exercised where onnx is absent
        raise ImportError("importing an ONNX file needs onnx: pip install \"dcrt[onnx]\"") from e
    model = onnx.load(os.fspath(path))
    name = model.graph.name or os.path.splitext(os.path.basename(os.fspath(path)))[0]
    return _Importer(model, name).run()
