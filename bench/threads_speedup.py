"""Two-thread speed-up of whole networks at batch 1, back-to-back calls (issue 12: the pool
change must keep it).

    python bench/threads_speedup.py                      # alexnet, vgg16; ~3 min on 2 cores
    python bench/threads_speedup.py --nets alexnet --rounds 5

Per round and network: medians of N back-to-back one-sample calls with threads=1, then with
threads=2, on the zoo network at the paper's densities (seeded random weights). To compare two
builds, run it once per build (pip install . at each commit) on the same machine.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

import dcrt

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gap_latency import compress  # noqa: E402
from machine import cpu_line  # noqa: E402

CALLS = {"alexnet": 30, "vgg16": 6, "lenet-5": 2000, "lenet-300-100": 5000}


def median_ms(m, x, calls):
    m.infer(x)
    m.infer(x)
    ts = []
    for _ in range(calls):
        t0 = time.perf_counter()
        m.infer(x)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)) * 1e3


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", default="alexnet,vgg16")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    print(f"CPU: {cpu_line()}\n")
    print("| network | threads=1 ms (per round) | threads=2 ms (per round) | median speed-up |\n|---|---|---|---:|")
    with tempfile.TemporaryDirectory() as d:
        for arch in args.nets.split(","):
            path = compress(arch, d)
            t1, t2 = [], []
            for _ in range(args.rounds):
                for t, out in ((1, t1), (2, t2)):
                    m = dcrt.load(path, threads=t)
                    x = np.random.default_rng(0).random(m.input_shape, dtype=np.float32)
                    out.append(median_ms(m, x, CALLS.get(arch, 20)))
                    del m
            sp = statistics.median(a / b for a, b in zip(t1, t2))
            print(f"| {arch} | {', '.join(f'{v:.3g}' for v in t1)} | {', '.join(f'{v:.3g}' for v in t2)} | {sp:.2f}× |",
                  flush=True)


if __name__ == "__main__":
    main()
