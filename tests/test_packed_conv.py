"""Convs of small feature maps in a batch (csrc/ops/conv.cpp): below 64 output pixels a batch runs
as one product over every (sample, pixel) lane (im2col + the batched rows kernel, or plain fp32
rows; at batch 1 too for kernels of more than one tap), depthwise convs 16 channels at a time
vectorised across the channels (any batch). The numpy reference forward (dcrt.decompress) is the
twin, and one sample at a time (the per-sample kernels where batch 1 runs them) checks the batch.
"""
import numpy as np
import pytest

import dcrt
from dcrt.graph import Node

from test_fusion import RELU6, _compress, cv, net


def cases():
    return {
        # MobileNetV2's last blocks on 28x28 inputs: 1x1 maps
        "pointwise_1x1": net([cv(16, 24, 1, pad=0, name="pw")], shape=(16, 1, 1)),
        # one-pixel maps at batch 1: the row form (spmv_rows), its shares split over threads
        "pointwise_1x1_wide_relu6": net([cv(160, 1280, 1, pad=0, name="pw"), Node("clip", RELU6)], shape=(160, 1, 1)),
        "pointwise_1x1_residual": net([cv(64, 64, 1, pad=0, name="pw"), Node("add", inputs=[1, 0]), Node("relu")],
                                      shape=(64, 1, 1)),
        # one-pixel output maps of wider kernels: only the taps inside the input are read
        "3x3_on_1x1_residual": net([cv(48, 48, 3, pad=1, name="c"), Node("add", inputs=[1, 0]), Node("relu")],
                                   shape=(48, 1, 1)),
        "3x3_stride2_to_1x1": net([cv(24, 40, 3, stride=2, pad=1, name="c")], shape=(24, 2, 2)),
        "3x3_one_channel_1x1": net([cv(1, 1, 3, pad=1, name="c")], shape=(1, 1, 1)),
        "pointwise_2x2_relu6": net([cv(12, 20, 1, pad=0, name="pw"), Node("clip", RELU6)], shape=(12, 2, 2)),
        "3x3_stride2": net([cv(8, 12, 3, stride=2, pad=1, name="c")], shape=(8, 7, 7)),
        "grouped": net([cv(8, 12, 3, pad=1, groups=4, name="g")], shape=(8, 3, 3)),
        # TF "same" padding folded into a stride-2 depthwise conv (asymmetric padding)
        "depthwise_same_pad": net([Node("pad", {"pads": (0, 1, 0, 1)}),
                                   cv(8, 8, 3, stride=2, pad=0, groups=8, name="dw"), Node("clip", RELU6)],
                                  shape=(8, 6, 6)),
        "depthwise_dilated": net([cv(6, 6, 3, pad=1, groups=6, dilation=(2, 1), name="dwd")], shape=(6, 7, 5)),
        "depthwise_1x1_input": net([cv(10, 10, 3, pad=1, groups=10, name="dw")], shape=(10, 1, 1)),
        "depthwise_9x9": net([cv(4, 4, 9, pad=4, groups=4, name="dw9")], shape=(4, 5, 5)),  # 81 taps: im2col form
        # 16-channel blocks (any batch): 37 channels = two full blocks and a partial one, stride 2
        # from 14x14 to 7x7; a residual and ReLU6 in the epilogue at 2x2; 40 channels at 1x1
        "depthwise_blocks_stride2": net([cv(37, 37, 3, stride=2, pad=1, groups=37, name="dw")], shape=(37, 14, 14)),
        "depthwise_blocks_residual": net([cv(20, 20, 3, pad=1, groups=20, name="dw"), Node("add", inputs=[1, 0]),
                                          Node("clip", RELU6)], shape=(20, 2, 2)),
        "depthwise_blocks_1x1": net([cv(40, 40, 3, pad=1, groups=40, name="dw")], shape=(40, 1, 1)),
        # an input over the blocks' 256 pixels: the per-channel kernels (batch 1), im2col (batches)
        "depthwise_large_input": net([cv(5, 5, 3, stride=3, pad=0, groups=5, name="dw")], shape=(5, 17, 17)),
        # ResNet basic block at 2x2: conv-relu, conv + x, relu (fused into the second conv's epilogue)
        "basic_block_2x2": net([cv(16, 16, name="c1"), Node("relu"), cv(16, 16, name="c2"),
                                Node("add", inputs=[3, 0]), Node("relu")], shape=(16, 2, 2)),
        # im2col block larger than one slice: 64 x 9 columns x 49 pixels per sample
        "slices": net([cv(64, 32, 3, pad=1, name="c")], shape=(64, 7, 7)),
        # small maps on the dense weights (conv_small, any batch): 80 channels = a 64-block and a
        # 16-block, 40 = 32 + an 8-channel tail, 17 = 16 + 1; dilation, a folded asymmetric pad
        # with stride 2, a residual and ReLU6 in the epilogue
        "small_dense_80ch_4x4": net([cv(24, 80, 3, pad=1, name="c")], shape=(24, 4, 4)),
        "small_dense_dilated": net([cv(8, 40, 3, pad=2, dilation=2, name="c")], shape=(8, 5, 5)),
        "small_dense_same_pad_stride2": net([Node("pad", {"pads": (0, 1, 0, 1)}), cv(12, 17, 3, stride=2, pad=0, name="c"),
                                             Node("clip", RELU6)], shape=(12, 6, 6)),
        "small_dense_residual_relu6": net([cv(32, 32, 3, pad=1, name="c"), Node("add", inputs=[1, 0]),
                                           Node("clip", RELU6)], shape=(32, 3, 3)),
        # depthwise 1x1 convs (kept batch norms): a per-channel scale at any batch and map size
        "channel_scale_residual_relu6": net([cv(20, 20, 1, pad=0, groups=20, name="bn"), Node("add", inputs=[1, 0]),
                                             Node("clip", RELU6)], shape=(20, 5, 5)),
        "channel_scale_14x14": net([cv(24, 24, 1, pad=0, groups=24, name="bn")], shape=(24, 14, 14)),
        "small_dense_pointwise_4x4": net([cv(24, 48, 1, pad=0, name="pw"), Node("relu")], shape=(24, 4, 4)),
        "small_dense_pointwise_stride2": net([cv(16, 33, 1, stride=2, pad=0, name="pw")], shape=(16, 7, 7)),
    }


