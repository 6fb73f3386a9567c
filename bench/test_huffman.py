"""Huffman decoding, one core: every native decoder in the registry against zstd's huff0 on the
same symbols.

    pip install zstandard
    pytest bench/test_huffman.py --benchmark-json=huff.json && python bench/report.py huff.json

The peer is huff0 as zstd runs it (the `zstandard` wheel, zstd 1.5.x, whose 4-stream decoder has
an x86-64 assembly loop): the symbols, one byte each, compressed into a zstd frame whose
parameters find no matches (min_match 7, 128 KiB window: a 7-symbol repeat is rarer than 1 in
2^25 at these entropies), so every block is huff0-coded literals and decompression is huff0
decoding plus a copy. The test checks that the frame is no bigger than 1.02x our Huffman bytes
(that is, the literals really are Huffman-coded) and that it round-trips.

Sources: the issue's 32-symbol, 3.7-bit source; the streams of a compressed VGG-16 (fc6 codes
and relative indices, conv4_1's 8-bit codes).
"""
import numpy as np
import pytest

from dcrt import _core, format as fmt, huffman

from peers import Unavailable

DECODERS = [k["name"] for k in _core.kernels() if k["op"] == "huffman" and not k["reference"]]
IMPLS = DECODERS + ["zstd-huff0"]
N_SYNTH = 4_000_000


def _synthetic(n=N_SYNTH, alpha=32, entropy=3.7, seed=0):
    """A two-sided geometric source over `alpha` symbols tuned to `entropy` bits."""
    k = np.abs(np.arange(alpha) - alpha // 2)
    lo, hi = 0.01, 5.0
    for _ in range(60):  # bisect the decay rate
        t = (lo + hi) / 2
        p = np.exp(-t * k)
        p /= p.sum()
        h = -(p * np.log2(p)).sum()
        lo, hi = (t, hi) if h > entropy else (lo, t)
    return np.random.default_rng(seed).choice(alpha, size=n, p=p), alpha


@pytest.fixture(scope="session")
def sources(compressed):
    out = {}
    sym, alpha = _synthetic()
    lengths = huffman.code_lengths(np.bincount(sym, minlength=alpha), huffman.DEFAULT_MAX_LEN)
    stream, offs = huffman.encode(sym, lengths, 4096)
    out["synthetic-32sym-3.7bit"] = (sym.astype(np.uint8), lengths, stream, np.asarray(offs, np.uint32), 4096)
    path, _ = compressed("vgg16")
    layers = {L.name: L for L in fmt.read(path).layers}
    for name, field in (("fc6", "code"), ("fc6", "index"), ("conv4_1", "code")):
        L = layers[name]
        sym = L.codes if field == "code" else L.gaps
        out[f"vgg16-{name}-{'codes' if field == 'code' else 'gaps'}"] = (np.asarray(sym, np.uint8), getattr(L, f"{field}_lengths"),
                                         getattr(L, f"{field}_stream"), np.asarray(getattr(L, f"{field}_offsets"),
                                                                                    np.uint32), L.chunk_symbols)
    return out


def _zstd(sym, huff_bytes):
    try:
        import zstandard as zstd
    except ImportError as e:
        raise Unavailable("zstandard") from e
    raw = sym.tobytes()
    params = zstd.ZstdCompressionParameters(window_log=17, min_match=7, strategy=zstd.STRATEGY_FAST, hash_log=12,
                                            chain_log=12, search_log=1, target_length=0)
    frame = zstd.ZstdCompressor(compression_params=params).compress(raw)
    assert len(frame) <= 1.02 * huff_bytes + 512, "zstd found matches: not a literals-only (huff0) frame"
    d = zstd.ZstdDecompressor()
    assert d.decompress(frame) == raw
    return lambda: d.decompress(frame)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("source", ["synthetic-32sym-3.7bit", "vgg16-fc6-codes", "vgg16-fc6-gaps",
                                    "vgg16-conv4_1-codes"])
def test_decode(benchmark, sources, source, impl):
    sym, lengths, stream, offs, chunk = sources[source]
    if impl == "zstd-huff0":
        try:
            fn = _zstd(sym, len(stream))
        except Unavailable as e:
            pytest.skip(str(e))
    else:
        fn = lambda: _core.huffman_decode(impl, lengths, stream, offs, sym.size, chunk)  # noqa: E731
        np.testing.assert_array_equal(fn(), sym)
    benchmark.group = f"huffman {source}"
    counts = np.bincount(sym, minlength=len(lengths)) / sym.size
    entropy = float(-(counts[counts > 0] * np.log2(counts[counts > 0])).sum())
    benchmark.extra_info.update(source=source, impl=impl, symbols=int(sym.size), bytes=len(stream),
                                entropy=round(entropy, 3), alphabet=len(lengths))
    benchmark(fn)
