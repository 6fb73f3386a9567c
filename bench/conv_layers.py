"""VGG-16-shaped 3x3 conv layers alone (5-bit codes, the paper's densities), every conv kernel
variant this CPU runs, one thread: ms and useful GMAC/s (stored non-zeros x output pixels).

    python bench/conv_layers.py [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

import dcrt
from dcrt import nn

#: name: (in_c, out_c, height = width, density)
SHAPES = {"64@224": (64, 64, 224, 0.22), "128@112": (128, 128, 112, 0.36), "256@56": (256, 256, 56, 0.3),
          "512@28": (512, 512, 28, 0.3), "512@14": (512, 512, 14, 0.35)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from machine import cpu_line
    kernels = [k["name"] for k in dcrt.kernels() if k["op"] == "conv" and k["supported"] and not k["reference"]
               and k["isa"] != "generic"]
    print(f"CPU: {cpu_line()}\n\nCommand: `python bench/conv_layers.py --threads {args.threads}` (best of 7 pairs "
          "of calls)\n")
    print("| layer | density | " + " | ".join(f"{k} ms (GMAC/s)" for k in kernels) + " |")
    print("|---|---:|" + "---:|" * len(kernels))
    with tempfile.TemporaryDirectory() as d:
        for name, (ci, co, hw, dens) in SHAPES.items():
            path = os.path.join(d, "c.dcz")
            m = nn.he_init(nn.Sequential([nn.Conv2d(ci, co, 3, padding=1, name="c")], input_shape=(ci, hw, hw),
                                         name="c"), seed=0)
            dcrt.compress(m, path, density=dens, bits=5, index_bits=5, progress=False)
            x = np.random.default_rng(0).random((1, ci, hw, hw), dtype=np.float32)
            cells = []
            for k in kernels:
                r = dcrt.load(path, threads=args.threads, kernels={"conv": k})
                r.infer(x)
                ts = []
                for _ in range(7):
                    t = time.perf_counter()
                    r.infer(x)
                    r.infer(x)
                    ts.append((time.perf_counter() - t) / 2)
                macs = r.layers()[0]["nnz"] * hw * hw
                cells.append(f"{min(ts) * 1e3:.2f} ({macs / min(ts) / 1e9:.1f})")
            print(f"| {name} | {dens:.0%} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
