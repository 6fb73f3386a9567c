"""Every registered kernel against its reference twin (DESIGN: one registry drives the tests).

Inputs are generated around the edges: nnz = 0, empty columns, a single row, the largest
relative jump (fillers), every code width, all-zero and half-zero activations. Float kernels
agree within a tolerance scaled by the reduction length.
"""
import numpy as np
import pytest

from dcrt import _core
from dcrt.sparse import encode_csc

from conftest import random_codebook, random_codes

KERNELS = _core.kernels()


def by_op(op):
    ks = [k for k in KERNELS if k["op"] == op]
    ref = [k["name"] for k in ks if k["reference"]]
    assert len(ref) == 1, f"{op}: exactly one reference twin"
    return ref[0], [k["name"] for k in ks if not k["reference"] and k["supported"]]


def test_registry_names_say_what_the_kernel_is():
    for k in KERNELS:
        assert k["name"].startswith(k["op"] if k["op"] != "huffman" else "huffman_decode")
        assert k["name"].endswith("__" + k["isa"]), k["name"]
    for op in ("spmv_rows", "spmv_cols", "dense_q8", "dense_i8", "dense_bf16", "spmm", "spmm_rows", "conv", "conv_dw",
               "conv_dw_blocks", "conv_small", "huffman", "transpose",
               "crc32"):
        ref, fast = by_op(op)
        assert fast, f"{op}: no optimised kernel registered"


def test_runtime_picks_one_supported_kernel_per_op_and_times_the_batch1_forms():
    """Per op exactly one kernel is picked, a supported non-reference one; spmv_rows/spmv_cols
    and huffman pick the fastest of what they timed (every non-generic variant this CPU runs,
    when there are two or more), other ops the widest ISA and time nothing."""
    for op in {k["op"] for k in KERNELS}:
        ks = [k for k in KERNELS if k["op"] == op]
        picked = [k for k in ks if k["picked"]]
        assert len(picked) == 1, op
        assert picked[0]["supported"] and not picked[0]["reference"], op
        timed = [k for k in ks if k["ns_per_nz"] is not None]
        if op not in ("spmv_rows", "spmv_cols", "huffman"):
            assert not timed, op
            assert picked[0] is [k for k in ks if k["supported"] and not k["reference"]][-1], op
            continue
        cands = [k for k in ks if k["supported"] and not k["reference"] and k["isa"] != "generic"]
        if len(cands) >= 2:
            assert [k["name"] for k in timed] == [k["name"] for k in cands], op
            assert all(0 < k["ns_per_nz"] < 1e3 for k in timed), timed
            assert picked[0]["ns_per_nz"] == min(k["ns_per_nz"] for k in timed), timed
        else:
            assert not timed, op


def rel16(codes, index_bits, code_bits):
    colptr, e_codes, gaps = encode_csc(codes, index_bits)
    entries = (gaps.astype(np.uint16) << code_bits) | e_codes
    return colptr, entries.astype(np.uint16)


def tol(k):
    """Absolute tolerance for a sum of k terms of magnitude ~1 in fp32."""
    return 1e-6 * (4 + k)


def batch1_case(rng, shape, xkind):
    """A random quantized matrix (rel16 CSC, column 0 empty) and a batch-1 input of the kind."""
    rows, cols, dens, cb_bits, ib = shape
    codes = random_codes(rng, rows, cols, dens, cb_bits, empty_cols=(0,) if cols > 2 else ())
    colptr, entries = rel16(codes, ib, cb_bits)
    cb = random_codebook(rng, cb_bits)
    x = rng.standard_normal(cols).astype(np.float32)
    if xkind == "half_zero":
        x[rng.random(cols) < 0.5] = 0
    elif xkind == "all_zero":
        x[:] = 0
    return rows, cols, cb_bits, codes, colptr, entries, cb, x


MATRICES = [
    # rows, cols, density, code_bits, index_bits
    (1, 1, 1.0, 1, 1),
    (1, 17, 0.5, 2, 1),
    (33, 1, 0.3, 5, 2),
    (300, 40, 0.0, 5, 5),  # nnz = 0
    (300, 40, 0.04, 5, 3),  # long gaps: many fillers
    (257, 65, 0.5, 8, 8),
    (64, 130, 1.0, 4, 1),  # full columns
    (1000, 20, 0.01, 3, 1),  # the largest relative jumps at width 1
]


