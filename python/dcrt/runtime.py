"""Python API of the native runtime: ``dcrt.load(path).infer(x)``.

Thin: argument checks, array conversion, errors. The work happens in dcrt._core.
"""
from __future__ import annotations

import os

import numpy as np

from .errors import FormatError, NativeUnavailableError


def _core():
    try:
        from . import _core
    except ImportError as e:  # pragma: no cover - exercised only where the build failed
        raise NativeUnavailableError(
            f"dcrt's native runtime (dcrt._core) is not available: {e}. Reinstall with `pip install .`; "
            "the pure-Python compressor (dcrt.compress / dcrt.decompress) works without it.") from e
    return _core


def _threads(threads):
    if threads is None:
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            return os.cpu_count() or 1
    threads = int(threads)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    return threads


class Model:
    """A compressed network loaded by the native runtime. Safe to share between threads."""

    def __init__(self, native, path=None):
        from .format import parse_meta
        self._m = native
        self.path = path
        self.meta = parse_meta(native.meta_json)
        labels = self.meta.get("labels")
        n_out = int(np.prod(native.output_shape))
        if labels is not None and len(labels) != n_out:
            raise FormatError(f"META: labels: {len(labels)} labels for an output of {n_out} values")

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def labels(self):
        return self.meta.get("labels")

    @property
    def input_shape(self) -> tuple:
        return self._m.input_shape

    @property
    def output_shape(self) -> tuple:
        return self._m.output_shape

    @property
    def threads(self) -> int:
        return self._m.threads

    @property
    def load_stats(self) -> dict:
        """Seconds spent parsing, decoding Huffman streams and building the layout."""
        return self._m.load_stats

    def layers(self) -> list:
        """Per weighted layer: shape, storage, bits, non-zeros and the kernel that runs it."""
        return self._m.layers

    def infer(self, x) -> np.ndarray:
        """Run the network on float32 ``x`` shaped ``[N, *input_shape]`` or ``input_shape``.

        Raises TypeError for another dtype, ValueError for a wrong shape or NaN/Inf.
        The GIL is released while the network runs."""
        if not isinstance(x, np.ndarray):
            raise TypeError(f"infer: expected a numpy float32 array, got {type(x).__name__}")
        return self._m.infer(x)

    __call__ = infer

    def summary(self) -> str:
        """The layer table as text (also printed by ``dcrt info``)."""
        rows = [("op", "type", "output", "storage", "weights", "nnz", "bits w/idx", "kernel")]
        layers = self._m.layers
        for i, op in enumerate(self._m.ops):
            if op["layer"] >= 0:
                L = layers[op["layer"]]
                dens = L["nnz"] / (L["rows"] * L["cols"]) if L["storage"] == "sparse" else 1.0
                rows.append((f"{i}", f"{op['type']} {L['name']}", "x".join(map(str, op["out_shape"])), L["storage"],
                             f"{L['rows'] * L['cols']:,}",
                             f"{L['nnz']:,} ({100 * dens:.1f}%)" if L["storage"] == "sparse" else "-",
                             f"{L['code_bits']}/{L['index_bits']}" if L["storage"] == "sparse" else "32/-",
                             L["kernel"]))
            else:
                rows.append((f"{i}", op["type"], "x".join(map(str, op["out_shape"])), "", "", "", "", ""))
        w = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
        lines = [f"{self.name}: input {list(self.input_shape)} -> output {list(self.output_shape)}, "
                 f"{self.threads} threads"]
        lines += ["  ".join(c.ljust(w[k]) for k, c in enumerate(r)).rstrip() for r in rows]
        return "\n".join(lines)

    def __repr__(self):
        return f"<dcrt.Model {self.name!r} input={list(self.input_shape)} output={list(self.output_shape)}>"


def loads(data, device: str = "cpu", threads: int | None = None):
    """Load a model from the bytes of a .dcz file. Any malformed byte string raises
    :class:`dcrt.FormatError` naming the section and field. ``device``: "cpu" (a :class:`Model`),
    "cuda" or "cuda:N" (a :class:`dcrt.CudaModel`; :class:`dcrt.CudaUnavailableError` where
    there is no CUDA module or device)."""
    if not isinstance(device, str) or not (device == "cpu" or device.startswith("cuda")):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if not isinstance(data, bytes):
        data = bytes(data)
    if device != "cpu":
        from .cuda import load_cuda
        return load_cuda(data, device)
    return Model(_core().Model(data, _threads(threads)))


def load(path, device: str = "cpu", threads: int | None = None):
    """Load a .dcz file for inference. ``threads=None`` uses every core this process may run on
    (CPU); ``device="cuda"`` keeps the model on the GPU (see :func:`loads`)."""
    with open(os.fspath(path), "rb") as f:
        data = f.read()
    m = loads(data, device, threads)
    m.path = os.fspath(path)
    return m
