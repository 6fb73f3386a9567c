"""Format 1.2 graphs (issue 13): branches, the new op types, and the native executor against
the numpy reference forward (dcrt.graph.GraphNet) on every op, lossless (plain) and
compressed, batch 1 and batched, one and two threads."""
import struct

import numpy as np
import pytest

import dcrt
from dcrt import FormatError, format as fmt
from dcrt.graph import GraphNet, Node
from dcrt.nn import Conv2d, Linear, he_init

from conftest import refix_crcs, section_offsets
from test_corrupt import run_cases


def conv(cin, cout, k=3, stride=1, pad=1, groups=1, name="c"):
    return Node("conv2d", {"stride": (stride, stride), "padding": (pad, pad), "groups": groups},
                layer=Conv2d(cin, cout, k, stride, pad, groups, name))


def net(nodes, shape=(4, 8, 8), name="g", **kw):
    return he_init(GraphNet(nodes, shape, name, **kw), 0)


def block_nets():
    """name -> GraphNet: one per new op, plus the shapes of real CNNs (residual, SE, concat)."""
    u = {
        "clip": Node("clip", {"min": 0.0, "max": 6.0}),
        "sigmoid": Node("sigmoid"), "tanh": Node("tanh"), "silu": Node("silu"), "hardswish": Node("hardswish"),
        "hardsigmoid": Node("hardsigmoid", {"alpha": 1 / 6, "beta": 0.5}),
        "gelu": Node("gelu", {"approximate": "none"}), "gelu_tanh": Node("gelu", {"approximate": "tanh"}),
    }
    out = {}
    for k, node in u.items():
        out[k] = net([conv(4, 6, name="c1"), node, conv(6, 3, name="c2")])
    out["pad"] = net([conv(4, 6, name="c1"), Node("pad", {"pads": (1, 0, 2, 3)}), conv(6, 3, 3, pad=0, name="c2")])
    out["global_avgpool"] = net([conv(4, 6, name="c1"), Node("global_avgpool"), Node("flatten"),
                                 Node("linear", layer=Linear(6, 5, "fc"))])
    # ResNet basic block: x -> conv-relu-conv -> + x -> relu
    out["residual"] = net([conv(4, 4, name="c1"), Node("relu"), conv(4, 4, name="c2"), Node("add", inputs=[3, 0]),
                           Node("relu")])
    # Projection shortcut with stride 2: both branches read the block input
    out["residual_proj"] = net([conv(4, 8, stride=2, name="c1"), Node("relu"), conv(8, 8, name="c2"),
                                Node("conv2d", {"stride": (2, 2), "padding": (0, 0), "groups": 1}, inputs=[0],
                                     layer=Conv2d(4, 8, 1, 2, 0, 1, "down")),
                                Node("add", inputs=[3, 4]), Node("relu")])
    # Squeeze-and-excitation: x * sigmoid(fc(relu(fc(avgpool(x))))), [C,H,W] * [C,1,1]
    out["squeeze_excite"] = net([conv(4, 8, name="c1"), Node("global_avgpool"),
                                 Node("conv2d", {"stride": (1, 1), "padding": (0, 0), "groups": 1},
                                      layer=Conv2d(8, 2, 1, 1, 0, 1, "se1")), Node("relu"),
                                 Node("conv2d", {"stride": (1, 1), "padding": (0, 0), "groups": 1},
                                      layer=Conv2d(2, 8, 1, 1, 0, 1, "se2")), Node("hardsigmoid", {"alpha": 0.2,
                                                                                                   "beta": 0.5}),
                                 Node("mul", inputs=[1, 6]), Node("silu")])
    out["concat"] = net([conv(4, 3, name="a"), Node("conv2d", {"stride": (1, 1), "padding": (0, 0), "groups": 1},
                                                    inputs=[0], layer=Conv2d(4, 5, 1, 1, 0, 1, "b")),
                         Node("maxpool", {"kernel": (3, 3), "stride": (1, 1), "padding": (1, 1), "ceil_mode": 0},
                              inputs=[0]),
                         Node("concat", inputs=[1, 2, 3]), conv(12, 2, name="c")])
    # Depthwise + pointwise (MobileNet), then a classifier head
    out["depthwise"] = net([conv(4, 8, name="c1"), Node("clip", {"min": 0.0, "max": 6.0}),
                            conv(8, 8, groups=8, name="dw"), Node("clip", {"min": 0.0, "max": 6.0}),
                            Node("conv2d", {"stride": (1, 1), "padding": (0, 0), "groups": 1},
                                 layer=Conv2d(8, 6, 1, 1, 0, 1, "pw")), Node("add", inputs=[5, 5]),
                            Node("global_avgpool"), Node("flatten"), Node("linear", layer=Linear(6, 4, "fc")),
                            Node("softmax")])
    # Pointwise convs (the sparse-product path): pixel counts around the kernel's 8/16/32/64-lane
    # passes (49: a tail), channel counts that split unevenly over threads
    for hw in (7, 8, 9):
        out[f"pointwise_{hw}x{hw}"] = net([conv(4, 70, name="c1"),
                                           Node("conv2d", {"stride": (1, 1), "padding": (0, 0), "groups": 1},
                                                layer=Conv2d(70, 37, 1, 1, 0, 1, "pw1")), Node("relu"),
                                           Node("conv2d", {"stride": (1, 1), "padding": (0, 0), "groups": 1},
                                                layer=Conv2d(37, 5, 1, 1, 0, 1, "pw2"))], shape=(4, hw, hw))
    return out