@pytest.mark.parametrize("shape", MATRICES + [(600, 300, 0.1, 5, 4)], ids=str)
@pytest.mark.parametrize("xkind", ["dense", "half_zero", "all_zero"])
@pytest.mark.parametrize("op", ["spmv_rows", "spmv_cols"])
@pytest.mark.parametrize("tile,shares", [(0, 1), (0, 3), (16, 2), (1, 1)], ids=str)
def test_spmv_matches_reference(rng, shape, xkind, op, tile, shares):
    """Batch 1 on both 16-bit tiled forms: several tiles (tile 16 or 1 on these shapes), several
    thread shares (every share runs), rows reordered within blocks, padded groups."""
    rows, cols, cb_bits, codes, colptr, entries, cb, x = batch1_case(rng, shape, xkind)
    ref_name, fast = by_op(op)
    run = getattr(_core, op)
    ref = run(ref_name, rows, colptr, entries, cb_bits, cb, x, tile=tile, shares=shares)
    np.testing.assert_allclose(ref, cb[codes].astype(np.float64) @ x, atol=tol(cols))
    for name in fast:
        np.testing.assert_allclose(run(name, rows, colptr, entries, cb_bits, cb, x, tile=tile, shares=shares), ref,
                                   atol=tol(cols), err_msg=name)


def batched_case(rng, shape, n):
    """A random quantized matrix in rel16 CSC, its codebook, a [cols, n] input with zero
    columns, and the float64 product every batched kernel must reproduce."""
    rows, cols, dens, cb_bits, ib = shape
    codes = random_codes(rng, rows, cols, dens, cb_bits)
    colptr, entries = rel16(codes, ib, cb_bits)
    cb = random_codebook(rng, cb_bits)
    xt = rng.standard_normal((cols, n)).astype(np.float32)
    xt[:, ::3] = 0
    return (rows, colptr, entries, cb_bits, cb, xt), cb[codes].astype(np.float64) @ xt


@pytest.mark.parametrize("shape", MATRICES, ids=str)
@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 16, 17, 24, 31, 64])
def test_spmm_matches_reference(rng, shape, n):
    args, want = batched_case(rng, shape, n)
    ref_name, fast = by_op("spmm")
    ref = _core.spmm(ref_name, *args)
    np.testing.assert_allclose(ref, want, atol=tol(shape[1]))
    for name in fast:
        np.testing.assert_allclose(_core.spmm(name, *args), ref, atol=tol(shape[1]), err_msg=name)


@pytest.mark.parametrize("shape", MATRICES + [(37, 100, 0.3, 6, 4), (9, 33, 0.7, 7, 3), (20, 64, 0.5, 4, 4),
                                   (2100, 300, 0.05, 5, 2)], ids=str)  # the last: the builder's row bands
@pytest.mark.parametrize("xkind", ["dense", "half_zero"])
def test_dense_q8_matches_reference(rng, shape, xkind):
    """Dense codebook at batch 1: every code width (the 3/4/5/6-bit shuffles, the 7-8-bit
    gather), column tails of every length, 4-row blocks and their leftover rows, row ranges."""
    rows, cols, cb_bits, codes, colptr, entries, cb, x = batch1_case(rng, shape, xkind)
    ref_name, fast = by_op("dense_q8")
    ref = _core.dense_q8(ref_name, rows, colptr, entries, cb_bits, cb, x)
    np.testing.assert_allclose(ref, cb[codes].astype(np.float64) @ x, atol=tol(cols))
    r0, r1 = rows // 3, rows - rows // 5
    for name in fast:
        np.testing.assert_allclose(_core.dense_q8(name, rows, colptr, entries, cb_bits, cb, x), ref, atol=tol(cols),
                                   err_msg=name)
        part = _core.dense_q8(name, rows, colptr, entries, cb_bits, cb, x, r0=r0, r1=r1)
        np.testing.assert_allclose(part[r0:r1], ref[r0:r1], atol=tol(cols), err_msg=name)
        assert not part[:r0].any() and not part[r1:].any()


