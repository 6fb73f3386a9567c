"""The graph IR: a network as ops over named tensors, with its weighted layers.

``GraphNet`` is what a front end produces (today: hand-built graphs and every ``.dcz`` read
back; the numpy ``Sequential`` of the zoo is its chain special case) and what the back ends
consume: ``dcrt.compress`` prunes, quantizes and encodes its weighted layers and writes its
graph, and :meth:`GraphNet.forward` is the numpy reference forward of every op of the format
(docs/format.md §3.2) -- the twin the native executor is tested against.

Tensor ids follow the format: 0 is the (normalised) graph input, ``j + 1`` the output of op
``j``; ops are in topological order and the last op's output is the network's output.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import format as fmt
from .nn import LRN, AvgPool2d, Conv2d, Linear, MaxPool2d, Softmax

WEIGHTED = ("linear", "conv2d")


@dataclass
class Node:
    """One op. ``layer``: the nn.Linear / nn.Conv2d holding its weights (weighted ops only);
    ``inputs``: tensor ids (None: the previous op's output)."""

    op: str
    params: dict = field(default_factory=dict)
    inputs: list | None = None
    layer: object = None


_erf = np.frompyfunc(math.erf, 1, 1)


def _gelu(x, approximate):
    if approximate == "tanh":
        return (0.5 * x * (1 + np.tanh(0.7978845608028654 * (x + 0.044715 * x ** 3)))).astype(np.float32)
    return (0.5 * x * (1 + _erf(x.astype(np.float64) / math.sqrt(2)).astype(np.float64))).astype(np.float32)


class GraphNet:
    """A network as a DAG of :class:`Node` (see the module docstring). Same input contract as
    ``nn.Sequential``: ``forward`` takes ``[N, *input_shape]`` plain inputs and normalises them
    with ``mean``/``std`` along axis 1 first."""

    def __init__(self, nodes, input_shape, name="model", mean=(0.0,), std=(1.0,), labels=None, metadata=None):
        self.nodes = list(nodes)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.name = name
        self.mean = np.asarray(mean, np.float32).reshape(-1)
        self.std = np.asarray(std, np.float32).reshape(-1)
        self.labels = None if labels is None else list(labels)
        self.metadata = dict(metadata or {})
        for i, n in enumerate(self.nodes):
            if (n.op in WEIGHTED) != (n.layer is not None):
                raise ValueError(f"{name}: node {i} ({n.op}): a layer is needed exactly by linear/conv2d nodes")
        names = [n.layer.name for n in self.nodes if n.op in WEIGHTED]
        if len(set(names)) != len(names):
            raise ValueError(f"{name}: weighted layer names must be unique, got {names}")

    # --- the interface the compressor uses (shared with nn.Sequential) ---
    def weighted(self):
        return [n.layer for n in self.nodes if n.op in WEIGHTED]

    def __getitem__(self, name):
        for l in self.weighted():
            if l.name == name:
                return l
        raise KeyError(name)

    def state_dict(self):
        return {f"{l.name}.{p}": getattr(l, p) for l in self.weighted() for p in l.param_names}

    def to_format_graph(self) -> fmt.Graph:
        ops, li = [], 0
        for n in self.nodes:
            if n.op in WEIGHTED:
                ops.append(fmt.Op(n.op, li, dict(n.params), n.inputs))
                li += 1
            else:
                ops.append(fmt.Op(n.op, -1, dict(n.params), n.inputs))
        mean, std = self.mean, self.std
        if mean.size == 1 and mean[0] == 0 and std.size == 1 and std[0] == 1:
            mean, std = np.zeros(0, np.float32), np.zeros(0, np.float32)
        return fmt.Graph(self.input_shape, mean, std, ops)

    # --- reference forward ---
    def forward(self, x) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if x.shape[1:] != self.input_shape:
            raise ValueError(f"{self.name}: expected [N, {', '.join(map(str, self.input_shape))}], got {list(x.shape)}")
        shape = (1, -1) + (1,) * (x.ndim - 2)
        t = [((x - self.mean.reshape(shape)) / self.std.reshape(shape)).astype(np.float32)]
        for i, n in enumerate(self.nodes):
            ins = [t[k] for k in ([i] if n.inputs is None else n.inputs)]
            t.append(self._run(n, ins).astype(np.float32, copy=False))
        return t[-1]

    __call__ = forward

    @staticmethod
    def _run(n: Node, ins):
        a, p, op = ins[0], n.params, n.op
        if op == "linear":
            return n.layer.forward(a.reshape(len(a), -1))
        if op == "conv2d":
            return n.layer.forward(a)
        if op == "relu":
            return np.maximum(a, 0)
        if op in ("maxpool", "avgpool"):
            cls = MaxPool2d if op == "maxpool" else AvgPool2d
            return cls(p["kernel"], p["stride"], p["padding"], bool(p["ceil_mode"])).forward(a)
        if op == "lrn":
            return LRN(p["size"], p["alpha"], p["beta"], p["k"]).forward(a)
        if op == "flatten":
            return a.reshape(len(a), -1)
        if op == "softmax":
            return Softmax().forward(a)
        if op == "dropout":
            return a
        if op == "add":
            return ins[0] + ins[1]
        if op == "mul":
            return ins[0] * ins[1]
        if op == "concat":
            return np.concatenate(ins, axis=1)
        if op == "global_avgpool":
            return a.astype(np.float64).mean(axis=(2, 3), keepdims=True)
        if op == "pad":
            t_, b_, l_, r_ = p["pads"]
            return np.pad(a, ((0, 0), (0, 0), (t_, b_), (l_, r_)))
        if op == "clip":
            return np.minimum(np.maximum(a, np.float32(p["min"])), np.float32(p["max"]))
        if op == "sigmoid":
            return 1 / (1 + np.exp(-a.astype(np.float64)))
        if op == "hardsigmoid":
            return np.clip(np.float32(p["alpha"]) * a + np.float32(p["beta"]), 0, 1)
        if op == "hardswish":
            return a * np.clip(a + 3, 0, 6) / 6
        if op == "silu":
            return a / (1 + np.exp(-a.astype(np.float64)))
        if op == "tanh":
            return np.tanh(a)
        if op == "gelu":
            return _gelu(a, p.get("approximate", "none"))
        raise ValueError(f"unknown op {op!r}")


def batchnorm_affine(gamma, beta, mean, var, eps):
    """A batch norm at inference as ``y = scale * x + shift`` (float64 ``scale``, ``shift``)."""
    scale = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + float(eps))
    return scale, np.asarray(beta, np.float64) - np.asarray(mean, np.float64) * scale


