"""numpy model definition: layers with a forward, a backward for training, and ``Sequential``.

Semantics follow Caffe (the paper's framework): pooling rounds output sizes up
(``ceil_mode``), average pooling divides by the window clipped to the padded input,
LRN is Caffe's ACROSS_CHANNELS. These are also the semantics of the native runtime
and of the .dcz graph (docs/format.md §3).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .format import pool_out_size


class Layer:
    name: str = ""
    #: parameter names stored in npz files / .dcz layers
    param_names: tuple = ()

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """``train=True`` caches what :meth:`backward` needs (and turns dropout on)."""
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Gradient w.r.t. the input of the last training forward; weighted layers also
        set ``self.grads`` ({"weight": dW, "bias": db})."""
        raise NotImplementedError(f"{type(self).__name__} has no backward")

    def output_shape(self, shape: tuple) -> tuple:
        return tuple(self.forward(np.zeros((1,) + tuple(shape), np.float32)).shape[1:])

    def __call__(self, x):
        return self.forward(x)

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r})"


class Linear(Layer):
    param_names = ("weight", "bias")

    def __init__(self, in_features: int, out_features: int, name: str = "fc"):
        self.name = name
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = np.zeros((self.out_features, self.in_features), np.float32)
        self.bias = np.zeros(self.out_features, np.float32)

    def forward(self, x, train=False):
        self._in_shape = x.shape
        x = x.reshape(x.shape[0], -1)
        if x.shape[1] != self.in_features:
            raise ValueError(f"{self.name}: expected {self.in_features} input features, got {x.shape[1]}")
        if train:
            self._x = x
        return x @ self.weight.T + self.bias

    def backward(self, dy, need_dx=True):
        self.grads = {"weight": dy.T @ self._x, "bias": dy.sum(axis=0)}
        return (dy @ self.weight).reshape(self._in_shape) if need_dx else None

    def output_shape(self, shape):
        return (self.out_features,)


def conv_out_size(n: int, k: int, s: int, p: int, d: int = 1) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


