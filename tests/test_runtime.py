"""dcrt.load(p).infer(x) against the numpy forward of decompress(p): whole zoo networks, each
op type, batch and thread variants, input validation, concurrency and GIL release."""
import threading

import numpy as np
import pytest

import dcrt
from dcrt import zoo
from dcrt.nn import (LRN, AvgPool2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential, Softmax, he_init)

from conftest import tiny_model


def compress_and_load(tmp_path, model, threads=None, **kw):
    path = tmp_path / f"{model.name}.dcz"
    kw.setdefault("progress", False)
    dcrt.compress(model, path, **kw)
    return dcrt.load(path, threads=threads), dcrt.decompress(path)


def assert_close(y, ref, what=""):
    # fp32 with different summation orders: scale the tolerance by the output magnitude
    np.testing.assert_allclose(y, ref, rtol=2e-4, atol=2e-5 * (1 + float(np.abs(ref).max())), err_msg=what)


@pytest.mark.parametrize("arch", ["lenet-300-100", "lenet-5", "alexnet",
                                  pytest.param("vgg16", marks=pytest.mark.slow)])
def test_zoo_network_matches_decompressed_forward(tmp_path, arch):
    model = zoo.build(arch, seed=1)
    p = zoo.PAPER[arch]
    m, ref = compress_and_load(tmp_path, model, density=p["density"], bits=p["bits"], index_bits=p["index_bits"])
    rng = np.random.default_rng(0)
    n = 1 if arch in ("alexnet", "vgg16") else 5
    x = rng.random((n,) + model.input_shape, dtype=np.float32)
    y = m.infer(x)
    assert y.shape == (n, 10 if arch.startswith("lenet") else 1000) and y.dtype == np.float32
    assert_close(y, ref.forward(x), arch)
    # softmax outputs
    np.testing.assert_allclose(y.sum(axis=1), 1, rtol=1e-5)


def single_op_models():
    def seq(layers, shape):
        return he_init(Sequential(layers, input_shape=shape, name="op"), seed=2)
    yield "linear", seq([Linear(37, 23, "fc")], (37,))
    yield "linear_from_3d", seq([Linear(2 * 3 * 4, 5, "fc")], (2, 3, 4))
    yield "conv_stride_pad", seq([Conv2d(3, 5, 3, stride=2, padding=1, name="c")], (3, 11, 8))
    yield "conv_groups", seq([Conv2d(6, 4, (3, 2), stride=(1, 2), padding=(0, 1), groups=2, name="c")], (6, 7, 9))
    yield "conv_1x1", seq([Conv2d(4, 8, 1, name="c")], (4, 5, 5))
    # Enough work that the runtime splits it into (channel chunk x 4-row band) tasks.
    yield "conv_bands", seq([Conv2d(8, 16, 3, padding=1, name="c")], (8, 22, 19))
    for ceil in (True, False):
        yield f"maxpool_ceil{int(ceil)}", seq([MaxPool2d(3, 2, padding=1, ceil_mode=ceil, name="p")], (3, 8, 7))
        yield f"avgpool_ceil{int(ceil)}", seq([AvgPool2d(3, 2, padding=1, ceil_mode=ceil, name="p")], (3, 8, 7))
    yield "avgpool_nopad", seq([AvgPool2d(2, 2, name="p")], (2, 6, 6))
    yield "lrn", seq([LRN(5, 1e-2, 0.75, 1.5, name="n")], (7, 3, 3))
    yield "lrn_beta", seq([LRN(3, 0.1, 0.6, 1.0, name="n")], (6, 3, 4))  # not 0.75: the pow path
    yield "softmax_1d", seq([Softmax("s")], (10,))
    yield "softmax_3d", seq([Softmax("s")], (4, 2, 3))
    yield "relu_flatten", seq([ReLU("r"), Flatten("f")], (3, 2, 2))


OP_CASES = [(name, model, storage) for name, model in single_op_models()
            for storage in (["sparse", "plain"] if model.weighted() else ["auto"])]


@pytest.mark.parametrize("name,model,storage", OP_CASES, ids=[f"{c[0]}-{c[2]}" for c in OP_CASES])
def test_each_op_matches_numpy(tmp_path, rng, name, model, storage):
    m, ref = compress_and_load(tmp_path, model, density=0.5, bits=4, index_bits=2, storage=storage)
    if model.weighted():
        assert [L["storage"] for L in m.layers()] == [storage] * len(model.weighted())
    x = rng.standard_normal((3,) + model.input_shape).astype(np.float32)
    assert_close(m.infer(x), ref.forward(x), name)


