"""The paper's figures on real data, made by the project (matplotlib: ``pip install 'dcrt[plot]'``).

    fig6  accuracy vs compression rate: pruning only, quantization only, both   (paper fig. 6)
    fig8  accuracy of the three centroid initialisations across bit widths      (paper fig. 8)
    fig4  a layer's weight distribution with its codebook before/after fine-tuning (fig. 4)

All start from one baseline trained with the pipeline's recipe; every point retrains or
fine-tunes as the pipeline does (shorter schedules, stated in each figure's caption).
"""
from __future__ import annotations

import copy
import json
import math
import os

import numpy as np

from .compressor import encode, prune_density, quantize, quantize_layer
from .pipeline import Config, prepare, pruned_bytes
from .progress import Progress
from .train import SGD, accuracy, cosine_lr, fit


def _plt():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("plots need matplotlib: pip install 'dcrt[plot]'") from e
    return plt


def baseline(cfg: Config, progress=True):
    """Train the pipeline's baseline once; returns (model, dataset)."""
    cfg = cfg.resolve()
    m, ds, _ = prepare(cfg)
    fit(m, SGD(m, cfg.baseline_lr, cfg.momentum, cfg.weight_decay), ds.train.x, ds.train.y, cfg.baseline_epochs,
        cfg.batch_size, cfg.seed, lr_schedule=lambda e: cosine_lr(cfg.baseline_lr, e, cfg.baseline_epochs),
        progress=progress, desc="baseline")
    return m, ds


def _orig_bytes(m):
    return sum(4 * (l.weight.size + l.bias.size) for l in m.weighted())


def prune_retrain(m, ds, density, cfg: Config, steps=2, epochs=2, seed=1):
    """Iterative magnitude pruning to ``density`` (all layers) with short retraining."""
    cfg = cfg.resolve()
    m = copy.deepcopy(m)
    masks = None
    for k in range(1, steps + 1):
        d = density ** (k / steps)
        masks = {l.name: prune_density(l.weight, d) for l in m.weighted()}
        fit(m, SGD(m, cfg.retrain_lr, cfg.momentum, cfg.weight_decay), ds.train.x, ds.train.y, epochs,
            cfg.batch_size, seed + k, masks=masks, lr_schedule=lambda e: cosine_lr(cfg.retrain_lr, e, epochs),
            progress=False)
    return m, masks


def quantize_finetune(m, ds, masks, bits, cfg: Config, init="linear", epochs=1, seed=7, lr_scale=1.0):
    """k-means + centroid fine-tuning. A centroid's gradient sums its weights' gradients
    (eq. 3), so unpruned layers (many more weights per centroid) take ``lr_scale`` < 1."""
    cfg = cfg.resolve()
    m = copy.deepcopy(m)
    quant = quantize(m, masks, bits, init, seed)
    lr = cfg.finetune_lr * lr_scale
    fit(m, SGD(m, lr, cfg.momentum, 0.0), ds.train.x, ds.train.y, epochs, cfg.batch_size, seed,
        quant=quant, lr_schedule=lambda e: cosine_lr(lr, e, epochs), progress=False)
    return m, quant


def fig6(cfg: Config, out_dir, progress=True):
    """Accuracy vs compression rate (size of the compressed layers, every byte counted)."""
    cfg = cfg.resolve()
    m, ds = baseline(cfg, progress)
    test = (ds.test.x, ds.test.y)
    orig, base_acc = _orig_bytes(m), accuracy(m, *test)
    ones = {l.name: np.ones(l.weight.shape, bool) for l in m.weighted()}
    densities, bit_list = [0.5, 0.2, 0.1, 0.07, 0.05, 0.035, 0.025], [8, 6, 5, 4, 3, 2]
    bar = Progress(len(densities) * 2 + len(bit_list), "fig6", progress)
    rows = {"pruning": [], "quantization": [], "pruning+quantization": []}
    for d in densities:
        pm, masks = prune_retrain(m, ds, d, cfg)
        rows["pruning"].append((orig / pruned_bytes(pm, masks, 5), accuracy(pm, *test), d))
        bar.update(f"P {d}")
        qm, quant = quantize_finetune(pm, ds, masks, 5, cfg)
        nbytes = len(_pack(qm, quant))
        rows["pruning+quantization"].append((orig / nbytes, accuracy(qm, *test), d))
        bar.update(f"P+Q {d}")
    for b in bit_list:
        # unpruned: ~1/0.07 more weights per centroid than in the pruned pipeline
        qm, quant = quantize_finetune(m, ds, ones, b, cfg, lr_scale=0.07)
        nbytes = sum(math.ceil(l.weight.size * b / 8) + 4 * ((1 << b) + l.bias.size) for l in qm.weighted())
        rows["quantization"].append((orig / nbytes, accuracy(qm, *test), b))
        bar.update(f"Q {b}")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for (name, pts), style in zip(rows.items(), ["s-", "^-", "o-"]):
        pts = sorted(pts)
        ax.plot([100 / r for r, _, _ in pts], [a - base_acc for _, a, _ in pts], style, label=name)
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_xscale("log")
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter
    ax.xaxis.set_major_locator(FixedLocator([1, 2, 3, 5, 10, 20, 30, 50, 100]))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel("model size, % of fp32 (log scale; every byte counted)")
    ax.set_ylabel("top-1 accuracy change, points")
    ax.set_ylim(-4, 1)
    ax.set_title(f"{cfg.arch} on {cfg.dataset}: baseline {base_acc:.2f}%")
    path = _finish(fig, ax, out_dir, f"fig6-{cfg.arch}-{cfg.dataset}.png")
    _dump(out_dir, f"fig6-{cfg.arch}-{cfg.dataset}.json", {"baseline": base_acc, **rows})
    return path, base_acc, rows


