"""The Deep Compression pipeline as composable stages (pure Python + numpy).

    masks  = prune(model, density=... | quality=...)          # §2 of the paper
    quant  = quantize(model, masks, bits=..., init="linear")   # §3 k-means weight sharing
    layers = encode(model, quant, index_bits=...)              # relative CSC + Huffman (§4)
    report = write(path, model, layers)                        # the .dcz container

``compress`` runs them all. Retraining (issue 3) slots between the stages: prune, retrain
with the masks held, quantize, fine-tune the centroids, then encode.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import format as fmt
from . import huffman
from .nn import (LRN, AvgPool2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, Sequential, Softmax)
from .progress import Progress
from .sparse import encode_csc

INITS = ("linear", "density", "random")


# ---------------------------------------------------------------------------------
# Stage 1: pruning
# ---------------------------------------------------------------------------------
def prune_threshold(w: np.ndarray, quality: float) -> np.ndarray:
    """Keep |w| > quality * std(w) (Han et al. 2015)."""
    return np.abs(w) > quality * float(np.std(w))


def prune_density(w: np.ndarray, density: float) -> np.ndarray:
    """Keep the round(density * n) largest |w| (ties: lower flat index first)."""
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    flat = np.abs(w).reshape(-1)
    k = int(round(density * flat.size))
    mask = np.zeros(flat.size, dtype=bool)
    if k >= flat.size:
        mask[:] = True
    elif k > 0:
        thr = np.partition(flat, flat.size - k)[flat.size - k]  # k-th largest, O(n)
        mask = flat > thr
        need = k - int(np.count_nonzero(mask))
        mask[np.flatnonzero(flat == thr)[:need]] = True
    return mask.reshape(w.shape)


def _per_layer(value, name, default=None):
    if isinstance(value, dict):
        return value.get(name, default)
    return default if value is None else value


def prune(model: Sequential, density=None, quality=None) -> dict:
    """Masks (bool, weight-shaped) per weighted layer. ``density``/``quality`` are a number
    for all layers or a dict by layer name; a layer with neither keeps every weight."""
    masks = {}
    for l in model.weighted():
        d, q = _per_layer(density, l.name), _per_layer(quality, l.name)
        if d is not None and q is not None:
            raise ValueError(f"{l.name}: give density or quality, not both")
        if d is not None:
            masks[l.name] = prune_density(l.weight, float(d))
        elif q is not None:
            masks[l.name] = prune_threshold(l.weight, float(q))
        else:
            masks[l.name] = np.ones(l.weight.shape, dtype=bool)
    return masks


# ---------------------------------------------------------------------------------
# Stage 2: weight sharing (1-D k-means)
# ---------------------------------------------------------------------------------
def init_centroids(w: np.ndarray, k: int, method: str = "linear", seed: int = 0) -> np.ndarray:
    """The paper's three initialisations (§3.2), sorted ascending."""
    w = np.asarray(w, np.float64).reshape(-1)
    if w.size == 0:
        return np.zeros(k)
    if method == "linear":
        c = np.linspace(w.min(), w.max(), k)
    elif method == "density":
        # linearly spaced in the CDF, mapped back to weight values
        c = np.quantile(w, (np.arange(k) + 0.5) / k)
    elif method in ("random", "forgy"):
        rng = np.random.default_rng(seed)
        c = rng.choice(w, size=k, replace=w.size < k)
    else:
        raise ValueError(f"unknown init {method!r}; choose from {INITS}")
    return np.sort(c)


