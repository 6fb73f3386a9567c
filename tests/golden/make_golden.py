"""Regenerate the golden .dcz files and their expected arrays (tiny.dcz: the chain of every 1.0
op; graph.dcz: a DAG of every op 1.2 added). Run only when the format changes on
purpose (then bump docs/format.md's changelog):  python tests/golden/make_golden.py

The model's weights are stored in the .npz too, so the writer test re-encodes from exactly
these inputs and must reproduce golden/tiny.dcz byte for byte.
"""
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import dcrt  # noqa: E402
from conftest import graph_model, tiny_model  # noqa: E402

GRAPH_SETTINGS = dict(density={"stem": 0.7, "asym": 0.5, "down": 0.4}, bits=5, index_bits=3, chunk_symbols=32,
                      storage={"se1": "plain", "se2": "plain", "fc": "plain", "dw": "sparse", "proj": "sparse",
                               "stem": "sparse", "asym": "sparse", "down": "sparse"}, progress=False)
SETTINGS = dict(density={"conv1": 0.6, "conv2": 0.3, "fc1": 0.1}, bits={"conv1": 6, "conv2": 4, "fc1": 5, "fc2": 5},
                index_bits={"conv1": 3, "conv2": 2, "fc1": 2, "fc2": 5}, chunk_symbols=64, storage={"fc2": "plain"},
                progress=False)


def main():
    m = tiny_model(seed=7)
    path = os.path.join(HERE, "tiny.dcz")
    dcrt.compress(m, path, **SETTINGS)
    f = dcrt.format.read(path)
    x = np.random.default_rng(7).random((3,) + m.input_shape, dtype=np.float32)
    arrays = {f"w.{k}": v for k, v in m.state_dict().items()}
    arrays["x"] = x
    arrays["y"] = dcrt.compressor.dcz_to_model(f).forward(x)
    for i, L in enumerate(f.layers):
        if L.storage == "sparse":
            for name in ("colptr", "codes", "gaps", "codebook"):
                arrays[f"L{i}.{name}"] = getattr(L, name)
        else:
            arrays[f"L{i}.weight"] = L.weight
    np.savez(os.path.join(HERE, "tiny_expected.npz"), **arrays)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")
    g = graph_model(seed=7)
    path = os.path.join(HERE, "graph.dcz")
    dcrt.compress(g, path, **GRAPH_SETTINGS)
    x = np.random.default_rng(8).random((3,) + g.input_shape, dtype=np.float32)
    arrays = {f"w.{k}": v for k, v in g.state_dict().items()}
    arrays["x"] = x
    arrays["y"] = dcrt.decompress(path).forward(x)
    np.savez(os.path.join(HERE, "graph_expected.npz"), **arrays)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
