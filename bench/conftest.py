"""Benchmark fixtures: zoo networks compressed once per session with the paper's settings."""
import os

import numpy as np
import pytest

import dcrt
from dcrt import zoo


@pytest.fixture(scope="session")
def compressed(tmp_path_factory):
    cache = {}

    def get(arch):
        if arch not in cache:
            path = tmp_path_factory.mktemp("dcz") / f"{arch}.dcz"
            p = zoo.PAPER[arch]
            rep = dcrt.compress(zoo.build(arch, seed=0), path, density=p["density"], bits=p["bits"],
                                index_bits=p["index_bits"], progress=False)
            cache[arch] = (path, rep)
        return cache[arch]

    return get


def threads():
    return int(os.environ.get("DCRT_BENCH_THREADS", "2"))


def input_for(model_or_shape, batch=1, seed=0):
    shape = model_or_shape if isinstance(model_or_shape, tuple) else tuple(model_or_shape.input_shape)
    return np.random.default_rng(seed).random((batch,) + shape, dtype=np.float32)


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Every saved run records the CPU it ran on and which peers were there (report.py prints
    both above its tables)."""
    import peers
    from machine import cpu_line
    output_json["dcrt"] = {"cpu": cpu_line(), "peers": peers.availability(), "version": dcrt.__version__}



@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """Warm-up rounds before every benchmark unless the command line says otherwise: without
    them the first entry of each group timed slower than the very same configuration later in
    the group (dcrt on alexnet-fc6, dense input, Zen 4: median 0.896 against 0.697 ms, equal
    minima; with 200 warm-up calls 0.669 against 0.662)."""
    if getattr(config.option, "benchmark_warmup", None) in ("auto", None, False) and \
            "--benchmark-warmup" not in " ".join(config.invocation_params.args):
        config.option.benchmark_warmup = True
        if getattr(config.option, "benchmark_warmup_iterations", 100000) == 100000:
            config.option.benchmark_warmup_iterations = 200
