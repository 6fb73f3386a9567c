"""Training engine for dcrt.nn (pure numpy): loss, SGD, masks, and centroid fine-tuning.

    opt = SGD(model, lr=0.05, momentum=0.9, weight_decay=5e-4)
    fit(model, opt, x, y, epochs=10, batch_size=128, masks=masks)          # pruned retraining
    fit(model, opt, x, y, epochs=3, quant=quant)                            # trained quantization

Masks hold pruned weights at exactly zero through every update. With ``quant`` the
shared centroids are the parameters: each centroid's gradient is the sum of the gradients
of the weights that share it (Han et al., equation 3); the codes (and so the sparsity
pattern) stay fixed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .nn import Dropout, Sequential
from .progress import Progress


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray):
    """Mean cross-entropy of integer ``labels`` and its gradient w.r.t. ``logits``."""
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    n = logits.shape[0]
    loss = -float(logp[np.arange(n), labels].mean())
    d = np.exp(logp)
    d[np.arange(n), labels] -= 1
    return loss, (d / n).astype(np.float32)


def distillation_loss(logits: np.ndarray, teacher: np.ndarray, temperature: float):
    """Hinton et al.'s soft-target term: T^2 * KL(softmax(teacher/T) || softmax(logits/T)), mean
    over the batch, and its gradient w.r.t. ``logits`` (T * (p_student - p_teacher) / n)."""
    T = float(temperature)

    def log_softmax(z):
        z = z / T - (z / T).max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    ls, lt = log_softmax(logits.astype(np.float64)), log_softmax(teacher.astype(np.float64))
    pt = np.exp(lt)
    n = logits.shape[0]
    loss = T * T * float((pt * (lt - ls)).sum(axis=1).mean())
    return loss, (T * (np.exp(ls) - pt) / n).astype(np.float32)


def centroid_grads(dw: np.ndarray, codes: np.ndarray, k: int) -> np.ndarray:
    """Equation 3: dL/dC_k = sum of dL/dW over the weights whose code is k. Code 0 (pruned)
    gets no gradient: it stays exactly zero."""
    g = np.bincount(codes.reshape(-1), weights=dw.reshape(-1).astype(np.float64), minlength=k)
    g[0] = 0.0
    return g.astype(np.float32)


class SGD:
    """SGD with momentum and L2 weight decay over every weighted layer's parameters, or over
    the codebooks of quantized layers (``quant``). ``masks``: pruned weights stay 0."""

    def __init__(self, model: Sequential, lr=0.01, momentum=0.9, weight_decay=5e-4):
        self.model, self.lr, self.momentum, self.weight_decay = model, float(lr), float(momentum), float(weight_decay)
        self.velocity = {}

    def _update(self, key, p, g, decay=True):
        if decay and self.weight_decay:
            g = g + self.weight_decay * p
        v = self.velocity.get(key)
        v = g if v is None else self.momentum * v + g
        self.velocity[key] = v
        p -= self.lr * v

    def step(self, masks=None, quant=None):
        for l in self.model.weighted():
            if quant is not None and l.name in quant:
                q = quant[l.name]
                gc = centroid_grads(l.grads["weight"], q.codes, q.codebook.size)
                self._update((l.name, "codebook"), q.codebook, gc, decay=False)
                q.codebook[0] = 0.0
                l.weight = q.codebook[q.codes]
            else:
                g = l.grads["weight"]
                if masks is not None and l.name in masks:
                    g = g * masks[l.name]
                self._update((l.name, "weight"), l.weight, g)
                if masks is not None and l.name in masks:
                    l.weight *= masks[l.name]  # exactly zero, whatever momentum and decay did
            self._update((l.name, "bias"), l.bias, l.grads["bias"], decay=False)


def step_lr(base: float, epoch: int, every: int, gamma: float = 0.1) -> float:
    return base * gamma ** (epoch // every) if every else base


def cosine_lr(base: float, epoch: int, epochs: int, floor: float = 0.0) -> float:
    return floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * epoch / max(epochs, 1)))


def batches(n: int, batch_size: int, rng: np.random.Generator):
    order = rng.permutation(n)
    for i in range(0, n, batch_size):
        yield order[i:i + batch_size]


def accuracy(model: Sequential, x: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> float:
    hits = 0
    for i in range(0, len(x), batch_size):
        hits += int((model.forward(x[i:i + batch_size], logits=True).argmax(axis=1) == y[i:i + batch_size]).sum())
    return 100.0 * hits / len(x)


@dataclass
class History:
    loss: list = field(default_factory=list)  # mean training loss per epoch
    val: list = field(default_factory=list)  # validation accuracy per epoch (if given)


def fit(model: Sequential, opt: SGD, x: np.ndarray, y: np.ndarray, epochs: int, batch_size: int = 128,
        seed: int = 0, masks=None, quant=None, lr_schedule=None, val=None, progress=True, desc="train",
        teacher=None, distill: float = 0.0, temperature: float = 4.0) -> History:
    """Minibatch SGD for ``epochs`` epochs over shuffled, seeded batches.

    masks: {layer: bool array} held fixed; quant: {layer: compressor.QuantizedLayer}, whose
    codebooks are trained instead of the weights. lr_schedule(epoch) -> lr, else ``opt.lr``
    throughout. ``val=(xv, yv)`` logs accuracy per epoch. ``teacher``: the logits of a trained
    network for every row of ``x`` (the baseline's, computed once): the loss is then
    ``(1 - distill) * cross-entropy + distill * distillation_loss(.., temperature)``, which is how
    a pruned network is retrained towards what the full one predicts. Returns the loss/accuracy
    history."""
    if teacher is not None and (teacher.ndim != 2 or len(teacher) != len(x)):
        raise ValueError(f"teacher logits must be one row per training example ({len(x)}), got {teacher.shape}")
    if not 0.0 <= distill <= 1.0:
        raise ValueError(f"distill must be in [0, 1], got {distill}")
    rng = np.random.default_rng(seed)
    for i, l in enumerate(model.layers):
        if isinstance(l, Dropout):
            l.rng = np.random.default_rng([seed, i])
    if masks is not None:
        for l in model.weighted():
            if l.name in masks:
                l.weight *= masks[l.name]
    if quant is not None:
        for l in model.weighted():
            if l.name in quant:
                l.weight = quant[l.name].codebook[quant[l.name].codes]
    hist = History()
    steps = -(-len(x) // batch_size)
    bar = Progress(epochs * steps, desc, progress)
    base = opt.lr
    for ep in range(epochs):
        opt.lr = lr_schedule(ep) if lr_schedule else base
        total, count = 0.0, 0
        for idx in batches(len(x), batch_size, rng):
            logits = model.forward(x[idx], train=True, logits=True)
            loss, d = softmax_cross_entropy(logits, y[idx])
            if teacher is not None and distill > 0:
                kd, dkd = distillation_loss(logits, teacher[idx], temperature)
                loss, d = (1 - distill) * loss + distill * kd, (1 - distill) * d + distill * dkd
            if not math.isfinite(loss):
                raise FloatingPointError(f"{desc}: the loss became {loss} in epoch {ep + 1} (learning rate "
                                         f"{opt.lr:g}): training diverged; lower the learning rate")
            model.backward(d, input_grad=False)
            opt.step(masks, quant)
            total += loss * len(idx)
            count += len(idx)
            bar.update(f"ep {ep + 1} loss {total / count:.4f}")
        hist.loss.append(total / count)
        if val is not None:
            hist.val.append(accuracy(model, *val))
    opt.lr = base
    bar.close()
    return hist

