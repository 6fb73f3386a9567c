"""Every registered transpose kernel on the batched linear layers' reshuffles (issue 15: the
AVX-512 variant beside the AVX2 one): [n, cols] -> [cols, lanes] at batch 64 for VGG-16 fc6
(25088 columns) and fc7 (4096), and back ([rows, lanes] -> [n, rows]), one thread, medians of
interleaved rounds, GB/s counted as bytes read plus written.

    python bench/transpose_kernels.py
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import cpu_line  # noqa: E402

from dcrt import _core  # noqa: E402

CASES = [("fc6 in: 64 x 25088 -> 25088 x 64", 64, 25088, 64), ("fc7 in: 64 x 4096 -> 4096 x 64", 64, 4096, 64),
         ("fc6 out: 4096 x 64 -> 64 x 4096", 4096, 64, 4096)]


def main():
    ks = [k["name"] for k in _core.kernels() if k["op"] == "transpose" and k["supported"] and not k["reference"]]
    print(f"CPU: {cpu_line()}\n\nCommand: `python bench/transpose_kernels.py`\n")
    print("| case | " + " | ".join(ks) + " |")
    print("|---|" + "---:|" * len(ks))
    for label, nr, nc, ld_dst in CASES:
        src = np.random.default_rng(0).random((nr, nc), dtype=np.float32)
        ts = {k: [] for k in ks}
        for _ in range(15):
            for k in ks:
                t = time.perf_counter()
                for _ in range(5):
                    _core.transpose(k, src, nc, ld_dst)
                ts[k].append((time.perf_counter() - t) / 5)
        cells = []
        for k in ks:
            s = float(np.median(ts[k]))
            cells.append(f"{s * 1e6:.0f} µs ({2 * src.nbytes / s / 1e9:.1f} GB/s)")
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