NETS = block_nets()


@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("storage", ["plain", "sparse"])
def test_native_matches_reference_forward(tmp_path, name, storage):
    g = NETS[name]
    p = tmp_path / f"{name}.dcz"
    dcrt.compress(g, p, density=None if storage == "plain" else 0.6, bits=6, storage=storage, progress=False)
    ref = dcrt.decompress(p)
    assert isinstance(ref, GraphNet) or not name.startswith(("residual", "squeeze", "concat"))
    x = np.random.default_rng(1).random((3,) + g.input_shape, dtype=np.float32) * 2 - 0.5
    want = ref.forward(x)
    if storage == "plain":  # lossless: the file's network is the built one
        np.testing.assert_allclose(want, g.forward(x), rtol=1e-6, atol=1e-6)
    for threads in (1, 2):
        m = dcrt.load(p, threads=threads)
        np.testing.assert_allclose(m.infer(x), want, rtol=1e-4, atol=1e-5, err_msg=f"{name} batch, {threads} threads")
        np.testing.assert_allclose(m.infer(x[1]), want[1], rtol=1e-4, atol=1e-5, err_msg=f"{name} batch 1")


def test_chain_files_keep_the_1_0_layout(tmp_path):
    """A chain written now stores no input table (n_inputs 0 everywhere), so dcrt 0.1's
    readers still read it; a graph with branches lists its inputs."""
    from dcrt import zoo
    p = tmp_path / "l.dcz"
    dcrt.compress(zoo.lenet_300_100(seed=0), p, density=0.2, progress=False)
    data = p.read_bytes()
    g = [s for s in section_offsets(data) if s[0] == fmt.KIND_GRAPH][0]
    nops, nnorm = struct.unpack_from("<I", data, g[2])[0], struct.unpack_from("<I", data, g[2] + 24)[0]
    assert g[3] == 32 + 8 * nnorm + 40 * nops  # no input table
    q = tmp_path / "r.dcz"
    dcrt.compress(NETS["residual"], q, progress=False)
    f = fmt.read(q)
    assert [op.inputs for op in f.graph.ops] == [[0], [1], [2], [3, 0], [4]]


def test_liveness_plan_reuses_buffers(tmp_path):
    p = tmp_path / "r.dcz"
    dcrt.compress(NETS["residual_proj"], p, progress=False)
    m = dcrt.load(p)
    plan, ops = m.plan, m._m.ops
    sizes = [int(np.prod(m.input_shape))] + [int(np.prod(o["out_shape"])) for o in ops]
    assert plan["arena"] < sum(sizes)  # buffers were reused
    assert plan["arena"] >= max(sizes)
    assert "KiB" in m.summary()


def _graph_file(ops_bytes_patch):
    """The residual net's file with one patch applied to its GRAPH section (CRCs fixed)."""
    import tempfile, os
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "r.dcz")
        dcrt.compress(NETS["residual"], p, progress=False)
        data = bytearray(open(p, "rb").read())
    g = [s for s in section_offsets(bytes(data)) if s[0] == fmt.KIND_GRAPH][0][2]
    ops_bytes_patch(data, g)
    return refix_crcs(bytes(data))