def _finish(fig, ax, out_dir, name):
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=120)
    return path


def _pack(model, quant):
    from . import format as fmt
    from .compressor import model_meta, model_to_graph
    return fmt.pack_file(model_to_graph(model), model_meta(model), encode(model, quant, 5, storage="sparse"))


def _dump(out_dir, name, obj):
    from ._atomic import atomic_write
    with atomic_write(os.path.join(out_dir, name), "w") as f:
        json.dump(obj, f, indent=1)


def fig8(cfg: Config, out_dir, density=None, progress=True):
    """Accuracy after quantization + centroid fine-tuning, per initialisation and bit width,
    on the network pruned to the pipeline's density."""
    cfg = cfg.resolve()
    m, ds = baseline(cfg, progress)
    test = (ds.test.x, ds.test.y)
    dens = cfg.density if density is None else density
    pm = copy.deepcopy(m)
    masks = None
    for k in range(1, 3):
        masks = {l.name: prune_density(l.weight, float(dens[l.name] if isinstance(dens, dict) else dens) ** (k / 2))
                 for l in pm.weighted()}
        fit(pm, SGD(pm, cfg.retrain_lr, cfg.momentum, cfg.weight_decay), ds.train.x, ds.train.y, 2, cfg.batch_size,
            k, masks=masks, progress=False)
    pruned_acc = accuracy(pm, *test)
    bits = [2, 3, 4, 5, 6, 7, 8]
    inits = ["linear", "density", "random"]
    bar = Progress(len(bits) * len(inits), "fig8", progress)
    rows = {i: [] for i in inits}
    for init in inits:
        for b in bits:
            qm, _ = quantize_finetune(pm, ds, masks, b, cfg, init=init)
            rows[init].append((b, accuracy(qm, *test)))
            bar.update(f"{init} {b}")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for (init, pts), style in zip(rows.items(), ["o-", "s-", "^-"]):
        ax.plot([b for b, _ in pts], [a for _, a in pts], style, label=f"{init} init")
    ax.axhline(pruned_acc, color="gray", lw=0.8, ls="--", label=f"pruned, fp32 ({pruned_acc:.2f}%)")
    ax.set_xlabel("bits per weight (codebook of 2^b - 1 centroids + zero)")
    ax.set_ylabel("top-1 accuracy, %")
    ax.set_title(f"{cfg.arch} on {cfg.dataset}: centroid initialisation")
    path = _finish(fig, ax, out_dir, f"fig8-{cfg.arch}-{cfg.dataset}.png")
    _dump(out_dir, f"fig8-{cfg.arch}-{cfg.dataset}.json", {"pruned": pruned_acc, **rows})
    return path, pruned_acc, rows


def fig4(cfg: Config, out_dir, layer="ip2", bits=5, progress=True):
    """One layer's non-zero weights with its codebook after k-means and after fine-tuning."""
    cfg = cfg.resolve()
    m, ds = baseline(cfg, progress)
    pm, masks = prune_retrain(m, ds, float(cfg.density[layer]), cfg)
    w = pm[layer].weight[masks[layer]]
    before = quantize_layer(pm[layer].weight, masks[layer], bits).codebook[1:].copy()
    qm, quant = quantize_finetune(pm, ds, masks, bits, cfg, epochs=2)
    after = quant[layer].codebook[1:]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.hist(w, bins=120, color="#4c72b0", alpha=0.8, label="non-zero weights")
    y0 = ax.get_ylim()[1]
    ax.plot(before, np.full(before.size, 0.06 * y0), "x", color="green", ms=7, label="codebook after k-means")
    ax.plot(after, np.full(after.size, 0.12 * y0), "o", color="red", ms=4, label="after fine-tuning")
    ax.set_xlabel("weight value")
    ax.set_ylabel("count")
    ax.set_title(f"{cfg.arch} {layer} on {cfg.dataset}: {w.size} weights, {bits}-bit codebook")
    ax.legend()
    fig.tight_layout()
    path = os.path.join(out_dir, f"fig4-{cfg.arch}-{layer}-{cfg.dataset}.png")
    fig.savefig(path, dpi=120)
    return path, before, after
