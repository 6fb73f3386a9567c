"""Two builds of dcrt on examples/resnet_fashion.py's networks (own_models.py --fashion): batch 1
and 64 latency, each build in its own process, rounds interleaved so that the guest's drift hits
both alike.

    pip install --no-deps --target /tmp/dcrt-old . -C cmake.define.DCRT_CUDA=OFF   # at the old commit
    python bench/ab_fashion.py --old /tmp/dcrt-old [--new DIR] [--with-224]   # new: the installed dcrt

``--with-224`` adds own_models.py's 224x224 ResNet-18 and MobileNetV2 (density 0.3, 6-bit) at
batch 16, whose last stage (7x7 maps) also takes the small-map conv path.

Prints, per network and batch, the best median of the rounds for each build and old / new.
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
out = {}
for name in ("resnet18", "mobilenet_v2"):
    m = dcrt.load(f"{sys.argv[1]}/{name}.dcz", threads=2)
    for b, calls in ((1, 300), (64, 30)):
        x = np.random.default_rng(b).random((b, 1, 28, 28), dtype=np.float32)
        m.infer(x)
        ts = []
        for _ in range(calls):
            t = time.perf_counter(); m.infer(x); ts.append(time.perf_counter() - t)
        out[f"{name} | {b}"] = float(np.median(ts)) * 1e6
import os
for name in ("resnet18", "mobilenet_v2"):
    p = f"{sys.argv[1]}/{name}_224.dcz"
    if os.path.exists(p):
        m = dcrt.load(p, threads=2)
        x = np.random.default_rng(0).random((16, 3, 224, 224), dtype=np.float32)
        m.infer(x)
        ts = []
        for _ in range(4):
            t = time.perf_counter(); m.infer(x); ts.append(time.perf_counter() - t)
        out[f"{name} 224x224 | 16"] = float(np.median(ts)) * 1e6
print(json.dumps(out))
'''


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", required=True, help="a --target install of the old build")
    ap.add_argument("--new", default="", help="a --target install of the new build (default: the installed dcrt)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--with-224", action="store_true", help="also the 224x224 networks at batch 16")
    args = ap.parse_args(argv)
    import torch
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import own_models as om
    from machine import cpu_line
    builds = {"old": args.old, "new": args.new}
    best = {k: {} for k in builds}
    with tempfile.TemporaryDirectory() as d:
        for name, m in om.fashion_models().items():  # files written by the installed build
            om.fashion_compress(name, m, torch.rand(1, 1, 28, 28), os.path.join(d, f"{name}.dcz"))
        if args.with_224:
            import dcrt
            for name, m in om.models().items():
                dcrt.compress(m, os.path.join(d, f"{name}_224.dcz"), example_input=torch.rand(1, 3, 224, 224),
                              density=0.3, bits=6, progress=False)
        for _ in range(args.rounds):
            for k, path in builds.items():
                env = dict(os.environ, PYTHONPATH=path) if path else dict(os.environ)
                r = subprocess.run([sys.executable, "-c", MEASURE, d], env=env, capture_output=True, text=True,
                                   check=True)
                for key, v in json.loads(r.stdout).items():
                    best[k][key] = min(best[k].get(key, float("inf")), v)
    print(f"CPU: {cpu_line()}\n\nCommand: `python bench/ab_fashion.py {' '.join(argv or sys.argv[1:])}`\n")
    print("| network | batch | old µs | new µs | old / new |\n|---|---:|---:|---:|---:|")
    for key in best["old"]:
        print(f"| {key} | {best['old'][key]:.0f} | {best['new'][key]:.0f} | **{best['old'][key] / best['new'][key]:.2f}×** |")


if __name__ == "__main__":
    main()
