"""Front ends: translators from other frameworks' models into dcrt's graph IR
(:class:`dcrt.graph.GraphNet`). Each imports its framework only when used."""
from __future__ import annotations

import os


def to_graph(model, example_input=None, keep_affine=()):
    """``model`` as something the compressor takes: a GraphNet or nn.Sequential as it is, a
    ``torch.nn.Module`` traced on ``example_input``, or the path of an ``.onnx`` file.
    ``keep_affine``: layer names (PyTorch) whose following batch norm / constant scale stays an
    op of its own instead of being folded into the weights (a quantized layer's shared codebook)."""
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if path.endswith(".onnx"):
            from .onnx import from_onnx
            return from_onnx(path)
        raise ValueError(f"compress: {path!r}: only .onnx files can be imported from a path")
    if hasattr(model, "weighted"):
        return model
    mod = type(model).__module__
    if mod.startswith("torch") or _is_torch_module(model):
        if example_input is None:
            raise ValueError("compress: a PyTorch module needs example_input= (a [1, C, H, W] tensor or array) "
                             "to be traced")
        from .torch import from_torch
        return from_torch(model, example_input, keep_affine=keep_affine)
    raise TypeError(f"compress: cannot import a {type(model).__name__}: pass a dcrt GraphNet or nn.Sequential, a "
                    "torch.nn.Module (with example_input=) or the path of an .onnx file")


def _is_torch_module(obj) -> bool:
    import sys
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)
