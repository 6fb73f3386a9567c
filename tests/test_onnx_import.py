"""ONNX front end (issue 13): files built with onnx.helper covering every mapped op, and real
architectures exported by torch.onnx.export, imported and checked against onnxruntime on the
same file; unsupported ops named with their node."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the ONNX front end needs onnx (pip install 'dcrt[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="the checks run onnxruntime on the same file")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import dcrt  # noqa: E402
from dcrt import UnsupportedModelError  # noqa: E402

pytestmark = pytest.mark.onnx


def _init(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def handmade(path, rng):
    """Conv (SAME_UPPER and asymmetric pads) + folded and unfoldable BatchNormalization, Clip with
    input bounds, HardSigmoid/HardSwish/Sigmoid/Tanh, Mul (SE), Add, Concat, pools, LRN, Pad,
    Identity, Dropout, a Shape->Gather->Unsqueeze->Concat->Reshape subgraph, Gemm, MatMul+Add,
    Softmax."""
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32) * 0.3
    inits = [
        _init("c1.weight", f32(6, 3, 3, 3)), _init("c1.bias", f32(6)),
        _init("bn1.s", rng.random(6, dtype=np.float32) + 0.5), _init("bn1.b", f32(6)), _init("bn1.m", f32(6)),
        _init("bn1.v", rng.random(6, dtype=np.float32) + 0.5),
        _init("bn2.s", rng.random(6, dtype=np.float32) + 0.5), _init("bn2.b", f32(6)), _init("bn2.m", f32(6)),
        _init("bn2.v", rng.random(6, dtype=np.float32) + 0.5),
        _init("lo", np.float32(0.0)), _init("hi", np.float32(6.0)),
        _init("se.weight", f32(6, 6, 1, 1)), _init("c2.weight", f32(4, 12, 2, 2)),
        _init("fc.weight", f32(10, 4 * 5 * 5)), _init("fc.bias", f32(10)), _init("mm", f32(10, 5)), _init("mmb", f32(5)),
        _init("pads", np.array([0, 0, 1, 0, 0, 0, 0, 1], np.int64)), _init("zero", np.array([0], np.int64)),
        _init("minus1", np.array([-1], np.int64)),
    ]
    N = helper.make_node
    nodes = [
        N("Conv", ["x", "c1.weight", "c1.bias"], ["c1"], kernel_shape=[3, 3], auto_pad="SAME_UPPER", name="conv1"),
        N("BatchNormalization", ["c1", "bn1.s", "bn1.b", "bn1.m", "bn1.v"], ["b1"], epsilon=1e-3, name="bn1"),
        N("Clip", ["b1", "lo", "hi"], ["r1"], name="relu6"),
        N("GlobalAveragePool", ["r1"], ["gap"]), N("Conv", ["gap", "se.weight"], ["se"], kernel_shape=[1, 1]),
        N("HardSigmoid", ["se"], ["hs"], alpha=0.2, beta=0.5), N("Mul", ["r1", "hs"], ["m1"]),
        N("Add", ["m1", "r1"], ["a1"]),
        N("BatchNormalization", ["a1", "bn2.s", "bn2.b", "bn2.m", "bn2.v"], ["b2"], name="bn_after_add"),
        N("HardSwish", ["b2"], ["h1"]), N("Identity", ["h1"], ["i1"]),
        N("MaxPool", ["i1"], ["mp"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
        N("Concat", ["i1", "mp"], ["cat"], axis=1), N("LRN", ["cat"], ["lrn"], size=3, alpha=1e-3, beta=0.75, bias=2.0),
        N("Pad", ["lrn", "pads"], ["pad"], mode="constant"),
        N("Conv", ["pad", "c2.weight"], ["c2"], kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1]),
        N("Sigmoid", ["c2"], ["sg"]), N("AveragePool", ["sg"], ["ap"], kernel_shape=[1, 1]), N("Tanh", ["ap"], ["th"]),
        N("Dropout", ["th"], ["dr"]),
        N("Shape", ["dr"], ["shp"]), N("Gather", ["shp", "zero"], ["n0"], axis=0),
        N("Concat", ["n0", "minus1"], ["target"], axis=0), N("Reshape", ["dr", "target"], ["flat"]),
        N("Gemm", ["flat", "fc.weight", "fc.bias"], ["fc"], transB=1), N("Relu", ["fc"], ["fr"]),
        N("MatMul", ["fr", "mm"], ["mmo"]), N("Add", ["mmo", "mmb"], ["logits"]),
        N("Softmax", ["logits"], ["y"], axis=1),
    ]
    g = helper.make_graph(nodes, "handmade", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    onnx.save(m, path)


def ort_run(path, x):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def test_handmade_graph_every_mapped_op(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "m.onnx"
    handmade(str(src), rng)
    x = rng.random((3, 3, 8, 8), dtype=np.float32)
    want = ort_run(src, x)
    p = tmp_path / "m.dcz"
    dcrt.compress(str(src), p, storage="plain", progress=False)
    np.testing.assert_allclose(dcrt.load(p).infer(x), want, rtol=1e-4, atol=1e-6)
    names = [L.name for L in dcrt.format.read(p).layers]
    assert names[0] == "c1" and any(n.endswith(".scale_shift") for n in names)  # bn1 folded, bn2 not
    ops = {o["type"] for o in dcrt.load(p)._m.ops}
    assert {"pad", "clip", "hardsigmoid", "hardswish", "mul", "add", "concat", "lrn", "global_avgpool"} <= ops


def test_unsupported_op_names_type_and_node(tmp_path):
    g = helper.make_graph([helper.make_node("Transpose", ["x"], ["y"], perm=[0, 1, 3, 2], name="swap_hw")], "t",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "t.onnx"))
    with pytest.raises(UnsupportedModelError, match=r"Transpose is not supported.*\n  node 'swap_hw'"):
        dcrt.compress(str(tmp_path / "t.onnx"), tmp_path / "t.dcz", progress=False)


def test_old_opset_is_refused(tmp_path):
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "t",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 9)]), str(tmp_path / "o.onnx"))
    with pytest.raises(UnsupportedModelError, match="opset 9"):
        dcrt.compress(str(tmp_path / "o.onnx"), tmp_path / "o.dcz", progress=False)


def test_cli_compresses_an_onnx_file(tmp_path):
    from dcrt.cli import main
    rng = np.random.default_rng(1)
    handmade(str(tmp_path / "m.onnx"), rng)
    main(["compress", str(tmp_path / "m.onnx"), str(tmp_path / "m.dcz"), "--storage", "plain", "-q"])
    x = rng.random((2, 3, 8, 8), dtype=np.float32)
    np.testing.assert_allclose(dcrt.load(tmp_path / "m.dcz").infer(x), ort_run(tmp_path / "m.onnx", x), rtol=1e-4,
                               atol=1e-6)


@pytest.mark.torch
@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_exported_transformers_model(tmp_path, arch):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript", reason="torch.onnx.export's exporter needs onnxscript")
    from test_torch_import import _transformers_models
    m = _transformers_models()[arch]
    src = tmp_path / f"{arch}.onnx"
    torch.onnx.export(m, (torch.rand(1, 3, 224, 224),), str(src), input_names=["pixel_values"],
                      output_names=["logits"], dynamo=True)
    x = np.random.default_rng(2).random((2, 3, 224, 224), dtype=np.float32)
    want = ort_run(src, x)
    p = tmp_path / "plain.dcz"
    dcrt.compress(str(src), p, storage="plain", progress=False)
    got = dcrt.load(p).infer(x)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max(), np.abs(got - want).max()
    q = tmp_path / "c.dcz"
    dcrt.compress(str(src), q, density=0.3, bits=6, progress=False)
    ref = dcrt.decompress(q).forward(x)
    np.testing.assert_allclose(dcrt.load(q).infer(x), ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())


@pytest.mark.torch
def test_legacy_exporter_with_dynamic_batch(tmp_path):
    """torch.onnx.export(dynamo=False, dynamic_axes=...) computes MobileNetV2's TF padding in a
    Shape/Slice/Transpose/... subgraph, after which onnx's shape inference gives up: the subgraph
    is folded and dcrt works out the shapes itself."""
    torch = pytest.importorskip("torch")
    from transformers import MobileNetV2Config, MobileNetV2ForImageClassification
    torch.manual_seed(0)
    m = MobileNetV2ForImageClassification(MobileNetV2Config(depth_multiplier=0.35, image_size=64)).eval()
    src = tmp_path / "mnv2.onnx"
    torch.onnx.export(m, (torch.rand(1, 3, 64, 64),), str(src), dynamo=False, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}}, opset_version=17)
    x = np.random.default_rng(3).random((2, 3, 64, 64), dtype=np.float32)
    p = tmp_path / "m.dcz"
    dcrt.compress(str(src), p, storage="plain", progress=False)
    want = ort_run(src, x)
    assert np.abs(dcrt.load(p).infer(x) - want).max() <= 1e-4 * np.abs(want).max()


def _dilated_model(path, second_conv_attrs, out_hw):
    rng = np.random.default_rng(4)
    N = helper.make_node
    inits = [_init("w1", rng.standard_normal((5, 3, 3, 3)).astype(np.float32) * 0.3),
             _init("w2", rng.standard_normal((5, 5, 3, 3)).astype(np.float32) * 0.3)]
    nodes = [N("Conv", ["x", "w1"], ["a"], kernel_shape=[3, 3], dilations=[2, 2], pads=[2, 2, 2, 2], name="atrous"),
             N("Relu", ["a"], ["r"]),
             N("Conv", ["r", "w2"], ["y"], kernel_shape=[3, 3], dilations=[3, 1], strides=[2, 2], name="dil2",
               **second_conv_attrs)]
    g = helper.make_graph(nodes, "dil", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 11])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, *out_hw])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def test_dilated_conv_with_asymmetric_and_same_padding(tmp_path):
    """Conv dilations with asymmetric explicit pads against onnxruntime; SAME_UPPER with dilation
    (which onnxruntime refuses) against the same network with the pads SAME means written out:
    H 12, stride 2, extent 3*(3-1)+1 = 7: total (6-1)*2 + 7 - 12 = 5 -> top 2, bottom 3; W 11,
    extent 3: total 2 -> 1, 1."""
    x = np.random.default_rng(5).random((2, 3, 12, 11), dtype=np.float32)
    src = tmp_path / "asym.onnx"
    _dilated_model(src, {"pads": [3, 2, 1, 0]}, (5, 6))
    p = tmp_path / "asym.dcz"
    dcrt.compress(str(src), p, storage="plain", progress=False)
    np.testing.assert_allclose(dcrt.load(p).infer(x), ort_run(src, x), rtol=1e-4, atol=1e-5)
    same, explicit = tmp_path / "same.onnx", tmp_path / "explicit.onnx"
    _dilated_model(same, {"auto_pad": "SAME_UPPER"}, (6, 6))
    _dilated_model(explicit, {"pads": [2, 1, 3, 1]}, (6, 6))
    q = tmp_path / "same.dcz"
    dcrt.compress(str(same), q, storage="plain", progress=False)
    np.testing.assert_allclose(dcrt.load(q).infer(x), ort_run(explicit, x), rtol=1e-4, atol=1e-5)


def test_constant_operands(tmp_path):
    """Sub/Div by per-channel constants (in-model normalisation), Mul by a scalar after a conv
    (folded into it), constant - x, Add of a [1, C, 1, 1] constant."""
    rng = np.random.default_rng(6)
    N = helper.make_node
    inits = [_init("mean", np.array([0.4, 0.5, 0.6], np.float32).reshape(1, 3, 1, 1)),
             _init("std", np.array([0.2, 0.25, 0.3], np.float32).reshape(3, 1, 1)),
             _init("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3),
             _init("half", np.float32(0.5)), _init("one", np.float32(1.0)),
             _init("beta", rng.standard_normal((1, 4, 1, 1)).astype(np.float32))]
    nodes = [N("Sub", ["x", "mean"], ["s"]), N("Div", ["s", "std"], ["d"]),
             N("Conv", ["d", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="conv"),
             N("Mul", ["c", "half"], ["m"]), N("Relu", ["m"], ["r"]), N("Sub", ["one", "r"], ["o"]),
             N("Add", ["o", "beta"], ["y"])]
    g = helper.make_graph(nodes, "k", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    src = tmp_path / "k.onnx"
    onnx.save(m, str(src))
    x = rng.random((2, 3, 6, 6), dtype=np.float32)
    p = tmp_path / "k.dcz"
    dcrt.compress(str(src), p, storage="plain", progress=False)
    np.testing.assert_allclose(dcrt.load(p).infer(x), ort_run(src, x), rtol=1e-4, atol=1e-5)
    names = [L.name for L in dcrt.format.read(p).layers]
    assert "conv" in names and len(names) == 3  # (x - mean) / std as one affine, conv (x0.5 folded), 1 - r + beta
