"""Load-time fusion and the conv geometry of issue 13: a pad folded into the conv that reads it,
add and relu/clip run in a conv's or linear's epilogue, the depthwise kernel, dilation.

The fused executor's twin is the same file loaded with ``fuse=False`` (every op on its own): the
epilogue keeps the unfused order of operations (bias, taps, + residual, clamp), so the two agree
bit for bit; both agree with the numpy reference forward (dcrt.decompress) within fp32 tolerance.
"""
import numpy as np
import pytest

import dcrt
from dcrt.graph import GraphNet, Node
from dcrt.nn import Conv2d, Linear, he_init

from test_graph import NETS


def cv(cin, cout, k=3, stride=1, pad=1, groups=1, name="c", inputs=None, dilation=1):
    d = (dilation, dilation) if np.isscalar(dilation) else tuple(dilation)
    return Node("conv2d", {"stride": (stride, stride), "padding": (pad, pad), "groups": groups, "dilation": d},
                inputs, Conv2d(cin, cout, k, stride, pad, groups, name, d))


def net(nodes, shape=(4, 9, 9), name="f"):
    return he_init(GraphNet(nodes, shape, name), 0)


RELU6 = {"min": 0.0, "max": 6.0}


def fusion_nets():
    """name -> (GraphNet, {op index: the op it must be fused into}); ops not listed must run."""
    out = {}
    # ResNet basic block: conv-relu (fused), conv + x (fused), relu (fused into the same conv)
    out["basic_block"] = (net([cv(4, 4, name="c1"), Node("relu"), cv(4, 4, name="c2"), Node("add", inputs=[3, 0]),
                               Node("relu")]), {1: 0, 3: 2, 4: 2})
    # MobileNetV2 stride-2 block with TF "same" padding: pad -> depthwise (folded), relu6 fused
    out["mbv2_down"] = (net([cv(4, 8, 1, pad=0, name="expand"), Node("clip", RELU6),
                             Node("pad", {"pads": (0, 1, 0, 1)}), cv(8, 8, 3, stride=2, pad=0, groups=8, name="dw"),
                             Node("clip", RELU6), cv(8, 6, 1, pad=0, name="project")]),
                        {1: 0, 2: 3, 4: 3})
    # Residual from a later producer: add(conv_a, conv_b) fuses into conv_b (conv_a exists first)
    out["add_two_convs"] = (net([cv(4, 5, name="a"), cv(4, 5, name="b", inputs=[0]), Node("add", inputs=[1, 2]),
                                 Node("clip", {"min": -0.5, "max": 0.5})]), {2: 1, 3: 1})
    # Not fusable: the conv's output has a second reader (the add must see it unclamped)
    out["two_readers"] = (net([cv(4, 4, name="c1"), Node("relu"), Node("add", inputs=[1, 2])]), {})
    # Not fusable: a pad read by two convs; a non-zero-free add of a broadcast [C,1,1]
    out["shared_pad"] = (net([Node("pad", {"pads": (1, 0, 0, 1)}), cv(4, 3, 2, pad=0, name="a"),
                              cv(4, 3, 2, pad=0, name="b", inputs=[1]), Node("add", inputs=[2, 3])]), {3: 2})
    out["broadcast_add"] = (net([cv(4, 4, name="c1"), Node("global_avgpool", inputs=[0]),
                                 Node("add", inputs=[1, 2]), Node("relu")]), {})
    # Linear epilogue: fc + relu, fc + residual + relu6
    out["linear"] = (net([Node("flatten"), Node("linear", layer=Linear(36, 6, "fc1")), Node("relu"),
                          Node("linear", layer=Linear(6, 6, "fc2")), Node("add", inputs=[3, 4]), Node("clip", RELU6)],
                         shape=(4, 3, 3)), {2: 1, 4: 3, 5: 3})
    # A sigmoid is not a clamp: it runs on its own, after the conv
    out["sigmoid_after_conv"] = (net([cv(4, 4, name="c1"), Node("sigmoid")]), {})
    # Dilated convs (DeepLab-style), a dilated depthwise one with asymmetric padding
    out["dilated"] = (net([cv(4, 6, 3, pad=2, dilation=2, name="d2"), Node("relu"),
                           cv(6, 6, 3, pad=0, dilation=(1, 3), name="d13"),
                           Node("pad", {"pads": (2, 1, 0, 3)}), cv(6, 6, 3, stride=2, pad=0, groups=6, dilation=2,
                                                                   name="dwd")], shape=(4, 13, 15)), {1: 0, 3: 4})
    return out


FUSION = fusion_nets()


def _compress(g, path, storage):
    dcrt.compress(g, path, density=None if storage == "plain" else 0.5, bits=6, storage=storage, progress=False)


