"""Deep Compression of a ResNet-18-shaped network (or a MobileNetV2) on Fashion-MNIST, in a plain
PyTorch loop.

Your model, your data loader, your optimizer and schedule; dcrt.torch only modifies the model
between the stages, and dcrt.compress writes exactly what was trained:

    train (baseline) -> [prune -> retrain] x steps -> fold batch norms -> quantize (k-means)
    -> fine-tune the shared centroids -> .dcz -> accuracy measured by the native runtime

    pip install torch==2.13.0 ".[torch,models,data]"
    python examples/resnet_fashion.py --out resnet-fashion.dcz             # the full run
    python examples/resnet_fashion.py --subset 2000 --epochs 1 --out t.dcz   # a quick look

The network is transformers' ResNet-18 definition (ResNetConfig(layer_type="basic",
depths=[2, 2, 2, 2], num_channels=1)) at reduced width (``--width``, default 16: stages of
16/32/64/128 channels instead of 64/128/256/512) so that it trains on 2 CPU cores; the stem's
7x7 stride-2 conv and max pool take 28x28 images to 7x7. Prints a line per epoch (and a JSON
summary with ``--json``). ``--baseline-state b.pt`` saves the trained baseline (or reuses it), so
compression variants start from the same network; ``--keep-bn`` quantizes without folding the
batch norms into the convs first (they stay per-channel ops in the .dcz): what MobileNetV2
needs, see bench/RESULTS-training.md.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

import dcrt
import dcrt.torch as dt
from dcrt import data


def build(arch: str, width: int, seed: int, dropout: float = 0.2):
    """transformers' definitions, random init: ResNet-18 at ``width`` channels in its first stage
    (64 in the original), or MobileNetV2 at depth multiplier ``width / 32`` (32: the original) with
    ``dropout`` before its classifier (transformers' default, 0.8, is ImageNet's)."""
    torch.manual_seed(seed)
    if arch == "resnet18":
        from transformers import ResNetConfig, ResNetForImageClassification
        cfg = ResNetConfig(layer_type="basic", depths=[2, 2, 2, 2], num_channels=1, embedding_size=width,
                           hidden_sizes=[width, 2 * width, 4 * width, 8 * width], num_labels=10)
        return ResNetForImageClassification(cfg)
    from transformers import MobileNetV2Config, MobileNetV2ForImageClassification
    cfg = MobileNetV2Config(num_channels=1, image_size=28, depth_multiplier=width / 32, num_labels=10,
                            classifier_dropout_prob=dropout)
    net = MobileNetV2ForImageClassification(cfg)
    # transformers builds these batch norms with momentum=0.997, TensorFlow's decay carried over
    # into PyTorch, where momentum is the weight of the *new* batch: the running statistics are
    # then those of the last training batch, and evaluation swings by points from batch to batch.
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1  # PyTorch's default
    return net


class Classifier(torch.nn.Module):
    """Pixels in [0, 1] -> logits: the normalisation is part of the model (so the .dcz takes
    plain pixels too), and transformers' output object is unwrapped to its logits."""

    def __init__(self, net, mean: float, std: float):
        super().__init__()
        self.net, self.mean, self.std = net, mean, std

    def forward(self, x):
        return self.net(pixel_values=(x - self.mean) / self.std).logits


def batches(x, y, batch, rng, augment):
    idx = rng.permutation(len(x))
    for i in range(0, len(idx) - batch + 1, batch):
        xb = torch.from_numpy(x[idx[i:i + batch]])
        if augment:  # random shifts of up to 2 pixels and horizontal flips
            xb = F.pad(xb, (2, 2, 2, 2))
            dy, dx = rng.integers(0, 5, 2)
            xb = xb[:, :, dy:dy + 28, dx:dx + 28]
            flip = torch.from_numpy(rng.random(len(xb)) < 0.5)
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
        yield xb, torch.from_numpy(y[idx[i:i + batch]])


@torch.no_grad()
def accuracy(model, x, y, batch=1000):
    model.eval()
    hits = sum(int((model(torch.from_numpy(x[i:i + batch])).argmax(1).numpy() == y[i:i + batch]).sum())
               for i in range(0, len(x), batch))
    return 100.0 * hits / len(x)