class Conv2d(Layer):
    param_names = ("weight", "bias")

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, groups=1, name="conv",
                 dilation=1):
        self.name = name
        kh, kw = (kernel_size, kernel_size) if np.isscalar(kernel_size) else kernel_size
        self.stride = (stride, stride) if np.isscalar(stride) else tuple(stride)
        self.padding = (padding, padding) if np.isscalar(padding) else tuple(padding)
        self.dilation = (dilation, dilation) if np.isscalar(dilation) else tuple(int(d) for d in dilation)
        if min(self.dilation) < 1:
            raise ValueError(f"{name}: dilation {self.dilation} must be >= 1")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{name}: channels {in_channels}->{out_channels} not divisible by groups={groups}")
        self.in_channels, self.out_channels, self.groups = int(in_channels), int(out_channels), int(groups)
        self.kernel_size = (int(kh), int(kw))
        self.weight = np.zeros((out_channels, in_channels // groups, kh, kw), np.float32)
        self.bias = np.zeros(out_channels, np.float32)

    def output_shape(self, shape):
        c, h, w = shape
        return (self.out_channels,
                conv_out_size(h, self.kernel_size[0], self.stride[0], self.padding[0], self.dilation[0]),
                conv_out_size(w, self.kernel_size[1], self.stride[1], self.padding[1], self.dilation[1]))

    def forward(self, x, train=False):
        n, c, h, w = x.shape
        if c != self.in_channels:
            raise ValueError(f"{self.name}: expected {self.in_channels} channels, got {c}")
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        _, oh, ow = self.output_shape((c, h, w))
        xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        # Windows of the dilated extent d(k-1)+1, then every d-th tap of each.
        win = sliding_window_view(xp, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
        win = win[:, :, ::sh, ::sw][:, :, :oh, :ow][..., ::dh, ::dw]
        g, icg, ocg = self.groups, c // self.groups, self.out_channels // self.groups
        out = np.empty((n, self.out_channels, oh * ow), np.float32)
        cols_all = []
        for gi in range(g):
            # im2col: [n, pixels, icg*kh*kw], column order (c, ky, kx) = weight.reshape(out, -1)
            cols = win[:, gi * icg:(gi + 1) * icg].transpose(0, 2, 3, 1, 4, 5).reshape(n, oh * ow, icg * kh * kw)
            wm = self.weight[gi * ocg:(gi + 1) * ocg].reshape(ocg, -1)
            out[:, gi * ocg:(gi + 1) * ocg] = np.matmul(wm, cols.transpose(0, 2, 1))
            if train:
                cols_all.append(cols)
        out += self.bias[None, :, None]
        if train:
            self._cols, self._xshape = cols_all, x.shape
        return out.reshape(n, self.out_channels, oh, ow)

    def backward(self, dy, need_dx=True):
        n, c, h, w = self._xshape
        (kh, kw), (sh, sw), (ph, pw), (dil_h, dil_w) = self.kernel_size, self.stride, self.padding, self.dilation
        oh, ow = dy.shape[2:]
        g, icg, ocg = self.groups, c // self.groups, self.out_channels // self.groups
        dyf = dy.reshape(n, self.out_channels, oh * ow)
        dw = np.empty_like(self.weight)
        for gi in range(g):
            dyg = dyf[:, gi * ocg:(gi + 1) * ocg]  # [n, ocg, P]
            cols = self._cols[gi]  # [n, P, K]
            dw[gi * ocg:(gi + 1) * ocg] = (dyg.transpose(1, 0, 2).reshape(ocg, -1)
                                           @ cols.reshape(-1, cols.shape[2])).reshape(dw[gi * ocg:(gi + 1) * ocg].shape)
        self.grads = {"weight": dw, "bias": dyf.sum(axis=(0, 2))}
        if not need_dx:
            return None
        # dx, one GEMM per kernel tap, accumulated in [H, W, N, C] so that every strided add
        # moves whole contiguous N*C rows (a col2im over [N, C, H, W] adds 8-float runs: 5x slower).
        dyt = np.ascontiguousarray(dy.transpose(2, 3, 0, 1))  # [oh, ow, n, oc]
        acc = np.zeros((h + 2 * ph, w + 2 * pw, n, c), np.float32)
        for gi in range(g):
            d = dyt[..., gi * ocg:(gi + 1) * ocg].reshape(-1, ocg)
            wg = self.weight[gi * ocg:(gi + 1) * ocg]
            for ky in range(kh):
                for kx in range(kw):
                    y0, x0 = ky * dil_h, kx * dil_w
                    acc[y0:y0 + sh * (oh - 1) + 1:sh, x0:x0 + sw * (ow - 1) + 1:sw, :, gi * icg:(gi + 1) * icg] += \
                        (d @ wg[:, :, ky, kx]).reshape(oh, ow, n, icg)
        return np.ascontiguousarray(acc[ph:ph + h, pw:pw + w].transpose(2, 3, 0, 1))


class ReLU(Layer):
    def __init__(self, name="relu"):
        self.name = name

    def forward(self, x, train=False):
        y = np.maximum(x, 0, dtype=np.float32)
        if train:
            self._mask = x > 0
        return y

    def backward(self, dy):
        return dy * self._mask

    def output_shape(self, shape):
        return tuple(shape)


class _Pool(Layer):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=True, name="pool"):
        self.name = name
        self.kernel_size = (kernel_size, kernel_size) if np.isscalar(kernel_size) else tuple(kernel_size)
        stride = self.kernel_size if stride is None else stride
        self.stride = (stride, stride) if np.isscalar(stride) else tuple(stride)
        self.padding = (padding, padding) if np.isscalar(padding) else tuple(padding)
        self.ceil_mode = bool(ceil_mode)

    def output_shape(self, shape):
        c, h, w = shape
        return (c,
                pool_out_size(h, self.kernel_size[0], self.stride[0], self.padding[0], self.ceil_mode),
                pool_out_size(w, self.kernel_size[1], self.stride[1], self.padding[1], self.ceil_mode))

    def _taps(self, x, fill):
        """Padded input and, per kernel tap (ky, kx), the strided slice every output reads."""
        n, c, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        _, oh, ow = self.output_shape((c, h, w))
        hi_h = max(0, (oh - 1) * sh + kh - h - ph)
        hi_w = max(0, (ow - 1) * sw + kw - w - pw)
        xp = np.pad(x, ((0, 0), (0, 0), (ph, hi_h), (pw, hi_w)), constant_values=fill)
        return {(ky, kx): xp[:, :, ky:ky + sh * (oh - 1) + 1:sh, kx:kx + sw * (ow - 1) + 1:sw]
                for ky in range(kh) for kx in range(kw)}, oh, ow

    def _scatter(self, xshape, parts):
        """Sum per-tap gradients [n, c, oh, ow] (indexed by (ky, kx)) back onto the input."""
        n, c, h, w = xshape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        oh, ow = next(iter(parts.values())).shape[2:]
        dxp = np.zeros((n, c, max(h + 2 * ph, (oh - 1) * sh + kh), max(w + 2 * pw, (ow - 1) * sw + kw)), np.float32)
        for (ky, kx), d in parts.items():
            dxp[:, :, ky:ky + sh * (oh - 1) + 1:sh, kx:kx + sw * (ow - 1) + 1:sw] += d
        return dxp[:, :, ph:ph + h, pw:pw + w]


class MaxPool2d(_Pool):
    def forward(self, x, train=False):
        taps, _, _ = self._taps(x, -np.inf)
        y = None
        for t in taps.values():
            y = t.copy() if y is None else np.maximum(y, t, out=y)
        y = y.astype(np.float32, copy=False)
        if train:
            self._tapv, self._y, self._xshape = taps, y, x.shape
        return y

    def backward(self, dy):
        taken = np.zeros(dy.shape, bool)
        parts = {}
        for key, t in self._tapv.items():
            hit = (t == self._y) & ~taken  # the first maximum in tap order gets the gradient
            taken |= hit
            parts[key] = dy * hit
        return self._scatter(self._xshape, parts)


class AvgPool2d(_Pool):
    def _divisor(self, h, w, oh, ow):
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        hs = np.arange(oh) * sh - ph
        ws = np.arange(ow) * sw - pw
        dh = np.minimum(hs + kh, h + ph) - hs
        dw = np.minimum(ws + kw, w + pw) - ws
        return (dh[:, None] * dw[None, :]).astype(np.float32)

    def forward(self, x, train=False):
        n, c, h, w = x.shape
        taps, oh, ow = self._taps(x, 0.0)
        total = np.zeros((n, c, oh, ow), np.float32)
        for t in taps.values():
            total += t
        if train:
            self._xshape = x.shape
        return total / self._divisor(h, w, oh, ow)

    def backward(self, dy):
        n, c, h, w = self._xshape
        d = dy / self._divisor(h, w, *dy.shape[2:])
        kh, kw = self.kernel_size
        return self._scatter(self._xshape, {(ky, kx): d for ky in range(kh) for kx in range(kw)})


class LRN(Layer):
    """Caffe LRN, ACROSS_CHANNELS: x / (k + alpha/size * sum_window x^2)^beta."""

    def __init__(self, size=5, alpha=1e-4, beta=0.75, k=1.0, name="norm"):
        if size % 2 == 0:
            raise ValueError("LRN size must be odd")
        self.name, self.size, self.alpha, self.beta, self.k = name, int(size), float(alpha), float(beta), float(k)

    def output_shape(self, shape):
        return tuple(shape)

    def _window_sum(self, v):
        half = self.size // 2
        vp = np.pad(v, ((0, 0), (half, half), (0, 0), (0, 0)))
        return sliding_window_view(vp, self.size, axis=1).sum(axis=-1, dtype=np.float32)

    def forward(self, x, train=False):
        scale = np.float32(self.k) + np.float32(self.alpha / self.size) * self._window_sum(x.astype(np.float32) ** 2)
        y = (x * scale ** np.float32(-self.beta)).astype(np.float32)
        if train:
            self._x, self._scale, self._y = x, scale, y
        return y

    def backward(self, dy):
        # y_i = x_i s_i^-b, s_i = k + a/n sum_{j in win(i)} x_j^2  (windows are symmetric)
        x, s, y = self._x, self._scale, self._y
        t = self._window_sum(dy * y / s)
        return (dy * s ** np.float32(-self.beta) - np.float32(2 * self.alpha * self.beta / self.size) * x * t
                ).astype(np.float32)


class Flatten(Layer):
    def __init__(self, name="flatten"):
        self.name = name

    def forward(self, x, train=False):
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        return dy.reshape(self._shape)

    def output_shape(self, shape):
        return (int(np.prod(shape)),)


class Softmax(Layer):
    """Softmax over the channel axis (axis 1), as Caffe's."""

    def __init__(self, name="prob"):
        self.name = name

    def forward(self, x, train=False):
        z = x - x.max(axis=1, keepdims=True)
        e = np.exp(z)
        y = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
        if train:
            self._y = y
        return y

    def backward(self, dy):
        y = self._y
        return y * (dy - (dy * y).sum(axis=1, keepdims=True))

    def output_shape(self, shape):
        return tuple(shape)


class Dropout(Layer):
    """Inverted dropout: in training, zero each unit with probability p and scale the rest by
    1/(1-p); a no-op at inference. ``rng`` (seeded by the trainer) makes it reproducible."""

    def __init__(self, p=0.5, name="drop"):
        self.name, self.p = name, float(p)
        self.rng = np.random.default_rng(0)

    def forward(self, x, train=False):
        if not train or self.p == 0:
            self._mask = None
            return x
        self._mask = (self.rng.random(x.shape, dtype=np.float32) >= self.p) / np.float32(1 - self.p)
        return x * self._mask

    def backward(self, dy):
        return dy if self._mask is None else dy * self._mask

    def output_shape(self, shape):
        return tuple(shape)


@dataclass
class Sequential:
    """An ordered network with its input contract.

    ``mean``/``std`` are per input channel (or one value for all); the forward
    computes ``(x - mean) / std`` first, so callers pass plain pixels in [0, 1].
    """

    layers: list
    input_shape: tuple
    name: str = "model"
    mean: np.ndarray = field(default_factory=lambda: np.zeros(1, np.float32))
    std: np.ndarray = field(default_factory=lambda: np.ones(1, np.float32))
    labels: list | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        self.input_shape = tuple(int(d) for d in self.input_shape)
        self.mean = np.asarray(self.mean, np.float32).reshape(-1)
        self.std = np.asarray(self.std, np.float32).reshape(-1)
        names = [l.name for l in self.layers]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate layer names: {sorted(dup)}")

    # -- structure ---------------------------------------------------------
    def weighted(self):
        return [l for l in self.layers if isinstance(l, (Linear, Conv2d))]

    def __getitem__(self, name):
        for l in self.layers:
            if l.name == name:
                return l
        raise KeyError(name)

    def shapes(self):
        """Per-sample output shape of every layer, in order."""
        out, s = [], self.input_shape
        for l in self.layers:
            s = l.output_shape(s)
            out.append(s)
        return out

    @property
    def output_shape(self):
        return self.shapes()[-1] if self.layers else self.input_shape

    def n_params(self):
        return sum(l.weight.size + l.bias.size for l in self.weighted())

    # -- forward -----------------------------------------------------------
    def normalize(self, x):
        if self.mean.size == 1:
            return ((x - self.mean[0]) / self.std[0]).astype(np.float32)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return ((x - self.mean.reshape(shape)) / self.std.reshape(shape)).astype(np.float32)

    def forward(self, x, train=False, logits=False):
        """Run the network. ``logits=True`` stops before a final Softmax (for the loss);
        ``train=True`` caches for :meth:`backward` and enables dropout."""
        x = np.asarray(x, np.float32)
        single = x.shape == self.input_shape
        if single:
            x = x[None]
        if x.shape[1:] != self.input_shape:
            raise ValueError(f"{self.name}: expected input [N, {', '.join(map(str, self.input_shape))}], got {list(x.shape)}")
        x = self.normalize(x)
        layers = self.layers[:-1] if logits and self.layers and isinstance(self.layers[-1], Softmax) else self.layers
        for l in layers:
            x = l.forward(x, train)
        self._ran = layers
        return x[0] if single else x

    def backward(self, dy, input_grad=True):
        """Backpropagate through the layers of the last training forward; returns d(input')
        (after normalisation), or None with ``input_grad=False`` (training: the first weighted
        layer then skips its input gradient, the costliest part of a first conv's backward)."""
        ran = self._ran
        first = None if input_grad else next((i for i, l in enumerate(ran) if isinstance(l, (Linear, Conv2d))), None)
        for i in range(len(ran) - 1, -1, -1):
            if i == first:
                ran[i].backward(dy, need_dx=False)
                return None
            dy = ran[i].backward(dy)
        return dy

    __call__ = forward

    # -- parameters --------------------------------------------------------
    def state_dict(self):
        return {f"{l.name}.{p}": getattr(l, p) for l in self.weighted() for p in l.param_names}

    def load_state_dict(self, state):
        expected = self.state_dict()
        unknown = [k for k in state if k not in expected]
        if unknown:
            raise ValueError(f"{len(unknown)} parameters name nothing in {self.name!r}: {sorted(unknown)[:5]}"
                             f"{' ...' if len(unknown) > 5 else ''}; its parameters are {sorted(expected)[:8]}"
                             f"{' ...' if len(expected) > 8 else ''}")
        for key, arr in state.items():
            lname, _, pname = key.rpartition(".")
            layer = self[lname]
            cur = getattr(layer, pname)
            arr = np.asarray(arr, np.float32)
            if arr.shape != cur.shape:
                raise ValueError(f"{key}: shape {arr.shape} != expected {cur.shape}")
            setattr(layer, pname, arr.copy())
        missing = set(self.state_dict()) - set(state)
        if missing:
            raise ValueError(f"missing parameters: {sorted(missing)}")

    def save_npz(self, path):
        """Atomically (dcrt._atomic); like numpy, adds ``.npz`` to a path without it."""
        from ._atomic import atomic_write
        path = os.fspath(path)
        if not path.endswith(".npz"):
            path += ".npz"
        with atomic_write(path) as f:
            np.savez(f, **self.state_dict())

    def load_npz(self, path):
        with np.load(path) as z:
            self.load_state_dict({k: z[k] for k in z.files})
        return self


def he_init(model: Sequential, seed: int = 0, bias_std: float = 0.01) -> Sequential:
    """Seeded He-normal weights and small normal biases for every weighted layer."""
    rng = np.random.default_rng(seed)
    for l in model.weighted():
        fan_in = int(np.prod(l.weight.shape[1:]))
        l.weight = (rng.standard_normal(l.weight.shape, dtype=np.float32) * np.float32(math.sqrt(2.0 / fan_in)))
        l.bias = (rng.standard_normal(l.bias.shape, dtype=np.float32) * np.float32(bias_std))
    return model
