"""The LeNet recipes' fidelity over seeds (issue 14): each (network, data set) run with its
default recipe (``dcrt.pipeline.RECIPES``, what ``dcrt pipeline ARCH OUT --data DATA`` runs) for
seeds 0, 1, 2; the accuracy change is the .dcz as run by the native runtime against the
pipeline's own baseline, on the 10k test set.

    python bench/lenet_seeds.py --out bench/RESULTS-lenet-seeds.md [--nets lenet-300-100] [--data fashion-mnist]

Targets: every seed within 0.5 points at >= 40x (LeNet-300-100) / >= 39x (LeNet-5), and the mean
change over the seeds within 0.3 points (the margin). The table names the CPU it ran on: training
trajectories differ between CPUs (BLAS summation order), so a result on one CPU does not stand
for another.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import cpu_line  # noqa: E402

TARGET = {"lenet-300-100": 40.0, "lenet-5": 39.0}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", default="lenet-300-100,lenet-5")
    ap.add_argument("--data", default="fashion-mnist,mnist-5k")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    import numpy as np
    import dcrt
    from dcrt.pipeline import Config, run
    cmd = "python bench/lenet_seeds.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:]))
    lines = [f"CPU: {cpu_line()}", "", f"Command: `{cmd.strip()}` (dcrt {dcrt.__version__}, numpy "
             f"{np.__version__}, Python {platform.python_version()}); each row: `dcrt pipeline ARCH OUT --data DATA "
             "--seed S` with the default recipe.", "",
             "| network | data | seed | baseline | compressed (native) | change | rate | run s |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    summary = []
    for net in args.nets.split(","):
        for data in args.data.split(","):
            changes, rates = [], []
            for seed in (int(s) for s in args.seeds.split(",")):
                t0 = time.perf_counter()
                with tempfile.TemporaryDirectory() as d:
                    r = run(Config(arch=net, dataset=data, seed=seed), os.path.join(d, "m.dcz"), progress=False,
                            log_fn=lambda *a: None)
                dt = time.perf_counter() - t0
                ch = r.native_test - r.baseline_test
                changes.append(ch)
                rates.append(r.report.ratio)
                lines.append(f"| {net} | {data} | {seed} | {r.baseline_test:.2f}% | {r.native_test:.2f}% | "
                             f"{ch:+.2f} | {r.report.ratio:.1f}× | {dt:.0f} |")
                print(lines[-1], flush=True)
            ok = min(changes) >= -0.5 and np.mean(changes) >= -0.3 and min(rates) >= TARGET[net]
            summary.append(f"| {net} | {data} | {np.mean(changes):+.2f} | {min(changes):+.2f} | {min(rates):.1f}× | "
                           f"{'met' if ok else '**not met**'} |")
    lines += ["", "| network | data | mean change | worst change | lowest rate | target (each ≥ −0.5, mean ≥ −0.3, "
                  "rate) |", "|---|---|---:|---:|---:|---|"] + summary
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
