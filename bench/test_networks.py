"""Whole networks, batch 1: dcrt infer against the dense numpy (OpenBLAS) forward of the same
dequantized network, in one run. Run:  pytest bench/test_networks.py --benchmark-group-by=param:arch

The ratio table that goes into bench/RESULTS.md comes from `dcrt bench` (see there); this
file is the pytest-benchmark form of the same comparison. No timing is asserted."""
import pytest

import dcrt

from conftest import input_for, threads

ARCHS = ["lenet-300-100", "lenet-5", "alexnet", "vgg16"]


@pytest.mark.parametrize("arch", ARCHS)
def test_dcrt_infer(benchmark, compressed, arch):
    path, rep = compressed(arch)
    m = dcrt.load(path, threads=threads())
    x = input_for(m)
    benchmark.extra_info.update(file_bytes=rep.file_bytes, ratio=round(rep.ratio, 1), threads=m.threads)
    y = benchmark(m.infer, x)
    assert y.shape[0] == 1


@pytest.mark.parametrize("arch", ARCHS)
def test_numpy_dense(benchmark, compressed, arch):
    path, _ = compressed(arch)
    model = dcrt.decompress(path)
    x = input_for(model)
    benchmark(model.forward, x)


@pytest.mark.parametrize("arch", ["alexnet", "vgg16"])
def test_load(benchmark, compressed, arch):
    path, _ = compressed(arch)
    data = open(path, "rb").read()
    benchmark(lambda: dcrt.loads(data, threads=threads()))
