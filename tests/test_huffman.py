"""Huffman: optimal length-limited lengths, canonical codes, bit-exact round trips through
the Python reference decoder and every native decoder in the registry."""
import numpy as np
import pytest

from dcrt import FormatError, huffman
from dcrt import _core

DECODERS = [k["name"] for k in _core.kernels() if k["op"] == "huffman"]


def roundtrip(sym, alpha, chunk, max_len=11, lengths=None):
    sym = np.asarray(sym, np.int64)
    if lengths is None:
        lengths = huffman.code_lengths(np.bincount(sym, minlength=alpha), max_len)
    stream, offs = huffman.encode(sym, lengths, chunk)
    out = huffman.decode(stream, offs, lengths, sym.size, chunk)
    np.testing.assert_array_equal(out, sym)
    if sym.size <= 3000:
        np.testing.assert_array_equal(huffman.decode_ref(stream, offs, lengths, sym.size, chunk), sym)
    for name in DECODERS:
        nat = _core.huffman_decode(name, lengths, stream, offs, sym.size, chunk)
        np.testing.assert_array_equal(nat, sym, err_msg=name)
    return stream, offs, lengths


@pytest.mark.parametrize("chunk", [1, 3, 64, 4096])
def test_empty_stream(chunk):
    stream, offs, lengths = roundtrip([], 32, chunk)
    assert stream == b"" and list(offs) == [0] and not lengths.any()


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_one_symbol(chunk):
    stream, offs, lengths = roundtrip([5] * 100, 32, chunk)
    assert lengths[5] == 1 and lengths.sum() == 1
    assert set(stream) <= {0}  # the single code is the bit 0


def test_two_symbols():
    stream, _, lengths = roundtrip([0, 1, 1, 0, 1, 1, 1, 1, 0], 2, 4096)
    assert list(lengths) == [1, 1]
    assert stream == bytes([0b01101111, 0b00000000])


def test_skewed_near_entropy(rng):
    p = 0.5 ** np.arange(1, 17)
    p /= p.sum()
    sym = rng.choice(16, size=50_000, p=p)
    stream, _, lengths = roundtrip(sym, 16, 4096)
    counts = np.bincount(sym, minlength=16)
    avg = (counts * lengths).sum() / sym.size
    q = counts[counts > 0] / sym.size
    entropy = -(q * np.log2(q)).sum()
    assert entropy <= avg < entropy + 1


@pytest.mark.parametrize("max_len", [8, 11, 15])
def test_maximal_code_length(max_len):
    # Fibonacci-like frequencies force the deepest possible tree; the limit must hold.
    freqs = np.array([1, 1] + [2 ** k for k in range(1, 24)], np.int64)
    lengths = huffman.code_lengths(freqs, max_len)
    assert lengths.max() == max_len
    huffman.check_lengths(lengths, 10, "t")
    sym = np.repeat(np.arange(freqs.size), np.minimum(freqs, 50))
    np.random.default_rng(0).shuffle(sym)
    roundtrip(sym, freqs.size, 97, lengths=lengths)


def test_full_256_alphabet_and_chunk_boundaries(rng):
    sym = rng.integers(0, 256, size=4096 * 3 + 1)
    for n in (4095, 4096, 4097, sym.size):
        roundtrip(sym[:n], 256, 4096)


def test_package_merge_is_optimal_against_unlimited_huffman(rng):
    import heapq
    for _ in range(20):
        f = rng.integers(1, 1000, size=rng.integers(2, 40))
        heap = [(int(w), i, [i]) for i, w in enumerate(f)]
        depth = np.zeros(f.size, int)
        heapq.heapify(heap)
        k = f.size
        while len(heap) > 1:
            a, b = heapq.heappop(heap), heapq.heappop(heap)
            for s in a[2] + b[2]:
                depth[s] += 1
            heapq.heappush(heap, (a[0] + b[0], k, a[2] + b[2]))
            k += 1
        lengths = huffman.code_lengths(f, 15)
        assert (f * lengths).sum() == (f * depth).sum()


@pytest.mark.parametrize("lengths, msg", [
    ([1, 1, 1], "over-subscribed"),
    ([1, 2, 0, 0], "incomplete"),
    ([2, 0, 0, 0], "single used symbol"),
    ([16, 1, 0, 0], "> 15"),
    ([0, 0, 0, 0], "all code lengths are 0"),
])
def test_bad_lengths_rejected_by_both_readers(lengths, msg):
    lengths = np.array(lengths, np.uint8)
    with pytest.raises(FormatError, match=msg):
        huffman.check_lengths(lengths, 5, "t")
    with pytest.raises(FormatError):
        _core.huffman_decode(DECODERS[0], lengths, b"\x00", np.array([0, 1], np.uint32), 5, 8)


