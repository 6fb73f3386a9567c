"""One-sample latency of spaced calls: the thread pool's idle penalty (issue 12).

Serving code sends requests with gaps between them, so a worker thread that has gone to
sleep must never cost more than the parallelism it brings. For each network this times
`infer` on one sample after a gap of 0, 0.1, 1 and 10 ms (by default time.sleep: the
calling thread blocks as a serving thread waiting on its socket does; --gap spin busy-waits
instead), with threads=1 and the default
thread count, the configurations interleaved call by call so that drift hits both alike.

    python bench/gap_latency.py --out bench/RESULTS-threads.md   # ~3 min on 2 cores

Prints and writes a markdown table (median and p90 in microseconds, and default/threads=1),
headed by the CPU it ran on and this command.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import numpy as np

import dcrt
from dcrt import zoo
from machine import cpu_line

GAPS_MS = (0.0, 0.1, 1.0, 10.0)


def spin(seconds: float):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def measure(models: dict, x, gap_s: float, calls: int, wait=time.sleep) -> dict:
    """{config: [latency s]}: the configs take turns, one call each, after the same gap."""
    out = {k: [] for k in models}
    for m in models.values():  # warm: first batched/unbatched call paths, pages touched
        for _ in range(3):
            m.infer(x)
    for _ in range(calls):
        for k, m in models.items():
            if gap_s:
                wait(gap_s)
            t0 = time.perf_counter()
            m.infer(x)
            out[k].append(time.perf_counter() - t0)
    return out


def compress(arch: str, d: str) -> str:
    path = os.path.join(d, f"{arch}.dcz")
    p = zoo.PAPER[arch]
    dcrt.compress(zoo.build(arch, seed=0), path, density=p["density"], bits=p["bits"], index_bits=p["index_bits"],
                  progress=False)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", default="lenet-300-100,lenet-5,alexnet")
    ap.add_argument("--calls", type=int, default=0, help="calls per cell (default: by network size)")
    ap.add_argument("--gap", choices=("sleep", "spin"), default="sleep",
                    help="how the caller waits between calls: sleep (a server blocked on its socket) or spin")
    ap.add_argument("--out", help="write the markdown table here")
    args = ap.parse_args(argv)
    default_threads = len(os.sched_getaffinity(0))
    lines = ["| network | gap ms | threads=1 µs (p50 / p90) | "
             f"default ({default_threads}) µs (p50 / p90) | default / threads=1 |", "|---|---:|---:|---:|---:|"]
    worst = 0.0
    with tempfile.TemporaryDirectory() as d:
        for arch in args.nets.split(","):
            path = compress(arch, d)
            models = {"1": dcrt.load(path, threads=1), "default": dcrt.load(path)}
            x = np.random.default_rng(0).random(models["1"].input_shape, dtype=np.float32)
            one = models["1"]
            t = min(measure({"1": one}, x, 0.0, 20)["1"])
            calls = args.calls or int(min(400, max(30, 2.0 / (t + 0.002))))
            for gap in GAPS_MS:
                r = measure(models, x, gap / 1000, calls, time.sleep if args.gap == "sleep" else spin)
                p50 = {k: float(np.median(v)) * 1e6 for k, v in r.items()}
                p90 = {k: float(np.percentile(v, 90)) * 1e6 for k, v in r.items()}
                ratio = p50["default"] / p50["1"]
                worst = max(worst, ratio)
                lines.append(f"| {arch} | {gap:g} | {p50['1']:.1f} / {p90['1']:.1f} | "
                             f"{p50['default']:.1f} / {p90['default']:.1f} | {ratio:.2f}× |")
                print(lines[-1], flush=True)
    head = [f"CPU: {cpu_line()}", "",
            f"Command: `python bench/gap_latency.py{' ' + ' '.join(argv if argv is not None else sys.argv[1:])}`"
            f" (dcrt {dcrt.__version__}, Python {platform.python_version()}); one sample per call, "
            f"the gap a {'time.sleep' if args.gap == 'sleep' else 'busy wait'} before each call, configurations "
            "interleaved call by call.", ""]
    text = "\n".join(head + lines + ["", f"Worst default / threads=1 (medians): {worst:.2f}×", ""])
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