@pytest.mark.parametrize("beta", [0.75, 0.6])
def test_lrn_split_over_channels_at_batch_1(tmp_path, rng, beta):
    """At batch 1 LRN's channels are split over the threads (each reads its neighbours'):
    threads=2 equals threads=1 bit for bit and the numpy forward within float error, on the
    square-root form of beta = 0.75 and on pow."""
    model = he_init(Sequential([LRN(5, 1e-3, beta, 2.0, name="n")], input_shape=(24, 30, 30), name="lrn"), seed=1)
    p = tmp_path / "lrn.dcz"
    dcrt.compress(model, p, progress=False)
    one, two = dcrt.load(p, threads=1), dcrt.load(p, threads=2)
    assert two._m.ops[0]["threads_b1"] == 2
    x = rng.standard_normal((1, 24, 30, 30)).astype(np.float32) * 4
    for _ in range(3):  # awake workers take their share
        np.testing.assert_array_equal(two.infer(x), one.infer(x))
    assert_close(one.infer(x), model.forward(x), "lrn")


def test_normalisation_is_applied(tmp_path, rng):
    model = tiny_model()
    m, ref = compress_and_load(tmp_path, model, density=0.5, storage="sparse")
    x = rng.random((2,) + model.input_shape, dtype=np.float32)
    assert_close(m.infer(x), ref.forward(x))


def test_single_sample_and_batch_agree(tmp_path, rng):
    model = zoo.lenet5(seed=4)
    m, _ = compress_and_load(tmp_path, model, density=0.3)
    x = rng.random((9,) + model.input_shape, dtype=np.float32)
    yb = m.infer(x)
    for i in (0, 4, 8):
        y1 = m.infer(x[i])
        assert y1.shape == (10,)
        assert_close(y1, yb[i])
    assert m.infer(x[:0]).shape == (0, 10)
    # non-contiguous input is accepted (copied)
    assert_close(m.infer(np.ascontiguousarray(x[::2])), m.infer(x[::2]))


@pytest.mark.parametrize("first", [9, 1])
def test_any_batch_size_after_any_other(tmp_path, rng, first):
    """Workspaces are reused between calls: a big batch first, then smaller ones (and the
    reverse) must give the same answers. Regression: padded conv inputs of neighbouring
    samples once overlapped."""
    model = zoo.lenet5(seed=9)
    m, ref = compress_and_load(tmp_path, model, threads=2, density=0.3)
    x = rng.random((9,) + model.input_shape, dtype=np.float32)
    m.infer(x[:first])
    for n in range(1, 10):
        assert_close(m.infer(x[:n]), ref.forward(x[:n]), f"n={n} after {first}")


def test_thread_counts_agree(tmp_path, rng):
    model = zoo.lenet_300_100(seed=5)
    path = tmp_path / "l.dcz"
    dcrt.compress(model, path, density=0.5, progress=False)
    x = rng.random((3, 784), dtype=np.float32)
    outs = [dcrt.load(path, threads=t).infer(x) for t in (1, 2, 3, 8)]
    for y in outs[1:]:
        assert_close(y, outs[0])
    assert dcrt.load(path, threads=3).threads == 3
    with pytest.raises(ValueError, match="threads must be in 1..256"):
        dcrt.load(path, threads=0)


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "lenet5.dcz"
    dcrt.compress(zoo.lenet5(seed=6), path, density=0.3, progress=False)
    return dcrt.load(path)


def test_wrong_dtype_is_a_type_error(lenet):
    with pytest.raises(TypeError, match="float32.*float64"):
        lenet.infer(np.zeros((1, 1, 28, 28)))
    with pytest.raises(TypeError, match="float32"):
        lenet.infer(np.zeros((1, 1, 28, 28), np.int32))
    with pytest.raises(TypeError, match="numpy"):
        lenet.infer([[0.0] * 784])


