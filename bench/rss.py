"""Peak resident memory of a loaded, running network against its .dcz size.

    python bench/rss.py vgg16.dcz [more.dcz ...]

Each file is measured in a fresh process: resident set after `import dcrt` (the baseline),
then the peak (ru_maxrss) after load and one batch-1 inference. The difference is what the
model costs a server: decoded execution layouts, the workspace, and the file bytes while they
are parsed. Prints a Markdown table.
"""
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys
import numpy as np
import dcrt
def rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
base = rss_kb()
m = dcrt.load(sys.argv[1], threads=2)
loaded = rss_kb()
m.infer(np.random.default_rng(0).random((1,) + tuple(m.input_shape), dtype=np.float32))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
dense = sum(int(L["rows"]) * int(L["cols"]) for L in m.layers()) * 4
print(json.dumps({"base_kb": base, "loaded_kb": loaded, "after_infer_kb": rss_kb(), "peak_kb": peak,
                  "dense_fp32_bytes": dense}))
"""


def measure(path):
    out = subprocess.run([sys.executable, "-c", CHILD, path], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None):
    import os
    paths = (argv if argv is not None else sys.argv[1:])
    if not paths:
        sys.exit(__doc__)
    print("| file | .dcz MB | dense fp32 MB | resident after load MB | peak MB (load + 1 infer) | peak / .dcz |")
    print("|---|---:|---:|---:|---:|---:|")
    for p in paths:
        r = measure(p)
        size = os.path.getsize(p)
        loaded = (r["loaded_kb"] - r["base_kb"]) * 1024
        peak = (r["peak_kb"] - r["base_kb"]) * 1024
        print(f"| {os.path.basename(p)} | {size / 1e6:.1f} | {r['dense_fp32_bytes'] / 1e6:.0f} | {loaded / 1e6:.1f} "
              f"| {peak / 1e6:.1f} | {peak / size:.1f}× |")


if __name__ == "__main__":
    main()