def corrupt_cases():
    lengths = np.array([1, 2, 2], np.uint8)  # codes 0, 10, 11
    sym = np.array([0, 1, 2, 0])  # 0 10 11 0 -> 01011000
    stream, offs = huffman.encode(sym, lengths, 4096)
    assert stream == bytes([0b01011000])
    yield "padding bit set", lengths, bytes([0b01011001]), offs, 4
    yield "spare byte", lengths, bytes([0b01011000, 0]), np.array([0, 2], np.uint32), 4
    yield "runs past end", lengths, stream, offs, 7
    one = np.array([1, 0], np.uint8)  # single symbol: code '0'; bit '1' is invalid
    yield "invalid code", one, bytes([0b10000000]), np.array([0, 1], np.uint32), 1


@pytest.mark.parametrize("case", list(corrupt_cases()), ids=lambda c: c[0])
def test_corrupt_chunks_rejected(case):
    _, lengths, stream, offs, n = case
    with pytest.raises(FormatError):
        huffman.decode(stream, offs, lengths, n, 4096)
    for name in DECODERS:
        with pytest.raises(FormatError):
            _core.huffman_decode(name, lengths, stream, offs, n, 4096)


def test_random_garbage_never_crashes_native_decoders(rng):
    lengths = huffman.code_lengths(rng.integers(1, 100, size=32), 11)
    for _ in range(300):
        n = int(rng.integers(1, 64))
        stream = rng.integers(0, 256, size=int(rng.integers(1, 40)), dtype=np.uint8).tobytes()
        offs = np.array([0, len(stream)], np.uint32)
        results = []
        for name in DECODERS:
            try:
                results.append(tuple(_core.huffman_decode(name, lengths, stream, offs, n, 64)))
            except FormatError:
                results.append("corrupt")
        assert len(set(results)) == 1, "decoders disagree on a garbage stream"


def _decode_all(lengths, stream, offs, n, chunk):
    """Every native decoder's answer: the symbols, or the error message (which names the chunk)."""
    out = {}
    for name in DECODERS:
        try:
            out[name] = tuple(_core.huffman_decode(name, lengths, stream, offs, n, chunk))
        except FormatError as e:
            out[name] = str(e)
    return out


@pytest.mark.parametrize("alpha, max_len", [(2, 11), (16, 11), (32, 12), (32, 13), (40, 15), (256, 11)])
@pytest.mark.parametrize("n_chunks", [1, 5, 6, 7, 13, 16, 17, 48, 65, 100])
def test_interleaved_decoders_over_chunk_groups(rng, alpha, max_len, n_chunks):
    # The multi-symbol decoders run six chunks at a time, with K lookups per reload set by the
    # window (12 bits, or max_len when longer); the AVX-512 one runs 16 chunks per register and
    # three registers at a time (48), the rest in groups of 16, then six; a short last chunk
    # limits its group's lockstep blocks.
    chunk = 700
    if max_len > 12:  # skewed enough that the longest code is used
        freqs = np.array([2 ** min(k, 20) for k in range(alpha)], np.int64)
        lengths = huffman.code_lengths(freqs, max_len)
        assert lengths.max() == max_len
        p = 2.0 ** -lengths.astype(float)
        sym = rng.choice(alpha, size=chunk * n_chunks - 123, p=p / p.sum())
    else:
        sym = rng.choice(alpha, size=chunk * n_chunks - 123, p=rng.dirichlet(np.ones(alpha) * 0.7))
    roundtrip(sym, alpha, chunk, max_len=max_len)


@pytest.mark.parametrize("n_chunks", [13, 60])
def test_corrupted_long_chunks_agree_across_decoders(rng, n_chunks):
    # 60 chunks: the AVX-512 decoder's group of 48 and one of 16 (the corrupt chunk in either).
    sym = rng.choice(32, size=2000 * n_chunks, p=rng.dirichlet(np.ones(32)))
    lengths = huffman.code_lengths(np.bincount(sym, minlength=32), 11)
    stream, offs = huffman.encode(sym, lengths, 2000)
    offs = np.asarray(offs, np.uint32)
    for trial in range(60):
        s = bytearray(stream)
        o = offs.copy()
        kind = trial % 3
        if kind == 0:  # flip bits in the middle or at the end of some chunk
            c = int(rng.integers(0, n_chunks))
            pos = int(o[c + 1]) - 1 - int(rng.integers(0, 3)) if trial % 2 else int(rng.integers(o[c], o[c + 1]))
            s[pos] ^= int(rng.integers(1, 256))
        elif kind == 1:  # move one chunk boundary
            c = int(rng.integers(1, n_chunks))
            o[c] = np.uint32(int(o[c]) + int(rng.choice([-2, -1, 1, 2])))
            if not (o[c - 1] <= o[c] <= o[c + 1]):
                continue
        else:  # a symbol count that does not match the bytes
            n = sym.size + int(rng.choice([-1, 1, 5]))
            res = _decode_all(lengths, bytes(s), o, n, 2000) if n // 2000 + 1 == o.size - 1 else None
            if res is not None:
                assert len(set(res.values())) == 1, res.keys()
            continue
        res = _decode_all(lengths, bytes(s), o, sym.size, 2000)
        assert len(set(res.values())) == 1, {k: (v if isinstance(v, str) else "decoded") for k, v in res.items()}
