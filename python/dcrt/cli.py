"""Command line: dcrt compress | info | run | pipeline | figure | bench | serve  (also `python -m dcrt`)."""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def _per_layer_opt(text, cast):
    """'0.05' -> 0.05 for all layers; 'fc6=0.04,fc7=0.04' -> dict; None -> None."""
    if text is None:
        return None
    if "=" not in text:
        return cast(text)
    out = {}
    for part in text.split(","):
        name, _, v = part.partition("=")
        if not name or not v:
            raise argparse.ArgumentTypeError(f"expected name=value pairs, got {part!r}")
        out[name.strip()] = cast(v)
    return out


def cmd_compress(a):
    import dcrt
    from dcrt import zoo
    if a.arch.endswith(".onnx"):
        if a.paper or a.weights:
            raise SystemExit("dcrt compress: --paper and --weights are for zoo networks, not ONNX files")
        if not os.path.exists(a.arch):
            raise SystemExit(f"dcrt compress: {a.arch}: no such file")
        model = a.arch
    elif a.arch in zoo.ARCHITECTURES:
        model = zoo.build(a.arch, seed=a.seed, weights=a.weights)
    else:
        raise SystemExit(f"dcrt compress: {a.arch!r} is neither a zoo network ({', '.join(sorted(zoo.ARCHITECTURES))}) "
                         "nor an .onnx file")
    density, bits, index_bits = _per_layer_opt(a.density, float), _per_layer_opt(a.bits, int), \
        _per_layer_opt(a.index_bits, int)
    if a.paper:
        p = zoo.PAPER[a.arch]
        density = p["density"] if density is None and a.quality is None else density
        bits = p["bits"] if bits is None else bits
        index_bits = p["index_bits"] if index_bits is None else index_bits
    t = time.perf_counter()
    rep = dcrt.compress(model, a.output, density=density, quality=_per_layer_opt(a.quality, float), bits=bits,
                        index_bits=5 if index_bits is None else index_bits, init=a.init,
                        chunk_symbols=a.chunk_symbols, max_code_len=a.max_code_len,
                        storage=_per_layer_opt(a.storage, str) or "auto", seed=a.seed, progress=not a.quiet)
    if not a.quiet:  # -q: nothing but errors
        print(rep)
        print(f"wrote {a.output} ({rep.file_bytes:,} bytes) in {time.perf_counter() - t:.1f}s")


def cmd_info(a):
    from dcrt import format as fmt
    from dcrt.compressor import report_for
    f = fmt.read(a.file, decode=False)
    print(report_for(f.meta.get("name", "?"), f.layers, f.file_size))
    print(f"\nformat {f.version[0]}.{f.version[1]}, input {list(f.graph.input_shape)}, {len(f.graph.ops)} ops: "
          + " -> ".join(op.type for op in f.graph.ops))
    if f.meta.get("labels"):
        print(f"labels: {len(f.meta['labels'])} ({', '.join(f.meta['labels'][:5])}{', ...' if len(f.meta['labels']) > 5 else ''})")
    for k, v in f.meta.get("metadata", {}).items():
        print(f"{k}: {v}")


def _load(a):
    """The model on --device (threads apply to the CPU)."""
    import dcrt
    if a.device == "cpu":
        return dcrt.load(a.file, threads=a.threads)
    if a.threads is not None:
        raise ValueError(f"--threads is for the CPU; --device {a.device} runs on the GPU")
    return dcrt.load(a.file, device=a.device)


def _host(y):
    return y.get() if hasattr(y, "get") else y  # cupy -> numpy


def _device_input(m, x):
    if getattr(m, "device", "cpu") == "cpu":
        return x
    import cupy
    return cupy.asarray(x)


def cmd_run(a):
    m = _load(a)
    x = np.load(a.input)
    if x.dtype != np.float32 and a.cast:
        x = x.astype(np.float32)
    xd = _device_input(m, x)
    t = time.perf_counter()
    y = _host(m.infer(xd))
    dt = time.perf_counter() - t
    if a.output:
        np.save(a.output, y)
        print(f"wrote {a.output} {list(y.shape)} ({1e3 * dt:.2f} ms)")
    elif not a.top:  # --top prints the classes instead of the array
        with np.printoptions(precision=5, suppress=True, threshold=50):
            print(y)
    if a.top and y.ndim >= 1:
        rows = y.reshape(-1, y.shape[-1]) if y.ndim > 1 else y[None]
        for i, r in enumerate(rows):
            idx = np.argsort(-r)[: a.top]
            names = [m.labels[j] if m.labels else str(j) for j in idx]
            print(f"sample {i}: " + ", ".join(f"{n} {r[j]:.4f}" for n, j in zip(names, idx)))


