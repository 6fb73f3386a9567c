"""Relative-index CSC with filler zeros (docs/format.md §4): the sparse structure of a layer.

A layer's weight matrix W [rows, cols] (for a conv: [out_ch, in_ch/groups*kh*kw]) is
walked column by column. Each stored entry has a ``gap`` (how many zero rows precede it
since the previous entry of its column, or since row 0) and a ``code`` (codebook index).
A gap wider than ``2^index_bits - 1`` is bridged by filler entries: code 0 (value zero),
gap = 2^index_bits - 1, each advancing 2^index_bits rows.
"""
from __future__ import annotations

import numpy as np

from .errors import FormatError


def encode_csc(codes: np.ndarray, index_bits: int):
    """Matrix of codes (0 = pruned) -> (colptr uint32[cols+1], entry codes uint8, gaps uint8)."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError("codes must be 2-D [rows, cols]")
    if not 1 <= index_bits <= 8:
        raise ValueError(f"index_bits must be in 1..8, got {index_bits}")
    rows, cols = codes.shape
    span = 1 << index_bits  # rows advanced by one filler
    col, row = np.nonzero(codes.T)  # column-major order: by column, then row
    vals = codes.T[col, row]
    first = np.ones(col.size, dtype=bool)
    first[1:] = col[1:] != col[:-1]
    prev = np.where(first, -1, np.concatenate([[-1], row[:-1]]))
    gap = row - prev - 1
    nfill = gap // span
    per_nz = nfill + 1
    n_entries = int(per_nz.sum())
    pos = np.cumsum(per_nz) - 1  # slot of each real entry; fillers precede it
    e_codes = np.zeros(n_entries, dtype=np.uint8)
    e_gaps = np.full(n_entries, span - 1, dtype=np.uint8)
    e_codes[pos] = vals
    e_gaps[pos] = gap % span
    colptr = np.zeros(cols + 1, dtype=np.int64)
    np.cumsum(np.bincount(col, weights=per_nz, minlength=cols).astype(np.int64), out=colptr[1:])
    if n_entries >= 1 << 32:
        raise ValueError("layer too large for the v1 format (>= 2^32 entries)")
    return colptr.astype(np.uint32), e_codes, e_gaps


def decode_rows(colptr, gaps, rows: int, where: str = "layer") -> np.ndarray:
    """Absolute row of every entry; FormatError if any column runs past ``rows``."""
    colptr = np.asarray(colptr, dtype=np.int64)
    gaps = np.asarray(gaps, dtype=np.int64)
    n = gaps.size
    if colptr[0] != 0 or colptr[-1] != n:
        raise FormatError(f"{where}: colptr must start at 0 and end at n_entries={n}")
    d = np.diff(colptr)
    if (d < 0).any():
        raise FormatError(f"{where}: colptr[{int(np.flatnonzero(d < 0)[0]) + 1}]: decreasing")
    step = gaps + 1
    cs = np.cumsum(step)
    col_of = np.repeat(np.arange(d.size), d)
    base = np.concatenate([[0], cs])[colptr[:-1]][col_of]
    r = cs - base - 1
    if n and r.max() >= rows:
        e = int(np.flatnonzero(r >= rows)[0])
        raise FormatError(f"{where}: column {int(col_of[e])}: entry {e} lands on row {int(r[e])} >= rows={rows}")
    return r


def to_dense(colptr, e_codes, gaps, rows: int, cols: int, codebook) -> np.ndarray:
    """Dequantize to a dense float32 [rows, cols] matrix (reference / decompress)."""
    r = decode_rows(colptr, gaps, rows)
    c = np.repeat(np.arange(cols), np.diff(np.asarray(colptr, dtype=np.int64)))
    w = np.zeros((rows, cols), dtype=np.float32)
    w[r, c] = np.asarray(codebook, dtype=np.float32)[np.asarray(e_codes, dtype=np.int64)]
    return w