def kmeans_1d(w: np.ndarray, k: int, init: str = "linear", max_iter: int = 100, seed: int = 0):
    """Lloyd's algorithm in 1-D: sort once; clusters are contiguous ranges of the sorted
    weights, so each iteration costs O(k log n) with prefix sums.
    Returns (centroids ascending float32 [k], labels int [n]). Empty clusters keep their centroid."""
    w = np.asarray(w, np.float64).reshape(-1)
    c = init_centroids(w, k, init, seed)
    if w.size == 0:
        return c.astype(np.float32), np.zeros(0, np.int64)
    sw = np.sort(w)
    csum = np.concatenate([[0.0], np.cumsum(sw)])
    for _ in range(max_iter):
        mids = (c[1:] + c[:-1]) / 2
        cut = np.concatenate([[0], np.searchsorted(sw, mids, side="right"), [sw.size]])
        cnt = np.diff(cut)
        sums = csum[cut[1:]] - csum[cut[:-1]]
        new = np.where(cnt > 0, sums / np.maximum(cnt, 1), c)
        new = np.sort(new)
        if np.array_equal(new, c):
            break
        c = new
    c32 = c.astype(np.float32)
    mids = (c32[1:].astype(np.float64) + c32[:-1]) / 2
    labels = np.searchsorted(mids, w, side="right")
    return c32, labels


@dataclass
class QuantizedLayer:
    codebook: np.ndarray  # float32 [2^bits]; [0] = 0.0 (filler / pruned)
    codes: np.ndarray  # uint8 weight-shaped; 0 = pruned
    bits: int

    def dequantize(self) -> np.ndarray:
        return self.codebook[self.codes]


