"""Exceptions shared by the pure-Python format code and the native runtime."""


class FormatError(ValueError):
    """A .dcz file (or byte string) is not a valid dcrt container.

    The message names the section and the field that broke the spec
    (docs/format.md), e.g. ``LAYER[2] 'fc6': colptr[17]: decreasing``.
    """


class LimitError(ValueError):
    """A valid .dcz declares a network larger than the limits passed to :func:`dcrt.load`
    (``max_activation``, ``max_work``): the message names the limit, what the file needs and
    the op that needs it."""


class UnsupportedModelError(ValueError):
    """A front end (PyTorch, ONNX) met an op, or a form of one, that dcrt cannot run; the
    message names it, where it is, and what to do."""


class NativeUnavailableError(ImportError):
    """The compiled runtime (dcrt._core) is not importable in this environment."""


class CudaError(RuntimeError):
    """A CUDA call failed; the message carries CUDA's error name and text and the call site."""


class CudaUnavailableError(RuntimeError):
    """``device="cuda"`` was asked for where it cannot run: dcrt was built without its CUDA
    module (no nvcc at build time), or no CUDA device/driver is visible. The message says which."""
