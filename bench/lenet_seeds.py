"""The LeNet recipes' fidelity over seeds (issue 14): each (network, data set) run with its
default recipe (``dcrt.pipeline.RECIPES``, what ``dcrt pipeline ARCH OUT --data DATA`` runs) for
seeds 0, 1, 2; the accuracy change is the .dcz as run by the native runtime against the
pipeline's own baseline, on the 10k test set.

    python bench/lenet_seeds.py --out bench/RESULTS-lenet-seeds.md [--nets lenet-300-100] [--data fashion-mnist] [--jobs 2]

Targets: every seed within 0.5 points at >= 40x (LeNet-300-100) / >= 39x (LeNet-5), and the mean
change over the seeds within 0.3 points (the margin). The table names the CPU it ran on: training
trajectories differ between CPUs (BLAS summation order), so a result on one CPU does not stand
for another.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import cpu_line  # noqa: E402

TARGET = {"lenet-300-100": 40.0, "lenet-5": 39.0}


def blas_line():
    """numpy's BLAS, its kernel architecture and threads (threadpoolctl, as numpy.show_runtime)."""
    import numpy as np
    try:
        from threadpoolctl import threadpool_info
        info = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    except ImportError:
        info = []
    if not info:
        return f"numpy {np.__version__} (BLAS not identified)"
    i = info[0]
    forced = os.environ.get("OPENBLAS_CORETYPE")
    return (f"{i.get('internal_api')} {i.get('version')}, kernels for {i.get('architecture')}"
            + (f" (forced: OPENBLAS_CORETYPE={forced})" if forced else " (its own pick for this CPU)")
            + f", {i.get('num_threads')} threads")


def one(net, data, seed):
    """One pipeline run; returns (baseline %, native %, rate, seconds)."""
    from dcrt.pipeline import Config, run
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        r = run(Config(arch=net, dataset=data, seed=seed), os.path.join(d, "m.dcz"), progress=False,
                log_fn=lambda *a: None)
    return r.baseline_test, r.native_test, r.report.ratio, time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", default="lenet-300-100,lenet-5")
    ap.add_argument("--data", default="fashion-mnist,mnist-5k")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out")
    ap.add_argument("--blas-core", metavar="NAME",
                    help="run OpenBLAS's kernels for another CPU (OPENBLAS_CORETYPE, e.g. SapphireRapids for the "
                         "Intel Xeon, Haswell for Zen 3/Zen 5): the summation order, hence the trajectory, of that "
                         "CPU's runs, reproduced on this one (the header says which kernels ran)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="runs at once, each with one BLAS thread (2 on 2 cores gets ~1.8x more training through "
                         "than one run with 2 threads; the run times then include that sharing)")
    args = ap.parse_args(argv)
    if args.jobs > 1:  # before numpy starts its thread pool; spawned workers inherit it
        for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[v] = "1"
    if args.blas_core:
        os.environ["OPENBLAS_CORETYPE"] = args.blas_core
    import numpy as np
    import dcrt
    cmd = "python bench/lenet_seeds.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:]))
    lines = [f"CPU: {cpu_line()}", "", f"BLAS: {blas_line()}", "", f"Command: `{cmd.strip()}` (dcrt {dcrt.__version__}, numpy "
             f"{np.__version__}, Python {platform.python_version()}); each row: `dcrt pipeline ARCH OUT --data DATA "
             "--seed S` with the default recipe; "
             + ("one BLAS thread per run, " + str(args.jobs) + " runs at once (the BLAS thread count changes the "
                "summation order, hence the trajectory)" if args.jobs > 1 else "BLAS with its default threads")
             + ".", "",
             "| network | data | seed | baseline | compressed (native) | change | rate | run s |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    summary = []
    jobs = [(net, data, int(seed)) for net in args.nets.split(",") for data in args.data.split(",")
            for seed in args.seeds.split(",")]
    with concurrent.futures.ProcessPoolExecutor(max(1, args.jobs), mp_context=multiprocessing.get_context("spawn")) \
            as pool:
        futures = {job: pool.submit(one, *job) for job in jobs}
        results = {}
        for job in jobs:  # rows in table order, each printed as soon as it and those above it are done
            base, native, ratio, dt = results[job] = futures[job].result()
            lines.append(f"| {job[0]} | {job[1]} | {job[2]} | {base:.2f}% | {native:.2f}% | {native - base:+.2f} | "
                         f"{ratio:.1f}× | {dt:.0f} |")
            print(lines[-1], flush=True)
    for net in args.nets.split(","):
        for data in args.data.split(","):
            rs = [v for k, v in results.items() if k[0] == net and k[1] == data]
            changes, rates = [n - b for b, n, _, _ in rs], [r for _, _, r, _ in rs]
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