def fit(model, ds, epochs, lr, args, rng, stage, log):
    """Your training loop: SGD with momentum, cosine schedule, light augmentation."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=args.weight_decay if stage == "baseline" else 0)
    steps = max(1, epochs * (len(ds.train.x) // args.batch))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for ep in range(epochs):
        model.train()
        if stage == "finetune":  # batch norms kept (--keep-bn) keep their statistics: the codes cannot follow them
            for m in model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
        t0, total, n = time.perf_counter(), 0.0, 0
        for xb, yb in batches(ds.train.x, ds.train.y, args.batch, rng, augment=True):
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            sched.step()
            total, n = total + float(loss.detach()) * len(yb), n + len(yb)
        log(f"{stage} epoch {ep + 1}/{epochs}: loss {total / max(n, 1):.4f}, val "
            f"{accuracy(model, ds.val.x, ds.val.y):.2f}% ({time.perf_counter() - t0:.0f}s)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="the .dcz to write")
    ap.add_argument("--arch", choices=["resnet18", "mobilenet_v2"], default="resnet18")
    ap.add_argument("--width", type=int, default=16,
                    help="resnet18: channels of the first stage (64 in ResNet-18); mobilenet_v2: 32 x its depth "
                         "multiplier (32 in MobileNetV2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=12, help="baseline epochs")
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--density", type=float, default=0.07, help="final density of the layers of 10k weights or more")
    ap.add_argument("--small-density", type=float, default=0.3,
                    help="final density of the smaller layers (stem, first stage, 1x1 shortcuts, classifier): "
                         "few weights, most sensitive, a small share of the file")
    ap.add_argument("--prune-steps", type=int, default=4)
    ap.add_argument("--retrain-epochs", type=int, default=5, help="per pruning step")
    ap.add_argument("--bits", type=int, default=5)
    ap.add_argument("--finetune-epochs", type=int, default=3)
    ap.add_argument("--finetune-lr", type=float, help="centroid fine-tuning (default: --lr / 100)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--subset", type=int, default=0, help="> 0: a stratified training subset (quick runs)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write the summary here")
    ap.add_argument("--dropout", type=float, default=0.2, help="mobilenet_v2: dropout before the classifier")
    ap.add_argument("--keep-bn", action="store_true",
                    help="quantize the convs with their batch norms kept as per-channel ops (MobileNetV2: folding "
                         "its per-channel scales into the weights first leaves one 5-bit codebook for channels of "
                         "very different magnitudes)")
    ap.add_argument("--baseline-state", metavar="PATH",
                    help="reuse the trained baseline saved here (a torch state_dict), else train it and save it "
                         "there: compression variants then start from the same baseline")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    # One stream for the baseline, another for the compression stages: a loaded baseline
    # (--baseline-state) and a freshly trained one are compressed the same way.
    rng, rng_compress = np.random.default_rng(args.seed), np.random.default_rng([args.seed, 1])
    log = lambda s: print(s, flush=True)  # noqa: E731

    ds = data.fashion_mnist(image=True, seed=args.seed)
    if args.subset:
        ds.train = ds.train.subset(args.subset, args.seed)
    model = Classifier(build(args.arch, args.width, args.seed, args.dropout), float(ds.train.x.mean()), float(ds.train.x.std()))
    example = torch.from_numpy(ds.test.x[:1])
    fp32_bytes = 4 * sum(p.numel() for n, p in model.named_parameters() if "normalization" not in n)
    times, rows = {}, []

    def stage(name, fn):
        t0 = time.perf_counter()
        fn()
        times[name] = time.perf_counter() - t0
        acc = accuracy(model, ds.test.x, ds.test.y)
        rows.append({"stage": name, "test": acc, "seconds": times[name]})
        log(f"== {name}: test {acc:.2f}% ({times[name]:.0f}s)")

    def baseline():
        if args.baseline_state and os.path.exists(args.baseline_state):
            model.load_state_dict(torch.load(args.baseline_state, weights_only=True))
            log(f"baseline loaded from {args.baseline_state}")
            return
        fit(model, ds, args.epochs, args.lr, args, rng, "baseline", log)
        if args.baseline_state:
            tmp = args.baseline_state + ".partial"
            torch.save(model.state_dict(), tmp)
            os.replace(tmp, args.baseline_state)  # never a half-written state
    stage("baseline", baseline)
    final = {n: args.density if m.weight.numel() >= 10_000 else max(args.density, args.small_density)
             for n, m in dt.named_layers(model).items()}
    plan = {n: dt.schedule(d, args.prune_steps) for n, d in final.items()}
    for k in range(args.prune_steps):
        def prune_retrain(k=k):
            dt.prune(model, density={n: s[k] for n, s in plan.items()})
            fit(model, ds, args.retrain_epochs, args.lr / 10, args, rng_compress,
                f"prune{k + 1} (density {args.density ** ((k + 1) / args.prune_steps):.3f})", log)
        stage(f"prune{k + 1}", prune_retrain)

    def quantize():
        if not args.keep_bn:
            folded = dt.fold_batchnorm(model, example)  # before k-means: the codebook must see the final weights
            log(f"folded {len(folded)} batch norms into their convs")
        dt.quantize(model, bits=args.bits)
    stage("quantize", quantize)
    ft_lr = args.finetune_lr if args.finetune_lr is not None else args.lr / 100
    stage("finetune", lambda: fit(model, ds, args.finetune_epochs, ft_lr, args, rng_compress, "finetune", log))

    t0 = time.perf_counter()
    model.eval()
    rep = dcrt.compress(model, args.out, example_input=example, progress=False)
    times["encode"] = time.perf_counter() - t0
    native = dcrt.load(args.out, threads=args.threads)
    t0 = time.perf_counter()
    pred = np.concatenate([native.infer(ds.test.x[i:i + 500]).argmax(1) for i in range(0, len(ds.test.x), 500)])
    native_acc = 100.0 * float((pred == ds.test.y).mean())
    size = os.path.getsize(args.out)
    log("")
    log(rep.table())
    log(f"\n{args.arch} (width {args.width}) on Fashion-MNIST: baseline {rows[0]['test']:.2f}% -> "
        f".dcz {native_acc:.2f}% top-1 (native runtime, 10k test; {native_acc - rows[0]['test']:+.2f} points), "
        f"{fp32_bytes / size:.1f}x smaller than its fp32 weights ({fp32_bytes:,} -> {size:,} bytes, every byte "
        f"of the file); native inference of the test set {time.perf_counter() - t0:.1f}s")
    summary = {"arch": args.arch, "width": args.width, "seed": args.seed, "stages": rows, "native_test": native_acc,
               "fp32_bytes": fp32_bytes, "dcz_bytes": size, "ratio": fp32_bytes / size, "seconds": times,
               "args": vars(args)}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    return summary


if __name__ == "__main__":
    main()