def _op(g, i):
    return g + 32 + 40 * i  # no normalisation in these nets


def test_corrupt_graphs_rejected_by_both_readers():
    table = lambda g: _op(g, 5)  # 5 ops, then the input table: op0..2,4 implicit; op3 [3, 0]
    cases = {
        "input from the future": lambda d, g: struct.pack_into("<I", d, table(g) + 4, 5),
        "self input": lambda d, g: struct.pack_into("<I", d, table(g), 4),
        "add with 1 input": lambda d, g: struct.pack_into("<H", d, _op(g, 3) + 2, 1),
        "relu with 2 inputs": lambda d, g: struct.pack_into("<H", d, _op(g, 4) + 2, 2),
        "unread output": lambda d, g: struct.pack_into("<I", d, table(g), 0),  # op2's output unread
        "unknown op 22": lambda d, g: struct.pack_into("<H", d, _op(g, 4), 22),
        "clip min > max": lambda d, g: struct.pack_into("<HH", d, _op(g, 4), fmt.OP_CLIP, 0)
        or struct.pack_into("<ff", d, _op(g, 4) + 8, 6.0, 0.0),
        "gelu approximate 2": lambda d, g: struct.pack_into("<HHiI", d, _op(g, 4), fmt.OP_GELU, 0, -1, 2),
    }
    files = [(k, _graph_file(f), True) for k, f in cases.items()]
    res = run_cases(files)
    bad = [r for r in res if r["native"] != "FormatError" or r["python"] != "FormatError"]
    assert not bad, bad


def test_add_shape_mismatch_rejected(tmp_path):
    g = net([conv(4, 6, name="c1"), Node("add", inputs=[1, 0])])  # [6,8,8] + [4,8,8]
    with pytest.raises(FormatError, match="do not match"):
        dcrt.compress(g, tmp_path / "x.dcz", storage="plain", progress=False)
    assert not list(tmp_path.iterdir())


def test_graphnet_rejects_a_node_without_its_layer():
    with pytest.raises(ValueError, match="layer is needed"):
        GraphNet([Node("conv2d", {"stride": (1, 1), "padding": (0, 0), "groups": 1})], (1, 4, 4))


# ---------------------------------------------------------------- golden graph (format 1.2)
def _golden_graph():
    import os
    here = os.path.join(os.path.dirname(__file__), "golden")
    with open(os.path.join(here, "graph.dcz"), "rb") as f:
        data = f.read()
    with np.load(os.path.join(here, "graph_expected.npz")) as z:
        exp = {k: z[k] for k in z.files}
    return data, exp


def test_golden_graph_writer_reproduces_bytes(tmp_path):
    import os, sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "golden"))
    from make_golden import GRAPH_SETTINGS
    from conftest import graph_model
    data, exp = _golden_graph()
    g = graph_model(seed=7)
    for k, v in exp.items():
        if k.startswith("w."):
            lname, _, pname = k[2:].rpartition(".")
            setattr(g[lname], pname, v)
    dcrt.compress(g, tmp_path / "g.dcz", **GRAPH_SETTINGS)
    assert (tmp_path / "g.dcz").read_bytes() == data, "the writer drifted from tests/golden/graph.dcz"


def test_golden_graph_both_readers_and_output(tmp_path):
    data, exp = _golden_graph()
    f = fmt.loads(data)
    assert f.version == (1, 2)
    assert {op.type for op in f.graph.ops} >= {"add", "mul", "concat", "global_avgpool", "pad", "clip", "sigmoid",
                                               "hardsigmoid", "hardswish", "silu", "tanh", "gelu"}
    p = tmp_path / "g.dcz"
    p.write_bytes(data)
    np.testing.assert_allclose(dcrt.decompress(p).forward(exp["x"]), exp["y"], rtol=1e-6, atol=1e-7)
    for threads in (1, 2):
        m = dcrt.load(p, threads=threads)
        np.testing.assert_allclose(m.infer(exp["x"]), exp["y"], rtol=1e-4, atol=1e-6)
    assert m.labels == list("abcde")
