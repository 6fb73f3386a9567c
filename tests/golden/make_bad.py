"""Regenerate tests/golden/bad/: hand-built files that pass every checksum but set fields to
values that once crashed, hung or fooled a reader (issue 12), plus every input the fuzzers
ever found (fuzz/README.md says how one is added). tests/test_hardening.py checks that both
readers reject each with a FormatError whose message holds the fragment listed here.

    python tests/golden/make_bad.py          # rewrites bad/*.dcz from the recipes below

Each file is a small valid network (written by dcrt's own writer) with a few fields patched
and the CRCs recomputed.
"""
import json
import os
import struct
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "python"))

import dcrt  # noqa: E402
from dcrt import format as fmt  # noqa: E402
from dcrt.nn import LRN, AvgPool2d, Conv2d, MaxPool2d, Sequential, he_init  # noqa: E402
from conftest import refix_crcs, section_offsets  # noqa: E402

BAD = os.path.join(HERE, "bad")
U32 = (1 << 32) - 1


def _compress(model) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "m.dcz")
        dcrt.compress(he_init(model, 0), p, storage="plain", progress=False)
        with open(p, "rb") as f:
            return f.read()


def one_conv(**kw):
    """Conv2d(1, 2, 3) on a 1x8x8 input (the shape of the issue's heap overflow)."""
    return _compress(Sequential([Conv2d(1, 2, 3, name="c")], input_shape=(1, 8, 8), name="one-conv", **kw))


def conv_pool(pool):
    """Conv2d(1, 2, 3) then a 2x2 pool: the pool sees a 2x4x4 input."""
    return _compress(Sequential([Conv2d(1, 2, 3, name="c"), pool], input_shape=(1, 6, 6), name="conv-pool"))


def conv_lrn():
    return _compress(Sequential([Conv2d(1, 2, 3, name="c"), LRN(3, 1e-2, 0.75, 2.0, name="n")],
                                input_shape=(1, 6, 6), name="conv-lrn"))


def graph_offset(data):
    return [s for s in section_offsets(data) if s[0] == fmt.KIND_GRAPH][0][2]


def op_params(data, i):
    """File offset of op i's p[0]."""
    g = graph_offset(data)
    nnorm = struct.unpack_from("<I", data, g + 24)[0]
    return g + 32 + 8 * nnorm + 40 * i + 8


def patch(data, *fields):
    """fields: (struct format, file offset, values...)"""
    buf = bytearray(data)
    for f in fields:
        struct.pack_into(f[0], buf, f[1], *f[2:])
    return refix_crcs(bytes(buf))


def with_meta(data, meta_bytes):
    """The same file with its META section replaced by raw bytes."""
    f = fmt.loads(data)
    bodies = []
    for kind, idx, off, length in section_offsets(data):
        body = meta_bytes if kind == fmt.KIND_META else data[off:off + length]
        bodies.append((kind, idx, body))
    del f
    return fmt.pack_sections(bodies)


def recipes():
    """name -> (bytes, what it did before the fix, message fragment both readers must give)"""
    c = one_conv()
    p0 = op_params(c, 0)
    yield ("conv_stride_pad_wraps_padded_size",
           patch(c, ("<4I", p0, 1 << 31, 1 << 31, (1 << 31) - 4, (1 << 31) - 4)),
           "heap-buffer-overflow WRITE in pad_input at infer (padded size wrapped to 0)",
           "must be smaller than the kernel")
    yield ("conv_stride_w_u32max",
           patch(c, ("<I", p0 + 4, U32)),
           "infer asked for ~128 GiB (phase planes of a 2^32-1 stride)",
           "stride 1x4294967295 larger than the padded input")
    yield ("conv_pad_2e30",
           patch(c, ("<4I", p0, 1 << 31, 1 << 31, 1 << 30, 1 << 30)),
           "ValueError: vector::_M_default_append at infer",
           "must be smaller than the kernel")
    mp = conv_pool(MaxPool2d(2, 2, name="p"))
    q0 = op_params(mp, 1)
    yield ("maxpool_out_truncated_to_32_bits",
           patch(mp, ("<6I", q0, U32, U32, 1, 1, U32 - 1, U32 - 1)),
           "C++ reader truncated the pooled size to 32 bits and accepted a 2x2 output; Python rejected",
           "padded input")
    ap = conv_pool(AvgPool2d(2, 2, ceil_mode=False, name="p"))
    yield ("avgpool_divisor_overflow",
           patch(ap, ("<6I", q0, U32, U32, U32, U32, U32 - 1, U32 - 1)),
           "signed overflow (UBSan) in the avgpool divisor; both readers accepted a 2x2 output",
           "padded input")
    n = one_conv(mean=(0.5,), std=(0.25,))
    g = graph_offset(n)
    yield ("norm_std_denormal",
           patch(n, ("<I", g + 32 + 4, 1)),  # std = 1.4e-45
           "accepted; every output NaN",
           "std in [2^-24, 2^24]")
    yield ("norm_mean_huge",
           patch(n, ("<f", g + 32, 3e38)),
           "accepted; outputs overflow",
           "|mean| <= 2^24")
    lr = conv_lrn()
    yield ("lrn_k_denormal",
           patch(lr, ("<I", op_params(lr, 1) + 12, 1)),  # k = 1.4e-45
           "accepted; zero inputs give 0 * inf = NaN",
           "k a normal float")
    deep = b'{"name":"deep","metadata":{"x":' + b"[" * 200000 + b"]" * 200000 + b"}}"
    yield ("meta_nested_200k",
           with_meta(c, deep),
           "RecursionError instead of FormatError",
           "META")


def main():
    os.makedirs(BAD, exist_ok=True)
    manifest = {}
    for name, data, before, fragment in recipes():
        with open(os.path.join(BAD, name + ".dcz"), "wb") as f:
            f.write(data)
        manifest[name] = {"before": before, "message": fragment}
    fuzz = os.path.join(BAD, "MANIFEST.json")
    old = {}
    if os.path.exists(fuzz):
        with open(fuzz) as f:
            old = json.load(f)
    old.update(manifest)  # fuzzer finds, added by hand, are kept
    with open(fuzz, "w") as f:
        json.dump(old, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {len(manifest)} files to {BAD}")


if __name__ == "__main__":
    main()
