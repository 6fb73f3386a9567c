"""The .dcz container, version 1: pure-Python writer and reference reader.

This module is the executable form of docs/format.md; section numbers (§) refer
to it. Bytes in, validated records out: no arithmetic on weights happens here
beyond decoding the two Huffman streams and the relative indices.
"""
from __future__ import annotations

import json
import math
import os
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from . import huffman
from .errors import FormatError
from .sparse import decode_rows

# §1 file header ---------------------------------------------------------------
MAGIC = b"\x89DCZ\r\n\x1a\n"
VERSION_MAJOR = 1
VERSION_MINOR = 2  # 1.1: tighter bounds; 1.2: op inputs (graphs with branches), 12 op types (changelog)
HEADER = struct.Struct("<8sHHIQQII20sI")  # 64 bytes
SECTION = struct.Struct("<IIQQII")  # 32 bytes
SECTION_ALIGN = 64  # every section starts on a 64-byte boundary (mmap, cache lines)
ARRAY_ALIGN = 16  # every array inside a LAYER section starts on 16 bytes
MAX_SECTIONS = 1 << 16

# §2 section kinds (append-only). Kinds with the top bit set are ancillary:
# readers that do not know them skip them.
KIND_GRAPH, KIND_META, KIND_LAYER = 1, 2, 3
KIND_NAMES = {KIND_GRAPH: "GRAPH", KIND_META: "META", KIND_LAYER: "LAYER"}
ANCILLARY = 0x8000_0000

# §3 graph ------------------------------------------------------------------------
GRAPH_HEADER = struct.Struct("<II4III")  # 32 bytes
OP = struct.Struct("<HHi8I")  # 40 bytes: type, n_inputs (1.0: reserved, 0), layer, params[8]
OP_LINEAR, OP_CONV2D, OP_RELU, OP_MAXPOOL, OP_AVGPOOL, OP_LRN, OP_FLATTEN, OP_SOFTMAX, OP_DROPOUT = range(1, 10)
# 1.2: graphs with branches and the ops of modern CNNs (append-only)
(OP_ADD, OP_MUL, OP_CONCAT, OP_GLOBAL_AVGPOOL, OP_PAD, OP_CLIP, OP_SIGMOID, OP_HARDSIGMOID, OP_HARDSWISH, OP_SILU,
 OP_TANH, OP_GELU) = range(10, 22)
OP_NAMES = {OP_LINEAR: "linear", OP_CONV2D: "conv2d", OP_RELU: "relu", OP_MAXPOOL: "maxpool",
            OP_AVGPOOL: "avgpool", OP_LRN: "lrn", OP_FLATTEN: "flatten", OP_SOFTMAX: "softmax",
            OP_DROPOUT: "dropout", OP_ADD: "add", OP_MUL: "mul", OP_CONCAT: "concat",
            OP_GLOBAL_AVGPOOL: "global_avgpool", OP_PAD: "pad", OP_CLIP: "clip", OP_SIGMOID: "sigmoid",
            OP_HARDSIGMOID: "hardsigmoid", OP_HARDSWISH: "hardswish", OP_SILU: "silu", OP_TANH: "tanh",
            OP_GELU: "gelu"}
#: parameters used per op type (§3.2); the rest must be 0
OP_NPARAMS = {"conv2d": 7, "maxpool": 7, "avgpool": 7, "lrn": 4, "dropout": 1, "pad": 4, "clip": 2,
              "hardsigmoid": 2, "gelu": 1}
BINARY_OPS = ("add", "mul")  # exactly two inputs; concat: two or more; every other op: one
OP_CODES = {v: k for k, v in OP_NAMES.items()}
MAX_ACTIVATION = 1 << 28  # elements per sample, any activation or planned buffer (bounds buffers)
NORM_MAX = float(1 << 24)  # |mean| <= 2^24, 2^-24 <= std <= 2^24 (§3.1)
NORM_STD_MIN = 1.0 / (1 << 24)
FLT_MIN = 2.0 ** -126  # smallest normal float32 (LRN k must be at least this)

# §4 layers -----------------------------------------------------------------------
LAYER_HEADER = struct.Struct("<6IBBBBI4Q32s")  # 96 bytes
STORAGE_PLAIN, STORAGE_SPARSE = 1, 2
LAYER_LINEAR, LAYER_CONV2D = 1, 2
STORAGE_NAMES = {STORAGE_PLAIN: "plain", STORAGE_SPARSE: "sparse"}
LKIND_NAMES = {LAYER_LINEAR: "linear", LAYER_CONV2D: "conv2d"}

assert HEADER.size == 64 and SECTION.size == 32 and GRAPH_HEADER.size == 32
assert OP.size == 40 and LAYER_HEADER.size == 96


