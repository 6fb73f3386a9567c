"""The dequantized network (``dcrt.decompress``: a numpy ``nn.Sequential``) as the dense peers
would run it: an ONNX graph for ONNX Runtime and a ``torch.nn.Sequential``. Same weights, same
input normalisation, same ceil-mode pooling and Caffe LRN, so every peer computes what dcrt does
(bench/test_networks.py checks the outputs before timing anything).
"""
from __future__ import annotations

import numpy as np

from dcrt import nn

from peers import Unavailable, threads


def _norm_consts(model, shape):
    c = shape[0] if len(shape) == 3 else 1
    mean = np.broadcast_to(model.mean, (c,)) if model.mean.size == 1 else model.mean
    std = np.broadcast_to(model.std, (c,)) if model.std.size == 1 else model.std
    bshape = (1, c, 1, 1) if len(shape) == 3 else (1, 1)
    return (np.asarray(mean, np.float32).reshape(bshape), (1.0 / np.asarray(std, np.float32)).reshape(bshape))


def onnx_model(model: nn.Sequential):
    """ONNX (opset 17) graph of the inference forward, batch dimension free."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as e:
        raise Unavailable("onnx") from e
    nodes, inits = [], []
    mean, inv_std = _norm_consts(model, model.input_shape)
    inits += [numpy_helper.from_array(mean, "mean"), numpy_helper.from_array(inv_std, "inv_std")]
    nodes += [helper.make_node("Sub", ["x", "mean"], ["x_c"]), helper.make_node("Mul", ["x_c", "inv_std"], ["h0"])]
    cur = "h0"
    for i, layer in enumerate(model.layers):
        out = f"h{i + 1}"
        if isinstance(layer, nn.Conv2d):
            inits += [numpy_helper.from_array(layer.weight, f"w{i}"), numpy_helper.from_array(layer.bias, f"b{i}")]
            (ph, pw) = layer.padding
            nodes.append(helper.make_node("Conv", [cur, f"w{i}", f"b{i}"], [out], group=layer.groups,
                                          kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                                          pads=[ph, pw, ph, pw]))
        elif isinstance(layer, nn.Linear):
            inits += [numpy_helper.from_array(layer.weight, f"w{i}"), numpy_helper.from_array(layer.bias, f"b{i}")]
            nodes.append(helper.make_node("Gemm", [cur, f"w{i}", f"b{i}"], [out], transB=1))
        elif isinstance(layer, nn.ReLU):
            nodes.append(helper.make_node("Relu", [cur], [out]))
        elif isinstance(layer, nn.MaxPool2d):
            (ph, pw) = layer.padding
            nodes.append(helper.make_node("MaxPool", [cur], [out], kernel_shape=list(layer.kernel_size),
                                          strides=list(layer.stride), pads=[ph, pw, ph, pw],
                                          ceil_mode=int(layer.ceil_mode)))
        elif isinstance(layer, nn.LRN):
            nodes.append(helper.make_node("LRN", [cur], [out], size=layer.size, alpha=layer.alpha, beta=layer.beta,
                                          bias=layer.k))
        elif isinstance(layer, nn.Flatten):
            nodes.append(helper.make_node("Flatten", [cur], [out], axis=1))
        elif isinstance(layer, nn.Softmax):
            nodes.append(helper.make_node("Softmax", [cur], [out], axis=1))
        elif isinstance(layer, nn.Dropout):
            nodes.append(helper.make_node("Identity", [cur], [out]))
        else:
            raise Unavailable(f"no ONNX export for {type(layer).__name__}")
        cur = out
    g = helper.make_graph(nodes, model.name,
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, *model.input_shape])],
                          [helper.make_tensor_value_info(cur, TensorProto.FLOAT, [None, None])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = min(m.ir_version, 9)
    onnx.checker.check_model(m)
    return m


def onnxruntime_net(model: nn.Sequential, x):
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise Unavailable("onnxruntime") from e
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads()
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    s = ort.InferenceSession(onnx_model(model).SerializeToString(), so, providers=["CPUExecutionProvider"])
    feed = {"x": np.ascontiguousarray(x, np.float32)}
    return lambda: s.run(None, feed)[0]


def torch_net(model: nn.Sequential, x, device: str = "cpu"):
    """A closure running the dequantized network in PyTorch on `device` ("cpu" or "cuda")."""
    try:
        import torch
    except ImportError as e:
        raise Unavailable("torch") from e
    torch.set_num_threads(threads())
    tn = torch.nn
    mods = []
    for layer in model.layers:
        if isinstance(layer, nn.Conv2d):
            m = tn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                          groups=layer.groups)
            m.weight.data = torch.from_numpy(layer.weight.copy())
            m.bias.data = torch.from_numpy(layer.bias.copy())
        elif isinstance(layer, nn.Linear):
            m = tn.Linear(layer.in_features, layer.out_features)
            m.weight.data = torch.from_numpy(layer.weight.copy())
            m.bias.data = torch.from_numpy(layer.bias.copy())
        elif isinstance(layer, nn.ReLU):
            m = tn.ReLU()
        elif isinstance(layer, nn.MaxPool2d):
            m = tn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding, ceil_mode=layer.ceil_mode)
        elif isinstance(layer, nn.LRN):
            m = tn.LocalResponseNorm(layer.size, layer.alpha, layer.beta, layer.k)
        elif isinstance(layer, nn.Flatten):
            m = tn.Flatten()
        elif isinstance(layer, nn.Softmax):
            m = tn.Softmax(dim=1)
        elif isinstance(layer, nn.Dropout):
            m = tn.Identity()
        else:
            raise Unavailable(f"no torch export for {type(layer).__name__}")
        mods.append(m)
    net = tn.Sequential(*mods).eval().to(device)
    mean, inv_std = (torch.from_numpy(np.ascontiguousarray(a)).to(device)
                     for a in _norm_consts(model, model.input_shape))
    xt = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(device)

    def f():
        with torch.inference_mode():
            return net((xt - mean) * inv_std)
    return f
