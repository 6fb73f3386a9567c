"""Canonical, length-limited Huffman codes for the two .dcz streams (docs/format.md §5).

Bit order: codes are written most-significant bit first into bytes filled from
bit 7 down to bit 0. A stream is cut into chunks of ``chunk_symbols`` symbols; each
chunk starts on a byte boundary and its last byte is padded with zero bits, so
chunks decode independently (parallel decoding on CPU cores and GPU warps).
"""
from __future__ import annotations

import numpy as np

from .errors import FormatError

#: Longest code the format allows (spec §5.1). Writers may limit further.
MAX_CODE_LEN = 15
#: Default limit used by the writer: 2^11-entry decode tables stay in L1.
DEFAULT_MAX_LEN = 11


def code_lengths(freqs, max_len: int = DEFAULT_MAX_LEN) -> np.ndarray:
    """Optimal length-limited code lengths (package-merge), one uint8 per symbol.

    Symbols with zero frequency get length 0. One used symbol gets length 1.
    Ties are broken deterministically (by symbol index), so the writer is
    reproducible bit for bit.
    """
    freqs = np.asarray(freqs, dtype=np.int64)
    if freqs.ndim != 1 or (freqs < 0).any():
        raise ValueError("freqs must be a 1-D array of non-negative counts")
    if not 1 <= max_len <= MAX_CODE_LEN:
        raise ValueError(f"max_len must be in 1..{MAX_CODE_LEN}, got {max_len}")
    lengths = np.zeros(freqs.shape[0], dtype=np.uint8)
    used = np.flatnonzero(freqs)
    n = used.size
    if n == 0:
        return lengths
    if n == 1:
        lengths[used[0]] = 1
        return lengths
    if n > (1 << max_len):
        raise ValueError(f"{n} symbols cannot be coded in at most {max_len} bits")
    # Leaves sorted by (weight, symbol): np.lexsort sorts by the last key first.
    order = np.lexsort((used, freqs[used]))
    leaf_w = freqs[used][order]
    leaf_c = np.eye(n, dtype=np.int32)[order]  # row i: one-hot of leaf i's symbol (column j = used[j])
    # Package-merge: start from the deepest level; each level merges the leaves
    # with the pairwise packages of the level below. Leaves win ties (stable).
    items_w, items_c = leaf_w, leaf_c
    for _ in range(max_len - 1):
        m = items_w.size // 2 * 2
        pkg_w = items_w[0:m:2] + items_w[1:m:2]
        pkg_c = items_c[0:m:2] + items_c[1:m:2]
        w = np.concatenate([leaf_w, pkg_w])
        c = np.concatenate([leaf_c, pkg_c])
        key = np.concatenate([np.zeros(n, np.int8), np.ones(pkg_w.size, np.int8)])
        sel = np.lexsort((np.arange(w.size), key, w))
        items_w, items_c = w[sel], c[sel]
    counts = items_c[: 2 * n - 2].sum(axis=0)  # column j counts symbol used[j]
    lengths[used] = counts.astype(np.uint8)
    return lengths


