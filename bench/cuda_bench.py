"""GPU benchmarks of the CUDA backend (issue 5), side by side in one run on the lent GPU.

    pip install --no-build-isolation .          # on the GPU machine (nvcc, CuPy present)
    python bench/cuda_bench.py [--out bench/RESULTS-cuda.md] [--skip-vgg]

Prints (and writes) Markdown tables:
1. FC layers (VGG-16 and AlexNet fc6/fc7/fc8 at the paper's densities and bit widths), batch 1
   and 64: dcrt's kernels on the device layout against cuSPARSE CSR SpMV/SpMM on the pruned
   fp32 matrix (cupyx.scipy.sparse) and cuBLAS dense (cupy.matmul), medians of CUDA-event
   timings with the L2 flushed (a 256 MB write) before every run; ratios peer / dcrt.
2. On-device Huffman decoding throughput (GB/s of decoded symbols) and .dcz file-to-ready load
   time of VGG-16.
3. AlexNet FC stack (fc6-fc8) inferences per second at batch 1 (EIE: 1.88e4 frames/s).
4. Whole VGG-16 at batch 1 against PyTorch dense (cuDNN) on the dequantized weights.
Outputs are checked against the peers before anything is timed.
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import dcrt  # noqa: E402
from dcrt import nn  # noqa: E402
from test_layers import LAYERS, make_input  # noqa: E402


def need_gpu():
    if not dcrt.cuda_available():
        sys.exit("cuda_bench.py: no CUDA device (dcrt.cuda_available() is False)")
    import cupy
    return cupy


class Timer:
    """Median of CUDA-event timings of fn(), L2 flushed before each run."""

    def __init__(self, cupy, reps=50):
        self.cp, self.reps = cupy, reps
        self.flush = cupy.empty(256 << 20, cupy.uint8)

    def __call__(self, fn, flush=True):
        cp = self.cp
        fn()
        cp.cuda.runtime.deviceSynchronize()
        ts = []
        a, b = cp.cuda.Event(), cp.cuda.Event()
        for _ in range(self.reps):
            if flush:
                self.flush.fill(1)
            a.record()
            fn()
            b.record()
            b.synchronize()
            ts.append(cp.cuda.get_elapsed_time(a, b) * 1e-3)
        return float(np.median(ts))


def layer_model(name, tmp):
    rows, cols, dens, bits, ib = LAYERS[name]
    p = os.path.join(tmp, f"{name}.dcz")
    m = nn.he_init(nn.Sequential([nn.Linear(cols, rows, "fc")], input_shape=(cols,), name=name), seed=0)
    dcrt.compress(m, p, density=dens, bits=bits, index_bits=ib, progress=False)
    from dcrt import format as fmt
    w = fmt.read(p).layers[0].dense_weight()
    return p, w, fmt.read(p).layers[0].bias


def bench_layers(cp, timer, tmp):
    import cupyx.scipy.sparse as cps
    out = ["| layer | batch | dcrt ms | cuSPARSE CSR ms | cuBLAS ms | cuSPARSE / dcrt | cuBLAS / dcrt |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for name in LAYERS:
        p, w, b = layer_model(name, tmp)
        g = dcrt.load(p, device="cuda")
        wd = cp.asarray(w)
        ws = cps.csr_matrix(wd)
        bd = cp.asarray(b)
        for batch in (1, 64):
            x = cp.asarray(make_input(w.shape[1], batch, 1.0))
            xt = cp.ascontiguousarray(x.T)
            ref = cp.asnumpy(x @ wd.T + bd)
            np.testing.assert_allclose(cp.asnumpy(g.infer(x)), ref, rtol=1e-3, atol=1e-3)
            t_d = timer(lambda: g.infer(x))
            t_s = timer(lambda: ws @ xt)  # SpMV (batch 1: [cols, 1]) / SpMM
            t_b = timer(lambda: x @ wd.T)
            out.append(f"| {name} | {batch} | {t_d * 1e3:.4f} | {t_s * 1e3:.4f} | {t_b * 1e3:.4f} | "
                       f"**{t_s / t_d:.2f}×** | **{t_b / t_d:.2f}×** |")
    return out


def bench_vgg(cp, timer, tmp, skip_vgg):
    from dcrt import zoo
    out = []
    nets = [("alexnet", 0.11)] + ([] if skip_vgg else [("vgg16", 0.075)])
    for arch, dens in nets:
        p = os.path.join(tmp, f"{arch}.dcz")
        dcrt.compress(zoo.build(arch, seed=0), p, density=dens, progress=False)
        t0 = time.perf_counter()
        g = dcrt.load(p, device="cuda")
        cp.cuda.runtime.deviceSynchronize()
        load_s = time.perf_counter() - t0
        sec, nbytes = g.time_decode(20)
        s = g.load_stats
        out.append(f"- {arch}: file-to-ready load {load_s * 1e3:.1f} ms (parse {s['parse_s'] * 1e3:.1f}, upload "
                   f"{s['upload_s'] * 1e3:.1f}, device decode {s['decode_s'] * 1e3:.1f}, layouts "
                   f"{s['layout_s'] * 1e3:.1f}); Huffman on device: {nbytes / sec / 1e9:.1f} GB/s decoded "
                   f"({nbytes / 1e6:.1f} MB in {sec * 1e3:.3f} ms; target >= 100 GB/s); device memory "
                   f"{s['device_bytes'] / 1e6:.1f} MB, file {os.path.getsize(p) / 1e6:.1f} MB")
        x = cp.asarray(np.random.default_rng(0).random((1, *g.input_shape), dtype=np.float32))
        t_d = timer(lambda: g.infer(x), flush=False)
        line = f"- {arch} batch 1 end to end: dcrt {t_d * 1e3:.3f} ms"
        try:
            import torch
            from export import torch_net
            xn = cp.asnumpy(x)
            f = torch_net(dcrt.decompress(p), xn, device="cuda")
            torch.backends.cudnn.benchmark = True
            np.testing.assert_allclose(f().cpu().numpy(), cp.asnumpy(g.infer(x)), rtol=1e-3, atol=1e-4)
            t_t = timer(f, flush=False)
            line += f", PyTorch dense (cuDNN) {t_t * 1e3:.3f} ms: **{t_t / t_d:.2f}×**"
        except Exception as e:  # torch missing or no export: say so in the table
            line += f" (PyTorch peer not run: {type(e).__name__}: {e})"
        out.append(line)
    return out


def bench_fc_stack(cp, timer, tmp):
    # AlexNet fc6-fc8 (+ReLU) as one model at batch 1: inferences per second.
    m = nn.he_init(nn.Sequential([nn.Linear(9216, 4096, "fc6"), nn.ReLU("r6"), nn.Linear(4096, 4096, "fc7"),
                                  nn.ReLU("r7"), nn.Linear(4096, 1000, "fc8")], input_shape=(9216,),
                                 name="alexnet-fc"), seed=0)
    p = os.path.join(tmp, "alexnet-fc.dcz")
    dcrt.compress(m, p, density=0.09, bits=5, index_bits=4, progress=False)
    g = dcrt.load(p, device="cuda")
    x = cp.asarray(make_input(9216, 1, 1.0))
    t = timer(lambda: g.infer(x), flush=False)
    return [f"- AlexNet FC stack (fc6-fc8, 9%, 5-bit) batch 1: {t * 1e6:.1f} us = {1 / t:,.0f} inferences/s "
            f"(target >= 50,000/s; EIE 18,800 frames/s)"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    ap.add_argument("--skip-vgg", action="store_true")
    ap.add_argument("--reps", type=int, default=50)
    a = ap.parse_args(argv)
    cp = need_gpu()
    from dcrt import _cuda
    timer = Timer(cp, a.reps)
    lines = [f"GPU: {_cuda.device_description(0)}", "", "```", "python bench/cuda_bench.py", "```", ""]
    with tempfile.TemporaryDirectory() as tmp:
        lines += bench_layers(cp, timer, tmp) + [""]
        lines += bench_fc_stack(cp, timer, tmp)
        lines += bench_vgg(cp, timer, tmp, a.skip_vgg)
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