@pytest.mark.parametrize("shape", MATRICES, ids=str)
@pytest.mark.parametrize("n", [1, 3, 8, 9, 16, 24, 31, 32, 40, 64, 71, 127, 128, 200, 257])
def test_spmm_rows_matches_reference(rng, shape, n):
    """The gather (rows) form of the batched product, every lane-block width and tail, with the
    rows split into chunks as the executor's threads split them."""
    args, want = batched_case(rng, shape, n)
    ref_name, fast = by_op("spmm_rows")
    ref = _core.spmm_rows(ref_name, *args)
    np.testing.assert_allclose(ref, want, atol=tol(shape[1]))
    for name in fast:
        for chunk in (0, 7):
            np.testing.assert_allclose(_core.spmm_rows(name, *args, chunk), ref, atol=tol(shape[1]),
                                       err_msg=f"{name} row_chunk={chunk}")


CONVS = [
    # C, H, W, out_c, k, stride, pad, groups, density, oc_chunk
    (1, 5, 5, 1, 1, 1, 0, 1, 1.0, 0),
    (3, 9, 9, 4, 3, 1, 1, 1, 0.5, 0),
    (4, 10, 7, 6, 3, 2, 1, 2, 0.4, 5),  # grouped, strided, chunk not dividing the channels
    (2, 6, 6, 3, 5, 1, 2, 1, 0.0, 0),  # nnz = 0: output is the bias
    (8, 13, 13, 8, 3, 1, 0, 4, 0.3, 3),
    (3, 23, 23, 4, 11, 4, 0, 1, 0.6, 1),  # AlexNet conv1-like
    (2, 3, 40, 5, 3, 1, 1, 1, 0.7, 2),  # rows wider than the pixel tile, ragged last tile
    (2, 9, 9, 2, 3, 7, 2, 1, 0.9, 0),  # stride wider than the input slack
    (2, 33, 35, 3, 5, 1, 2, 1, 0.6, 2),  # 33 rows: 4-row blocks and a 1-row tail; 16+16+3 pixels
    (3, 18, 21, 4, 3, (2, 3), (1, 2), 1, 0.5, 0),  # sh != sw, ph != pw: phase planes per sw
    (2, 15, 30, 3, (3, 5), (1, 2), (0, 1), 1, 0.7, 0),  # rectangular kernel, stride 2 across
    (40, 13, 18, 5, 3, 1, 1, 1, 0.3, 2),  # 40 channels: 2-3 channel blocks; 13 rows: 8 + 5 (AVX-512 blocks)
    # 16+ output channels on rows of 16+ pixels: the AVX-512 kernel's aligned windows
    (20, 17, 37, 24, 3, 1, 1, 1, 0.3, 16),  # 16 + 16 + 5 pixels, 2 channel blocks, 8 + 8 + 1 rows
    (16, 33, 40, 20, 3, 2, 1, 1, 0.4, 0),  # stride 2: window rows over the phase planes
    (3, 71, 71, 16, 11, 4, 0, 1, 0.5, 0),  # 11 x 11, stride 4: one channel per window
    (8, 20, 20, 32, 3, 1, 1, 4, 0.4, 0),  # grouped: the window refills per input group
]


