"""The CUDA backend (dcrt._cuda, device="cuda").

Everywhere: the device argument's errors, a clean CudaUnavailableError where there is no GPU or
no CUDA module, and (where CI builds with nvcc: DCRT_EXPECT_CUDA_MODULE=1) that the module was
built and imports without a driver. On a GPU (marked `gpu`, skipped elsewhere): the device
Huffman decoder and layouts against the file's own decoded symbols, and every zoo network's
output against the CPU runtime at several batch sizes, numpy and CuPy in and out.
"""
import os
import threading

import numpy as np
import pytest

import dcrt
from dcrt import zoo

from conftest import tiny_model

gpu = pytest.mark.skipif(not dcrt.cuda_available(), reason="needs a CUDA GPU (dcrt.cuda_available() is False)")


@pytest.fixture(scope="module")
def tiny_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("c") / "tiny.dcz"
    dcrt.compress(tiny_model(), path, density=0.5, progress=False)
    return path.read_bytes()


# ---------------------------------------------------------------- everywhere

@pytest.mark.parametrize("device", ["tpu", "cuda:x", "cuda0", "CUDA", "", 0])
def test_unknown_device_is_a_value_error(tiny_bytes, device):
    with pytest.raises(ValueError, match="device must be 'cpu', 'cuda' or 'cuda:N'"):
        dcrt.loads(tiny_bytes, device=device)


def test_cuda_available_is_a_bool_and_never_raises():
    assert dcrt.cuda_available() in (True, False)


@pytest.mark.skipif(dcrt.cuda_available(), reason="a GPU is present")
def test_cuda_where_unavailable_says_why(tiny_bytes):
    with pytest.raises(dcrt.CudaUnavailableError, match="no CUDA device is visible|built without its CUDA module"):
        dcrt.loads(tiny_bytes, device="cuda")
    with pytest.raises(dcrt.CudaUnavailableError):
        dcrt.loads(tiny_bytes, device="cuda:3")


@pytest.mark.skipif(os.environ.get("DCRT_EXPECT_CUDA_MODULE") != "1",
                    reason="set DCRT_EXPECT_CUDA_MODULE=1 where the build must include dcrt._cuda (CI does)")
def test_cuda_module_is_built_and_imports_without_a_driver():
    from dcrt import _cuda
    n = _cuda.device_count()
    assert isinstance(n, int) and n >= 0
    assert "DeviceModel" in dir(_cuda)


# ---------------------------------------------------------------- on a GPU

def _nets(tmp_path_factory):
    d = tmp_path_factory.mktemp("cz")
    out = {}
    for name, m, dens in [("tiny", tiny_model(), 0.5), ("lenet-300-100", zoo.lenet_300_100(seed=1), 0.08),
                          ("lenet-5", zoo.lenet5(seed=2), 0.1), ("alexnet", zoo.alexnet(seed=3), 0.1)]:
        p = d / f"{name}.dcz"
        dcrt.compress(m, p, density=dens, progress=False)
        out[name] = p
    return out


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    if not dcrt.cuda_available():
        pytest.skip("needs a CUDA GPU")
    return _nets(tmp_path_factory)


@gpu
@pytest.mark.gpu
def test_device_decoder_and_layout_match_the_file(nets):
    from dcrt import format as fmt
    for name, path in nets.items():
        f = fmt.read(path)
        g = dcrt.load(path, device="cuda")
        for i, L in enumerate(f.layers):
            if L.storage != "sparse":
                continue
            codes, gaps = g._m.decoded_symbols(i)
            np.testing.assert_array_equal(np.frombuffer(codes, np.uint8), L.codes, err_msg=f"{name}/{L.name} codes")
            np.testing.assert_array_equal(np.frombuffer(gaps, np.uint8), L.gaps, err_msg=f"{name}/{L.name} gaps")
            rowptr, entries = g._m.rows_layout(i)
            # Expected: rows of (column << 8 | code) in column order, fillers dropped.
            col = np.repeat(np.arange(L.cols), np.diff(L.colptr.astype(np.int64)))  # each entry's column
            r = np.zeros(L.n_entries, np.int64)
            for c in range(L.cols):
                s, e = int(L.colptr[c]), int(L.colptr[c + 1])
                r[s:e] = np.cumsum(L.gaps[s:e].astype(np.int64) + 1) - 1
            keep = L.codes != 0
            order = np.lexsort((col[keep], r[keep]))  # by row, then column
            want = (col[keep][order].astype(np.uint64) << 8) | L.codes[keep][order]
            np.testing.assert_array_equal(np.asarray(entries, np.uint64), want, err_msg=f"{name}/{L.name} rows")
            np.testing.assert_array_equal(np.asarray(rowptr), np.concatenate([[0], np.cumsum(np.bincount(
                r[keep], minlength=L.rows))]), err_msg=f"{name}/{L.name} rowptr")


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("batch", [1, 3, 8, 40])
def test_gpu_matches_cpu_on_the_zoo(nets, batch):
    rng = np.random.default_rng(batch)
    for name, path in nets.items():
        cpu, g = dcrt.load(path), dcrt.load(path, device="cuda")
        x = rng.random((batch, *cpu.input_shape), dtype=np.float32)
        np.testing.assert_allclose(g.infer(x), cpu.infer(x), rtol=1e-4, atol=1e-4, err_msg=f"{name} batch {batch}")
        np.testing.assert_allclose(g.infer(x[0]), cpu.infer(x[0]), rtol=1e-4, atol=1e-4, err_msg=f"{name} single")