def check_lengths(lengths: np.ndarray, n_symbols: int, where: str) -> None:
    """Validate a code-length table against spec §5.1; raise FormatError."""
    lengths = np.asarray(lengths)
    if (lengths > MAX_CODE_LEN).any():
        s = int(np.flatnonzero(lengths > MAX_CODE_LEN)[0])
        raise FormatError(f"{where}[{s}]: code length {int(lengths[s])} > {MAX_CODE_LEN}")
    used = np.flatnonzero(lengths)
    if n_symbols == 0:
        if used.size:
            raise FormatError(f"{where}: lengths must all be 0 for an empty stream")
        return
    if used.size == 0:
        raise FormatError(f"{where}: all code lengths are 0 but the stream has {n_symbols} symbols")
    if used.size == 1:
        if int(lengths[used[0]]) != 1:
            raise FormatError(f"{where}: a single used symbol must have length 1")
        return
    kraft = int(sum(1 << (MAX_CODE_LEN - int(l)) for l in lengths[used]))
    if kraft != 1 << MAX_CODE_LEN:
        state = "over-subscribed" if kraft > 1 << MAX_CODE_LEN else "incomplete"
        raise FormatError(f"{where}: Kraft sum {kraft / (1 << MAX_CODE_LEN):.6g} != 1 ({state} code)")


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical codes (uint32) for valid lengths: shorter first, then by symbol."""
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = np.zeros(lengths.size, dtype=np.uint32)
    code = 0
    prev = 0
    for s in np.lexsort((np.arange(lengths.size), lengths)):
        l = int(lengths[s])
        if l == 0:
            continue
        code <<= l - prev
        codes[s] = code
        code += 1
        prev = l
    return codes


def n_chunks(n_symbols: int, chunk_symbols: int) -> int:
    return -(-n_symbols // chunk_symbols) if n_symbols else 0


def encode(symbols: np.ndarray, lengths: np.ndarray, chunk_symbols: int):
    """Encode ``symbols`` -> (stream bytes, chunk byte offsets uint32[n_chunks+1])."""
    symbols = np.asarray(symbols, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    n = symbols.size
    nc = n_chunks(n, chunk_symbols)
    if n == 0:
        return b"", np.zeros(1, dtype=np.uint32)
    if (lengths[symbols] == 0).any():
        raise ValueError("a symbol to encode has code length 0")
    codes = canonical_codes(lengths).astype(np.int64)
    L = lengths[symbols]
    C = codes[symbols]
    starts = np.arange(nc, dtype=np.int64) * chunk_symbols
    chunk_bits = np.add.reduceat(L, starts)
    chunk_bytes = (chunk_bits + 7) // 8
    offsets = np.zeros(nc + 1, dtype=np.int64)
    np.cumsum(chunk_bytes, out=offsets[1:])
    if offsets[-1] >= 1 << 32:
        raise ValueError("stream too large for the v1 format (>= 4 GiB)")
    # Start bit of each symbol: its chunk's byte-aligned start + bits before it in the chunk.
    chunk_of = np.arange(n) // chunk_symbols
    incl = np.cumsum(L)
    before_chunk = np.concatenate([[0], incl])[starts][chunk_of]
    start_bit = offsets[:-1][chunk_of] * 8 + (incl - L - before_chunk)
    # Each code (<= 15 bits) starting at bit (start % 8) of its byte fits in 3 bytes.
    # Codes never overlap, so summing the byte fragments equals OR-ing them.
    nbytes = int(offsets[-1])
    v = C << (24 - L - (start_bit & 7))
    b0 = start_bit >> 3
    out = np.zeros(nbytes + 2, dtype=np.float64)
    for k in range(3):
        out += np.bincount(b0 + k, weights=((v >> (16 - 8 * k)) & 0xFF).astype(np.float64), minlength=nbytes + 2)
    return out[:nbytes].astype(np.uint8).tobytes(), offsets.astype(np.uint32)


def _decode_table(lengths: np.ndarray):
    """Peek table over max-length windows: symbol and code length (0 = invalid code)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    lmax = int(lengths.max())
    codes = canonical_codes(lengths).astype(np.int64)
    sym = np.zeros(1 << lmax, dtype=np.int64)
    ln = np.zeros(1 << lmax, dtype=np.int64)
    for s in np.flatnonzero(lengths):
        l = int(lengths[s])
        lo = int(codes[s]) << (lmax - l)
        sym[lo : lo + (1 << (lmax - l))] = s
        ln[lo : lo + (1 << (lmax - l))] = l
    return lmax, sym, ln