@pytest.mark.parametrize("geom", CONVS, ids=str)
def test_conv_matches_reference_and_numpy(rng, geom):
    from dcrt.nn import Conv2d
    C, H, W, oc, k, s, p, g, dens, chunk = geom
    (kh, kw), (sh, sw), (ph, pw) = (v if isinstance(v, tuple) else (v, v) for v in (k, s, p))
    cb_bits, ib = 6, 2
    codes = random_codes(rng, oc, C // g * kh * kw, dens, cb_bits)
    colptr, entries = rel16(codes, ib, cb_bits)
    cb = random_codebook(rng, cb_bits)
    bias = rng.standard_normal(oc).astype(np.float32)
    x = rng.standard_normal((C, H, W)).astype(np.float32)
    x[:, ::2, :] = 0
    ref_name, fast = by_op("conv")
    args = (colptr, entries, cb_bits, cb, bias, x, oc, kh, kw, sh, sw, ph, pw, g)
    ref = _core.conv(ref_name, *args, 0, 0)
    layer = Conv2d(C, oc, (kh, kw), (sh, sw), (ph, pw), g)
    layer.weight = cb[codes].reshape(layer.weight.shape)
    layer.bias = bias
    np.testing.assert_allclose(ref, layer.forward(x[None])[0], atol=tol(codes.shape[1]))
    np.testing.assert_allclose(_core.conv(ref_name, *args, chunk, 3), ref, atol=tol(codes.shape[1]))
    for name in fast:
        for c in {0, chunk}:
            for rc in (0, 3, 4):  # row ranges that cut the 4-row blocks, and ones that follow them
                np.testing.assert_allclose(_core.conv(name, *args, c, rc), ref, atol=tol(codes.shape[1]),
                                           err_msg=f"{name} oc_chunk={c} row_chunk={rc}")


CONV_EXTRA = [
    # op, C, H, W, out_c, (kh, kw), (sh, sw), (top, bottom, left, right), (dh, dw), groups, density
    ("conv", 3, 11, 13, 4, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 1, 0.6),   # DeepLab-style dilation
    ("conv", 2, 12, 19, 3, (3, 2), (2, 1), (0, 1, 1, 0), (1, 3), 1, 0.7),   # asymmetric pad (a folded pad op)
    ("conv", 4, 9, 9, 4, (3, 3), (2, 2), (0, 1, 0, 1), (1, 1), 2, 0.5),     # TF "same", stride 2, grouped
    ("conv_dw", 8, 14, 14, 8, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 8, 0.4),  # MobileNet, 14 px: a 6-px tail
    ("conv_dw", 5, 7, 7, 5, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 5, 1.0),    # 7 px: one masked 8-lane tile
    ("conv_dw", 6, 29, 31, 6, (3, 3), (2, 2), (0, 1, 0, 1), (1, 1), 6, 0.5),  # stride 2, TF padding
    ("conv_dw", 3, 17, 20, 3, (5, 5), (1, 2), (4, 3, 2, 4), (2, 1), 3, 0.6),  # 5x5, dilated, uneven pads
    ("conv_dw", 4, 1, 40, 4, (1, 3), (1, 1), (0, 0, 1, 1), (1, 1), 4, 0.0),   # nnz = 0: bias + epilogue
]


@pytest.mark.parametrize("case", CONV_EXTRA, ids=str)
@pytest.mark.parametrize("epilogue", [None, "res", "clamp", "res+clamp"])
def test_conv_geometry_and_epilogue_match_reference_and_numpy(rng, case, epilogue):
    """Dilation, asymmetric padding (ConvGeom pb, pr: a pad op folded into the conv at load) and the
    fused epilogue (+ residual, clamp), for the general and the depthwise kernels."""
    from dcrt.nn import Conv2d
    op, C, H, W, oc, (kh, kw), (sh, sw), (pt, pb, pl, pr), (dh, dw), g, dens = case
    codes = random_codes(rng, oc, C // g * kh * kw, dens, 5)
    colptr, entries = rel16(codes, 2, 5)
    cb = random_codebook(rng, 5)
    bias = rng.standard_normal(oc).astype(np.float32)
    x = rng.standard_normal((C, H, W)).astype(np.float32)
    layer = Conv2d(C, oc, (kh, kw), (sh, sw), 0, g, dilation=(dh, dw))
    layer.weight = cb[codes].reshape(layer.weight.shape)
    layer.bias = bias
    want = layer.forward(np.pad(x, ((0, 0), (pt, pb), (pl, pr)))[None])[0]
    kw_ = {"dh": dh, "dw": dw, "pb": pb, "pr": pr}
    if epilogue and "res" in epilogue:
        kw_["res"] = rng.standard_normal(want.shape).astype(np.float32)
        want = want + kw_["res"]
    if epilogue and "clamp" in epilogue:
        kw_["clamp"] = (-0.25, 0.5)
        want = np.clip(want, -0.25, 0.5)
    ref_name, fast = by_op(op)
    args = (colptr, entries, 5, cb, bias, x, oc, kh, kw, sh, sw, pt, pl, g)
    ref = _core.conv(ref_name, *args, **kw_)
    np.testing.assert_allclose(ref, want, atol=tol(codes.shape[1]))
    for name in fast:
        for c, rc in ((0, 0), (3, 3), (1, 4)):
            np.testing.assert_allclose(_core.conv(name, *args, c, rc, **kw_), ref, atol=tol(codes.shape[1]),
                                       err_msg=f"{name} oc_chunk={c} row_chunk={rc}")


def test_conv_dw_kernels_refuse_other_geometry(rng):
    codes = random_codes(rng, 4, 2 * 9, 0.5, 4)
    colptr, entries = rel16(codes, 2, 4)
    _, fast = by_op("conv_dw")
    x = rng.standard_normal((4, 6, 6)).astype(np.float32)
    with pytest.raises(ValueError, match="depthwise geometry only"):
        _core.conv(fast[0], colptr, entries, 4, random_codebook(rng, 4), np.zeros(4, np.float32), x, 4, 3, 3, 1, 1,
                   1, 1, 2)


@pytest.mark.parametrize("nr,ld_src,nc,ld_dst", [(1, 1, 1, 1), (7, 9, 5, 8), (8, 8, 8, 8), (64, 25088, 25088, 64),
                                                  (64, 200, 131, 72), (130, 70, 70, 130), (3, 2000, 1999, 8),
                                                  (4096, 64, 64, 4096), (9, 16, 0, 16), (0, 16, 16, 8)])
def test_transpose_matches_reference(rng, nr, ld_src, nc, ld_dst):
    """The batched layers' [n, cols] <-> [cols, lanes] reshuffle: 8 x 8 blocks, 64 x 64 tiles,
    ragged edges on both sides, and nothing written outside the [nc, nr] block."""
    src = rng.standard_normal((nr, ld_src)).astype(np.float32)
    want = np.full((nc, ld_dst), 7, np.float32)
    want[:, :nr] = src[:, :nc].T
    ref_name, fast = by_op("transpose")
    np.testing.assert_array_equal(_core.transpose(ref_name, src, nc, ld_dst), want)
    for name in fast:
        np.testing.assert_array_equal(_core.transpose(name, src, nc, ld_dst), want, err_msg=name)


def test_kernel_entry_points_reject_bad_inputs(rng):
    codes = random_codes(rng, 10, 4, 0.5, 3)
    colptr, entries = rel16(codes, 2, 3)
    cb = random_codebook(rng, 3)
    x = np.ones(4, np.float32)
    with pytest.raises(ValueError, match="entries run past rows"):
        _core.spmv_rows("spmv_rows_q_t16__generic", 5, colptr, entries, 3, cb, x)
    with pytest.raises(ValueError, match="no spmv_cols kernel"):
        _core.spmv_cols("spmv_rows_q_t16__generic", 10, colptr, entries, 3, cb, x)
    bad = colptr.copy()
    bad[1] = 1000
    with pytest.raises(ValueError):
        _core.spmv_cols("spmv_cols_q_t16__generic", 10, bad, entries, 3, cb, x)
    with pytest.raises(ValueError, match="x must be"):
        _core.spmv_rows("spmv_rows_q_t16__generic", 10, colptr, entries, 3, cb, np.ones(5, np.float32))
    for bad_tile in (3, 1 << 14):
        with pytest.raises(ValueError, match="tile must be"):
            _core.spmv_cols("spmv_cols_q_t16__generic", 10, colptr, entries, 3, cb, x, tile=bad_tile)
    with pytest.raises(ValueError, match="shares"):
        _core.spmv_rows("spmv_rows_q_t16__generic", 10, colptr, entries, 3, cb, x, shares=0)
    with pytest.raises(ValueError, match="nc <= src.shape"):
        _core.transpose("transpose_f32__ref", np.ones((4, 5), np.float32), 6, 4)
    with pytest.raises(ValueError, match="ld_dst >= src.shape"):
        _core.transpose("transpose_f32__ref", np.ones((4, 5), np.float32), 5, 3)


@pytest.mark.parametrize("n", [0, 1, 7, 15, 16, 17, 63, 64, 65, 127, 128, 129, 200, 1000, 4096 + 13, 1 << 17])
def test_crc32_matches_zlib(rng, n):
    import zlib
    buf = rng.integers(0, 256, n + 3, dtype=np.uint8)
    ref, fast = by_op("crc32")
    for off in (0, 1, 3):  # unaligned starts
        data = buf[off:off + n].tobytes()
        for init in (0, 0xDEADBEEF):
            want = zlib.crc32(data, init)
            for name in [ref] + fast:
                assert _core.crc32(name, data, init) == want, (name, n, off, init)
    # chained: the CRC of a prefix continued over the rest, as zlib does
    data = buf[:n].tobytes()
    for name in fast:
        assert _core.crc32(name, data[n // 3:], _core.crc32(name, data[:n // 3])) == zlib.crc32(data), name


DW_BLOCKS = [  # C, H, W, (kh, kw), (sh, sw), (ph, pb, pw, pr), (dh, dw), density
    (16, 4, 4, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 0.7),    # one full block
    (37, 14, 14, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 0.6),  # stride 2 to 7x7, a partial block
    (40, 1, 1, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 0.7),    # 1x1 map: the centre tap only
    (5, 6, 6, (3, 3), (2, 2), (0, 1, 0, 1), (1, 1), 0.5),     # TF "same" padding folded in
    (9, 7, 5, (3, 3), (1, 1), (1, 1, 1, 1), (2, 1), 0.6),     # dilated rows
    (20, 3, 3, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1), 1.0),    # 25 taps
    (18, 2, 2, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1.0),    # a kept batch norm (1 tap)
    (17, 5, 5, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 0.0),    # every tap pruned: bias + epilogue
]


@pytest.mark.parametrize("case", DW_BLOCKS, ids=str)
@pytest.mark.parametrize("epi", ["none", "res_clamp"])
def test_conv_dw_blocks_match_reference(rng, case, epi):
    """Depthwise convs of small maps, 16 channels per block: every variant against the reference
    and numpy, with channel ranges that cut blocks and the residual + clamp epilogue."""
    C, H, W, (kh, kw), (sh, sw), (ph, pb, pw, pr), (dh, dw), dens = case
    x = rng.standard_normal((C, H, W)).astype(np.float32)
    w = (rng.standard_normal((C, kh * kw)) * (rng.random((C, kh * kw)) < dens)).astype(np.float32)
    bias = rng.standard_normal(C).astype(np.float32)
    xp = np.pad(x, ((0, 0), (ph, pb), (pw, pr)))
    oh = (H + ph + pb - (dh * (kh - 1) + 1)) // sh + 1
    ow = (W + pw + pr - (dw * (kw - 1) + 1)) // sw + 1
    want = np.repeat(bias.astype(np.float64)[:, None, None], oh * ow).reshape(C, oh, ow)
    for k in range(kh * kw):
        ky, kx = k // kw * dh, k % kw * dw
        want += w[:, k, None, None] * xp[:, ky:ky + sh * (oh - 1) + 1:sh, kx:kx + sw * (ow - 1) + 1:sw]
    kw_args = dict(sh=sh, sw=sw, ph=ph, pw=pw, pb=pb, pr=pr, dh=dh, dw=dw)
    if epi == "res_clamp":
        res = rng.standard_normal((C, oh, ow)).astype(np.float32)
        want = np.clip(want + res, -0.5, 1.5)
        kw_args.update(res=res, clamp=(-0.5, 1.5))
    ref_name, fast = by_op("conv_dw_blocks")
    ref = _core.conv_dw_blocks(ref_name, w, bias, x, kh, kw, **kw_args)
    np.testing.assert_allclose(ref, want, rtol=1e-5, atol=1e-5)
    assert fast
    for name in fast:
        for chunk in (0, 7, 16):
            got = _core.conv_dw_blocks(name, w, bias, x, kh, kw, oc_chunk=chunk, **kw_args)
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6, err_msg=f"{name} chunk={chunk}")


def test_conv_dw_blocks_check_their_inputs(rng):
    ref_name, _ = by_op("conv_dw_blocks")
    x = np.zeros((4, 17, 17), np.float32)
    with pytest.raises(ValueError, match="at most 256 pixels"):
        _core.conv_dw_blocks(ref_name, np.zeros((4, 9), np.float32), np.zeros(4, np.float32), x, 3, 3)
    with pytest.raises(ValueError, match=r"w must be \[C, kh \* kw\]"):
        _core.conv_dw_blocks(ref_name, np.zeros((4, 8), np.float32), np.zeros(4, np.float32), x[:, :5, :5], 3, 3)
