"""Python API of the native runtime: ``dcrt.load(path).infer(x)``.

Thin: argument checks, array conversion, errors. The work happens in dcrt._core.
"""
from __future__ import annotations

import operator
import os

import numpy as np

from .errors import FormatError, NativeUnavailableError


def _core():
    try:
        from . import _core
    except ImportError as e:  # pragma: no cover - exercised only where the build failed
        raise NativeUnavailableError(
            f"dcrt's native runtime (dcrt._core) is not available: {e}. Reinstall with `pip install .`; "
            "the pure-Python compressor (dcrt.compress / dcrt.decompress) works without it.") from e
    return _core


MAX_THREADS = 256  # the native pool's cap (csrc/model.hpp kMaxThreads)


def _int_arg(value, name, lo, hi):
    """An int in [lo, hi]: TypeError for another type (bool, float, str refused), ValueError
    for one out of range. Messages name the argument only."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got bool")
    if not isinstance(value, int):
        try:
            value = operator.index(value)  # numpy integers
        except TypeError:
            raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if not lo <= value <= hi:
        shown = str(value) if abs(value) < 10 ** 30 else f"a {value.bit_length()}-bit number"
        raise ValueError(f"{name} must be in {lo}..{hi}, got {shown}")
    return int(value)


def _threads(threads):
    if threads is None:
        try:
            n = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            n = os.cpu_count() or 1
        return max(1, min(MAX_THREADS, n))
    return _int_arg(threads, "threads", 1, MAX_THREADS)


def _as_bytes(data, fn="loads"):
    """bytes as they are; other bytes-like objects (bytearray, memoryview, numpy uint8 buffers)
    copied once. Anything else (an int, a str, a list) is a TypeError: ``bytes(5)`` would make
    five zero bytes and ``bytes(10**10)`` allocate 10 GB."""
    if isinstance(data, bytes):
        return data
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(f"{fn}: data must be a bytes-like object (bytes, bytearray, memoryview), "
                        f"got {type(data).__name__}") from None
    with view:
        return view.tobytes()


class Model:
    """A compressed network loaded by the native runtime. Safe to share between threads."""

    def __init__(self, native, path=None):
        from .format import parse_meta
        self._m = native
        self.path = path
        self.meta = parse_meta(native.meta_json)
        labels = self.meta.get("labels")
        n_out = int(np.prod(native.output_shape))
        if labels is not None and len(labels) != n_out:
            raise FormatError(f"META: labels: {len(labels)} labels for an output of {n_out} values")

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def labels(self):
        return self.meta.get("labels")

    @property
    def input_shape(self) -> tuple:
        return self._m.input_shape

    @property
    def output_shape(self) -> tuple:
        return self._m.output_shape

    @property
    def threads(self) -> int:
        return self._m.threads

    @property
    def precision(self) -> str:
        """The precision mode it was loaded with ("fp32", "bf16" or "int8"); which layers run in
        it: ``layers()[i]["precision"]``."""
        return self._m.precision

    @property
    def plan(self) -> dict:
        """The per-sample buffer plan fixed at load: ``activation`` and ``padded`` (float32
        elements of the largest activation and padded conv input), ``lin_cols``/``lin_rows``
        (the batched linear blocks), ``bytes_per_sample`` (workspace bytes an infer call needs
        per sample) and ``work`` (multiply-adds and element visits per sample)."""
        return self._m.plan

    @property
    def load_stats(self) -> dict:
        """Seconds spent parsing, decoding Huffman streams and building the layout; the symbols
        decoded, and how many each Huffman decoder decoded (``huffman_symbols``: {kernel: n})."""
        return self._m.load_stats

    def layers(self) -> list:
        """Per weighted layer: shape, storage, bits, non-zeros and the kernel that runs it (``name``:
        the full name, also where the file's 32-byte header field holds a shortened one)."""
        out = self._m.layers
        for i, L in enumerate(out):
            L["name"] = self._layer_name(i, L["name"])
        return out

    def infer(self, x) -> np.ndarray:
        """Run the network on float32 ``x`` shaped ``[N, *input_shape]`` or ``input_shape``.

        Raises TypeError for another dtype, ValueError for a wrong shape or NaN/Inf.
        The GIL is released while the network runs."""
        if not isinstance(x, np.ndarray):
            raise TypeError(f"infer: expected a numpy float32 array, got {type(x).__name__}")
        return self._m.infer(x)

    __call__ = infer

    def _layer_name(self, i: int, header_name: str | None = None) -> str:
        names = self.meta.get("layer_names")  # full names the 32-byte header field could not hold
        if isinstance(names, list) and i < len(names):
            return names[i]
        return header_name if header_name is not None else self._m.layers[i]["name"]

    def profile(self, x, repeat: int = 10) -> list:
        """Where the time goes: per op, ``{"op", "type", "layer", "out_shape", "seconds", "fused_into"}``
        (the mean over ``repeat`` inferences of ``x``, each op timed on the calling thread). An op
        fused into another (``fused_into`` >= 0) has 0 seconds: its time is that op's; load with
        ``fuse=False`` to time every op on its own."""
        if not isinstance(x, np.ndarray):
            raise TypeError(f"profile: expected a numpy float32 array, got {type(x).__name__}")
        secs = self._m.profile(x, int(repeat))
        out = []
        for i, (op, s) in enumerate(zip(self._m.ops, secs)):
            out.append({"op": i, "type": op["type"], "layer": self._layer_name(op["layer"]) if op["layer"] >= 0 else "",
                        "out_shape": op["out_shape"], "seconds": float(s), "fused_into": op["fused_into"]})
        return out

    def summary(self) -> str:
        """The layer table as text (also printed by ``dcrt info``): per op its output, storage,
        non-zeros, bits, kernel and the threads it runs on at batch 1 ("2 if awake": split only
        over workers already awake -- within a burst of back-to-back calls -- as it is too small
        to pay for waking a sleeping one). Ops fused at load (a pad folded into the conv that reads
        it, an add or relu/clip run in a conv's or linear's epilogue) say which op runs them."""
        rows = [("op", "type", "output", "storage", "weights", "nnz", "bits w/idx", "threads", "kernel")]
        layers = self._m.layers

        ops = self._m.ops

        def thr(op):
            if op["fused_into"] >= 0:
                return f"fused into op {op['fused_into']}"
            t = op["threads_b1"]
            return "1" if t == 1 else (f"{t}" if op["wakes_b1"] else f"{t} if awake")

        def kern(op, L):
            k = op.get("kernel", L["kernel"])
            if op["absorbed"]:
                k += " + " + ", ".join(ops[j]["type"] for j in op["absorbed"])
            return k

        for i, op in enumerate(ops):
            if op["layer"] >= 0:
                L = layers[op["layer"]]
                dens = L["nnz"] / (L["rows"] * L["cols"]) if L["storage"] == "sparse" else 1.0
                rows.append((f"{i}", f"{op['type']} {self._layer_name(op['layer'], L['name'])}", "x".join(map(str, op["out_shape"])), L["storage"],
                             f"{L['rows'] * L['cols']:,}",
                             f"{L['nnz']:,} ({100 * dens:.1f}%)" if L["storage"] == "sparse" else "-",
                             f"{L['code_bits']}/{L['index_bits']}" if L["storage"] == "sparse" else "32/-",
                             thr(op), kern(op, L)))
            else:
                rows.append((f"{i}", op["type"], "x".join(map(str, op["out_shape"])), "", "", "", "", thr(op), ""))
        w = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
        plan = self._m.plan
        lines = [f"{self.name}: input {list(self.input_shape)} -> output {list(self.output_shape)}, "
                 f"{self.threads} threads; per sample: activations {4 * plan['arena'] / 1024:,.1f} KiB at peak "
                 f"(buffers planned by liveness), workspace {plan['bytes_per_sample'] / 1024:,.1f} KiB in all, "
                 f"{plan['work'] / 1e6:,.2f} M multiply-adds"]
        if self.precision != "fp32":
            low = [self._layer_name(i, L["name"]) for i, L in enumerate(layers) if L.get("precision", "fp32") != "fp32"]
            lines.append(f"precision {self.precision}: " + (
                f"batch 1 of {', '.join(low)} (dense codebook); everything else fp32" if low else
                "no layer runs in it (only dense-codebook layers at batch 1 do; the cost model chose none): all fp32"))
        if any("spmv_" in str(L.get("kernel", "")) for L in layers):
            lines.append(_timed_picks_line())
        lines += ["  ".join(c.ljust(w[k]) for k, c in enumerate(r)).rstrip() for r in rows]
        return "\n".join(lines)

    def __repr__(self):
        return f"<dcrt.Model {self.name!r} input={list(self.input_shape)} output={list(self.output_shape)}>"


def kernels() -> list:
    """Every native kernel registered: name, op, isa, whether it is its op's reference twin,
    whether this CPU runs it (``supported``) and whether the runtime uses it (``picked``).
    Per op the runtime takes the last supported non-reference one (the widest ISA), except the
    batch-1 sparse forms (spmv_rows, spmv_cols) and the Huffman decoder: their variants are
    timed once per process on a synthetic layer or stream and the fastest is picked
    (``ns_per_nz``: what it measured per non-zero, or per symbol for ``huffman``; the AVX-512
    gather forms lose to the BMI2 ones on some AVX-512 CPUs, Zen 4 among them). The Huffman
    decoders are timed at two entropies (``ns_per_symbol``: {bits per symbol: ns}); ``picked``
    is the faster at the lower, and a load decodes each stream with the one predicted faster at
    its own bits per symbol (``Model.load_stats["huffman_symbols"]`` counts what each decoded).
    ``load(..., kernels={op: name})`` runs another."""
    return list(_core().kernels())


def _timed(op: str, unit: str) -> str | None:
    ks = [k for k in kernels() if k["op"] == op and k["ns_per_nz"] is not None]
    if not ks:
        return None
    pick = next(k["isa"] for k in ks if k["picked"])
    if op == "huffman":  # timed at two entropies; each stream takes the faster at its own
        bits = sorted(ks[0]["ns_per_symbol"])
        return f"{op} " + ", ".join(
            " / ".join(f"{k['isa']} {k['ns_per_symbol'][b]:.2f}" for k in ks) + f" ns per symbol at {b:.1f} bits"
            for b in bits) + " -> per stream"
    return f"{op} " + " / ".join(f"{k['isa']} {k['ns_per_nz']:.2f}" for k in ks) + f" ns per {unit} -> {pick}"


def _timed_picks_line() -> str:
    parts = [p for p in (_timed("spmv_rows", "non-zero"), _timed("spmv_cols", "non-zero"),
                         _timed("huffman", "symbol")) if p]
    return ("kernels timed on this CPU: " + "; ".join(parts)) if parts else \
        "kernels: one variant of each timed op runs on this CPU (nothing to time)"


def loads(data, device: str = "cpu", threads: int | None = None, *, max_activation: int | None = None,
          max_work: int | None = None, fuse: bool = True, kernels: dict | None = None,
          dense_codebook: str = "auto", precision: str = "fp32"):
    """Load a model from the bytes of a .dcz file (``bytes`` or any bytes-like object). Any
    malformed byte string raises :class:`dcrt.FormatError` naming the section and field.

    ``device``: "cpu" (a :class:`Model`), "cuda" or "cuda:N" (a :class:`dcrt.CudaModel`;
    :class:`dcrt.CudaUnavailableError` where there is no CUDA module or device). ``threads``:
    an int in 1..256 (default: the cores this process may run on).

    A valid file may still declare a huge network. A server that loads files it does not trust
    caps it: ``max_activation`` bounds every buffer the runtime plans, in float32 elements per
    sample (the format's own bound is 2^28), and ``max_work`` the multiply-adds (and element
    visits) per sample; a file over either raises :class:`dcrt.LimitError` at load, before
    its weights are decoded. ``Model.plan`` reports both numbers for a loaded model.

    ``fuse=False`` runs every op of the file on its own instead of fusing (pads into convs,
    adds and relu/clip into conv/linear epilogues): the same outputs, bit for bit, slower; for
    profiling each op's own time (:meth:`Model.profile`).

    ``kernels={op: name}`` replaces the runtime's pick of kernel for those ops by another
    registered one (:func:`dcrt.kernels` lists them with the CPU features they need): for
    comparing variants through the whole network. The default is the fastest this CPU runs.

    ``dense_codebook``: where a sparse linear layer (or a pointwise conv on a one-pixel map) keeps
    many of its weights, batch 1 can walk every code (a byte per weight, decoded by register
    shuffles) instead of the sparse row form.
    "auto" asks a cost model measured on this CPU (once per process; ``Model.layers()[i]["plan"]``
    says what it measured and chose; the column form still takes inputs sparse enough), "always"
    runs it on every batch-1 input, however sparse (no kernel choice then depends on this
    load's timings, so the outputs' bits do not either), "never" keeps the sparse forms.

    ``precision``: "fp32" (the default) or, opt-in, "int8" / "bf16" for the dense-codebook layers
    at batch 1: their codebook rounded to int8 (one scale per layer) and the input quantized per
    call to 8 bits (VNNI dot products), or both rounded to bf16 (AVX512-BF16), sums in int32 /
    fp32. The cost model then weighs that kernel, so more layers may take the dense codebook.
    Every other product stays fp32; ``summary()`` and ``layers()[i]["precision"]`` say what runs
    in which. On a CPU without the instructions the portable kernels give the same results
    (int8: the same bits), slower, and the cost model usually keeps the sparse fp32 forms.
    Measured errors: docs/precision.md."""
    if not isinstance(device, str) or not (device == "cpu" or device.startswith("cuda")):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    data = _as_bytes(data)
    max_activation = (1 << 28) if max_activation is None else _int_arg(max_activation, "max_activation", 1, 1 << 62)
    max_work = (1 << 63) - 1 if max_work is None else _int_arg(max_work, "max_work", 1, (1 << 63) - 1)
    if not isinstance(precision, str) or precision not in ("fp32", "bf16", "int8"):
        raise ValueError(f"precision must be 'fp32', 'bf16' or 'int8', got {precision!r}")
    if device != "cpu":
        if precision != "fp32":
            raise ValueError(f"precision={precision!r} is a CPU mode; the CUDA runtime runs fp32")
        from .cuda import load_cuda
        return load_cuda(data, device)
    if not isinstance(fuse, bool):
        raise TypeError(f"fuse must be True or False, got {type(fuse).__name__}")
    if dense_codebook not in ("auto", "always", "never"):
        raise ValueError(f"dense_codebook must be 'auto', 'always' or 'never', got {dense_codebook!r}")
    return Model(_core().Model(data, _threads(threads), max_activation, max_work, fuse, kernels, dense_codebook,
                               precision))


def load(path, device: str = "cpu", threads: int | None = None, *, max_activation: int | None = None,
         max_work: int | None = None, fuse: bool = True, kernels: dict | None = None,
         dense_codebook: str = "auto", precision: str = "fp32"):
    """Load a .dcz file for inference. ``threads=None`` uses every core this process may run on
    (CPU); ``device="cuda"`` keeps the model on the GPU; limits, ``fuse``, ``kernels``,
    ``dense_codebook`` and ``precision`` as in :func:`loads`."""
    with open(os.fspath(path), "rb") as f:
        data = f.read()
    m = loads(data, device, threads, max_activation=max_activation, max_work=max_work, fuse=fuse, kernels=kernels,
              dense_codebook=dense_codebook, precision=precision)
    m.path = os.fspath(path)
    return m
