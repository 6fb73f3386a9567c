"""Precision modes (load(precision="int8"|"bf16")): the dense codebook at batch 1 in int8 (VNNI)
or bf16 (AVX512-BF16), each kernel against its reference twin and the twins against numpy
models of the arithmetic written here from the documented rules (dense_q8.hpp)."""
from __future__ import annotations

import numpy as np
import pytest

import dcrt
from dcrt import _core
from dcrt.nn import Linear, ReLU, Sequential, he_init

from conftest import random_codebook, random_codes
from test_kernels import rel16

KERNELS = _core.kernels()


def variants(op):
    ks = [k for k in KERNELS if k["op"] == op]
    ref = [k["name"] for k in ks if k["reference"]]
    assert len(ref) == 1
    return ref[0], [k["name"] for k in ks if not k["reference"] and k["supported"]]


def np_bf16(x):
    """bf16 bits of float32 x, nearest even; NaN stays a quiet NaN."""
    u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF
    r = np.where(nan, (u >> 16) | 0x40, r)
    return r.astype(np.uint16)


def bf16_to_f32(b):
    return (b.astype(np.uint32) << 16).view(np.float32)


def np_quantize_u8(x):
    """The documented input rule: 255 steps from 0 where nothing is negative, else 127 steps a
    side of 128; non-finite values: ignored by the range, NaN on the zero point, inf clamped."""
    fin = x[np.isfinite(x)]
    lo = min(0.0, float(fin.min())) if fin.size else 0.0
    hi = max(0.0, float(fin.max())) if fin.size else 0.0
    if lo >= 0:
        scale, zero, qmin, qmax = (np.float32(hi) / np.float32(255) if hi > 0 else np.float32(1)), 0, 0, 255
    else:
        scale, zero, qmin, qmax = np.float32(max(-lo, hi)) / np.float32(127), 128, -127, 127
    v = x * (np.float32(1) / np.float32(scale))
    with np.errstate(invalid="ignore"):
        t = np.where(np.isnan(v), 0, np.clip(np.rint(v), qmin, qmax))
    return (t.astype(np.int32) + zero).astype(np.uint8), np.float32(scale), zero


def np_dense_i8(codes, cb, x):
    """y = float32(sum q * wq - zero * rowsum) * float32(scale * qscale), exact integer sums."""
    amax = np.float32(np.abs(cb[np.isfinite(cb)]).max()) if cb.size else np.float32(0)
    qscale = amax / np.float32(127) if amax > 0 else np.float32(1)
    qcb = np.clip(np.rint(cb / qscale), -127, 127).astype(np.int64)
    qcb[0] = 0
    q, scale, zero = np_quantize_u8(x)
    w = qcb[codes]
    acc = w @ q.astype(np.int64) - zero * w.sum(1)
    return acc.astype(np.float32) * np.float32(scale * qscale)


SHAPES = [  # rows, cols, density, code_bits, index_bits
    (1, 1, 1.0, 1, 1), (5, 17, 0.5, 2, 1), (33, 64, 0.3, 3, 2), (37, 100, 0.6, 4, 4), (9, 65, 0.7, 5, 3),
    (20, 130, 0.5, 6, 4), (13, 200, 0.4, 7, 5), (40, 257, 0.3, 8, 5), (300, 40, 0.0, 5, 5), (2100, 300, 0.05, 5, 2)]
XKINDS = ["signed", "relu", "half_zero", "all_zero", "one_hot"]