def decode(stream, offsets, lengths, n_symbols: int, chunk_symbols: int, where: str = "stream") -> np.ndarray:
    """Decode all chunks in lock step (one numpy step per symbol position).

    This is the reference decoder of the format: strict about every rule of
    spec §5.2 (chunk ends, zero padding, invalid codes). Returns uint8 symbols.
    """
    lengths = np.asarray(lengths)
    offsets = np.asarray(offsets, dtype=np.int64)
    buf = np.frombuffer(bytes(stream), dtype=np.uint8)
    nc = n_chunks(n_symbols, chunk_symbols)
    if n_symbols == 0:
        if buf.size:
            raise FormatError(f"{where}: {buf.size} bytes for an empty stream")
        return np.zeros(0, dtype=np.uint8)
    lmax, tsym, tlen = _decode_table(lengths)
    bits = np.unpackbits(buf)
    total = bits.size
    pad = chunk_symbols * lmax + lmax
    bits = np.concatenate([bits, np.zeros(pad, dtype=np.uint8)])
    # window[p] = the lmax (<= 15) bits starting at bit p, MSB first.
    win = np.zeros(total + chunk_symbols * lmax + 1, dtype=np.int32)
    for k in range(lmax):
        win = (win << 1) | bits[k : k + win.size]
    pos = offsets[:-1] * 8
    counts = np.full(nc, chunk_symbols, dtype=np.int64)
    counts[-1] = n_symbols - (nc - 1) * chunk_symbols
    out = np.zeros((nc, chunk_symbols), dtype=np.uint8)
    bad = np.zeros(nc, dtype=bool)
    for step in range(chunk_symbols):
        live = counts > step
        v = win[pos]
        l = tlen[v]
        bad |= live & (l == 0)
        out[:, step] = tsym[v]
        pos = pos + np.where(live, l, 0)
    if bad.any():
        c = int(np.flatnonzero(bad)[0])
        raise FormatError(f"{where}: chunk {c}: invalid code (not in the code table)")
    end_bits = offsets[1:] * 8
    used = pos - offsets[:-1] * 8
    chunk_len = offsets[1:] - offsets[:-1]
    over = pos > end_bits
    if over.any():
        c = int(np.flatnonzero(over)[0])
        raise FormatError(f"{where}: chunk {c}: decoding runs past the chunk's end")
    slack = (used + 7) // 8 != chunk_len
    if slack.any():
        c = int(np.flatnonzero(slack)[0])
        raise FormatError(f"{where}: chunk {c}: {int(chunk_len[c])} bytes but its symbols need {int((used[c] + 7) // 8)}")
    # Padding bits (between the last code and the chunk's end) must be zero.
    for c in np.flatnonzero(pos % 8):
        p = int(pos[c])
        if bits[p : (p + 7) // 8 * 8].any():
            raise FormatError(f"{where}: chunk {int(c)}: non-zero padding bits")
    return out.reshape(-1)[:n_symbols]  # only the last chunk is partial, and it comes last


def decode_ref(stream: bytes, offsets, lengths, n_symbols: int, chunk_symbols: int) -> np.ndarray:
    """Bit-by-bit canonical decoding: the most obvious twin of :func:`decode` (tests only)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = canonical_codes(lengths)
    table = {(int(lengths[s]), int(codes[s])): s for s in np.flatnonzero(lengths)}
    data = bytes(stream)
    out = []
    for c in range(n_chunks(n_symbols, chunk_symbols)):
        bitpos = int(offsets[c]) * 8
        for _ in range(min(chunk_symbols, n_symbols - c * chunk_symbols)):
            code, l = 0, 0
            while True:
                byte = data[bitpos >> 3]
                code = (code << 1) | ((byte >> (7 - (bitpos & 7))) & 1)
                bitpos += 1
                l += 1
                if (l, code) in table:
                    out.append(table[(l, code)])
                    break
                if l > MAX_CODE_LEN:
                    raise FormatError("invalid code")
    return np.asarray(out, dtype=np.uint8)