@gpu
@pytest.mark.gpu
def test_zero_input_skipping_matches_cpu(nets):
    # Batch 1 with 10% non-zero inputs takes the column (skipping) kernel on FC layers.
    cpu, g = dcrt.load(nets["lenet-300-100"]), dcrt.load(nets["lenet-300-100"], device="cuda")
    rng = np.random.default_rng(0)
    x = rng.random((1, *cpu.input_shape), dtype=np.float32)
    x[rng.random(x.shape) > 0.1] = 0
    np.testing.assert_allclose(g.infer(x), cpu.infer(x), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(g.infer(np.zeros_like(x)), cpu.infer(np.zeros_like(x)), rtol=1e-4, atol=1e-6)


@gpu
@pytest.mark.gpu
def test_cupy_in_cupy_out(nets):
    cupy = pytest.importorskip("cupy")
    cpu, g = dcrt.load(nets["lenet-5"]), dcrt.load(nets["lenet-5"], device="cuda")
    x = np.random.default_rng(5).random((4, *cpu.input_shape), dtype=np.float32)
    y = g.infer(cupy.asarray(x))
    assert isinstance(y, cupy.ndarray) and y.shape == (4, *cpu.output_shape)
    np.testing.assert_allclose(cupy.asnumpy(y), cpu.infer(x), rtol=1e-4, atol=1e-4)
    s = cupy.cuda.Stream(non_blocking=True)
    with s:
        y2 = g.infer(cupy.asarray(x)[::2])  # non-contiguous input, user stream
    s.synchronize()
    np.testing.assert_allclose(cupy.asnumpy(y2), cpu.infer(x[::2]), rtol=1e-4, atol=1e-4)
    with pytest.raises(TypeError, match="float32"):
        g.infer(cupy.zeros((1, *cpu.input_shape), cupy.float64))


@gpu
@pytest.mark.gpu
def test_gpu_errors(nets, tiny_bytes):
    g = dcrt.load(nets["lenet-5"], device="cuda")
    x = np.zeros((3, *g.input_shape), np.float32)
    x[2, 0, 1, 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN or Inf \(sample 2, flat index 30\)"):
        g.infer(x)
    with pytest.raises(ValueError, match="expected shape"):
        g.infer(np.zeros((2, 3), np.float32))
    with pytest.raises(TypeError, match="float32"):
        g.infer(np.zeros((1, *g.input_shape)))
    assert g.infer(np.zeros((1, *g.input_shape), np.float32)).shape == (1, *g.output_shape)  # still usable
    # A corrupt Huffman chunk: the same FormatError as on the CPU.
    data = bytearray(tiny_bytes)
    cpu_err = gpu_err = None
    from conftest import refix_crcs
    for pos in range(len(data) - 64, 256, -7):
        bad = bytearray(data)
        bad[pos] ^= 0x5A
        bad = refix_crcs(bytes(bad))
        try:
            dcrt.loads(bad)
        except dcrt.FormatError as e:
            cpu_err = str(e)
            with pytest.raises(dcrt.FormatError) as ge:
                dcrt.loads(bad, device="cuda")
            gpu_err = str(ge.value)
            if "chunk" in cpu_err:
                break
    assert cpu_err is not None and gpu_err == cpu_err


@gpu
@pytest.mark.gpu
def test_concurrent_infer_on_one_gpu_model(nets):
    g = dcrt.load(nets["alexnet"], device="cuda")
    rng = np.random.default_rng(9)
    xs = [rng.random((int(rng.integers(1, 5)), *g.input_shape), dtype=np.float32) for _ in range(8)]
    want = [g.infer(x) for x in xs]
    got, errors = {}, []

    def work(i):
        try:
            got[i] = g.infer(xs[i])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    for i in range(len(xs)):
        np.testing.assert_allclose(got[i], want[i], rtol=1e-5, atol=1e-6)


@gpu
@pytest.mark.gpu
def test_device_decode_timing_and_stats(nets):
    g = dcrt.load(nets["alexnet"], device="cuda")
    s = g.load_stats
    assert s["symbols_decoded"] > 0 and s["total_s"] > 0 and s["device_bytes"] > 0
    sec, nbytes = g.time_decode(3)
    assert sec > 0 and nbytes == s["symbols_decoded"]
    assert all("cuda" in L["kernel"] for L in g.layers())
