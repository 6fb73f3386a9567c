"""How the fully connected kernels scale with non-zeros, batch and threads, against the
memory-bandwidth floor. One 4096 x 9216 layer (AlexNet fc6's shape, 5-bit codes, 4-bit
indices) compressed at several densities; the runtime's own kernel choice; medians.

    python bench/scaling.py --out bench/figures/scaling.png --json bench/figures/scaling.json

Floor: the bytes the chosen batch-1 layout reads (its 16-bit entries and pointers,
`layout_bytes` / 2 for the one form used) over the bandwidth measured here with the same
thread count (numpy copies, read + write). Needs matplotlib for the figure.
"""
import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import dcrt
from dcrt import nn

ROWS, COLS = 4096, 9216
DENSITIES = [0.01, 0.02, 0.04, 0.09, 0.2, 0.35]
BATCHES = [1, 2, 4, 8, 16, 32, 64]
THREADS = [1, 2]


def median_time(fn, min_time=0.3, reps=5):
    fn()
    ts = []
    t_end = time.perf_counter() + min_time
    while len(ts) < reps or time.perf_counter() < t_end:
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def bandwidth(threads, mb=256):
    """Copy bandwidth (bytes read + written per second) with `threads` numpy copies."""
    n = mb * 2 ** 20 // 4 // threads
    src = [np.ones(n, np.float32) for _ in range(threads)]
    dst = [np.empty_like(s) for s in src]
    with ThreadPoolExecutor(threads) as ex:
        def run():
            list(ex.map(lambda i: np.copyto(dst[i], src[i]), range(threads)))
        t = median_time(run, 0.5)
    return 2 * n * 4 * threads / t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="scaling.png")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    bw = {t: bandwidth(t) for t in THREADS}
    print("copy bandwidth GB/s:", {t: round(b / 1e9, 1) for t, b in bw.items()})
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for dens in DENSITIES:
            m = nn.he_init(nn.Sequential([nn.Linear(COLS, ROWS, "fc")], input_shape=(COLS,), name="fc"), seed=0)
            path = os.path.join(d, f"fc-{dens}.dcz")
            dcrt.compress(m, path, density=dens, bits=5, index_bits=4, progress=False)
            for th in THREADS:
                model = dcrt.load(path, threads=th)
                info = model.layers()[0]
                for b in BATCHES:
                    x = (1.0 - np.random.default_rng(0).random((b, COLS), dtype=np.float32))
                    t = median_time(lambda: model.infer(x))
                    floor = info["layout_bytes"] / 2 / bw[th] if b == 1 else None
                    rows.append({"density": dens, "nnz": info["nnz"], "threads": th, "batch": b, "seconds": t,
                                 "floor_s": floor, "dcz_bytes": os.path.getsize(path)})
                    print(f"density {dens:.2f} nnz {info['nnz']:>8} threads {th} batch {b:>2}: {t * 1e3:8.3f} ms"
                          + (f"  (floor {floor * 1e3:.3f} ms)" if floor else ""), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"bandwidth_Bps": bw, "rows": rows, "shape": [ROWS, COLS]}, f, indent=1)
    plot(rows, a.out)


def plot(rows, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.5))
    for th, style in ((1, "o--"), (2, "o-")):
        r = [x for x in rows if x["threads"] == th and x["batch"] == 1]
        ax[0].plot([x["nnz"] / 1e6 for x in r], [x["seconds"] * 1e3 for x in r], style, label=f"dcrt, {th} thread(s)")
        ax[0].plot([x["nnz"] / 1e6 for x in r], [x["floor_s"] * 1e3 for x in r], ":", label=f"bandwidth floor, {th}")
    ax[0].set(xlabel="non-zeros (millions)", ylabel="batch-1 time (ms)", title=f"batch 1 vs non-zeros ({ROWS}x{COLS})")
    dens = sorted({x["density"] for x in rows})
    for dn in (dens[0], dens[len(dens) // 2], dens[-1]):
        r = [x for x in rows if x["threads"] == 2 and x["density"] == dn]
        ax[1].plot([x["batch"] for x in r], [x["seconds"] * 1e6 / x["batch"] for x in r], "o-", label=f"density {dn}")
    ax[1].set(xscale="log", yscale="log", xlabel="batch", ylabel="time per sample (µs)",
              title="per-sample time vs batch (2 threads)")
    for dn in (dens[0], dens[-1]):
        for b in (1, 64):
            r = {x["threads"]: x["seconds"] for x in rows if x["density"] == dn and x["batch"] == b}
            ax[2].plot(sorted(r), [r[1] / r[t] for t in sorted(r)], "o-", label=f"density {dn}, batch {b}")
    ax[2].plot(THREADS, THREADS, "k:", label="linear")
    ax[2].set(xlabel="threads", ylabel="speed-up over 1 thread", title="thread scaling", xticks=THREADS)
    for a_ in ax:
        a_.grid(alpha=0.3)
        a_.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print("wrote", out)


if __name__ == "__main__":
    main()