CASES = cases()


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("storage", ["plain", "sparse"])
def test_packed_batch_equals_one_sample_at_a_time(tmp_path, name, storage):
    g = CASES[name]
    p = tmp_path / f"{name}.dcz"
    _compress(g, p, storage)
    x = np.random.default_rng(4).random((5,) + g.input_shape, dtype=np.float32) * 2 - 0.6
    want = dcrt.decompress(p).forward(x)
    assert np.abs(want).max() > 1e-3  # a net whose outputs vanish would compare nothing
    for threads in (1, 2):
        m = dcrt.load(p, threads=threads)
        one = np.concatenate([m.infer(x[i:i + 1]) for i in range(len(x))])
        got = m.infer(x)
        np.testing.assert_allclose(got, one, rtol=1e-5, atol=1e-6, err_msg=f"{name} {storage} threads={threads}")
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        # the epilogue keeps the unfused order: fused and op-by-op agree bit for bit
        np.testing.assert_array_equal(got, dcrt.load(p, threads=threads, fuse=False).infer(x))


@pytest.mark.parametrize("name", [n for n in sorted(CASES) if n.startswith("depthwise_blocks")])
def test_every_depthwise_blocks_variant_through_the_executor(tmp_path, name):
    g = CASES[name]
    p = tmp_path / f"{name}.dcz"
    _compress(g, p, "sparse")
    x = np.random.default_rng(5).random((3,) + g.input_shape, dtype=np.float32) * 2 - 0.6
    want = dcrt.decompress(p).forward(x)
    names = [k["name"] for k in dcrt.kernels() if k["op"] == "conv_dw_blocks" and k["supported"]]
    assert len(names) >= 2  # the reference and the portable kernel at least
    for k in names:
        m = dcrt.load(p, threads=2, kernels={"conv_dw_blocks": k})
        assert any(L.get("kernel", "").startswith(k) for L in m._m.ops if "kernel" in L)
        np.testing.assert_allclose(m.infer(x), want, rtol=1e-4, atol=1e-5, err_msg=k)
        np.testing.assert_allclose(np.concatenate([m.infer(x[i:i + 1]) for i in range(3)]), want, rtol=1e-4,
                                   atol=1e-5, err_msg=k)


