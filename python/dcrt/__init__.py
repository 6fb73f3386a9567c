"""dcrt: a runtime for Deep-Compression networks.

Compress with ``dcrt.compress`` (pure Python), serve with ``dcrt.load(path).infer(x)``
(native code). ``dcrt._core`` is imported only when a model is loaded, so the compressor
works where the extension is not built.
"""
from . import format, graph, huffman, nn, sparse, zoo  # noqa: F401
from .compressor import compress, decompress, prune, quantize, encode, write  # noqa: F401
from .errors import (CudaError, CudaUnavailableError, FormatError, LimitError, NativeUnavailableError,
                     UnsupportedModelError)  # noqa: F401
from .runtime import Model, kernels, load, loads  # noqa: F401
from .cuda import CudaModel, cuda_available  # noqa: F401

__all__ = ["format", "graph", "huffman", "nn", "sparse", "zoo", "compress", "decompress", "prune", "quantize", "encode",
           "write", "FormatError", "LimitError", "UnsupportedModelError", "NativeUnavailableError", "CudaError", "CudaUnavailableError", "Model", "CudaModel",
           "cuda_available", "kernels", "load", "loads", "__version__"]
__version__ = "0.1.0"