def fold_affine(layer, scale, shift):
    """Fold a per-output-channel ``scale * y + shift`` into a Linear/Conv2d layer (front ends fold
    batch norms this way, before any pruning)."""
    shape = (-1,) + (1,) * (layer.weight.ndim - 1)
    layer.weight = (layer.weight.astype(np.float64) * scale.reshape(shape)).astype(np.float32)
    layer.bias = (layer.bias.astype(np.float64) * scale + shift).astype(np.float32)


def channel_constant(value, shape):
    """A constant operand of add/mul/sub/div as one value per channel of a per-sample ``shape``
    (float32 [C]), or None where it does not broadcast as a scalar or as ``[C, 1, 1]`` (also
    ``[1, C, 1, 1]``; ``[C]`` on a 1-D tensor)."""
    v = np.asarray(value, np.float32)
    c = shape[0]
    if v.size == 1:
        return np.full(c, float(v.reshape(-1)[0]), np.float32)
    dims = [d for d in v.shape]
    while dims and dims[0] == 1 and len(dims) > len(shape):
        dims.pop(0)  # a leading batch axis of 1
    if len(shape) == 3 and dims in ([c, 1, 1],):
        return v.reshape(c)
    if len(shape) == 1 and dims == [c]:
        return v.reshape(c)
    return None


def constant_affine(op: str, per: np.ndarray, x_first: bool):
    """(scale, shift) of ``x op c`` (``c op x`` where not ``x_first``) for a per-channel constant
    ``per``: add, sub, mul, div. None for ``c / x`` (not an affine)."""
    ones, zeros = np.ones_like(per), np.zeros_like(per)
    if op == "add":
        return ones, per
    if op == "mul":
        return per, zeros
    if op == "sub":
        return (ones, -per) if x_first else (-ones, per)
    if op == "div" and x_first:
        return (ones / per).astype(np.float32), zeros
    return None


def affine_node(x_id: int, channels: int, scale, shift, name: str) -> Node:
    """A per-channel ``scale * x + shift`` on ``[C, H, W]`` as a depthwise 1x1 conv (a batch norm
    that cannot be folded)."""
    layer = Conv2d(channels, channels, 1, 1, 0, channels, name)
    layer.weight = np.asarray(scale, np.float32).reshape(channels, 1, 1, 1)
    layer.bias = np.asarray(shift, np.float32)
    return Node("conv2d", {"stride": (1, 1), "padding": (0, 0), "groups": channels}, [x_id], layer)


def from_dcz(f: fmt.DczFile) -> GraphNet:
    """The dense, dequantized network a .dcz describes, as a GraphNet."""
    nodes = []
    for op in f.graph.ops:
        layer = None
        if op.type in WEIGHTED:
            L = f.layers[op.layer]
            if op.type == "linear":
                layer = Linear(L.cols, L.rows, L.name)
            else:
                icg = L.cols // (L.kh * L.kw)
                p = op.params
                layer = Conv2d(icg * p["groups"], L.rows, (L.kh, L.kw), p["stride"], p["padding"], p["groups"], L.name,
                               p.get("dilation", (1, 1)))
            layer.weight = L.dense_weight().reshape(layer.weight.shape).astype(np.float32)
            layer.bias = L.bias.astype(np.float32)
        nodes.append(Node(op.type, dict(op.params), list(op.inputs) if op.inputs is not None else None, layer))
    return GraphNet(nodes, f.graph.input_shape, f.meta.get("name", "model"), f.graph.mean, f.graph.std,
                    f.meta.get("labels"), dict(f.meta.get("metadata", {})))


def is_chain(g: fmt.Graph) -> bool:
    """A 1.0-style chain: each op reads the previous op's output, and only 1.0 op types."""
    return all((op.inputs is None or list(op.inputs) == [i]) and fmt.OP_CODES[op.type] <= fmt.OP_DROPOUT
               for i, op in enumerate(g.ops))
