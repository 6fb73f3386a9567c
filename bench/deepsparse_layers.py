"""dcrt against DeepSparse on the FC layers of bench/test_layers.py (same matrices, same inputs),
timed back to back in one run. DeepSparse 1.8 needs numpy 1.26, so it runs in its own
virtualenv as a child process that times itself (deepsparse_peer.py):

    python -m venv ~/ds && ~/ds/bin/pip install deepsparse==1.8.0 onnx
    python bench/deepsparse_layers.py --python ~/ds/bin/python [--batches 1 64]

Prints a Markdown table: medians, DeepSparse / dcrt. Both sides get 2 cores (DCRT_BENCH_THREADS).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import dcrt
from dcrt import nn

sys.path.insert(0, os.path.dirname(__file__))
from test_layers import INPUTS, LAYERS, make_input  # noqa: E402
from peers import threads  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def onnx_gemm(w, batch, path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rows, cols = w.shape
    g = helper.make_graph([helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], "fc",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, cols])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, rows])],
                          [numpy_helper.from_array(np.ascontiguousarray(w), "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, path)


def median_time(fn, min_time):
    fn()
    ts, end = [], time.perf_counter() + min_time
    while len(ts) < 10 or time.perf_counter() < end:
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", required=True, help="the python of DeepSparse's virtualenv")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--inputs", nargs="+", default=["dense"], choices=list(INPUTS))
    ap.add_argument("--min-time", type=float, default=1.0)
    a = ap.parse_args(argv)
    from machine import cpu_line
    print(f"CPU: {cpu_line()}\n\nCommand: `python bench/deepsparse_layers.py "
          f"{' '.join(argv if argv is not None else sys.argv[1:])}` ({threads()} threads both sides)\n")
    print("| layer | batch | input | dcrt ms | DeepSparse ms | DeepSparse / dcrt |")
    print("|---|---:|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as d:
        for name, (rows, cols, density, bits, ibits) in LAYERS.items():
            m = nn.he_init(nn.Sequential([nn.Linear(cols, rows, "fc")], input_shape=(cols,), name=name), seed=0)
            path = os.path.join(d, f"{name}.dcz")
            dcrt.compress(m, path, density=density, bits=bits, index_bits=ibits, progress=False)
            dense = dcrt.decompress(path)["fc"]
            model = dcrt.load(path, threads=threads())
            for batch in a.batches:
                for inp in a.inputs:
                    x = make_input(cols, batch, INPUTS[inp])
                    ref = x @ dense.weight.T
                    np.testing.assert_allclose(model.infer(x) - dense.bias, ref, rtol=1e-4,
                                               atol=1e-3 * max(1.0, float(np.abs(ref).max())))
                    onnx_path = os.path.join(d, f"{name}-{batch}.onnx")
                    onnx_gemm(dense.weight, batch, onnx_path)
                    np.save(os.path.join(d, "x.npy"), x)
                    np.save(os.path.join(d, "ref.npy"), ref)
                    t_dcrt = median_time(lambda: model.infer(x), a.min_time)
                    out = subprocess.run([a.python, os.path.join(HERE, "deepsparse_peer.py"), onnx_path,
                                          os.path.join(d, "x.npy"), os.path.join(d, "ref.npy"), str(threads()),
                                          str(a.min_time)], check=True, capture_output=True, text=True).stdout
                    ds = json.loads(out.strip().splitlines()[-1])
                    if ds["rel_err"] > 1e-3:
                        raise AssertionError(f"DeepSparse output differs on {name} b{batch}: {ds['rel_err']}")
                    print(f"| {name} | {batch} | {inp} | {t_dcrt * 1e3:.3f} | {ds['median_s'] * 1e3:.3f} "
                          f"| **{ds['median_s'] / t_dcrt:.2f}×** |", flush=True)


if __name__ == "__main__":
    main()