def pool_out_size(n: int, k: int, s: int, p: int, ceil_mode: bool) -> int:
    """Pooled size (§3.2, Caffe's rule): rounds up in ceil mode, but the last window must
    start inside input + pad."""
    if ceil_mode:
        out = -(-(n + 2 * p - k) // s) + 1
        if p > 0 and (out - 1) * s >= n + p:
            out -= 1
        return out
    return (n + 2 * p - k) // s + 1


def _check_window(h, w, kh, kw, sh, sw, ph, pw):
    """The rules conv and pool windows share (§3.3); returns "" or the broken rule."""
    if kh == 0 or kw == 0:
        return "kernel must be >= 1"
    if sh == 0 or sw == 0:
        return "stride must be >= 1"
    if ph >= kh or pw >= kw:
        return f"padding {ph}x{pw} must be smaller than the kernel {kh}x{kw}"
    hp, wp = h + 2 * ph, w + 2 * pw
    if kh > hp or kw > wp:
        return f"kernel {kh}x{kw} larger than the padded input {hp}x{wp}"
    if sh > hp or sw > wp:
        return f"stride {sh}x{sw} larger than the padded input {hp}x{wp}"
    return ""


def conv_geometry(c, h, w, kh, kw, sh, sw, ph, pw, dh=1, dw=1):
    """(error, out_h, out_w, padded) of a conv2d (§3.3) with a kh x kw kernel dilated by dh x dw
    (the window's extent is d(k - 1) + 1). ``padded`` is the runtime's phase-split padded input,
    ``c * sw * (h + 2ph) * ceil((w + 2pw) / sw)`` elements, at most 2^28."""
    if dh < 1 or dw < 1:
        return "dilation must be >= 1", 0, 0, 0
    if kh == 0 or kw == 0:
        return "kernel must be >= 1", 0, 0, 0
    kh, kw = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    e = _check_window(h, w, kh, kw, sh, sw, ph, pw)
    if e:
        if dh > 1 or dw > 1:
            e += f" (the kernel's extent at dilation {dh}x{dw})"
        return e, 0, 0, 0
    hp, wp = h + 2 * ph, w + 2 * pw
    padded = c * sw * hp * (-(-wp // sw))
    if padded > MAX_ACTIVATION:
        return (f"padded input {c}x{hp}x{wp} (stride {sw}) needs {padded} elements, over 2^28"), 0, 0, 0
    return "", (hp - kh) // sh + 1, (wp - kw) // sw + 1, padded


def pool_geometry(h, w, kh, kw, sh, sw, ph, pw, ceil_mode):
    """(error, out_h, out_w) of a max/avg pool (§3.3): padded input (h+2ph)(w+2pw) <= 2^28."""
    e = _check_window(h, w, kh, kw, sh, sw, ph, pw)
    if e:
        return e, 0, 0
    if (h + 2 * ph) * (w + 2 * pw) > MAX_ACTIVATION:
        return f"padded input {h + 2 * ph}x{w + 2 * pw} exceeds 2^28 elements", 0, 0
    return "", pool_out_size(h, kh, sh, ph, ceil_mode), pool_out_size(w, kw, sw, pw, ceil_mode)


def count_bits(colptr) -> int:
    """Bits per packed column count (§4.2): enough for the fullest column, at least 1."""
    return max(1, int(np.diff(np.asarray(colptr, np.int64)).max(initial=0)).bit_length())


def pack_counts(colptr, bits: int) -> bytes:
    """Column entry counts as ``bits``-bit unsigned integers, MSB first (§4.2)."""
    counts = np.diff(np.asarray(colptr, np.int64))
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
    return np.packbits(((counts[:, None] >> shifts) & 1).astype(np.uint8).reshape(-1)).tobytes()


def unpack_counts(raw, cols: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_counts` -> int64 counts [cols]."""
    b = np.unpackbits(np.frombuffer(bytes(raw), np.uint8))[: cols * bits].reshape(cols, bits).astype(np.int64)
    return b @ (np.int64(1) << np.arange(bits - 1, -1, -1, dtype=np.int64))


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def _f32_bits(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", x))[0]


def _bits_f32(u: int) -> float:
    return struct.unpack("<f", struct.pack("<I", u))[0]


# ----------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------
@dataclass
class Op:
    """One graph op. ``params`` by op type (§3.2):

    conv2d: stride (h, w), padding (h, w), groups, dilation (h, w); maxpool/avgpool: kernel, stride,
    padding (each (h, w)), ceil_mode; lrn: size, alpha, beta, k; dropout: p.
    """

    type: str
    layer: int = -1
    params: dict = field(default_factory=dict)
    #: tensor ids it reads (§3.2): 0 the graph input, j + 1 the output of op j. None (writer
    #: side): the previous op's output. The reader always fills it in.
    inputs: list | None = None


@dataclass
class Graph:
    input_shape: tuple
    mean: np.ndarray
    std: np.ndarray
    ops: list


@dataclass
class LayerRecord:
    name: str
    kind: str  # "linear" | "conv2d"
    rows: int
    cols: int
    kh: int
    kw: int
    bias: np.ndarray
    storage: str  # "plain" | "sparse"
    weight: np.ndarray | None = None  # plain: float32 [rows, cols]
    code_bits: int = 0
    index_bits: int = 0
    chunk_symbols: int = 0
    nnz: int = 0
    codebook: np.ndarray | None = None  # float32 [2^code_bits], [0] == 0
    colptr: np.ndarray | None = None  # uint32 [cols+1]; stored as packed column counts
    code_lengths: np.ndarray | None = None
    index_lengths: np.ndarray | None = None
    code_offsets: np.ndarray | None = None
    index_offsets: np.ndarray | None = None
    code_stream: bytes = b""
    index_stream: bytes = b""
    codes: np.ndarray | None = None  # decoded: uint8 per entry
    gaps: np.ndarray | None = None  # decoded: uint8 per entry

    @property
    def n_entries(self) -> int:
        return 0 if self.colptr is None else int(self.colptr[-1])

    @property
    def n_weights(self) -> int:
        return self.rows * self.cols

    def dense_weight(self) -> np.ndarray:
        """Dequantized float32 [rows, cols] (reference; the runtime never does this)."""
        if self.storage == "plain":
            return self.weight
        from .sparse import to_dense
        return to_dense(self.colptr, self.codes, self.gaps, self.rows, self.cols, self.codebook)


@dataclass
class DczFile:
    graph: Graph
    meta: dict
    layers: list
    file_size: int
    sections: list  # (kind, index, offset, length) as in the section table
    version: tuple = (VERSION_MAJOR, VERSION_MINOR)


# ----------------------------------------------------------------------------------
# Writer
# ----------------------------------------------------------------------------------
def _pack_op(op: Op, n_inputs: int = 0) -> bytes:
    p = [0] * 8
    t = op.type
    if t == "conv2d":
        (sh, sw), (ph, pw) = op.params["stride"], op.params["padding"]
        dh, dw = op.params.get("dilation", (1, 1))
        if dh < 1 or dw < 1:
            raise ValueError(f"conv2d: dilation {(dh, dw)} must be >= 1")
        p[:7] = [sh, sw, ph, pw, op.params.get("groups", 1), dh - 1, dw - 1]  # stored as dilation - 1
    elif t in ("maxpool", "avgpool"):
        (kh, kw), (sh, sw), (ph, pw) = op.params["kernel"], op.params["stride"], op.params["padding"]
        p[:7] = [kh, kw, sh, sw, ph, pw, int(bool(op.params.get("ceil_mode", True)))]
    elif t == "lrn":
        p[:4] = [op.params["size"], _f32_bits(op.params["alpha"]), _f32_bits(op.params["beta"]),
                 _f32_bits(op.params["k"])]
    elif t == "dropout":
        p[0] = _f32_bits(op.params.get("p", 0.5))
    elif t == "pad":
        p[:4] = op.params["pads"]  # top, bottom, left, right
    elif t == "clip":
        p[:2] = [_f32_bits(op.params["min"]), _f32_bits(op.params["max"])]
    elif t == "hardsigmoid":
        p[:2] = [_f32_bits(op.params.get("alpha", 1 / 6)), _f32_bits(op.params.get("beta", 0.5))]
    elif t == "gelu":
        p[0] = {"none": 0, "tanh": 1}[op.params.get("approximate", "none")]
    return OP.pack(OP_CODES[t], n_inputs, op.layer, *[int(v) for v in p])


def _op_inputs(i: int, op: Op) -> list:
    """The tensor ids op i reads; an empty list where it reads the previous op's output and
    that is stored implicitly (n_inputs = 0, the 1.0 chain: old readers still read it)."""
    ins = [i] if op.inputs is None else [int(t) for t in op.inputs]
    return [] if len(ins) == 1 and ins[0] == i and op.type not in BINARY_OPS + ("concat",) else ins


def pack_graph(g: Graph) -> bytes:
    shape = list(g.input_shape) + [0] * (4 - len(g.input_shape))
    mean = np.asarray(g.mean, "<f4").reshape(-1)
    std = np.asarray(g.std, "<f4").reshape(-1)
    ins = [_op_inputs(i, op) for i, op in enumerate(g.ops)]
    out = [GRAPH_HEADER.pack(len(g.ops), len(g.input_shape), *shape, mean.size, 0), mean.tobytes(), std.tobytes()]
    out += [_pack_op(op, len(ii)) for op, ii in zip(g.ops, ins)]
    out += [np.asarray([t for ii in ins for t in ii], "<u4").tobytes()]
    return b"".join(out)


def pack_meta(meta: dict) -> bytes:
    return json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _layer_arrays(L: LayerRecord) -> list:
    if L.storage == "plain":
        return [np.asarray(L.bias, "<f4"), np.asarray(L.weight, "<f4").reshape(-1)]
    return [np.asarray(L.bias, "<f4"), np.asarray(L.codebook, "<f4"), np.asarray(L.code_lengths, "u1"),
            np.asarray(L.index_lengths, "u1"), pack_counts(L.colptr, count_bits(L.colptr)),
            np.asarray(L.code_offsets, "<u4"),
            np.asarray(L.index_offsets, "<u4"), L.code_stream, L.index_stream]


def layer_nbytes(L: LayerRecord) -> int:
    """Size of the layer's section (§4), computed without serialising it."""
    n = LAYER_HEADER.size
    for a in _layer_arrays(L):
        n = _align(n, ARRAY_ALIGN) + (len(a) if isinstance(a, (bytes, bytearray)) else a.nbytes)
    return n


def _header_name(name: str, index: int) -> bytes:
    """The LAYER header's 32-byte name: the name itself, or for a longer one (a PyTorch
    module path) ``#<index>~`` and the name's tail; the full name is in META's layer_names."""
    b = name.encode()
    if len(b) <= 32:
        return b
    head = f"#{index}~".encode()
    return head + b[len(b) - (32 - len(head)):].decode("utf-8", "ignore").encode()


def pack_layer(L: LayerRecord, index: int = 0) -> bytes:
    if L.storage == "plain":
        head = LAYER_HEADER.pack(STORAGE_PLAIN, {"linear": 1, "conv2d": 2}[L.kind], L.rows, L.cols, L.kh, L.kw,
                                 0, 0, 0, 0, 0, 0, 0, 0, 0, _header_name(L.name, index))
    else:
        nent = L.n_entries
        head = LAYER_HEADER.pack(STORAGE_SPARSE, {"linear": 1, "conv2d": 2}[L.kind], L.rows, L.cols, L.kh, L.kw,
                                 L.code_bits, L.index_bits, count_bits(L.colptr), 0, L.chunk_symbols, nent, L.nnz,
                                 len(L.code_stream), len(L.index_stream), _header_name(L.name, index))
    out = bytearray(head)
    for a in _layer_arrays(L):
        out += bytes(_align(len(out), ARRAY_ALIGN) - len(out))
        out += a if isinstance(a, (bytes, bytearray)) else a.tobytes()
    return bytes(out)


def pack_file(graph: Graph, meta: dict, layers: list) -> bytes:
    """Serialize a whole container (§1): header, section table, aligned sections."""
    if any(len(L.name.encode()) > 32 for L in layers):
        meta = {**meta, "layer_names": [L.name for L in layers]}  # §6: names the 32-byte field cannot hold
    bodies = [(KIND_GRAPH, 0, pack_graph(graph)), (KIND_META, 0, pack_meta(meta))]
    bodies += [(KIND_LAYER, i, pack_layer(L, i)) for i, L in enumerate(layers)]
    return pack_sections(bodies)


def pack_sections(bodies, version=(VERSION_MAJOR, VERSION_MINOR)) -> bytes:
    """Header, section table and the given ``(kind, index, body)`` sections, aligned and
    checksummed (§1, §2). No check of the bodies: tests use it to build crafted files."""
    table_off = HEADER.size
    pos = _align(table_off + SECTION.size * len(bodies), SECTION_ALIGN)
    table, chunks = [], []
    for kind, idx, body in bodies:
        table.append(SECTION.pack(kind, idx, pos, len(body), zlib.crc32(body), 0))
        chunks.append((pos, body))
        pos = _align(pos + len(body), SECTION_ALIGN)
    file_size = chunks[-1][0] + len(chunks[-1][1])
    table_bytes = b"".join(table)
    head = HEADER.pack(MAGIC, version[0], version[1], len(bodies), file_size, table_off,
                       zlib.crc32(table_bytes), 0, bytes(20), 0)
    head = head[:60] + struct.pack("<I", zlib.crc32(head[:60]))
    buf = bytearray(file_size)
    buf[:64] = head
    buf[table_off:table_off + len(table_bytes)] = table_bytes
    for off, body in chunks:
        buf[off:off + len(body)] = body
    return bytes(buf)


def write(path, graph: Graph, meta: dict, layers: list) -> int:
    """Write atomically (temp file, fsync, rename, directory fsync: dcrt._atomic): a failure
    never leaves a half-written file or a temp file. The bytes are checked with this module's
    reader first, so a network the readers would reject (a graph breaking §3.3, say) raises
    :class:`FormatError` here, naming the rule, and nothing is written."""
    from ._atomic import atomic_write
    data = pack_file(graph, meta, layers)
    try:
        loads(data, decode=False)
    except FormatError as e:
        raise FormatError(f"refusing to write {os.fspath(path)!r}: the network breaks the format: {e}") from None
    with atomic_write(path) as f:
        f.write(data)
    return len(data)


# ----------------------------------------------------------------------------------
# Reader
# ----------------------------------------------------------------------------------
class _Cursor:
    """Bounded reads inside one section; every failure names section and field."""

    def __init__(self, buf: memoryview, where: str):
        self.buf, self.where, self.pos = buf, where, 0

    def array(self, dtype, count: int, name: str, align: int = 1) -> np.ndarray:
        start = _align(self.pos, align)
        dt = np.dtype(dtype)
        end = start + dt.itemsize * count
        if end > len(self.buf):
            raise FormatError(f"{self.where}: {name}: needs bytes [{start}, {end}) but the section has {len(self.buf)}")
        if any(self.buf[self.pos:start]):
            raise FormatError(f"{self.where}: padding before {name} is not zero")
        self.pos = end
        return np.frombuffer(self.buf[start:end], dtype=dt)

    def done(self):
        if self.pos != len(self.buf):
            raise FormatError(f"{self.where}: {len(self.buf) - self.pos} trailing bytes after the last field")


def _parse_header(buf: memoryview):
    if len(buf) < HEADER.size:
        raise FormatError(f"header: file is {len(buf)} bytes, shorter than the 64-byte header")
    magic, vmaj, vmin, nsec, fsize, toff, tcrc, flags, reserved, hcrc = HEADER.unpack_from(buf, 0)
    if magic != MAGIC:
        raise FormatError(f"header: magic: expected {MAGIC!r}, got {bytes(magic)!r} (not a .dcz file)")
    if zlib.crc32(buf[:60]) != hcrc:
        raise FormatError("header: header_crc32 mismatch (header corrupt)")
    if vmaj != VERSION_MAJOR:
        raise FormatError(f"header: version_major {vmaj} is not supported (this reader reads {VERSION_MAJOR})")
    if flags != 0 or any(reserved):
        raise FormatError("header: flags/reserved must be zero")
    if fsize != len(buf):
        raise FormatError(f"header: file_size says {fsize} bytes but the file has {len(buf)} (truncated or padded)")
    if not 1 <= nsec <= MAX_SECTIONS:
        raise FormatError(f"header: section_count {nsec} out of range 1..{MAX_SECTIONS}")
    if toff != HEADER.size:
        raise FormatError(f"header: section_table_offset must be {HEADER.size}, got {toff}")
    if toff + nsec * SECTION.size > len(buf):
        raise FormatError(f"header: section table ({nsec} entries) runs past the end of the file")
    table = buf[toff:toff + nsec * SECTION.size]
    if zlib.crc32(table) != tcrc:
        raise FormatError("section table: table_crc32 mismatch")
    return (vmaj, vmin), [SECTION.unpack_from(table, i * SECTION.size) for i in range(nsec)]


def _check_sections(buf, entries):
    prev_end = HEADER.size + len(entries) * SECTION.size
    graph = meta = None
    layers = {}
    for i, (kind, idx, off, length, crc, res) in enumerate(entries):
        where = f"section table[{i}]"
        if res:
            raise FormatError(f"{where}: reserved must be zero")
        if off % SECTION_ALIGN:
            raise FormatError(f"{where}: offset {off} is not a multiple of {SECTION_ALIGN}")
        if off != _align(prev_end, SECTION_ALIGN):
            raise FormatError(f"{where}: offset {off}: expected {_align(prev_end, SECTION_ALIGN)} (sections follow "
                              f"each other in table order, each at the next {SECTION_ALIGN}-byte boundary)")
        if off + length > len(buf):
            raise FormatError(f"{where}: section [{off}, {off + length}) runs past the end of the file ({len(buf)})")
        if any(buf[prev_end:off]):
            raise FormatError(f"{where}: alignment padding before the section is not zero")
        body = buf[off:off + length]
        if zlib.crc32(body) != crc:
            raise FormatError(f"{KIND_NAMES.get(kind, hex(kind))}[{idx}]: crc32 mismatch (section corrupt)")
        prev_end = off + length
        if kind == KIND_GRAPH:
            if graph is not None or idx:
                raise FormatError(f"{where}: more than one GRAPH section (or index != 0)")
            graph = body
        elif kind == KIND_META:
            if meta is not None or idx:
                raise FormatError(f"{where}: more than one META section (or index != 0)")
            meta = body
        elif kind == KIND_LAYER:
            if idx in layers:
                raise FormatError(f"{where}: duplicate LAYER index {idx}")
            layers[idx] = body
        elif not kind & ANCILLARY:
            raise FormatError(f"{where}: unknown critical section kind {kind}")
    if prev_end != len(buf):
        raise FormatError(f"header: {len(buf) - prev_end} bytes after the last section")
    if graph is None or meta is None:
        raise FormatError("section table: a GRAPH and a META section are required")
    if sorted(layers) != list(range(len(layers))):
        raise FormatError(f"section table: LAYER indices must be 0..{len(layers) - 1}, got {sorted(layers)}")
    return graph, meta, [layers[i] for i in range(len(layers))]


def parse_graph(body) -> Graph:
    where = "GRAPH"
    if len(body) < GRAPH_HEADER.size:
        raise FormatError(f"{where}: section is {len(body)} bytes, shorter than its 32-byte header")
    nops, ndim, s0, s1, s2, s3, nnorm, res = GRAPH_HEADER.unpack_from(body, 0)
    if res:
        raise FormatError(f"{where}: reserved must be zero")
    if not 1 <= ndim <= 3:
        raise FormatError(f"{where}: input_ndim {ndim} not in 1..3")
    shape = (s0, s1, s2, s3)
    if any(d == 0 for d in shape[:ndim]) or any(shape[ndim:]):
        raise FormatError(f"{where}: input_shape {list(shape)}: dims must be >= 1 and unused dims 0")
    if math.prod(shape[:ndim]) > MAX_ACTIVATION:
        raise FormatError(f"{where}: input_shape {list(shape[:ndim])} exceeds {MAX_ACTIVATION} elements")
    if nnorm not in (0, 1, shape[0]):
        raise FormatError(f"{where}: norm_count {nnorm} must be 0, 1 or input_shape[0]={shape[0]}")
    head = GRAPH_HEADER.size + 8 * nnorm + OP.size * nops
    if len(body) < head:
        raise FormatError(f"{where}: op_count {nops} and norm_count {nnorm} need at least {head} bytes, "
                          f"section has {len(body)}")
    n_in = [OP.unpack_from(body, GRAPH_HEADER.size + 8 * nnorm + i * OP.size)[1] for i in range(nops)]
    expect = head + 4 * sum(n_in)
    if len(body) != expect:
        raise FormatError(f"{where}: op_count {nops}, norm_count {nnorm} and {sum(n_in)} listed inputs need "
                          f"{expect} bytes, section has {len(body)}")
    mean = np.frombuffer(body, "<f4", nnorm, GRAPH_HEADER.size).astype(np.float32)
    std = np.frombuffer(body, "<f4", nnorm, GRAPH_HEADER.size + 4 * nnorm).astype(np.float32)
    for i in range(nnorm):
        if not (abs(float(mean[i])) <= NORM_MAX and NORM_STD_MIN <= float(std[i]) <= NORM_MAX):
            raise FormatError(f"{where}: normalisation[{i}]: mean must be finite with |mean| <= 2^24, "
                              f"std in [2^-24, 2^24] (got mean {float(mean[i])!r}, std {float(std[i])!r})")
    if nnorm == 0:
        mean, std = np.zeros(1, np.float32), np.ones(1, np.float32)
    ops = []
    base = GRAPH_HEADER.size + 8 * nnorm
    table = np.frombuffer(body, "<u4", sum(n_in), head).astype(np.int64)
    pos = 0
    for i in range(nops):
        t, nin, layer, *p = OP.unpack_from(body, base + i * OP.size)
        w = f"{where}: op[{i}]"
        if t not in OP_NAMES:
            raise FormatError(f"{w}: unknown op type {t}")
        name = OP_NAMES[t]
        inputs = [i] if nin == 0 else [int(v) for v in table[pos:pos + nin]]
        pos += nin
        arity_ok = (len(inputs) == 2 if name in BINARY_OPS else len(inputs) >= 2 if name == "concat"
                    else len(inputs) == 1)
        if not arity_ok or (nin == 0 and name in BINARY_OPS + ("concat",)):
            raise FormatError(f"{w} ({name}): {nin} inputs listed; "
                              + ("needs exactly 2" if name in BINARY_OPS else "needs 2 or more" if name == "concat"
                                 else "takes 1 (or 0: the previous op's output)"))
        for v in inputs:
            if v > i:
                raise FormatError(f"{w} ({name}): input tensor {v} is not produced before this op (ids: 0 the "
                                  f"graph input, j+1 the output of op j; ops in topological order)")
        nparams = OP_NPARAMS.get(name, 0)
        if any(p[nparams:]):
            raise FormatError(f"{w} ({name}): unused params must be zero")
        weighted = name in ("linear", "conv2d")
        if weighted != (layer >= 0) or (not weighted and layer != -1):
            raise FormatError(f"{w} ({name}): layer {layer}: {'needs a layer index' if weighted else 'must be -1'}")
        if name == "conv2d":
            params = {"stride": (p[0], p[1]), "padding": (p[2], p[3]), "groups": p[4],
                      "dilation": (p[5] + 1, p[6] + 1)}
        elif name in ("maxpool", "avgpool"):
            params = {"kernel": (p[0], p[1]), "stride": (p[2], p[3]), "padding": (p[4], p[5]), "ceil_mode": p[6]}
            if p[6] not in (0, 1):
                raise FormatError(f"{w} ({name}): ceil_mode must be 0 or 1")
        elif name == "lrn":
            params = {"size": p[0], "alpha": _bits_f32(p[1]), "beta": _bits_f32(p[2]), "k": _bits_f32(p[3])}
        elif name == "dropout":
            params = {"p": _bits_f32(p[0])}
            if not 0.0 <= params["p"] < 1.0:
                raise FormatError(f"{w} (dropout): p must be in [0, 1)")
        elif name == "pad":
            params = {"pads": tuple(p[:4])}
        elif name == "clip":
            params = {"min": _bits_f32(p[0]), "max": _bits_f32(p[1])}
            if not (math.isfinite(params["min"]) and math.isfinite(params["max"]) and params["min"] <= params["max"]):
                raise FormatError(f"{w} (clip): min and max must be finite, min <= max")
        elif name == "hardsigmoid":
            params = {"alpha": _bits_f32(p[0]), "beta": _bits_f32(p[1])}
            if not (math.isfinite(params["alpha"]) and math.isfinite(params["beta"])):
                raise FormatError(f"{w} (hardsigmoid): alpha and beta must be finite")
        elif name == "gelu":
            if p[0] > 1:
                raise FormatError(f"{w} (gelu): approximate must be 0 (erf) or 1 (tanh)")
            params = {"approximate": ("none", "tanh")[p[0]]}
        else:
            params = {}
        ops.append(Op(name, layer, params, inputs))
    return Graph(tuple(shape[:ndim]), mean, std, ops)


def parse_meta(body) -> dict:
    try:
        meta = json.loads(bytes(body).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise FormatError(f"META: not valid UTF-8 JSON ({e})") from None
    except RecursionError:
        raise FormatError("META: JSON nested too deeply") from None
    if not isinstance(meta, dict):
        raise FormatError("META: must be a JSON object")
    if not isinstance(meta.get("name"), str):
        raise FormatError("META: name: required string")
    labels = meta.get("labels")
    if labels is not None and not (isinstance(labels, list) and all(isinstance(s, str) for s in labels)):
        raise FormatError("META: labels: must be a list of strings or absent")
    if not isinstance(meta.get("metadata", {}), dict):
        raise FormatError("META: metadata: must be an object")
    return meta


def parse_layer(body, index: int, decode: bool = True) -> LayerRecord:
    where = f"LAYER[{index}]"
    if len(body) < LAYER_HEADER.size:
        raise FormatError(f"{where}: section is {len(body)} bytes, shorter than its 96-byte header")
    (storage, kind, rows, cols, kh, kw, cbits, ibits, nbits, res, chunk, nent, nnz, cbytes, ibytes,
     rawname) = LAYER_HEADER.unpack_from(body, 0)
    try:
        name = rawname.rstrip(b"\0").decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"{where}: name is not UTF-8") from None
    where = f"LAYER[{index}] {name!r}"
    if b"\0" in rawname.rstrip(b"\0"):
        raise FormatError(f"{where}: name: NUL inside the name")
    if storage not in STORAGE_NAMES:
        raise FormatError(f"{where}: storage {storage} unknown (1 plain, 2 sparse)")
    if kind not in LKIND_NAMES:
        raise FormatError(f"{where}: kind {kind} unknown (1 linear, 2 conv2d)")
    if res:
        raise FormatError(f"{where}: reserved must be zero")
    if rows == 0 or cols == 0 or kh == 0 or kw == 0:
        raise FormatError(f"{where}: rows/cols/kh/kw must be >= 1 (got {rows}, {cols}, {kh}, {kw})")
    if kind == LAYER_LINEAR and (kh, kw) != (1, 1):
        raise FormatError(f"{where}: kh/kw must be 1 for a linear layer")
    if cols % (kh * kw):
        raise FormatError(f"{where}: cols {cols} is not a multiple of kh*kw={kh * kw}")
    cur = _Cursor(body, where)
    cur.pos = LAYER_HEADER.size
    L = LayerRecord(name=name, kind=LKIND_NAMES[kind], rows=rows, cols=cols, kh=kh, kw=kw, bias=None,
                    storage=STORAGE_NAMES[storage])
    L.bias = cur.array("<f4", rows, "bias", ARRAY_ALIGN).astype(np.float32)
    if not np.isfinite(L.bias).all():
        raise FormatError(f"{where}: bias: non-finite value")
    if storage == STORAGE_PLAIN:
        if cbits or ibits or nbits or chunk or nent or nnz or cbytes or ibytes:
            raise FormatError(f"{where}: a plain layer must have zero code_bits/index_bits/count_bits/chunk/entry/"
                              "stream fields")
        if rows * cols > (len(body) - cur.pos) // 4:
            raise FormatError(f"{where}: weight: rows*cols={rows * cols} floats do not fit in the section")
        L.weight = cur.array("<f4", rows * cols, "weight", ARRAY_ALIGN).astype(np.float32).reshape(rows, cols)
        if not np.isfinite(L.weight).all():
            raise FormatError(f"{where}: weight: non-finite value")
        cur.done()
        return L
    if not 1 <= cbits <= 8 or not 1 <= ibits <= 8:
        raise FormatError(f"{where}: code_bits {cbits} / index_bits {ibits} must be in 1..8")
    if chunk == 0:
        raise FormatError(f"{where}: chunk_symbols must be >= 1")
    if nent > 8 * cbytes or nent > 8 * ibytes:
        raise FormatError(f"{where}: n_entries {nent} cannot fit in streams of {cbytes}/{ibytes} bytes")
    if nnz > nent:
        raise FormatError(f"{where}: nnz {nnz} > n_entries {nent}")
    if nent >= 1 << 32:
        raise FormatError(f"{where}: n_entries {nent} >= 2^32")
    if not 1 <= nbits <= 32:
        raise FormatError(f"{where}: count_bits {nbits} must be in 1..32")
    if (cols * nbits + 7) // 8 > len(body):
        raise FormatError(f"{where}: col_counts: {cols} x {nbits} bits do not fit in the section")
    nch = huffman.n_chunks(nent, chunk)
    L.code_bits, L.index_bits, L.chunk_symbols, L.nnz = cbits, ibits, chunk, nnz
    L.codebook = cur.array("<f4", 1 << cbits, "codebook", ARRAY_ALIGN).astype(np.float32)
    if not np.isfinite(L.codebook).all():
        raise FormatError(f"{where}: codebook: non-finite centroid")
    if L.codebook.view(np.uint32)[0] != 0:
        raise FormatError(f"{where}: codebook[0] must be +0.0 (code 0 is the filler / pruned zero)")
    L.code_lengths = cur.array("u1", 1 << cbits, "code_lengths", ARRAY_ALIGN).copy()
    L.index_lengths = cur.array("u1", 1 << ibits, "index_lengths", ARRAY_ALIGN).copy()
    raw_counts = cur.array("u1", (cols * nbits + 7) // 8, "col_counts", ARRAY_ALIGN)
    L.code_offsets = cur.array("<u4", nch + 1, "code_offsets", ARRAY_ALIGN).astype(np.uint32)
    L.index_offsets = cur.array("<u4", nch + 1, "index_offsets", ARRAY_ALIGN).astype(np.uint32)
    L.code_stream = bytes(cur.array("u1", cbytes, "code_stream", ARRAY_ALIGN))
    L.index_stream = bytes(cur.array("u1", ibytes, "index_stream", ARRAY_ALIGN))
    cur.done()
    spare = (-cols * nbits) % 8
    if spare and raw_counts[-1] & ((1 << spare) - 1):
        raise FormatError(f"{where}: col_counts: non-zero padding bits")
    counts = unpack_counts(raw_counts, cols, nbits)
    total = int(counts.sum())
    if total != nent:
        raise FormatError(f"{where}: col_counts: sum {total} != n_entries {nent}")
    L.colptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.uint32)
    for nm, offs, nbytes in (("code_offsets", L.code_offsets, cbytes), ("index_offsets", L.index_offsets, ibytes)):
        o = offs.astype(np.int64)
        if o[0] != 0 or o[-1] != nbytes or (np.diff(o) < 0).any():
            raise FormatError(f"{where}: {nm}: must rise from 0 to the stream length {nbytes}")
    huffman.check_lengths(L.code_lengths, nent, f"{where}: code_lengths")
    huffman.check_lengths(L.index_lengths, nent, f"{where}: index_lengths")
    if decode:
        L.codes = huffman.decode(L.code_stream, L.code_offsets, L.code_lengths, nent, chunk, f"{where}: code_stream")
        L.gaps = huffman.decode(L.index_stream, L.index_offsets, L.index_lengths, nent, chunk, f"{where}: index_stream")
        decode_rows(L.colptr, L.gaps, rows, where)
        real = int(np.count_nonzero(L.codes))
        if real != nnz:
            raise FormatError(f"{where}: nnz says {nnz} but the code stream has {real} non-zero codes")
    return L


def check_graph(g: Graph, layers: list) -> list:
    """Shape-check the graph against its layers (§3.3); returns per-op output shapes."""
    used = [0] * len(layers)
    tensors = [tuple(g.input_shape)]  # by tensor id: 0 the input, j + 1 op j's output
    readers = [0] * (len(g.ops) + 1)
    shapes = []
    for i, op in enumerate(g.ops):
        w = f"GRAPH: op[{i}] ({op.type})"
        p = op.params
        ins = [i] if op.inputs is None else list(op.inputs)
        for t in ins:
            readers[t] += 1
        shape = tensors[ins[0]]
        if op.layer >= 0:
            if op.layer >= len(layers):
                raise FormatError(f"{w}: layer {op.layer} does not exist ({len(layers)} layers)")
            used[op.layer] += 1
            L = layers[op.layer]
            if L.kind != op.type:
                raise FormatError(f"{w}: layer {op.layer} {L.name!r} is a {L.kind} layer")
        if op.type == "linear":
            n = math.prod(shape)
            if n != L.cols:
                raise FormatError(f"{w}: input has {n} features but layer {L.name!r} expects {L.cols}")
            shape = (L.rows,)
        elif op.type == "conv2d":
            if len(shape) != 3:
                raise FormatError(f"{w}: needs a [C, H, W] input, got {list(shape)}")
            (sh, sw), (ph, pw), g_ = p["stride"], p["padding"], p["groups"]
            c, h, wd = shape
            if g_ == 0 or c % g_ or L.rows % g_:
                raise FormatError(f"{w}: groups={g_} must be >= 1 and divide {c} in / {L.rows} out channels")
            if (c // g_) * L.kh * L.kw != L.cols:
                raise FormatError(f"{w}: {c} input channels / {g_} groups x {L.kh}x{L.kw} != layer cols {L.cols}")
            e, oh, ow, _ = conv_geometry(c, h, wd, L.kh, L.kw, sh, sw, ph, pw, *p.get("dilation", (1, 1)))
            if e:
                raise FormatError(f"{w}: {e}")
            if L.rows * oh * ow > MAX_ACTIVATION:
                raise FormatError(f"{w}: output exceeds 2^28 elements per sample")
            shape = (L.rows, oh, ow)
        elif op.type in ("maxpool", "avgpool"):
            if len(shape) != 3:
                raise FormatError(f"{w}: needs a [C, H, W] input, got {list(shape)}")
            (kh, kw), (sh, sw), (ph, pw) = p["kernel"], p["stride"], p["padding"]
            c, h, wd = shape
            e, oh, ow = pool_geometry(h, wd, kh, kw, sh, sw, ph, pw, bool(p["ceil_mode"]))
            if e:
                raise FormatError(f"{w}: {e}")
            shape = (c, oh, ow)
        elif op.type == "lrn":
            if len(shape) != 3:
                raise FormatError(f"{w}: needs a [C, H, W] input, got {list(shape)}")
            if p["size"] % 2 == 0 or not all(math.isfinite(p[k]) for k in ("alpha", "beta", "k")) \
                    or not p["k"] >= FLT_MIN or p["alpha"] < 0:
                raise FormatError(f"{w}: size must be odd, alpha >= 0, k a normal float > 0, all finite")
        elif op.type == "flatten":
            shape = (math.prod(shape),)
        elif op.type in BINARY_OPS:
            a, b = shape, tensors[ins[1]]
            if a != b:
                if not (len(a) == len(b) == 3 and a[0] == b[0] and (a[1:] == (1, 1) or b[1:] == (1, 1))):
                    raise FormatError(f"{w}: shapes {list(a)} and {list(b)} do not match (equal, or [C, H, W] "
                                      "and [C, 1, 1])")
                shape = a if b[1:] == (1, 1) else b
        elif op.type == "concat":
            parts = [tensors[t] for t in ins]
            if not (all(len(q) == 3 and q[1:] == parts[0][1:] for q in parts)
                    or all(len(q) == 1 for q in parts)):
                raise FormatError(f"{w}: inputs {[list(q) for q in parts]} must all be [C_k, H, W] with the same "
                                  "H, W (or all 1-D)")
            shape = (sum(q[0] for q in parts),) + parts[0][1:]
        elif op.type == "global_avgpool":
            if len(shape) != 3:
                raise FormatError(f"{w}: needs a [C, H, W] input, got {list(shape)}")
            shape = (shape[0], 1, 1)
        elif op.type == "pad":
            if len(shape) != 3:
                raise FormatError(f"{w}: needs a [C, H, W] input, got {list(shape)}")
            t_, b_, l_, r_ = p["pads"]
            shape = (shape[0], shape[1] + t_ + b_, shape[2] + l_ + r_)
        if math.prod(shape) > MAX_ACTIVATION:
            raise FormatError(f"{w}: output {list(shape)} exceeds {MAX_ACTIVATION} elements per sample")
        tensors.append(shape)
        shapes.append(shape)
    for li, n in enumerate(used):
        if n != 1:
            raise FormatError(f"GRAPH: layer {li} {layers[li].name!r} is used by {n} ops (must be exactly 1)")
    for t in range(1, len(g.ops)):
        if not readers[t]:
            raise FormatError(f"GRAPH: op[{t - 1}]'s output is read by no op (only the last op's output may be unread)")
    return shapes


def loads(data, decode: bool = True) -> DczFile:
    """Parse and fully validate a .dcz byte string (the reference reader)."""
    buf = memoryview(bytes(data))
    version, entries = _parse_header(buf)
    gbody, mbody, lbodies = _check_sections(buf, entries)
    graph = parse_graph(gbody)
    meta = parse_meta(mbody)
    layers = [parse_layer(b, i, decode) for i, b in enumerate(lbodies)]
    names = meta.get("layer_names")
    if names is not None:
        if not (isinstance(names, list) and len(names) == len(layers) and all(isinstance(n, str) for n in names)):
            raise FormatError(f"META: layer_names: must be a list of {len(layers)} strings")
        for i, (L, n) in enumerate(zip(layers, names)):
            if _header_name(n, i).decode("utf-8", "ignore") != L.name:
                raise FormatError(f"META: layer_names[{i}] {n!r} does not match LAYER[{i}]'s name {L.name!r}")
            L.name = n
    shapes = check_graph(graph, layers)
    labels = meta.get("labels")
    if labels is not None and shapes and len(labels) != math.prod(shapes[-1]):
        raise FormatError(f"META: labels: {len(labels)} labels for an output of {math.prod(shapes[-1])} values")
    return DczFile(graph, meta, layers, len(buf), [e[:4] for e in entries], version)


def read(path, decode: bool = True) -> DczFile:
    with open(path, "rb") as f:
        return loads(f.read(), decode)
