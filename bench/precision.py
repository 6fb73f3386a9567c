"""Precision modes (issue 15, item 5): what ``load(..., precision="int8"|"bf16")`` costs in
accuracy and buys in speed, against fp32 in the same run.

    python bench/precision.py --out bench/RESULTS-precision.md [--lenet l300.dcz:fashion-mnist ...]

Speed: the fully connected layers of VGG-16 and AlexNet at the paper's densities (those of
bench/test_layers.py), batch 1, dense and half-zero input, each layer loaded as fp32 (the
runtime's own pick of form), and in each mode with the cost model's pick ("auto") and with the
dense codebook forced ("always"); medians of interleaved rounds. Accuracy: trained LeNets
(``dcrt pipeline ... OUT`` files given with --lenet PATH:DATASET), the 10k test set one sample
at a time (the modes run at batch 1), with the dense codebook forced so that the mode runs on
every linear layer, and with the cost model's pick.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import cpu_line  # noqa: E402

import dcrt  # noqa: E402
from dcrt import nn  # noqa: E402

from test_layers import LAYERS  # noqa: E402  (the paper's FC layers: rows, cols, density, bits, index bits)

CONFIGS = [("fp32", "auto"), ("fp32", "always"), ("int8", "auto"), ("int8", "always"), ("bf16", "auto"),
           ("bf16", "always")]


def make_input(cols, density, seed=0):
    rng = np.random.default_rng(seed)
    x = (1.0 - rng.random((1, cols), dtype=np.float32))
    if density < 1.0:
        x[rng.random((1, cols)) >= density] = 0.0
    return x


def median_us(models, x, rounds, calls):
    """Per model: the median over `rounds` interleaved rounds of the mean of `calls` calls."""
    per = [[] for _ in models]
    for m in models:
        for _ in range(20):
            m.infer(x)
    for _ in range(rounds):
        for i, m in enumerate(models):
            t0 = time.perf_counter()
            for _ in range(calls):
                m.infer(x)
            per[i].append((time.perf_counter() - t0) / calls * 1e6)
    return [float(np.median(p)) for p in per]


def speed(args, lines):
    lines += ["## Speed: batch 1, fully connected layers at the paper's densities", "",
              f"{args.threads} threads; µs per call through Python (median of {args.rounds} interleaved rounds of "
              f"{args.calls} calls); `form` is what batch 1 ran (d = dense codebook, s = sparse row/column form); "
              "error: max |y - y_fp32| / max |y_fp32| against the fp32 load's output.", "",
              "| layer | input | " + " | ".join(f"{p} {d}" for p, d in CONFIGS) + " | best mode / fp32 |",
              "|---|---|" + "---:|" * (len(CONFIGS) + 1)]
    with tempfile.TemporaryDirectory() as tmp:
        for name, (rows, cols, density, bits, ibits) in LAYERS.items():
            path = os.path.join(tmp, name + ".dcz")
            m0 = nn.he_init(nn.Sequential([nn.Linear(cols, rows, "fc")], input_shape=(cols,), name=name), seed=0)
            dcrt.compress(m0, path, density=density, bits=bits, index_bits=ibits, progress=False)
            models = [dcrt.load(path, threads=args.threads, precision=p, dense_codebook=d) for p, d in CONFIGS]
            for kind, xd in (("dense", 1.0), ("relu50", 0.5)):
                x = make_input(cols, xd)
                ref = models[0].infer(x)
                us = median_us(models, x, args.rounds, args.calls)
                cells = []
                for (p, d), m, t in zip(CONFIGS, models, us):
                    L = m.layers()[0]
                    live = float(np.count_nonzero(x)) / cols
                    form = "d" if L["dense_codebook"] and live >= L["dense_codebook_below"] else "s"
                    err = float(np.abs(m.infer(x) - ref).max() / np.abs(ref).max())
                    cells.append(f"{t:.1f} ({form}{'' if p == 'fp32' and d == 'auto' else f', {err:.1e}'})")
                best = min(us[2:])
                lines.append(f"| {name} ({100 * density:.0f}%, {bits}-bit) | {kind} | " + " | ".join(cells)
                             + f" | {us[0] / best:.2f}× |")
                print(lines[-1], flush=True)
    lines.append("")


def accuracy(args, lines):
    lines += ["## Accuracy: trained LeNets, the 10k test set one sample at a time", "",
              "`always`: the dense codebook forced on every linear layer, so that the mode runs on all of them; "
              "`auto`: the cost model's pick (the mode runs only where it chose the dense codebook). "
              "Output error: over the test set, max and mean of |y - y_fp32| / max |y_fp32| per sample "
              "(y: the network's output, softmax probabilities where the file ends in one). µs per sample: the "
              "test-set loop's mean, one thread, through Python (back-to-back calls).", "",
              "| network | data | mode | layers in the mode | top-1 | change | agreement with fp32 | "
              "output error max / mean | µs per sample |",
              "|---|---|---|---|---:|---:|---:|---:|---:|"]
    from dcrt import data as D
    for spec in args.lenet:
        path, dataset = spec.rsplit(":", 1)
        fp = dcrt.load(path, threads=1)
        ds = D.load(dataset, image=len(fp.input_shape) == 3)
        x, y = ds.test.x.astype(np.float32), ds.test.y
        t0 = time.perf_counter()
        ref = np.stack([fp.infer(x[i:i + 1])[0] for i in range(len(y))])
        us_ref = (time.perf_counter() - t0) / len(y) * 1e6
        top_ref = 100 * float((ref.argmax(1) == y).mean())
        lines.append(f"| {fp.name} | {ds.name} | fp32 | - | {top_ref:.2f}% | | | | {us_ref:.1f} |")
        for p in ("int8", "bf16"):
            for d in ("always", "auto"):
                m = dcrt.load(path, threads=1, precision=p, dense_codebook=d)
                low = [L["name"] for L in m.layers() if L["precision"] != "fp32"]
                t0 = time.perf_counter()
                out = np.stack([m.infer(x[i:i + 1])[0] for i in range(len(y))])
                us = (time.perf_counter() - t0) / len(y) * 1e6
                top = 100 * float((out.argmax(1) == y).mean())
                agree = 100 * float((out.argmax(1) == ref.argmax(1)).mean())
                e = np.abs(out - ref).max(1) / np.abs(ref).max(1)
                lines.append(f"| {fp.name} | {ds.name} | {p} {d} | {', '.join(low) or 'none'} | {top:.2f}% | "
                             f"{top - top_ref:+.2f} | {agree:.2f}% | {e.max():.1e} / {e.mean():.1e} | {us:.1f} |")
                print(lines[-1], flush=True)
    lines.append("")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out")
    ap.add_argument("--lenet", action="append", default=[], metavar="PATH:DATASET")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--no-speed", action="store_true")
    args = ap.parse_args(argv)
    cmd = "python bench/precision.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = ["# Precision modes: int8 and bf16 against fp32", "", f"CPU: {cpu_line()}", "",
             f"Command: `{cmd.strip()}` (dcrt {dcrt.__version__}, numpy {np.__version__}, Python "
             f"{platform.python_version()}); kernels: "
             + ", ".join(k["name"] for k in dcrt.kernels() if k["op"] in ("dense_q8", "dense_i8", "dense_bf16")
                         and k["supported"] and not k["reference"]), ""]
    if not args.no_speed:
        speed(args, lines)
    if args.lenet:
        accuracy(args, lines)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