def cmd_pipeline(a):
    from dcrt.pipeline import Config, run
    kw = {k: getattr(a, k) for k in ("seed", "batch_size", "baseline_epochs", "baseline_lr", "prune_steps",
                                      "retrain_epochs", "retrain_lr", "finetune_epochs", "finetune_lr", "init",
                                      "weight_decay", "retrain_weight_decay", "distill", "temperature", "train_subset") if getattr(a, k) is not None}
    cfg = Config(arch=a.arch, dataset=a.data, density=_per_layer_opt(a.density, float),
                 bits=_per_layer_opt(a.bits, int), index_bits=_per_layer_opt(a.index_bits, int), **kw)
    t = time.perf_counter()
    r = run(cfg, a.output, checkpoint_dir=a.checkpoint_dir, progress=not a.quiet, stop_after=a.stop_after)
    print()
    print(r.table())
    if r.report is None:
        print(f"stopped after {a.stop_after!r}; run the same command again to resume")
        return
    print()
    print(r.report)
    print(f"\n{a.arch} on {a.data}: baseline {r.baseline_test:.2f}% -> compressed {r.native_test:.2f}% top-1 "
          f"(native runtime; {r.native_test - r.baseline_test:+.2f} points), {r.report.ratio:.1f}x smaller, "
          f"infer {1e3 * r.latency_ms:.1f} us (batch 1, median); total {time.perf_counter() - t:.0f}s")


def cmd_figure(a):
    import os
    from dcrt import experiments
    from dcrt.pipeline import Config
    kw = {k: getattr(a, k) for k in ("baseline_epochs", "weight_decay", "retrain_lr", "finetune_lr")
          if getattr(a, k) is not None}
    cfg = Config(arch=a.arch, dataset=a.data, **kw)
    os.makedirs(a.out, exist_ok=True)
    t = time.perf_counter()
    path = getattr(experiments, a.which)(cfg, a.out, progress=not a.quiet)[0]
    print(f"wrote {path} in {time.perf_counter() - t:.0f}s")


def _percentiles(ts):
    ts = np.asarray(ts) * 1e3
    return {"p50": np.percentile(ts, 50), "p90": np.percentile(ts, 90), "p99": np.percentile(ts, 99),
            "mean": ts.mean(), "min": ts.min()}


def _time(fn, repeat, warmup, desc, quiet):
    from dcrt.progress import Progress
    for _ in range(warmup):
        fn()
    bar = Progress(repeat, desc, not quiet)
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
        bar.update()
    return _percentiles(ts)


