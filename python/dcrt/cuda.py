"""``dcrt.load(path, device="cuda")``: the CUDA backend's Python side.

Array handling only: numpy inputs are copied to the device and the output copied back (numpy
in, numpy out); CuPy inputs (anything with ``__cuda_array_interface__``) are read in place and
the output is a CuPy array on the model's device, computed on CuPy's current stream. The work
happens in ``dcrt._cuda`` (cuda/device_model.cu), which releases the GIL while the GPU runs.
"""
from __future__ import annotations

import re

import numpy as np

from .errors import CudaUnavailableError, FormatError


def _module():
    try:
        from . import _cuda
    except ImportError as e:
        raise CudaUnavailableError(
            "device='cuda': this dcrt was built without its CUDA module (dcrt._cuda): "
            f"{e}. Rebuild where nvcc is on PATH: pip install . (DCRT_CUDA=AUTO finds it)") from e
    return _cuda


def cuda_available() -> bool:
    """True where dcrt's CUDA module is built and at least one CUDA device is visible."""
    try:
        return _module().device_count() > 0
    except CudaUnavailableError:
        return False


def parse_device(device: str) -> int:
    """'cuda' -> 0, 'cuda:N' -> N; anything else raises ValueError."""
    m = re.fullmatch(r"cuda(?::(\d+))?", device)
    if not m:
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return int(m.group(1) or 0)


def load_cuda(data: bytes, device: str) -> "CudaModel":
    index = parse_device(device)
    mod = _module()
    count = mod.device_count()
    if count == 0:
        raise CudaUnavailableError(f"device={device!r}: no CUDA device is visible (no GPU, or no driver)")
    if index >= count:
        raise CudaUnavailableError(f"device={device!r}: only {count} CUDA device(s) visible")
    return CudaModel(mod.DeviceModel(data, index))


def _expected(shape) -> str:
    return "[N, " + ", ".join(map(str, shape)) + "] or [" + ", ".join(map(str, shape)) + "]"


class CudaModel:
    """A compressed network resident on one GPU. Safe to share between threads: concurrent
    ``infer`` calls run on separate streams and workspaces."""

    def __init__(self, native, path=None):
        from .format import parse_meta
        self._m = native
        self.path = path
        self.meta = parse_meta(native.meta_json)
        labels = self.meta.get("labels")
        if labels is not None and len(labels) != int(np.prod(native.output_shape)):
            raise FormatError(f"META: labels: {len(labels)} labels for an output of "
                              f"{int(np.prod(native.output_shape))} values")

    name = property(lambda self: self.meta["name"])
    labels = property(lambda self: self.meta.get("labels"))
    input_shape = property(lambda self: self._m.input_shape)
    output_shape = property(lambda self: self._m.output_shape)
    device = property(lambda self: f"cuda:{self._m.device}")

    @property
    def load_stats(self) -> dict:
        """Seconds parsing (host), uploading, decoding Huffman on the device, building layouts."""
        return self._m.load_stats

    def layers(self) -> list:
        return self._m.layers

    def _batch(self, shape) -> tuple[int, bool]:
        ins = tuple(self.input_shape)
        if tuple(shape) == ins:
            return 1, True
        if len(shape) == len(ins) + 1 and tuple(shape[1:]) == ins:
            return int(shape[0]), False
        raise ValueError(f"infer: expected shape {_expected(ins)}, got [{', '.join(map(str, shape))}]")

    def infer(self, x):
        """Run the network on float32 ``x`` shaped ``[N, *input_shape]`` or ``input_shape``:
        numpy in, numpy out; CuPy in, CuPy out (zero-copy input, current CuPy stream)."""
        if isinstance(x, np.ndarray):
            if x.dtype != np.float32:
                raise TypeError(f"infer: expected a float32 array, got dtype {x.dtype} "
                                "(convert with x.astype(numpy.float32))")
            n, single = self._batch(x.shape)
            xc = np.ascontiguousarray(x)
            out_shape = tuple(self.output_shape) if single else (n, *self.output_shape)
            y = np.empty(out_shape, np.float32)
            if n:
                self._m.infer_ptr(xc.ctypes.data, n, y.ctypes.data, False, 0)
            return y
        cai = getattr(x, "__cuda_array_interface__", None)
        if cai is None:
            raise TypeError(f"infer: expected a numpy or CuPy float32 array, got {type(x).__name__}")
        if cai["typestr"] != "<f4":
            raise TypeError(f"infer: expected a float32 array, got typestr {cai['typestr']}")
        import cupy  # present: x is a device array
        n, single = self._batch(cai["shape"])
        if getattr(getattr(x, "device", None), "id", self._m.device) != self._m.device:
            raise ValueError(f"infer: input is on cuda:{x.device.id}, the model on {self.device}")
        with cupy.cuda.Device(self._m.device):
            xc = cupy.ascontiguousarray(x)
            out_shape = tuple(self.output_shape) if single else (n, *self.output_shape)
            y = cupy.empty(out_shape, cupy.float32)
            if n:
                self._m.infer_ptr(xc.data.ptr, n, y.data.ptr, True, cupy.cuda.get_current_stream().ptr)
        return y

    __call__ = infer

    def time_decode(self, reps: int = 20) -> tuple[float, int]:
        """(seconds per pass, decoded bytes per pass) of the on-device Huffman decoder."""
        return self._m.time_decode(reps)

    def __repr__(self):
        return f"<dcrt.CudaModel {self.name!r} on {self.device} input={list(self.input_shape)}>"
