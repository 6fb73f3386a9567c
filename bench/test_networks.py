"""Whole networks end to end, batch 1, against the dense peers on the same dequantized network:
numpy (OpenBLAS), ONNX Runtime and PyTorch, in one run; plus load time from bytes.

    pytest bench/test_networks.py --benchmark-json=nets.json && python bench/report.py nets.json

Every peer's output is checked against dcrt's before anything is timed. No timing is asserted.
"""
import numpy as np
import pytest

import dcrt

import export
import peers as P
from conftest import input_for, threads

ARCHS = ["lenet-300-100", "lenet-5", "alexnet", "vgg16"]
PEERS = {"numpy-dense": lambda model, x: (lambda: model.forward(x)),
         "onnxruntime-dense": export.onnxruntime_net, "torch-dense": export.torch_net}
#: dcrt with its own pick and with each other fast conv / batch-1 FC variant this CPU runs.
VARIANTS = [k for k in dcrt.kernels() if k["op"] in ("conv", "spmv_rows") and k["supported"]
            and not k["reference"] and k["isa"] != "generic"]
IMPLS = ["dcrt"] + [f"dcrt:{k['name']}" for k in VARIANTS] + list(PEERS)

_dense = {}


def dense_of(path):
    if str(path) not in _dense:
        _dense[str(path)] = dcrt.decompress(path)
    return _dense[str(path)]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("arch", ARCHS)
def test_net(benchmark, compressed, arch, impl):
    path, rep = compressed(arch)
    m = dcrt.load(path, threads=threads())
    x = input_for(m)
    want = m.infer(x)
    if impl.startswith("dcrt"):
        kernel = impl.partition(":")[2]
        if kernel:
            op = next(k["op"] for k in VARIANTS if k["name"] == kernel)
            m = dcrt.load(path, threads=threads(), kernels={op: kernel})
            np.testing.assert_allclose(m.infer(x), want, rtol=1e-3, atol=1e-4)
        fn = lambda: m.infer(x)  # noqa: E731
    else:
        try:
            fn = PEERS[impl](dense_of(path), x)
        except P.Unavailable as e:
            pytest.skip(f"{impl} unavailable: {e}")
        got = fn()
        got = np.asarray(got.numpy() if hasattr(got, "numpy") else got, np.float32).reshape(want.shape)
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
    benchmark.group = f"net {arch} b1"
    benchmark.extra_info.update(arch=arch, impl=impl, batch=1, dcz_bytes=rep.file_bytes, threads=threads())
    benchmark(fn)


@pytest.mark.parametrize("arch", ["alexnet", "vgg16"])
def test_load(benchmark, compressed, arch):
    path, rep = compressed(arch)
    data = open(path, "rb").read()
    benchmark.group = f"load {arch}"
    benchmark.extra_info.update(arch=arch, impl="dcrt-load", batch=0, dcz_bytes=rep.file_bytes, threads=threads())
    benchmark(lambda: dcrt.loads(data, threads=threads()))