def cmd_bench(a):
    import dcrt
    t = time.perf_counter()
    m = _load(a)
    load_ms = 1e3 * (time.perf_counter() - t)
    x = np.random.default_rng(0).random((a.batch,) + tuple(m.input_shape), dtype=np.float32)
    xd = _device_input(m, x)
    if a.device != "cpu":
        import cupy
        sync = cupy.cuda.get_current_stream().synchronize
        fn = lambda: (m.infer(xd), sync())  # noqa: E731
    else:
        fn = lambda: m.infer(x)  # noqa: E731
    rows = [("dcrt infer", _time(fn, a.repeat, a.warmup, "dcrt", a.quiet))]
    if not a.no_dense:
        dense = dcrt.decompress(a.file)
        rows.append(("numpy dense forward", _time(lambda: dense.forward(x), max(3, a.repeat // 4),
                                                  min(a.warmup, 2), "numpy", a.quiet)))
        err = float(np.abs(_host(m.infer(xd)) - dense.forward(x)).max())
    where = f"{m.threads} threads" if a.device == "cpu" else a.device
    decode = m.load_stats.get("decode_s")
    print(f"{m.name}: batch {a.batch}, {where}, load {load_ms:.1f} ms"
          + (f" (native decode {1e3 * decode:.1f} ms)" if decode is not None else ""))
    print(f"{'':22}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'mean ms':>10}{'vs dcrt':>9}")
    base = rows[0][1]["p50"]
    for name, r in rows:
        print(f"{name:22}{r['p50']:10.3f}{r['p90']:10.3f}{r['p99']:10.3f}{r['mean']:10.3f}{r['p50'] / base:8.2f}x")
    if not a.no_dense:
        print(f"max |dcrt - numpy| = {err:.3g}")


def _int_at_least(lo):
    """An argparse type: a whole number >= lo."""
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be at least {lo}, got {v}" if lo else f"must be 0 or more, got {v}")
        return v
    return parse


_positive, _nonnegative = _int_at_least(1), _int_at_least(0)


def _device(text):
    if text == "cpu" or text == "cuda" or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")


def cmd_serve(a):
    from dcrt.serve import serve
    if a.device != "cpu" and a.threads is not None:
        raise ValueError(f"--threads is for the CPU; --device {a.device} runs on the GPU")
    serve(a.models, host=a.host, port=a.port, max_batch=a.max_batch, max_delay_ms=a.max_delay_ms,
          max_queue=a.max_queue, max_body_mb=a.max_body_mb, device=a.device, threads=a.threads,
          log_level="warning" if a.quiet else "info")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="dcrt", description="Deep Compression runtime: compress, inspect, run, time.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compress", help="prune + quantize + Huffman-code a zoo network or an .onnx file into a .dcz")
    from dcrt.zoo import ARCHITECTURES
    c.add_argument("arch", metavar="MODEL", help=f"a zoo network ({', '.join(sorted(ARCHITECTURES))}) or an .onnx file")
    c.add_argument("output", help="the .dcz to write")
    c.add_argument("--weights", help="npz of parameters (default: seeded random initialisation)")
    c.add_argument("--paper", action="store_true", help="the paper's per-layer densities and bits (tables 2-5)")
    c.add_argument("--density", help="fraction kept: one value or name=value,...")
    c.add_argument("--quality", help="prune |w| <= quality*std(w): one value or name=value,...")
    c.add_argument("--bits", help="codebook bits (default 8 conv, 5 fc): one value or name=value,...")
    c.add_argument("--index-bits", help="relative-index bits (default 5): one value or name=value,...")
    c.add_argument("--init", default="linear", choices=["linear", "density", "random"], help="k-means initialisation")
    c.add_argument("--chunk-symbols", type=int, default=4096, help="Huffman chunk size")
    c.add_argument("--max-code-len", type=int, default=11, help="Huffman code length limit (<= 15)")
    c.add_argument("--storage", help="auto|sparse|plain, or name=storage,...")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("-q", "--quiet", action="store_true")
    c.set_defaults(fn=cmd_compress)
    i = sub.add_parser("info", help="the paper-style size table of a .dcz")
    i.add_argument("file")
    i.set_defaults(fn=cmd_info)
    r = sub.add_parser("run", help="run a .dcz on an .npy input")
    r.add_argument("file")
    r.add_argument("input", help=".npy, float32, [N, *input_shape] or one sample")
    r.add_argument("-o", "--output", help="save the output as .npy")
    r.add_argument("--top", type=int, default=0, help="print the top-K classes per sample")
    r.add_argument("--threads", type=_positive)
    r.add_argument("--device", type=_device, default="cpu", help="cpu (default), cuda or cuda:N")
    r.add_argument("--cast", action="store_true", help="convert the input to float32")
    r.set_defaults(fn=cmd_run)
    pl = sub.add_parser("pipeline", help="train, prune, quantize, fine-tune and Huffman-code on real data",
                        description="Every option left out takes the measured recipe for ARCH on --data "
                                    "(dcrt.pipeline.RECIPES, bench/RESULTS-lenet.md); the run prints the "
                                    "settings it used first.")
    pl.add_argument("arch", choices=["lenet-300-100", "lenet-5"])
    pl.add_argument("output", help="the .dcz to write")
    pl.add_argument("--data", default="fashion-mnist",
                    help="fashion-mnist, mnist-5k, or an .npz of yours with x_train, y_train, x_test, y_test "
                         "(28x28 images, labels 0..9); an .npz takes the fashion-mnist recipe")
    pl.add_argument("--checkpoint-dir", help="save every stage here; rerunning resumes")
    pl.add_argument("--stop-after", help="end after this stage (baseline, prune1.., quantize, finetune, encode)")
    pl.add_argument("--density", help="final density: one value or name=value,...")
    pl.add_argument("--bits", help="codebook bits: one value or name=value,...")
    pl.add_argument("--index-bits", help="relative-index bits")
    for name, typ in (("seed", int), ("batch-size", int), ("baseline-epochs", int), ("baseline-lr", float),
                      ("prune-steps", int), ("retrain-epochs", int), ("retrain-lr", float),
                      ("finetune-epochs", int), ("finetune-lr", float), ("weight-decay", float),
                      ("train-subset", int)):
        pl.add_argument(f"--{name}", type=typ)
    pl.add_argument("--retrain-weight-decay", type=float, help="weight decay while retraining (default: --weight-decay)")
    pl.add_argument("--distill", type=float,
                    help="0..1: retraining and centroid fine-tuning also fit the baseline's soft outputs, "
                         "loss = (1 - d) * cross-entropy + d * T^2 * KL (0: off)")
    pl.add_argument("--temperature", type=float, help="of the baseline's soft outputs (--distill)")
    pl.add_argument("--init", choices=["linear", "density", "random"])
    pl.add_argument("-q", "--quiet", action="store_true")
    pl.set_defaults(fn=cmd_pipeline)
    fg = sub.add_parser("figure", help="the paper's figure 4, 6 or 8 on real data, as a PNG (needs matplotlib)")
    fg.add_argument("which", choices=["fig4", "fig6", "fig8"])
    fg.add_argument("--arch", default="lenet-300-100", choices=["lenet-300-100", "lenet-5"])
    fg.add_argument("--data", default="fashion-mnist", choices=["fashion-mnist", "mnist-5k"])
    fg.add_argument("--out", default="results", help="output folder")
    for name, typ in (("baseline-epochs", int), ("weight-decay", float), ("retrain-lr", float),
                      ("finetune-lr", float)):
        fg.add_argument(f"--{name}", type=typ)
    fg.add_argument("-q", "--quiet", action="store_true")
    fg.set_defaults(fn=cmd_figure)
    b = sub.add_parser("bench", help="latency of infer against the dense numpy forward of the same network")
    b.add_argument("file")
    b.add_argument("--batch", type=_positive, default=1)
    b.add_argument("--repeat", type=_positive, default=50)
    b.add_argument("--warmup", type=_nonnegative, default=5)
    b.add_argument("--threads", type=_positive)
    b.add_argument("--device", type=_device, default="cpu", help="cpu (default), cuda or cuda:N")
    b.add_argument("--no-dense", action="store_true", help="skip the numpy baseline")
    b.add_argument("-q", "--quiet", action="store_true")
    b.set_defaults(fn=cmd_bench)

    sv = sub.add_parser("serve", help="serve .dcz models over HTTP (KServe v2 / Open Inference Protocol; "
                                      "needs the serve extra)",
                        description="Serve .dcz models over HTTP with the KServe v2 REST protocol that Triton, "
                                    "KServe and MLServer speak (JSON tensors and the binary tensor extension), "
                                    "dynamic batching and Prometheus metrics at /metrics. Example: dcrt serve "
                                    "lenet5.dcz --port 8000, then POST /v2/models/lenet5/infer.")
    sv.add_argument("models", nargs="+", metavar="MODEL", help="a .dcz file (named after it) or NAME=FILE.dcz")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--max-batch", type=_positive, default=32,
                    help="samples per batched infer; 1 turns dynamic batching off (default 32)")
    sv.add_argument("--max-delay-ms", type=float, default=0.0,
                    help="how long a batch waits for more requests once it has one (default 0: a batch is "
                         "what queued while the previous one ran, as Triton's default)")
    sv.add_argument("--max-queue", type=_positive, default=256,
                    help="requests per model that may wait; more get 503 with Retry-After (default 256)")
    sv.add_argument("--max-body-mb", type=float, default=64.0, help="larger request bodies get 413 (default 64)")
    sv.add_argument("--threads", type=_positive, help="threads per model (default: every core)")
    sv.add_argument("--device", type=_device, default="cpu", help="cpu (default), cuda or cuda:N")
    sv.add_argument("-q", "--quiet", action="store_true", help="no access log")
    sv.set_defaults(fn=cmd_serve)
    a = ap.parse_args(argv)
    from dcrt.errors import FormatError
    try:
        a.fn(a)
    except (FormatError, ValueError, TypeError, OSError, RuntimeError) as e:
        print(f"dcrt {a.cmd}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