def case(rng, shape, xkind):
    rows, cols, dens, cb_bits, ib = shape
    codes = random_codes(rng, rows, cols, dens, cb_bits, empty_cols=(0,) if cols > 2 else ())
    colptr, entries = rel16(codes, ib, cb_bits)
    cb = random_codebook(rng, cb_bits)
    x = rng.standard_normal(cols).astype(np.float32)
    if xkind == "relu":
        x = np.maximum(x, 0)
    elif xkind == "half_zero":
        x[rng.random(cols) < 0.5] = 0
    elif xkind == "all_zero":
        x[:] = 0
    elif xkind == "one_hot":
        x[:] = 0
        x[cols // 2] = 3.5
    return rows, cols, cb_bits, codes, colptr, entries, cb, x


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("xkind", XKINDS)
def test_dense_i8_kernels_give_the_same_bits(rng, shape, xkind):
    """int8 sums are exact: every kernel, the reference and a numpy model of the rule agree bit
    for bit, on every code width (vpermb, vpermi2b, the 8-bit blend), packed codes and bytes,
    row blocks and ranges."""
    rows, cols, cb_bits, codes, colptr, entries, cb, x = case(rng, shape, xkind)
    ref_name, fast = variants("dense_i8")
    ref = _core.dense_i8(ref_name, rows, colptr, entries, cb_bits, cb, x)
    np.testing.assert_array_equal(ref, np_dense_i8(codes, cb, x))
    r0, r1 = rows // 3, rows - rows // 5
    # Codes of <= 7 bits run packed (8 codes in code_bits bytes) in the runtime; both layouts.
    np.testing.assert_array_equal(_core.dense_i8(ref_name, rows, colptr, entries, cb_bits, cb, x, pack=False), ref)
    for name in fast:
        for pack in (True, False):
            got = _core.dense_i8(name, rows, colptr, entries, cb_bits, cb, x, pack=pack)
            np.testing.assert_array_equal(got, ref, err_msg=f"{name} pack={pack}")
            part = _core.dense_i8(name, rows, colptr, entries, cb_bits, cb, x, r0=r0, r1=r1, pack=pack)
            np.testing.assert_array_equal(part[r0:r1], ref[r0:r1], err_msg=name)
            assert not part[:r0].any() and not part[r1:].any()
    # Against the fp32 product: each weight off by at most half a step of the codebook's scale
    # and each input by half a step of its own.
    exact = cb[codes].astype(np.float64) @ x.astype(np.float64)
    wstep = np.abs(cb).max() / 127
    xstep = (np.abs(x).max() / (255 if x.min() >= 0 else 127)) if x.any() else 0
    bound = 0.5 * (wstep * np.abs(x).sum() + xstep * np.abs(cb[codes]).sum(1) + wstep * xstep * cols) + 1e-5
    assert np.all(np.abs(ref - exact) <= bound * 1.01 + 1e-6 * np.abs(exact))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("xkind", XKINDS)
def test_dense_bf16_kernels_match_the_reference(rng, shape, xkind):
    """bf16: codebook and input rounded to bf16 (nearest even), products exact, fp32 sums."""
    rows, cols, cb_bits, codes, colptr, entries, cb, x = case(rng, shape, xkind)
    ref_name, fast = variants("dense_bf16")
    ref = _core.dense_bf16(ref_name, rows, colptr, entries, cb_bits, cb, x)
    wb, xb = bf16_to_f32(np_bf16(cb)).astype(np.float64), bf16_to_f32(np_bf16(x)).astype(np.float64)
    model = wb[codes] @ xb
    np.testing.assert_allclose(ref, model, rtol=1e-6, atol=1e-6)
    mag = np.abs(wb[codes]) @ np.abs(xb)
    r0, r1 = rows // 3, rows - rows // 5
    for name in fast:
        got = _core.dense_bf16(name, rows, colptr, entries, cb_bits, cb, x)
        assert np.all(np.abs(got - model) <= 2e-7 * (cols + 4) * mag + 1e-30), name  # fp32 sums of cols terms
        part = _core.dense_bf16(name, rows, colptr, entries, cb_bits, cb, x, r0=r0, r1=r1)
        np.testing.assert_array_equal(part[r0:r1], got[r0:r1], err_msg=name)
        assert not part[:r0].any() and not part[r1:].any()
    # Against fp32: each operand off by at most half its last place, 2^-8 of itself (7 stored bits).
    exact = cb[codes].astype(np.float64) @ x.astype(np.float64)
    assert np.all(np.abs(ref - exact) <= (2 * 2.0 ** -8 + 2.0 ** -16) * mag * 1.01 + 1e-6)


def test_input_rounding_rules():
    x = np.array([0, 1, -1, 0.5, 2.5, 1e-30, -0.0, 3e38, -3e38, np.inf, -np.inf, np.nan], np.float32)
    for v in (x, np.abs(x), np.zeros(5, np.float32), np.array([np.nan, np.inf], np.float32),
              np.linspace(-3, 7, 1001, dtype=np.float32), np.linspace(0, 1, 256, dtype=np.float32)):
        q, scale, zero = _core.quantize_input_u8(v)
        wq, ws, wz = np_quantize_u8(v)
        assert (scale, zero) == (ws, wz)
        np.testing.assert_array_equal(q, wq)
    q, scale, zero = _core.quantize_input_u8(np.array([0, 1, 2, 255], np.float32))
    assert zero == 0 and scale == 1 and list(q) == [0, 1, 2, 255]  # after a ReLU: 255 steps from 0
    q, scale, zero = _core.quantize_input_u8(np.array([-127, 0, 5, 127], np.float32))
    assert zero == 128 and scale == 1 and list(q) == [1, 128, 133, 255]
    # bf16: nearest even, ties to even, inf and NaN kept.
    b = np.array([1.0, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -9, -2.0, np.inf, -np.inf, np.nan, 3.4e38, 1e-40],
                 np.float32)
    np.testing.assert_array_equal(_core.round_bf16(b), np_bf16(b))
    assert list(_core.round_bf16(b[:4])) == [0x3F80, 0x3F80, 0x3F82, 0x3F80]
    rng = np.random.default_rng(0)
    r = rng.standard_normal(100000).astype(np.float32) * np.float32(10.0) ** rng.integers(-30, 30, 100000)
    np.testing.assert_array_equal(_core.round_bf16(r.astype(np.float32)), np_bf16(r))


def test_kernel_entry_points_check_their_inputs(rng):
    rows, cols, cb_bits, codes, colptr, entries, cb, x = case(rng, (8, 20, 0.5, 4, 3), "signed")
    ref_name, _ = variants("dense_i8")
    with pytest.raises(ValueError, match="x must be"):
        _core.dense_i8(ref_name, rows, colptr, entries, cb_bits, cb, x[:5])
    with pytest.raises(ValueError, match="r0 <= r1"):
        _core.dense_i8(ref_name, rows, colptr, entries, cb_bits, cb, x, r0=5, r1=3)
    with pytest.raises(ValueError, match="no dense_i8 kernel"):
        _core.dense_i8("dense_bf16__ref", rows, colptr, entries, cb_bits, cb, x)
    wide = np.zeros(65537 + 1, np.uint32)
    with pytest.raises(ValueError, match="at most 65536 columns"):
        _core.dense_i8(ref_name, 1, wide, np.zeros(0, np.uint16), 1, np.zeros(2, np.float32),
                       np.zeros(65537, np.float32))


@pytest.fixture(scope="module")
def fc_file(tmp_path_factory):
    m0 = Sequential([Linear(300, 130, "fc1"), ReLU("r"), Linear(130, 10, "fc2")], input_shape=(300,), name="fc")
    p = tmp_path_factory.mktemp("prec") / "fc.dcz"
    dcrt.compress(he_init(m0, seed=2), p, density=0.4, bits=5, progress=False)
    return p


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_precision_mode_through_the_runtime(fc_file, rng, precision):
    """Batch 1 of each dense-codebook layer runs in the mode, with every kernel this CPU has;
    outputs close to fp32, int8 the same bits on every kernel and thread count; batches stay
    fp32; summary() and layers() say what runs in which."""
    x = rng.standard_normal((1, 300)).astype(np.float32)
    fp32 = dcrt.load(fc_file, dense_codebook="always")
    want = fp32.infer(x)
    op = "dense_i8" if precision == "int8" else "dense_bf16"
    outs = []
    for k in dcrt.kernels():
        if k["op"] != op or not k["supported"]:
            continue
        for threads in (1, 2):
            m = dcrt.load(fc_file, threads=threads, dense_codebook="always", precision=precision, kernels={op: k["name"]})
            assert m.precision == precision
            assert [L["precision"] for L in m.layers()] == [precision] * 2
            assert k["name"] in m.layers()[0]["plan"] and k["name"] in m.layers()[0]["kernel"]
            if precision == "int8":  # 5-bit codes: packed, the bytes freed
                assert "5 bits per weight" in m.layers()[0]["plan"]
                assert m.layers()[0]["layout_bytes"] < fp32.layers()[0]["layout_bytes"]
            assert f"precision {precision}: batch 1 of fc1, fc2" in m.summary()
            y = m.infer(x)
            outs.append(y)
            err = np.abs(y - want).max() / np.abs(want).max()
            assert 0 < err < (0.05 if precision == "int8" else 0.02), (k["name"], err)
            # Batches run the fp32 rows form: the same as the fp32 model's.
            np.testing.assert_array_equal(m.infer(np.repeat(x, 3, 0)), fp32.infer(np.repeat(x, 3, 0)))
    assert outs
    if precision == "int8":
        for y in outs[1:]:
            np.testing.assert_array_equal(y, outs[0])
    # fp32 is the default, and the same as asking for it.
    np.testing.assert_array_equal(dcrt.load(fc_file, dense_codebook="always", precision="fp32").infer(x), want)
    assert "precision" not in fp32.summary().splitlines()[1]


def test_precision_argument_errors(fc_file):
    for bad in ("fp16", "INT8", 8, None):
        with pytest.raises(ValueError, match="precision must be 'fp32', 'bf16' or 'int8'"):
            dcrt.load(fc_file, precision=bad)
    with pytest.raises(ValueError, match="CPU mode"):
        dcrt.load(fc_file, device="cuda", precision="int8")


def test_precision_mode_without_dense_codebook_layers_says_so(fc_file, rng):
    m = dcrt.load(fc_file, dense_codebook="never", precision="int8")
    assert [L["precision"] for L in m.layers()] == ["fp32", "fp32"]
    assert "no layer runs in it" in m.summary()
    x = rng.standard_normal((1, 300)).astype(np.float32)
    np.testing.assert_array_equal(m.infer(x), dcrt.load(fc_file, dense_codebook="never").infer(x))
