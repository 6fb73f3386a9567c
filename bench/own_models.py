"""Users' own models (issue 13): transformers' ResNet-18 and MobileNetV2 at 224x224, imported
from PyTorch and compressed, against ONNX Runtime and PyTorch running the dense model, in one
run; file size, load time, peak RSS, and where dcrt's time goes per layer type.

    pip install torch==2.13.0 ".[torch,onnx,models]" && python bench/own_models.py --out bench/RESULTS-own-models.md
    python bench/own_models.py --fashion --out bench/RESULTS-fashion-nets.md

``--fashion``: the networks of examples/resnet_fashion.py instead (ResNet-18 and MobileNetV2 at
width 16, 1x28x28 inputs), compressed the way the example compresses them (dcrt.torch's prune to
its final densities, batch norms folded for ResNet and kept for MobileNetV2, 5-bit k-means,
dcrt.compress writing exactly that) but without the training: speed depends on the shapes, the
densities and the storage each layer gets, not on the trained values. The peers run
``dcrt.torch.strip`` of the same module (its effective weights, dense).

Random weights and batch-norm statistics (no downloads); dcrt compresses every layer to the
density given (default 0.3: 70% pruned) with 6-bit codebooks (storage "auto": plain fp32 where
sparse does not pay). The peers run the dense fp32 model (what a user has without dcrt):
onnxruntime on the torch.onnx.export file with all graph optimisations, PyTorch in eval mode.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import cpu_line  # noqa: E402

THREADS = 2
#: examples/resnet_fashion.py's final densities (layers of 10k weights or more, the smaller ones)
#: and codebook bits per network, as in bench/RESULTS-training.md.
FASHION = {"resnet18": (0.07, 0.3, 5), "mobilenet_v2": (0.5, 0.7, 5)}


def fashion_models():
    """examples/resnet_fashion.py's two networks (width 16, 28x28), untrained."""
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "resnet_fashion.py")
    spec = importlib.util.spec_from_file_location("resnet_fashion", path)
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    return {name: ex.Classifier(ex.build(name, 16, seed=0), 0.286, 0.353).eval() for name in FASHION}


def fashion_compress(name, m, x1, path):
    """The example's compression stages on ``m`` (no training), written to ``path``; returns the
    stripped dense module the peers run."""
    import dcrt
    import dcrt.torch as dt
    big, small, bits = FASHION[name]
    dt.prune(m, density={n: big if l.weight.numel() >= 10_000 else max(big, small)
                         for n, l in dt.named_layers(m).items()})
    if name == "resnet18":
        dt.fold_batchnorm(m, x1)
    dt.quantize(m, bits=bits)
    m.eval()
    dcrt.compress(m, path, example_input=x1, progress=False)
    return dt.strip(m).eval()


def models():
    import torch
    from transformers import (MobileNetV2Config, MobileNetV2ForImageClassification, ResNetConfig,
                              ResNetForImageClassification)
    torch.manual_seed(0)
    out = {"resnet18": ResNetForImageClassification(ResNetConfig(layer_type="basic", depths=[2, 2, 2, 2],
                                                                 hidden_sizes=[64, 128, 256, 512])),
           "mobilenet_v2": MobileNetV2ForImageClassification(MobileNetV2Config())}
    g = torch.Generator().manual_seed(1)
    for m in out.values():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                with torch.no_grad():
                    mod.running_mean.copy_(torch.rand(mod.num_features, generator=g) - 0.5)
                    mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
        m.eval()
    return out


