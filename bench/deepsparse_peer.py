"""Child side of deepsparse_layers.py: runs in DeepSparse's own virtualenv (deepsparse==1.8.0
pins numpy 1.26, so it cannot share dcrt's environment). Reads an ONNX file and an input .npy,
compiles for the input's batch size on N cores, checks the output against a reference .npy,
and prints one JSON line: the median of its own timed runs."""
import json
import sys
import time

import numpy as np
from deepsparse import compile_model


def main():
    onnx_path, x_path, ref_path, cores, min_time = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(
        sys.argv[5])
    x = np.load(x_path)
    eng = compile_model(onnx_path, batch_size=x.shape[0], num_cores=cores)
    y = eng([x])[0]
    ref = np.load(ref_path)
    err = float(np.abs(y - ref).max() / max(1.0, float(np.abs(ref).max())))
    for _ in range(3):
        eng([x])
    ts, end = [], time.perf_counter() + min_time
    while len(ts) < 10 or time.perf_counter() < end:
        t = time.perf_counter()
        eng([x])
        ts.append(time.perf_counter() - t)
    print(json.dumps({"median_s": float(np.median(ts)), "rounds": len(ts), "rel_err": err}))


if __name__ == "__main__":
    main()