def quantize_layer(w: np.ndarray, mask: np.ndarray, bits: int, init: str = "linear", seed: int = 0) -> QuantizedLayer:
    """Share 2^bits - 1 centroids among the surviving weights; code 0 is the zero."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    k = (1 << bits) - 1
    cent, labels = kmeans_1d(w[mask], k, init, seed=seed)
    codebook = np.zeros(1 << bits, np.float32)
    codebook[1:] = cent
    codes = np.zeros(w.shape, np.uint8)
    codes[mask] = (labels + 1).astype(np.uint8)
    return QuantizedLayer(codebook, codes, bits)


def _bar(progress, n, desc):
    return progress if isinstance(progress, Progress) else Progress(n, desc, bool(progress))


def quantize(model: Sequential, masks: dict, bits=None, init: str = "linear", seed: int = 0,
             progress=False, skip=()) -> dict:
    """k-means weight sharing per layer. ``bits``: number or dict by name; default 8 for
    conv, 5 for fc (the paper's). ``progress``: bool, or a Progress bar to advance. Layers
    named in ``skip`` (stored plain) are not clustered."""
    out = {}
    bar = _bar(progress, len(model.weighted()), "quantize")
    for l in model.weighted():
        if l.name in skip:
            bar.update(f"{l.name}: not clustered")
            continue
        b = _per_layer(bits, l.name, 8 if isinstance(l, Conv2d) else 5)
        out[l.name] = quantize_layer(l.weight, masks[l.name], int(b), init, seed)
        bar.update(f"quantized {l.name}")
    return out


# ---------------------------------------------------------------------------------
# Stage 3: relative indices + Huffman -> layer records
# ---------------------------------------------------------------------------------
STORAGES = ("auto", "sparse", "plain")


def encode_layer(layer, q: QuantizedLayer | None, index_bits: int = 5, chunk_symbols: int = 4096,
                 max_code_len: int = huffman.DEFAULT_MAX_LEN, storage: str = "auto") -> fmt.LayerRecord:
    """One weighted layer -> its .dcz record. ``storage="auto"`` stores plain fp32 where that
    is smaller than the sparse-quantized form."""
    if storage not in STORAGES:
        raise ValueError(f"{layer.name}: storage must be one of {STORAGES}, got {storage!r}")
    kind = "conv2d" if isinstance(layer, Conv2d) else "linear"
    rows = layer.weight.shape[0]
    w2 = layer.weight.reshape(rows, -1)
    kh, kw = layer.kernel_size if kind == "conv2d" else (1, 1)
    base = dict(name=layer.name, kind=kind, rows=rows, cols=w2.shape[1], kh=kh, kw=kw,
                bias=np.asarray(layer.bias, np.float32))
    if not layer.name or "\0" in layer.name:
        raise ValueError(f"layer name {layer.name!r}: must be non-empty, without NUL")
    plain_rec = fmt.LayerRecord(**base, storage="plain", weight=np.ascontiguousarray(w2, np.float32))
    if storage == "plain" or q is None:
        return plain_rec
    codes2 = q.codes.reshape(rows, -1)
    colptr, e_codes, e_gaps = encode_csc(codes2, index_bits)
    c_len = huffman.code_lengths(np.bincount(e_codes, minlength=1 << q.bits), max_code_len)
    i_len = huffman.code_lengths(np.bincount(e_gaps, minlength=1 << index_bits), max_code_len)
    c_stream, c_off = huffman.encode(e_codes, c_len, chunk_symbols)
    i_stream, i_off = huffman.encode(e_gaps, i_len, chunk_symbols)
    rec = fmt.LayerRecord(**base, storage="sparse", code_bits=q.bits, index_bits=index_bits,
                          chunk_symbols=chunk_symbols, nnz=int(np.count_nonzero(e_codes)), codebook=q.codebook,
                          colptr=colptr, code_lengths=c_len, index_lengths=i_len, code_offsets=c_off,
                          index_offsets=i_off, code_stream=c_stream, index_stream=i_stream, codes=e_codes, gaps=e_gaps)
    if storage == "auto" and fmt.layer_nbytes(rec) >= fmt.layer_nbytes(plain_rec):
        return plain_rec
    return rec


def encode(model: Sequential, quant: dict, index_bits=5, chunk_symbols: int = 4096,
           max_code_len: int = huffman.DEFAULT_MAX_LEN, storage="auto", progress=False) -> list:
    """Layer records in graph order. ``storage``: "auto" (plain fp32 only where compression
    does not pay), "sparse" or "plain"; one value or a dict by layer name."""
    out = []
    bar = _bar(progress, len(model.weighted()), "encode")
    for l in model.weighted():
        ib = int(_per_layer(index_bits, l.name, 5))
        st = _per_layer(storage, l.name, "auto")
        out.append(encode_layer(l, quant.get(l.name), ib, chunk_symbols, max_code_len, st))
        bar.update(f"encoded {l.name}")
    return out


# ---------------------------------------------------------------------------------
# Graph <-> Sequential
# ---------------------------------------------------------------------------------
def model_to_graph(model) -> fmt.Graph:
    """The format graph of a model: a :class:`dcrt.graph.GraphNet` (any DAG) or an
    ``nn.Sequential`` (a chain)."""
    if hasattr(model, "to_format_graph"):
        return model.to_format_graph()
    ops, li = [], 0
    for l in model.layers:
        if isinstance(l, Linear):
            ops.append(fmt.Op("linear", li)); li += 1
        elif isinstance(l, Conv2d):
            ops.append(fmt.Op("conv2d", li, {"stride": l.stride, "padding": l.padding, "groups": l.groups,
                                             "dilation": l.dilation})); li += 1
        elif isinstance(l, ReLU):
            ops.append(fmt.Op("relu"))
        elif isinstance(l, (MaxPool2d, AvgPool2d)):
            ops.append(fmt.Op("maxpool" if isinstance(l, MaxPool2d) else "avgpool", -1,
                              {"kernel": l.kernel_size, "stride": l.stride, "padding": l.padding,
                               "ceil_mode": l.ceil_mode}))
        elif isinstance(l, LRN):
            ops.append(fmt.Op("lrn", -1, {"size": l.size, "alpha": l.alpha, "beta": l.beta, "k": l.k}))
        elif isinstance(l, Flatten):
            ops.append(fmt.Op("flatten"))
        elif isinstance(l, Softmax):
            ops.append(fmt.Op("softmax"))
        elif isinstance(l, Dropout):
            ops.append(fmt.Op("dropout", -1, {"p": l.p}))
        else:
            raise TypeError(f"layer {l.name!r}: {type(l).__name__} has no .dcz op")
    mean, std = model.mean, model.std
    if mean.size == 1 and mean[0] == 0 and std.size == 1 and std[0] == 1:
        mean, std = np.zeros(0, np.float32), np.zeros(0, np.float32)
    return fmt.Graph(model.input_shape, mean, std, ops)


def model_meta(model: Sequential) -> dict:
    meta = {"name": model.name, "metadata": {str(k): v for k, v in model.metadata.items()}}
    if model.labels is not None:
        meta["labels"] = list(model.labels)
    return meta


def dcz_to_model(f: fmt.DczFile) -> Sequential:
    """The dense, dequantized network a .dcz describes (numpy forward)."""
    layers, counts = [], {}

    def nm(kind):
        counts[kind] = counts.get(kind, 0) + 1
        return f"{kind}{counts[kind]}"

    for op in f.graph.ops:
        p = op.params
        if op.type in ("linear", "conv2d"):
            L = f.layers[op.layer]
            if op.type == "linear":
                layer = Linear(L.cols, L.rows, L.name)
            else:
                icg = L.cols // (L.kh * L.kw)
                layer = Conv2d(icg * p["groups"], L.rows, (L.kh, L.kw), p["stride"], p["padding"], p["groups"], L.name,
                               p.get("dilation", (1, 1)))
            layer.weight = L.dense_weight().reshape(layer.weight.shape).astype(np.float32)
            layer.bias = L.bias.astype(np.float32)
        elif op.type == "relu":
            layer = ReLU(nm("relu"))
        elif op.type in ("maxpool", "avgpool"):
            cls = MaxPool2d if op.type == "maxpool" else AvgPool2d
            layer = cls(p["kernel"], p["stride"], p["padding"], bool(p["ceil_mode"]), nm(op.type))
        elif op.type == "lrn":
            layer = LRN(p["size"], p["alpha"], p["beta"], p["k"], nm("lrn"))
        elif op.type == "flatten":
            layer = Flatten(nm("flatten"))
        elif op.type == "softmax":
            layer = Softmax(nm("softmax"))
        elif op.type == "dropout":
            layer = Dropout(p["p"], nm("dropout"))
        layers.append(layer)
    return Sequential(layers, f.graph.input_shape, f.meta.get("name", "model"), f.graph.mean, f.graph.std,
                      f.meta.get("labels"), dict(f.meta.get("metadata", {})))


def decompress(path):
    """Read a .dcz with the pure-Python reader and return the dense, dequantized network: an
    ``nn.Sequential`` for a 1.0-style chain, else a :class:`dcrt.graph.GraphNet` (both have
    ``forward(x)``, ``weighted()`` and layers by name)."""
    from .graph import from_dcz, is_chain
    f = fmt.read(path)
    return dcz_to_model(f) if is_chain(f.graph) else from_dcz(f)


# ---------------------------------------------------------------------------------
# Report (the paper's Tables 2-5, every byte counted)
# ---------------------------------------------------------------------------------
@dataclass
class LayerStats:
    name: str
    storage: str
    n_weights: int
    nnz: int
    n_entries: int
    code_bits: int
    index_bits: int
    huff_code_bits: float  # per entry
    huff_index_bits: float  # per entry
    orig_bytes: int  # fp32 weights + bias
    pq_bytes: int  # without Huffman: fixed-width codes and indices + the same overheads
    file_bytes: int  # this layer's section in the file (everything included)


def layer_stats(L: fmt.LayerRecord) -> LayerStats:
    orig = 4 * (L.rows * L.cols + L.rows)
    size = fmt.layer_nbytes(L)
    if L.storage == "plain":
        return LayerStats(L.name, "plain", L.n_weights, int(np.count_nonzero(L.weight)), 0, 32, 0, 32.0, 0.0,
                          orig, size, size)
    n = L.n_entries
    stream = len(L.code_stream) + len(L.index_stream)
    pq = size - stream + math.ceil(n * (L.code_bits + L.index_bits) / 8)
    return LayerStats(L.name, "sparse", L.n_weights, L.nnz, n, L.code_bits, L.index_bits,
                      8 * len(L.code_stream) / max(n, 1), 8 * len(L.index_stream) / max(n, 1), orig, pq, size)


@dataclass
class Report:
    name: str
    layers: list
    file_bytes: int  # the whole file: header, table, graph, meta, padding

    @property
    def orig_bytes(self):
        return sum(s.orig_bytes for s in self.layers)

    @property
    def overhead_bytes(self):
        """Bytes outside the layer sections (header, section table, graph, meta, padding)."""
        return self.file_bytes - sum(s.file_bytes for s in self.layers)

    @property
    def pq_bytes(self):
        return sum(s.pq_bytes for s in self.layers) + self.overhead_bytes

    @property
    def ratio(self):
        return self.orig_bytes / self.file_bytes

    def table(self) -> str:
        hdr = ("Layer", "#Weights", "Weights%(P)", "Wbits P+Q", "Wbits P+Q+H", "Ibits P+Q", "Ibits P+Q+H",
               "Rate P+Q", "Rate P+Q+H")
        rows = []
        for s in self.layers:
            if s.storage == "plain":
                rows.append((s.name, _k(s.n_weights), f"{100 * s.nnz / s.n_weights:.1f}%", "32 (fp32)", "-", "-", "-",
                             f"{100 * s.pq_bytes / s.orig_bytes:.2f}%", f"{100 * s.file_bytes / s.orig_bytes:.2f}%"))
            else:
                rows.append((s.name, _k(s.n_weights), f"{100 * s.nnz / s.n_weights:.1f}%", str(s.code_bits),
                             f"{s.huff_code_bits:.1f}", str(s.index_bits), f"{s.huff_index_bits:.1f}",
                             f"{100 * s.pq_bytes / s.orig_bytes:.2f}%", f"{100 * s.file_bytes / s.orig_bytes:.2f}%"))
        tw = sum(s.n_weights for s in self.layers)
        tnz = sum(s.nnz for s in self.layers)
        sp = [s for s in self.layers if s.storage == "sparse"]
        ent = sum(s.n_entries for s in sp) or 1
        avg = lambda f: sum(f(s) * s.n_entries for s in sp) / ent  # noqa: E731
        rows.append(("Total", _k(tw), f"{100 * tnz / tw:.1f}% ({tw / max(tnz, 1):.0f}x)", f"{avg(lambda s: s.code_bits):.1f}",
                     f"{avg(lambda s: s.huff_code_bits):.1f}", f"{avg(lambda s: s.index_bits):.1f}",
                     f"{avg(lambda s: s.huff_index_bits):.1f}",
                     f"{100 * self.pq_bytes / self.orig_bytes:.2f}% ({self.orig_bytes / self.pq_bytes:.0f}x)",
                     f"{100 * self.file_bytes / self.orig_bytes:.2f}% ({self.ratio:.0f}x)"))
        widths = [max(len(str(r[i])) for r in rows + [hdr]) for i in range(len(hdr))]
        line = lambda r: "  ".join(str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in enumerate(zip(r, widths)))  # noqa: E731
        out = [f"{self.name}: {_mb(self.orig_bytes)} fp32 -> {_mb(self.file_bytes)} .dcz "
               f"({self.ratio:.1f}x; file overhead outside layers {self.overhead_bytes} B)", line(hdr),
               "  ".join("-" * w for w in widths)]
        out += [line(r) for r in rows]
        out.append("Rates are layer bytes (codes, indices, codebook, column counts, Huffman tables, chunk offsets, bias, "
                   "header, padding) over fp32 weights+bias; bits are per stored entry (fillers included).")
        return "\n".join(out)

    __str__ = table


def _k(n):
    return f"{n / 1e6:.1f}M" if n >= 1e6 else (f"{n / 1e3:.0f}K" if n >= 1e3 else str(n))


def _mb(n):
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} KB"


def report_for(name: str, layers: list, file_bytes: int) -> Report:
    return Report(name, [layer_stats(L) for L in layers], file_bytes)


def write(path, model: Sequential, layers: list) -> Report:
    """Write the container atomically; return its report."""
    n = fmt.write(path, model_to_graph(model), model_meta(model), layers)
    return report_for(model.name, layers, n)


def compress(model, path, *, example_input=None, density=None, quality=None, bits=None, index_bits=5,
             init: str = "linear", chunk_symbols: int = 4096, max_code_len: int = huffman.DEFAULT_MAX_LEN,
             storage="auto", seed: int = 0, progress: bool = True) -> Report:
    """Prune, quantize, Huffman-code and write ``model`` to ``path`` in one call.

    ``model``: a :class:`dcrt.graph.GraphNet` or ``nn.Sequential``, a ``torch.nn.Module``
    (traced on ``example_input`` with ``torch.export``; batch norms folded) or the path of an
    ``.onnx`` file. density / quality / bits / index_bits / storage: one value for every layer
    or a dict by layer name (for a PyTorch module, the module path of the layer:
    ``"encoder.stages.0.layers.1.convolution"``; ``dcrt.zoo.PAPER["vgg16"]`` for the zoo). A
    dict key that names no layer is an error. Without density or quality nothing is pruned.
    ``storage``: "auto" | "sparse" | "plain" ("plain" everywhere: a lossless fp32 file).
    """
    from .frontends import _is_torch_module, to_graph
    trained = {}
    if _is_torch_module(model):
        # A module pruned / quantized with dcrt.torch: export its effective weights, then write
        # exactly its masks, codes and centroids (no re-pruning, no re-clustering).
        from . import torch as dtorch
        trained = dtorch.state(model)
        if trained:
            model = dtorch.strip(model)
    # A batch norm after a layer quantized with dcrt.torch stays a per-channel scale_shift op:
    # folding its scale into the weights would break their shared codebook.
    keep = {name for name, st in trained.items() if st.codes is not None}
    model = to_graph(model, example_input, keep_affine=keep)
    names = [l.name for l in model.weighted()]
    for opt, v in (("density", density), ("quality", quality), ("bits", bits), ("index_bits", index_bits),
                   ("storage", storage)):
        if isinstance(v, dict):
            unknown = [k for k in v if k not in names]
            if unknown:
                raise ValueError(f"compress: {opt}: {unknown[:5]} name no layer of {model.name!r}; its layers are "
                                 f"{names[:8]}{' ...' if len(names) > 8 else ''}")
    if init not in INITS + ("forgy",):
        raise ValueError(f"unknown init {init!r}; choose from {INITS}")
    layer_of = {l.name: l for l in model.weighted()}
    for name, st in trained.items():
        if name not in layer_of:
            raise ValueError(f"compress: {name} was pruned/quantized with dcrt.torch but is not a layer of the "
                             f"exported graph (its layers: {names[:8]})")
        if _per_layer(density, name) is not None or _per_layer(quality, name) is not None:
            raise ValueError(f"compress: {name} was pruned with dcrt.torch; its mask is written as it is (drop "
                             "density=/quality= for it)")
        if st.codes is not None and _per_layer(bits, name) is not None:
            raise ValueError(f"compress: {name} was quantized with dcrt.torch; its codes and centroids are written "
                             "as they are (drop bits= for it)")
        w = layer_of[name].weight
        want = st.codebook[st.codes] if st.codes is not None else None
        if w.shape != st.mask.shape or (want is not None and not np.array_equal(w, want)) or \
                np.count_nonzero(w[~st.mask]):
            raise ValueError(f"compress: {name}: the exported weights are not the trained ones (a batch norm or a "
                             "constant scale was folded into its mask at export): fold batch norms before pruning, "
                             "with dcrt.torch.fold_batchnorm(module, example_input), or quantize the layer too "
                             "(a quantized layer's batch norm stays an op of its own)")
    n = len(model.weighted())
    bar = Progress(2 * n + 2, f"compress {model.name}", progress)
    masks = prune(model, density, quality)
    for name, st in trained.items():
        masks[name] = st.mask
    bar.update("pruned")
    plain = {n for n in names if _per_layer(storage, n, "auto") == "plain"}
    given = {name: QuantizedLayer(st.codebook, st.codes, st.bits) for name, st in trained.items()
             if st.codes is not None}
    quant = quantize(model, masks, bits, init, seed, progress=bar, skip=plain | set(given))
    quant.update({k: v for k, v in given.items() if k not in plain})
    layers = encode(model, quant, index_bits, chunk_symbols, max_code_len, storage, progress=bar)
    rep = write(path, model, layers)
    bar.update("written")
    return rep