def median_s(fn, calls):
    fn()
    ts = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def peak_rss_mb(path) -> tuple:
    """(MB resident after import, peak MB after load + one batch-1 inference) in a fresh process
    (/proc's VmRSS / VmHWM: ru_maxrss would count the forking parent's pages)."""
    code = ("import numpy as np, dcrt\n"
            "def vm(k): return [int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(k)][0] / 1024\n"
            "a = vm('VmRSS')\n"
            f"m = dcrt.load({str(path)!r}, threads={THREADS}); m.infer(np.random.rand(1, *m.input_shape).astype(np.float32))\n"
            "print(a, vm('VmHWM'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), float(out[1])


def layer_kind(m, op):
    if op["type"] == "conv2d":
        L = m._m.layers[op["layer"]]
        groups = op["in_shape"][0] * L["kh"] * L["kw"] // L["cols"]
        if groups > 1 and L["cols"] == L["kh"] * L["kw"]:
            return "conv depthwise"
        return f"conv {L['kh']}x{L['kw']}" + (f" {L['storage']}")
    if op["type"] == "linear":
        return "linear"
    if op["type"] in ("relu", "clip", "sigmoid", "hardsigmoid", "hardswish", "silu", "tanh", "gelu"):
        return "activation"
    return op["type"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--density", type=float, default=0.3)
    ap.add_argument("--bits", type=int, default=6)
    ap.add_argument("--nets", default="resnet18,mobilenet_v2")
    ap.add_argument("--fashion", action="store_true",
                    help="examples/resnet_fashion.py's networks (width 16, 28x28) compressed by its recipe")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    import onnxruntime as ort
    import torch
    import dcrt
    torch.set_num_threads(THREADS)
    unit, scale = ("µs", 1e6) if args.fashion else ("ms", 1e3)
    lines = [f"CPU: {cpu_line()}", "",
             f"Command: `python bench/own_models.py{' ' + ' '.join(argv if argv is not None else sys.argv[1:])}` "
             f"(dcrt {dcrt.__version__}, torch {torch.__version__}, onnxruntime {ort.__version__}, Python "
             f"{platform.python_version()}); {THREADS} threads everywhere; dcrt runs the file compressed "
             + ("by examples/resnet_fashion.py's recipe (final densities, bits: " +
                ", ".join(f"{k} {v[0]}/{v[1]}, {v[2]}-bit" for k, v in FASHION.items()) + "; untrained weights)"
                if args.fashion else f"at density {args.density} with {args.bits}-bit codebooks")
             + ", the peers the same weights dense in fp32; medians.", "",
             f"| network | batch | dcrt {unit} | onnxruntime {unit} | torch {unit} | ort/dcrt | torch/dcrt |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    size_rows, prof_rows = [], []
    with tempfile.TemporaryDirectory() as d:
        shape = (1, 28, 28) if args.fashion else (3, 224, 224)
        for name, m in (fashion_models() if args.fashion else models()).items():
            if name not in args.nets.split(","):
                continue
            x1 = torch.rand(1, *shape)
            p = os.path.join(d, f"{name}.dcz")
            t0 = time.perf_counter()
            if args.fashion:
                m = fashion_compress(name, m, x1, p)
            else:
                dcrt.compress(m, p, example_input=x1, density=args.density, bits=args.bits, progress=False)
            comp_s = time.perf_counter() - t0
            onnx_path = os.path.join(d, f"{name}.onnx")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(m, (x1,), onnx_path, input_names=["x"], output_names=["y"], dynamo=True,
                                  dynamic_shapes={"x" if args.fashion else "pixel_values": {0: torch.export.Dim("batch")}})
            data = open(p, "rb").read()
            load_ms = 1e3 * median_s(lambda: dcrt.loads(data, threads=THREADS), 5)
            dm = dcrt.load(p, threads=THREADS)
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = THREADS, 1
            sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
            for batch, calls in (((1, 200), (64, 20)) if args.fashion else ((1, 20), (16, 4))):
                xb = np.random.default_rng(batch).random((batch, *shape), dtype=np.float32)
                y = dm.infer(xb)
                ref = dcrt.decompress(p).forward(xb[:1]) if batch == 1 else None
                if ref is not None:
                    assert np.abs(y[:1] - ref).max() <= 1e-3 * np.abs(ref).max() + 1e-5
                if ref is not None and args.fashion:  # the peers run the stripped module: the same net
                    with torch.no_grad():
                        peer = m(torch.from_numpy(xb[:1]))
                    peer = getattr(peer, "logits", peer).detach().numpy()
                    assert np.abs(y[:1] - peer).max() <= 1e-3 * np.abs(peer).max() + 1e-4, "peer computes another net"
                t_d = median_s(lambda: dm.infer(xb), calls)
                t_o = median_s(lambda: sess.run(None, {"x": xb}), calls)
                xt = torch.from_numpy(xb)
                with torch.no_grad():
                    t_t = median_s(lambda: m(xt), calls)
                lines.append(f"| {name} | {batch} | {t_d * scale:.1f} | {t_o * scale:.1f} | {t_t * scale:.1f} | "
                             f"{t_o / t_d:.2f}× | {t_t / t_d:.2f}× |")
                print(lines[-1], flush=True)
            fp32 = sum(4 * v.numel() for k, v in m.state_dict().items() if "num_batches" not in k)
            base, peak = peak_rss_mb(p)
            size_rows.append(f"| {name} | {fp32 / 1e6:.1f} | {len(data) / 1e6:.2f} | {fp32 / len(data):.1f}× | "
                             f"{load_ms:.1f} | {peak - base:.0f} | {comp_s:.0f} |")
            prof = dm.profile(np.random.default_rng(0).random((1, *shape), dtype=np.float32), 5)
            total = sum(q["seconds"] for q in prof)
            by, fused = {}, {}
            for q, op in zip(prof, dm._m.ops):
                k = layer_kind(dm, op)
                if op["fused_into"] >= 0:  # runs inside its producer: its time is the conv's
                    fused[k] = fused.get(k, 0) + 1
                    continue
                by[k] = by.get(k, 0.0) + q["seconds"]
            for k, v in sorted(by.items(), key=lambda kv: -kv[1]):
                prof_rows.append(f"| {name} | {k} | {v * 1e3:.2f} | {100 * v / total:.0f}% |")
            if fused:
                prof_rows.append(f"| {name} | fused at load (no time of their own): "
                                 + ", ".join(f"{n} {k}" for k, n in sorted(fused.items())) + " | | |")
    lines += ["", "| network | fp32 params MB | .dcz MB | ratio | load ms | peak RSS over import MB | compress s |",
              "|---|---:|---:|---:|---:|---:|---:|"] + size_rows
    lines += ["", "Where dcrt's batch-1 time goes (`Model.profile`, each op timed on the calling thread):", "",
              "| network | layer type | ms | share |", "|---|---|---:|---:|"] + prof_rows
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