@pytest.mark.parametrize("shape", [(784,), (1, 784), (1, 28, 28, 1), (2, 1, 28), (1, 1, 1, 28, 28), ()])
def test_wrong_shape_is_a_value_error_naming_the_expected_shape(lenet, shape):
    with pytest.raises(ValueError, match=r"expected shape \[N, 1, 28, 28\] or \[1, 28, 28\]"):
        lenet.infer(np.zeros(shape, np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_a_value_error(lenet, bad):
    x = np.zeros((2, 1, 28, 28), np.float32)
    x[1, 0, 3, 4] = bad
    with pytest.raises(ValueError, match=r"NaN or Inf \(sample 1, flat index 88\)"):
        lenet.infer(x)
    assert lenet.infer(np.zeros((1, 1, 28, 28), np.float32)).shape == (1, 10)  # still usable


def test_non_finite_input_in_a_big_batch_names_the_first_bad_sample(lenet):
    # Batches of >= 2^16 floats are checked on all threads; the error still names the first.
    x = np.zeros((100, 1, 28, 28), np.float32)
    x[83, 0, 27, 27] = np.inf
    x[41, 0, 0, 5] = np.nan
    with pytest.raises(ValueError, match=r"NaN or Inf \(sample 41, flat index 5\)"):
        lenet.infer(x)
    x[41, 0, 0, 5] = 0
    with pytest.raises(ValueError, match=r"NaN or Inf \(sample 83, flat index 783\)"):
        lenet.infer(x)


def test_concurrent_infer_on_one_model(lenet):
    rng = np.random.default_rng(7)
    xs = [rng.random((int(rng.integers(1, 6)), 1, 28, 28), dtype=np.float32) for _ in range(16)]
    expected = [lenet.infer(x) for x in xs]
    errors, results = [], {}

    def work(i):
        try:
            for _ in range(20):
                results[i] = lenet.infer(xs[i])
                np.testing.assert_array_equal(results[i], expected[i])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


@pytest.mark.parametrize("cols", [2048, 2049, 5000])
def test_batched_linear_over_column_tiles(tmp_path, rng, cols):
    """Batched sparse linear layers run on 2048-column tiles: tile edges, a one-column last
    tile, and several tiles must all match the dense product."""
    m = he_init(Sequential([Linear(cols, 96, "fc")], input_shape=(cols,), name="wide"), seed=5)
    path = tmp_path / "wide.dcz"
    dcrt.compress(m, path, density=0.05, bits=5, progress=False)
    dense = dcrt.decompress(path)
    x = rng.random((37, cols), dtype=np.float32)
    x[:, rng.random(cols) < 0.3] = 0
    for threads in (1, 2):
        np.testing.assert_allclose(dcrt.load(path, threads=threads).infer(x), dense.forward(x), rtol=1e-4, atol=1e-4)


def test_first_batched_calls_race_to_build_the_rows_layout(tmp_path):
    """Sparse linear layers build their rows layout on the first batched infer: many threads
    making that first call at once must all get the right answer (built exactly once)."""
    path = tmp_path / "l300.dcz"
    dcrt.compress(zoo.build("lenet-300-100", seed=3), path, density=0.2, progress=False)
    dense = dcrt.decompress(path)
    rng = np.random.default_rng(11)
    xs = [rng.random((int(rng.integers(2, 40)), 784), dtype=np.float32) for _ in range(12)]
    want = [dense.forward(x) for x in xs]
    m = dcrt.load(path, threads=2)
    errors = []
    barrier = threading.Barrier(len(xs))

    def work(i):
        try:
            barrier.wait()
            np.testing.assert_allclose(m.infer(xs[i]), want[i], rtol=1e-4, atol=1e-5)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_infer_releases_the_gil(tmp_path):
    """Pure-Python work in the main thread must keep going while another thread is inside
    one long infer call. With the GIL held it would stall (rate ~0) until infer returned."""
    import time
    model = zoo.lenet5(seed=8)
    path = tmp_path / "l.dcz"
    dcrt.compress(model, path, density=0.5, progress=False)
    m = dcrt.load(path, threads=1)
    x = np.random.default_rng(0).random((2048, 1, 28, 28), dtype=np.float32)
    t0, ticks = time.perf_counter(), 0
    while time.perf_counter() - t0 < 0.1:
        ticks += 1
    baseline = ticks / (time.perf_counter() - t0)
    started, done = threading.Event(), threading.Event()

    def run():
        started.set()
        m.infer(x)
        done.set()

    t = threading.Thread(target=run)
    t.start()
    started.wait()
    t0, ticks = time.perf_counter(), 0
    while not done.is_set():
        ticks += 1
        time.perf_counter()  # same loop body as the baseline
    elapsed = time.perf_counter() - t0
    t.join()
    assert elapsed > 0.05, "infer too short to tell"
    assert ticks / elapsed > 0.25 * baseline


def test_summary_and_metadata(tmp_path):
    model = tiny_model()
    m, _ = compress_and_load(tmp_path, model, density=0.5, storage={"fc1": "sparse", "conv1": "sparse", "conv2": "sparse", "fc2": "plain"})
    s = m.summary()
    for word in ("tiny", "conv2d conv1", "lrn", "maxpool", "plain", "sparse", "conv_q_rows__", "5"):
        assert word in s
    assert m.labels == list("abcde") and m.name == "tiny"
    assert m.input_shape == (3, 9, 9) and m.output_shape == (5,)
    assert set(m.load_stats) >= {"parse_s", "decode_s", "total_s"}
    assert "tiny" in repr(m)


def test_unknown_device_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="device must be 'cpu', 'cuda' or 'cuda:N', got 'gpu'"):
        dcrt.loads(b"", device="gpu")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        dcrt.load(tmp_path / "nope.dcz")


def test_every_kernel_variant_through_the_whole_network(tmp_path, rng):
    """load(kernels=...) runs each registered variant this CPU supports in place of the default:
    a conv net and an FC net agree with the reference kernels' result at batch 1 and 5."""
    variants = [k for k in dcrt.kernels() if k["supported"]]
    for arch in ("lenet-5", "lenet-300-100"):
        p = tmp_path / f"{arch}.dcz"
        dcrt.compress(zoo.build(arch, seed=1), p, density=0.3, bits=5, progress=False)
        m = dcrt.load(p, threads=2)
        x = rng.random((5,) + tuple(m.input_shape), dtype=np.float32)
        refs = {k["op"]: k["name"] for k in variants if k["reference"]}
        base = dcrt.load(p, threads=2, kernels={op: refs[op] for op in ("conv", "spmm_rows", "spmv_rows", "spmm")})
        want1, want5 = base.infer(x[:1]), base.infer(x)
        for k in variants:
            if k["op"] in ("conv", "conv_dw", "spmv_rows", "spmv_cols", "spmm", "spmm_rows"):
                got = dcrt.load(p, threads=2, kernels={k["op"]: k["name"]})
                np.testing.assert_allclose(got.infer(x[:1]), want1, rtol=1e-4, atol=1e-5, err_msg=k["name"])
                np.testing.assert_allclose(got.infer(x), want5, rtol=1e-4, atol=1e-5, err_msg=k["name"])


def test_loaded_model_runs_the_picked_batch1_kernels(tmp_path):
    """A model runs, by default, the spmv kernels dcrt.kernels() marks picked (the timed ones),
    and its summary says what was timed."""
    p = tmp_path / "fc.dcz"
    dcrt.compress(zoo.build("lenet-300-100", seed=1), p, density=0.05, bits=5, progress=False)
    m = dcrt.load(p, threads=1, dense_codebook="never")
    picked = {k["op"]: k for k in dcrt.kernels() if k["picked"]}
    kern = m.layers()[0]["kernel"]
    assert picked["spmv_rows"]["name"] in kern and picked["spmv_cols"]["name"] in kern, kern
    line = m.summary().splitlines()[1]
    assert line.startswith("kernels"), line
    for op in ("spmv_rows", "spmv_cols"):
        if picked[op]["ns_per_nz"] is not None:
            assert f"{op} " in line and f"-> {picked[op]['isa']}" in line, line
    # Huffman: each stream by the decoder timed faster at its bits per symbol.
    hs = m.load_stats["huffman_symbols"]
    timed = {k["name"] for k in dcrt.kernels() if k["op"] == "huffman" and k["ns_per_nz"] is not None}
    assert sum(hs.values()) == m.load_stats["symbols_decoded"], hs
    assert set(hs) <= (timed or {picked["huffman"]["name"]}), hs
    if timed:
        assert "huffman " in line and "-> per stream" in line, line
    forced = dcrt.load(p, threads=1, dense_codebook="never", kernels={"huffman": "huffman_decode_table__generic"})
    assert forced.load_stats["huffman_symbols"] == {"huffman_decode_table__generic": m.load_stats["symbols_decoded"]}


def test_kernel_choice_errors_name_the_problem(lenet):
    path = lenet.path
    with pytest.raises(ValueError, match="unknown op 'gemm'"):
        dcrt.load(path, kernels={"gemm": "x"})
    with pytest.raises(ValueError, match="no kernel named 'nope'"):
        dcrt.load(path, kernels={"conv": "nope"})
    with pytest.raises(ValueError, match="is a spmv_rows kernel, not conv"):
        dcrt.load(path, kernels={"conv": "spmv_rows_q_t16__ref"})
    with pytest.raises(TypeError, match="kernels must be a dict"):
        dcrt.load(path, kernels=["conv"])
    for k in dcrt.kernels():
        if not k["supported"]:  # e.g. AVX-512 kernels on Zen 3
            with pytest.raises(ValueError, match="which this CPU does not have"):
                dcrt.load(path, kernels={k["op"]: k["name"]})


@pytest.mark.parametrize("bits", [4, 5, 6, 8])
def test_dense_codebook_path_matches_the_sparse_one(tmp_path, rng, bits):
    """dense_codebook="always" runs batch 1 of every sparse linear layer on the dense codebook
    kernel (each variant this CPU has): same outputs as "never"; "auto" says what it measured."""
    m0 = Sequential([Linear(300, 130, "fc1"), ReLU("r"), Linear(130, 10, "fc2")], input_shape=(300,), name="fc")
    p = tmp_path / "fc.dcz"
    dcrt.compress(he_init(m0, seed=2), p, density=0.4, bits=bits, progress=False)
    x = rng.random((1, 300), dtype=np.float32)
    x[0, ::7] = 0
    want = dcrt.load(p, dense_codebook="never").infer(x)
    for k in dcrt.kernels():
        if k["op"] == "dense_q8" and k["supported"]:
            m = dcrt.load(p, threads=2, dense_codebook="always", kernels={"dense_q8": k["name"]})
            assert all(L["dense_codebook"] for L in m.layers())
            assert k["name"] in m.layers()[0]["plan"]
            np.testing.assert_allclose(m.infer(x), want, rtol=1e-4, atol=1e-5, err_msg=k["name"])
            np.testing.assert_allclose(m.infer(np.repeat(x, 3, 0)), np.repeat(want, 3, 0), rtol=1e-4, atol=1e-5)
            # Beside a dense codebook there is no row form: sparse inputs take the column form.
            for xs in (np.where(rng.random((1, 300)) < 0.03, x, 0).astype(np.float32), np.zeros((1, 300), np.float32)):
                np.testing.assert_allclose(m.infer(xs), dcrt.load(p, dense_codebook="never").infer(xs),
                                           rtol=1e-4, atol=1e-5, err_msg=k["name"])
    auto = dcrt.load(p)
    assert "ns per code" in auto.layers()[0]["dense_codebook_why"]  # 40%: the model was asked
    np.testing.assert_allclose(auto.infer(x), want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="dense_codebook must be 'auto', 'always' or 'never'"):
        dcrt.load(p, dense_codebook="yes")


def test_every_huffman_decoder_loads_the_same_model(tmp_path):
    """Each supported Huffman decoder, forced for every stream, loads the same layouts: the same
    outputs bit for bit, and load_stats counts every symbol under that decoder. Chunks of 64
    symbols give LeNet-300-100's streams 313, 40 and 2 chunks: the 16-lane decoder's groups of
    48 and 16 and its BMI2 remainder all run, in jobs split over two threads."""
    p = tmp_path / "l300.dcz"
    dcrt.compress(zoo.build("lenet-300-100", seed=2), p, density=0.08, bits=5, chunk_symbols=64, progress=False)
    x = np.random.default_rng(0).random((3, 784), dtype=np.float32)
    want = None
    for k in dcrt.kernels():
        if k["op"] != "huffman" or not k["supported"]:
            continue
        m = dcrt.load(p, threads=2, kernels={"huffman": k["name"]})
        assert m.load_stats["huffman_symbols"] == {k["name"]: m.load_stats["symbols_decoded"]}, k["name"]
        got = m.infer(x)
        if want is None:
            want = got
        np.testing.assert_array_equal(got, want, err_msg=k["name"])
