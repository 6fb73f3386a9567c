"""Two builds of dcrt in one run: load time (VGG-16, AlexNet) and VGG-16 batch-1 latency,
each build in its own process, interleaved, so that the guest's drift hits both alike.

    pip install --no-deps --target /tmp/dcrt-old . -C cmake.define.DCRT_CUDA=OFF   # at the old commit
    python bench/ab_build.py --old /tmp/dcrt-old

Prints, per measurement, the best median of the rounds for each build and their ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

MEASURE = r'''
import json, sys, time
import numpy as np
import dcrt
d = sys.argv[1]
out = {}
for f in ("vgg16", "alexnet"):
    data = open(f"{d}/{f}.dcz", "rb").read()
    ts = []
    for _ in range(15):
        t = time.perf_counter(); m = dcrt.loads(data, threads=2); ts.append(time.perf_counter() - t)
    out[f"load {f} ms"] = float(np.median(ts)) * 1e3
m = dcrt.load(f"{d}/vgg16.dcz", threads=2)
x = np.random.default_rng(0).random((1,) + tuple(m.input_shape), dtype=np.float32)
for _ in range(3): m.infer(x)
ts = []
for _ in range(15):
    t = time.perf_counter(); m.infer(x); ts.append(time.perf_counter() - t)
out["vgg16 batch 1 ms"] = float(np.median(ts)) * 1e3
print(json.dumps(out))
'''


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", required=True, help="a directory with another build's dcrt package (pip --target)")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    import dcrt
    from dcrt import zoo
    with tempfile.TemporaryDirectory() as d:
        for arch in ("vgg16", "alexnet"):
            p = zoo.PAPER[arch]
            dcrt.compress(zoo.build(arch, seed=0), os.path.join(d, f"{arch}.dcz"), density=p["density"], bits=p["bits"],
                          index_bits=p["index_bits"], progress=False)
        res: dict = {}
        for _ in range(args.rounds):
            for name, path in (("this", None), ("old", args.old)):
                env = dict(os.environ)
                if path:
                    env["PYTHONPATH"] = os.path.abspath(path)
                r = json.loads(subprocess.check_output([sys.executable, "-c", MEASURE, d], env=env, cwd=d))
                for k, v in r.items():
                    res.setdefault(k, {}).setdefault(name, []).append(v)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from machine import cpu_line
    print(f"CPU: {cpu_line()}\n\n| measurement | old | this | old/this |\n|---|---:|---:|---:|")
    for k, v in res.items():
        o, n = min(v["old"]), min(v["this"])
        print(f"| {k} | {o:.1f} | {n:.1f} | {o / n:.2f}× |")


if __name__ == "__main__":
    main()
