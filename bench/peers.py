"""The peers a user would otherwise pick, each run on the *same* dequantized matrix and input.

Every peer is a factory ``make(w, x) -> callable`` that does its one-off preparation (format
conversion, graph building, inspector analysis) outside the timed call, so the benchmark times
only what a serving loop would repeat. ``w`` is the dense fp32 [rows, cols] matrix (zeros where
pruned), ``x`` the input [batch, cols]; every callable returns [batch, rows] (or its transpose:
the check in ``check_peer`` normalises). A peer whose package is missing raises ``Unavailable``
and its benchmarks are skipped, never failed.
"""
from __future__ import annotations

import glob
import os
import sys

import numpy as np


class Unavailable(RuntimeError):
    pass


def threads() -> int:
    return int(os.environ.get("DCRT_BENCH_THREADS", "2"))


def numpy_dense(w, x):
    wt = np.ascontiguousarray(w)
    return lambda: x @ wt.T


def scipy_csr(w, x):
    try:
        import scipy.sparse as sp
    except ImportError as e:
        raise Unavailable("scipy") from e
    a = sp.csr_matrix(w)
    xt = np.ascontiguousarray(x.T)
    return lambda: a @ xt


def find_mkl() -> str | None:
    """The MKL runtime library the ``mkl`` wheel installed (``<venv>/lib/libmkl_rt.so.N``), else
    the system's; sets ``MKL_RT`` (where sparse_dot_mkl looks first) so that nobody has to know
    to. An ``MKL_RT`` already set is kept."""
    if os.environ.get("MKL_RT"):
        return os.environ["MKL_RT"]
    roots = [sys.prefix, sys.base_prefix, os.environ.get("VIRTUAL_ENV", ""), os.environ.get("CONDA_PREFIX", "")]
    for root in filter(None, dict.fromkeys(roots)):
        found = sorted(glob.glob(os.path.join(root, "lib", "libmkl_rt.so*")), key=len)
        if found:
            os.environ["MKL_RT"] = found[0]
            return found[0]
    import ctypes.util
    name = ctypes.util.find_library("mkl_rt")
    if name:
        os.environ["MKL_RT"] = name
    return name


def mkl_csr(w, x):
    """MKL's sparse BLAS through sparse_dot_mkl (inspector-executor under the hood); the library
    is found by ``find_mkl``."""
    if not find_mkl():
        raise Unavailable("no libmkl_rt.so in this environment's lib/ or on the loader path "
                          "(pip install mkl, part of the [bench] extra)")
    try:
        import scipy.sparse as sp
        from sparse_dot_mkl import dot_product_mkl
    except (ImportError, OSError) as e:
        raise Unavailable(f"sparse_dot_mkl / MKL: {e}") from e
    a = sp.csr_matrix(w)
    xt = np.ascontiguousarray(x.T) if x.shape[0] > 1 else np.ascontiguousarray(x[0])
    return lambda: dot_product_mkl(a, xt)


def _torch():
    try:
        import torch
    except ImportError as e:
        raise Unavailable("torch") from e
    torch.set_num_threads(threads())
    return torch


def torch_dense(w, x):
    torch = _torch()
    wt, xt = torch.from_numpy(np.ascontiguousarray(w)), torch.from_numpy(np.ascontiguousarray(x))

    def f():
        with torch.inference_mode():
            return torch.nn.functional.linear(xt, wt)
    return f


def torch_csr(w, x):
    torch = _torch()
    a = torch.from_numpy(np.ascontiguousarray(w)).to_sparse_csr()
    xt = torch.from_numpy(np.ascontiguousarray(x.T))

    def f():
        with torch.inference_mode():
            return a @ xt
    return f


def onnxruntime_dense(w, x):
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as e:
        raise Unavailable("onnxruntime / onnx") from e
    rows, cols = w.shape
    g = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], "fc",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, cols])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, rows])],
        [numpy_helper.from_array(np.ascontiguousarray(w), "w")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads()
    so.inter_op_num_threads = 1
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feed = {"x": np.ascontiguousarray(x)}
    return lambda: s.run(None, feed)[0]


PEERS = {"numpy-dense": numpy_dense, "scipy-csr": scipy_csr, "mkl-csr": mkl_csr, "torch-dense": torch_dense,
         "torch-csr": torch_csr, "onnxruntime-dense": onnxruntime_dense}


def availability() -> dict:
    """{peer: "ok" | why it is missing}, tried on a tiny problem: every results table says which
    peers ran, so a missing one can never make another look like the best."""
    w = np.eye(4, dtype=np.float32)
    x = np.ones((2, 4), np.float32)
    out = {}
    for name, make in PEERS.items():
        try:
            make(w, x)()
            out[name] = "ok"
        except Unavailable as e:
            out[name] = f"missing: {e}"
        except Exception as e:  # noqa: BLE001 - a peer that is installed but broken
            out[name] = f"broken: {type(e).__name__}: {e}"
    return out


def as_rows_by_batch(y, batch, rows):
    """A peer's output as numpy [batch, rows]."""
    y = y.numpy() if hasattr(y, "numpy") and not isinstance(y, np.ndarray) else y
    y = np.asarray(y.todense() if hasattr(y, "todense") else y, dtype=np.float32)
    if y.shape == (batch, rows):
        return y
    if y.shape == (rows, batch):
        return y.T
    if y.shape == (rows,) and batch == 1:
        return y[None]
    raise AssertionError(f"peer output shape {y.shape}, expected ({batch}, {rows})")
