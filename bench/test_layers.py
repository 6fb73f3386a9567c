"""Fully connected layers of VGG-16 and AlexNet at the paper's densities and bit widths: dcrt
against every peer on the same dequantized matrix and the same input, in one run.

    pip install '.[bench]'            # scipy, sparse_dot_mkl + mkl, onnxruntime, torch==2.13.0
    pytest bench/test_layers.py --benchmark-json=layers.json
    python bench/report.py layers.json     # the ratio table (bench/RESULTS-layers.md)

Inputs: ``dense`` (uniform (0, 1], no zeros), ``relu50`` (half zeros), ``relu18`` (18% non-zero:
what VGG-16 fc6 sees after ReLU, the EIE paper's figure). Missing peers are skipped. Outputs are
checked against dcrt's before anything is timed; no timing is asserted.
"""
import numpy as np
import pytest

import dcrt
from dcrt import nn

import peers as P

#: name: (rows, cols, density, codebook bits, relative-index bits) -- the paper's tables 4-5
LAYERS = {
    "vgg16-fc6": (4096, 25088, 0.04, 5, 5),
    "vgg16-fc7": (4096, 4096, 0.04, 5, 5),
    "vgg16-fc8": (1000, 4096, 0.23, 5, 5),
    "alexnet-fc6": (4096, 9216, 0.09, 5, 4),
    "alexnet-fc7": (4096, 4096, 0.09, 5, 4),
    "alexnet-fc8": (1000, 4096, 0.25, 5, 4),
}
INPUTS = {"dense": 1.0, "relu50": 0.5, "relu18": 0.18}
BATCHES = [1, 64]
#: dcrt with the runtime's own pick, and with every other fast variant this CPU runs of the
#: kernels these layers use ("dcrt:<kernel>": the AVX2 kernels on an AVX-512 machine, say).
VARIANTS = [k for k in dcrt.kernels() if k["op"] in ("spmv_rows", "spmv_cols", "spmm_rows") and k["supported"]
            and not k["reference"] and k["isa"] != "generic"]
IMPLS = ["dcrt"] + [f"dcrt:{k['name']}" for k in VARIANTS] + list(P.PEERS)


def make_input(cols, batch, density, seed=0):
    rng = np.random.default_rng(seed)
    x = (1.0 - rng.random((batch, cols), dtype=np.float32))  # (0, 1]: no accidental zeros
    if density < 1.0:
        x[rng.random((batch, cols)) >= density] = 0.0
    return x


@pytest.fixture(scope="session")
def layer_file(tmp_path_factory):
    cache = {}

    def get(name):
        if name not in cache:
            rows, cols, density, bits, ibits = LAYERS[name]
            m = nn.he_init(nn.Sequential([nn.Linear(cols, rows, "fc")], input_shape=(cols,), name=name), seed=0)
            path = tmp_path_factory.mktemp("layers") / f"{name}.dcz"
            rep = dcrt.compress(m, path, density=density, bits=bits, index_bits=ibits, progress=False)
            w = dcrt.decompress(path)["fc"].weight
            cache[name] = (path, rep, w)
        return cache[name]

    return get


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("inp", list(INPUTS))
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("layer", list(LAYERS))
def test_fc(benchmark, layer_file, layer, batch, inp, impl):
    path, rep, w = layer_file(layer)
    rows, cols = w.shape
    x = make_input(cols, batch, INPUTS[inp])
    if impl.startswith("dcrt"):
        kernel = impl.partition(":")[2]
        op = next((k["op"] for k in VARIANTS if k["name"] == kernel), None)
        if kernel and op not in (("spmv_rows", "spmv_cols") if batch == 1 else ("spmm_rows",)):
            pytest.skip(f"{kernel} does not run at batch {batch}")
        model = dcrt.load(path, threads=P.threads(), kernels={op: kernel} if kernel else None)
        fn = lambda: model.infer(x)  # noqa: E731
    else:
        try:
            fn = P.PEERS[impl](w, x)
        except P.Unavailable as e:
            pytest.skip(f"{impl} unavailable: {e}")
    # Same numbers first (dcrt adds the bias; the peers' plain products do not).
    want = x.astype(np.float64) @ w.T.astype(np.float64)
    got = P.as_rows_by_batch(fn(), batch, rows)
    if impl.startswith("dcrt"):
        got = got - _bias(path)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3 * max(1.0, float(np.abs(want).max())))
    benchmark.group = f"{layer} b{batch} {inp}"
    benchmark.extra_info.update(layer=layer, batch=batch, input=inp, impl=impl, rows=rows, cols=cols,
                                nnz=int(np.count_nonzero(w)), dcz_bytes=rep.file_bytes,
                                dense_flops=2 * rows * cols * batch, threads=P.threads())
    benchmark(fn)


_biases = {}


def _bias(path):
    key = str(path)
    if key not in _biases:
        _biases[key] = dcrt.decompress(path)["fc"].bias
    return _biases[key]
