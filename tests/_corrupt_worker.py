"""Subprocess worker for test_corrupt.py: loads every case with both readers and reports the
outcome as JSON, so that a crash, hang or runaway allocation fails the test instead of
killing the suite. Memory is capped; an accepted file is also run once."""
import json
import pickle
import resource
import sys

import numpy as np

resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # a huge allocation fails fast

import dcrt  # noqa: E402
from dcrt import FormatError, format as fmt  # noqa: E402


def outcome(fn):
    """(outcome, message): "ok", "FormatError" or the unexpected exception's type and text."""
    try:
        fn()
        return "ok", ""
    except FormatError as e:
        return "FormatError", str(e)[:1000]
    except BaseException as e:  # noqa: BLE001 - every other outcome is a finding
        return f"{type(e).__name__}: {e}"[:300], str(e)[:1000]


def run_native(data):
    # A mutated file may be valid but big: the caps a server would set keep each run short. A
    # file over them is valid (the Python reader accepts it too), so it counts as "ok".
    try:
        m = dcrt.loads(data, threads=2, max_activation=1 << 22, max_work=1 << 28)
    except dcrt.LimitError:
        return
    x = np.zeros((2,) + tuple(m.input_shape), np.float32)
    y = m.infer(x)
    assert y.shape == (2,) + tuple(m.output_shape)


def main():
    cases = pickle.load(sys.stdin.buffer)
    results = []
    for name, data, python_too in cases:
        r = {"name": name}
        r["native"], r["native_msg"] = outcome(lambda: run_native(data))
        if python_too:
            r["python"], r["python_msg"] = outcome(lambda: fmt.loads(data))
        results.append(r)
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
