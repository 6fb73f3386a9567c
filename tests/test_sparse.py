"""Relative-index CSC with filler zeros (format.md §4.3)."""
import numpy as np
import pytest

from dcrt import FormatError
from dcrt.sparse import decode_rows, encode_csc, to_dense

from conftest import random_codebook, random_codes


def roundtrip(codes, index_bits):
    colptr, e_codes, gaps = encode_csc(codes, index_bits)
    assert gaps.max(initial=0) < 1 << index_bits
    cb = np.arange(1 << 8, dtype=np.float32)
    w = to_dense(colptr, e_codes, gaps, codes.shape[0], codes.shape[1], cb)
    np.testing.assert_array_equal(w, codes.astype(np.float32))
    return colptr, e_codes, gaps


@pytest.mark.parametrize("index_bits", [1, 2, 3, 5, 8])
def test_gap_exactly_at_width_boundary(index_bits):
    span = 1 << index_bits
    rows = 3 * span + 2
    codes = np.zeros((rows, 3), np.uint8)
    codes[span - 1, 0] = 7  # gap = span-1: the widest gap without a filler
    codes[span, 1] = 7  # gap = span: exactly one filler
    codes[0, 2] = 1
    codes[2 * span + 1, 2] = 2  # gap = 2*span: two fillers, residual 0
    colptr, e_codes, gaps = roundtrip(codes, index_bits)
    assert list(np.diff(colptr)) == [1, 2, 4]
    assert gaps[0] == span - 1 and e_codes[0] == 7
    assert list(e_codes[1:3]) == [0, 7] and list(gaps[1:3]) == [span - 1, 0]
    assert list(e_codes[3:]) == [1, 0, 0, 2] and list(gaps[3:]) == [0, span - 1, span - 1, 0]


def test_empty_and_full_columns():
    codes = np.zeros((7, 4), np.uint8)
    codes[:, 1] = np.arange(1, 8)  # full column: all gaps 0
    codes[6, 3] = 1  # a lone entry at the last row
    colptr, e_codes, gaps = roundtrip(codes, 2)
    assert list(colptr) == [0, 0, 7, 7, 9]
    assert not gaps[:7].any()


def test_all_empty_matrix():
    colptr, e_codes, gaps = roundtrip(np.zeros((5, 3), np.uint8), 3)
    assert list(colptr) == [0, 0, 0, 0] and e_codes.size == 0


@pytest.mark.parametrize("density", [0.01, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("index_bits", [1, 4, 5, 8])
def test_random_roundtrip(rng, density, index_bits):
    roundtrip(random_codes(rng, 300, 37, density, 8, empty_cols=(3, 4)), index_bits)


def test_entries_past_last_row_are_corrupt():
    codes = np.zeros((4, 1), np.uint8)
    codes[3, 0] = 1
    colptr, e_codes, gaps = encode_csc(codes, 3)
    with pytest.raises(FormatError, match="row 3 >= rows=3"):
        decode_rows(colptr, gaps, 3)


def test_dequantize_uses_codebook(rng):
    codes = random_codes(rng, 50, 20, 0.2, 4)
    cb = random_codebook(rng, 4)
    colptr, e_codes, gaps = encode_csc(codes, 4)
    np.testing.assert_array_equal(to_dense(colptr, e_codes, gaps, 50, 20, cb), cb[codes])