@pytest.mark.parametrize("name", [n for n in sorted(CASES) if n.startswith("small_dense")])
@pytest.mark.parametrize("storage", ["plain", "sparse"])
def test_every_small_dense_variant_through_the_executor(tmp_path, name, storage):
    """These convs run conv_small (the load decodes their weights to fp32), at batch 1 and in
    batches: every variant this CPU runs, forced, agrees with the numpy reference; threads 1
    and 2 agree bit for bit, and a batch equals its samples one at a time."""
    g = CASES[name]
    p = tmp_path / f"{name}.dcz"
    _compress(g, p, storage)
    x = np.random.default_rng(6).random((3,) + g.input_shape, dtype=np.float32) * 2 - 0.6
    want = dcrt.decompress(p).forward(x)
    names = [k["name"] for k in dcrt.kernels() if k["op"] == "conv_small" and k["supported"]]
    assert len(names) >= 2  # the reference and the portable kernel at least
    picked = dcrt.load(p, threads=1)
    assert any("conv_small" in op.get("kernel", "") for op in picked._m.ops if op["type"] == "conv2d"), \
        [op.get("kernel") for op in picked._m.ops]
    for k in names:
        outs = []
        for threads in (1, 2):
            m = dcrt.load(p, threads=threads, kernels={"conv_small": k})
            assert any(op.get("kernel", "").startswith(k) for op in m._m.ops if op["type"] == "conv2d")
            one = np.concatenate([m.infer(x[i:i + 1]) for i in range(3)])
            np.testing.assert_allclose(one, want, rtol=1e-4, atol=1e-5, err_msg=f"{k} threads={threads}")
            np.testing.assert_array_equal(m.infer(x), one, err_msg=f"{k} batch")
            outs.append(one)
        np.testing.assert_array_equal(outs[0], outs[1], err_msg=k)


@pytest.mark.parametrize("name", ["pointwise_1x1", "pointwise_1x1_wide_relu6", "pointwise_1x1_residual"])
def test_one_pixel_pointwise_convs_under_every_dense_codebook_mode(tmp_path, name):
    """A pointwise conv on a one-pixel map is a linear layer's batch 1: the dense codebook where
    the cost model takes it (or dense_codebook="always"), else the row form; both agree with
    the numpy reference, and the ops say which runs."""
    g = CASES[name]
    p = tmp_path / f"{name}.dcz"
    _compress(g, p, "sparse")
    x = np.random.default_rng(7).random((2,) + g.input_shape, dtype=np.float32) * 2 - 0.6
    want = dcrt.decompress(p).forward(x)
    for mode, kernel in (("always", "dense_q8"), ("never", "spmv_rows"), ("auto", None)):
        for threads in (1, 2):
            m = dcrt.load(p, threads=threads, dense_codebook=mode)
            kernels = [op["kernel"] for op in m._m.ops if op["type"] == "conv2d"]
            if kernel:
                assert kernels[0].startswith(kernel), (mode, kernels)
            np.testing.assert_allclose(np.concatenate([m.infer(x[i:i + 1]) for i in range(2)]), want, rtol=1e-4,
                                       atol=1e-5, err_msg=f"{mode} threads={threads}")


@pytest.mark.parametrize("name", ["channel_scale_residual_relu6", "channel_scale_14x14"])
def test_depthwise_1x1_runs_as_a_channel_scale(tmp_path, name):
    g = CASES[name]
    p = tmp_path / f"{name}.dcz"
    _compress(g, p, "sparse")
    m = dcrt.load(p, threads=2)
    assert [op["kernel"] for op in m._m.ops if op["type"] == "conv2d"] == ["channel scale (depthwise 1x1)"]
