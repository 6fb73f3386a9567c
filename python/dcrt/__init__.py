"""dcrt: a runtime for Deep-Compression networks.

Compress with ``dcrt.compress`` (pure Python), serve with ``dcrt.load(path).infer(x)``
(native code). ``dcrt._core`` is imported only when a model is loaded, so the compressor
works where the extension is not built.
"""
from . import format, huffman, nn, sparse, zoo  # noqa: F401
from .compressor import compress, decompress, prune, quantize, encode, write  # noqa: F401
from .errors import FormatError, NativeUnavailableError  # noqa: F401
from .runtime import Model, load, loads  # noqa: F401

__all__ = ["format", "huffman", "nn", "sparse", "zoo", "compress", "decompress", "prune", "quantize", "encode",
           "write", "FormatError", "NativeUnavailableError", "Model", "load", "loads", "__version__"]
__version__ = "0.1.0"
