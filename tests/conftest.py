"""Shared helpers: random sparse-quantized layers, CRC fix-up for targeted corruption."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest



def random_codes(rng, rows, cols, density, code_bits, empty_cols=()):
    """A [rows, cols] code matrix (0 = pruned) with the given density."""
    codes = np.zeros((rows, cols), np.uint8)
    mask = rng.random((rows, cols)) < density
    codes[mask] = rng.integers(1, 1 << code_bits, size=int(mask.sum()))
    codes[:, list(empty_cols)] = 0
    return codes


def random_codebook(rng, code_bits):
    cb = np.zeros(1 << code_bits, np.float32)
    cb[1:] = np.sort(rng.standard_normal((1 << code_bits) - 1).astype(np.float32))
    return cb


def refix_crcs(data: bytes) -> bytes:
    """Recompute every section CRC, the table CRC and the header CRC, so that a targeted
    corruption reaches the deeper validation instead of failing the checksum."""
    buf = bytearray(data)
    nsec = struct.unpack_from("<I", buf, 12)[0]
    toff = 64
    if len(buf) < toff + 32 * nsec:
        return bytes(buf)
    for i in range(nsec):
        e = toff + 32 * i
        off, length = struct.unpack_from("<QQ", buf, e + 8)
        if off + length <= len(buf):
            struct.pack_into("<I", buf, e + 24, zlib.crc32(buf[off:off + length]))
    struct.pack_into("<I", buf, 32, zlib.crc32(buf[toff:toff + 32 * nsec]))
    struct.pack_into("<I", buf, 60, zlib.crc32(buf[:60]))
    return bytes(buf)


def section_offsets(data: bytes):
    """[(kind, index, offset, length)] from the section table."""
    nsec = struct.unpack_from("<I", data, 12)[0]
    return [struct.unpack_from("<IIQQ", data, 64 + 32 * i) for i in range(nsec)]


def require_dataset(name, **kw):
    """Load a dataset, or skip with the reason where it is not installed. CI sets
    DCRT_REQUIRE_DATA=1: there a missing dataset is a failure, not a skip."""
    import os
    from dcrt import data
    try:
        return data.load(name, **kw)
    except (FileNotFoundError, ImportError) as e:
        if os.environ.get("DCRT_REQUIRE_DATA"):
            raise
        pytest.skip(str(e))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def tiny_model(seed=0):
    """A small conv + fc network exercising every op type; also the golden model."""
    from dcrt.nn import (LRN, AvgPool2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, Sequential, Softmax,
                         he_init)
    m = Sequential([
        Conv2d(3, 8, 3, stride=1, padding=1, name="conv1"), ReLU("relu1"), LRN(3, 1e-2, 0.75, 2.0, name="norm1"),
        MaxPool2d(3, 2, padding=1, ceil_mode=True, name="pool1"),
        Conv2d(8, 6, 3, stride=2, padding=0, groups=2, name="conv2"), ReLU("relu2"),
        AvgPool2d(2, 1, padding=1, ceil_mode=False, name="pool2"),
        Flatten("flatten"), Linear(6 * 3 * 3, 20, "fc1"), ReLU("relu3"), Dropout(0.5, "drop"),
        Linear(20, 5, "fc2"), Softmax("prob"),
    ], input_shape=(3, 9, 9), name="tiny", mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3),
        labels=["a", "b", "c", "d", "e"], metadata={"seed": seed})
    return he_init(m, seed)


def graph_model(seed=0):
    """A format 1.2 DAG exercising every op type added in 1.2 (branches, broadcasts, concat,
    pad, every activation); also the golden graph file."""
    from dcrt.graph import GraphNet, Node
    from dcrt.nn import Conv2d, Linear, he_init

    def cv(cin, cout, k, stride=1, pad=0, groups=1, name="c", inputs=None):
        return Node("conv2d", {"stride": (stride, stride), "padding": (pad, pad), "groups": groups}, inputs,
                    Conv2d(cin, cout, k, stride, pad, groups, name))

    nodes = [
        cv(3, 8, 3, pad=1, name="stem"),                            # t1 [8,8,8]
        Node("clip", {"min": 0.0, "max": 6.0}),                     # t2 relu6
        cv(8, 8, 3, pad=1, groups=8, name="dw"),                    # t3 depthwise
        Node("pad", {"pads": (0, 1, 1, 0)}),                        # t4 [8,9,9]
        cv(8, 8, 2, name="asym"),                                   # t5 [8,8,8]
        Node("global_avgpool"),                                     # t6 [8,1,1]
        cv(8, 4, 1, name="se1"),                                    # t7
        Node("relu"),                                               # t8
        cv(4, 8, 1, name="se2"),                                    # t9
        Node("hardsigmoid", {"alpha": 1 / 6, "beta": 0.5}),         # t10
        Node("mul", inputs=[5, 10]),                                # t11 [8,8,8] * [8,1,1]
        cv(8, 8, 1, name="proj", inputs=[2]),                       # t12 shortcut from t2
        Node("add", inputs=[11, 12]),                               # t13 residual
        Node("maxpool", {"kernel": (3, 3), "stride": (1, 1), "padding": (1, 1), "ceil_mode": 0}, inputs=[1]),  # t14
        Node("concat", inputs=[13, 14, 2]),                         # t15 [24,8,8]
        Node("silu"), Node("gelu", {"approximate": "none"}),        # t16, t17
        cv(24, 6, 3, stride=2, pad=1, name="down"),                 # t18 [6,4,4]
        Node("tanh"), Node("hardswish"), Node("sigmoid"),           # t19..t21
        Node("gelu", {"approximate": "tanh"}),                      # t22
        Node("global_avgpool"), Node("flatten"),                    # t23, t24
        Node("linear", layer=Linear(6, 5, "fc")), Node("softmax"),  # t25, t26
    ]
    g = GraphNet(nodes, (3, 8, 8), "graph", mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3),
                 labels=["a", "b", "c", "d", "e"], metadata={"seed": seed})
    return he_init(g, seed)