@pytest.mark.parametrize("name", sorted(FUSION))
@pytest.mark.parametrize("storage", ["plain", "sparse"])
def test_fused_equals_unfused_and_reference(tmp_path, name, storage):
    g, want_fused = FUSION[name]
    p = tmp_path / f"{name}.dcz"
    _compress(g, p, storage)
    ref = dcrt.decompress(p)
    x = np.random.default_rng(2).random((3,) + g.input_shape, dtype=np.float32) * 2 - 0.7
    want = ref.forward(x)
    for threads in (1, 2):
        fused, plain = dcrt.load(p, threads=threads), dcrt.load(p, threads=threads, fuse=False)
        got = {i: op["fused_into"] for i, op in enumerate(fused._m.ops) if op["fused_into"] >= 0}
        if storage == "sparse" or not any(fused._m.ops[j]["type"] == "linear" for j in want_fused.values()):
            assert got == want_fused, f"{name}: fused ops {got}, expected {want_fused}"
        assert all(op["fused_into"] < 0 for op in plain._m.ops)
        for xb in (x, x[:1]):
            a, b = fused.infer(xb), plain.infer(xb)
            np.testing.assert_array_equal(a, b, err_msg=f"{name} {storage} threads={threads} batch={len(xb)}")
            np.testing.assert_allclose(a, want[:len(xb)], rtol=1e-4, atol=1e-5)
        # Fused ops take no time of their own; the summary says where they run.
        prof = fused.profile(x[:1], repeat=1)
        assert all(r["seconds"] == 0.0 for r in prof if r["fused_into"] >= 0)
        if got:
            assert "fused into op" in fused.summary()


@pytest.mark.parametrize("name", sorted(NETS))
def test_every_block_net_fused_equals_unfused(tmp_path, name):
    g = NETS[name]
    p = tmp_path / f"{name}.dcz"
    _compress(g, p, "sparse")
    x = np.random.default_rng(3).random((2,) + g.input_shape, dtype=np.float32) * 2 - 0.5
    np.testing.assert_array_equal(dcrt.load(p, threads=2).infer(x), dcrt.load(p, threads=2, fuse=False).infer(x))


def test_fused_pad_costs_no_buffer_and_reports_its_padding(tmp_path):
    g, _ = FUSION["mbv2_down"]
    p = tmp_path / "m.dcz"
    _compress(g, p, "sparse")
    fused, plain = dcrt.load(p), dcrt.load(p, fuse=False)
    dw = fused._m.ops[3]
    assert dw["padding"] == (0, 1, 0, 1) and dw["kernel"].startswith(("conv_dw_q_rows", "conv_dw_blocks"))
    assert plain._m.ops[3]["padding"] == (0, 0, 0, 0)
    assert fused._m.plan["arena"] < plain._m.plan["arena"]


def test_fuse_argument_is_a_bool(tmp_path):
    g, _ = FUSION["basic_block"]
    p = tmp_path / "b.dcz"
    _compress(g, p, "plain")
    with pytest.raises(TypeError, match="fuse"):
        dcrt.load(p, fuse=1)


def test_dilation_round_trips_and_old_readers_field_is_zero(tmp_path):
    from dcrt import format as fmt
    g, _ = FUSION["dilated"]
    p = tmp_path / "d.dcz"
    _compress(g, p, "plain")
    f = fmt.read(p)
    dil = [op.params["dilation"] for op in f.graph.ops if op.type == "conv2d"]
    assert dil == [(2, 2), (1, 3), (2, 2)]
    # A dilation-1 conv stores 0 in p5/p6: files without dilation keep their 1.0/1.1 bytes.
    q = tmp_path / "plain.dcz"
    _compress(net([cv(4, 4, name="c")]), q, "plain")
    assert all(op.params["dilation"] == (1, 1) for op in fmt.read(q).graph.ops)


def test_dilation_extent_checked_by_both_readers(tmp_path):
    """A dilated kernel wider than the padded input is corrupt in both readers, in the same words."""
    import struct

    from dcrt import FormatError
    from dcrt import format as fmt

    from conftest import refix_crcs, section_offsets
    g = net([cv(4, 4, 3, pad=0, dilation=2, name="c")], shape=(4, 6, 6))
    p = tmp_path / "ok.dcz"
    _compress(g, p, "plain")
    data = bytearray(p.read_bytes())
    off = next(o for kind, _, o, _ in section_offsets(bytes(data)) if kind == fmt.KIND_GRAPH)
    nnorm = fmt.GRAPH_HEADER.unpack_from(data, off)[6]
    rec = off + fmt.GRAPH_HEADER.size + 8 * nnorm  # op 0, the conv
    assert fmt.OP.unpack_from(data, rec)[3 + 5] == 1  # p[5] = dilation_h - 1
    struct.pack_into("<I", data, rec + 8 + 5 * 4, 2)  # dilation 3 x 2: extent 7 x 5 over a 6 x 6 input
    bad = refix_crcs(bytes(data))
    for read in (dcrt.loads, fmt.loads):
        with pytest.raises(FormatError, match=r"kernel 7x5 larger than the padded input 6x6 \(the kernel's extent "
                                              r"at dilation 3x2\)"):
            read(bad)
