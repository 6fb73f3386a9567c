"""The .dcz container: writer -> Python reader -> native loader agree bit for bit; the worked
example of docs/format.md; the committed golden file."""
import os
import struct

import numpy as np
import pytest

import dcrt
from dcrt import FormatError, format as fmt, huffman, zoo
from dcrt.compressor import dcz_to_model, encode_layer, quantize_layer, prune_density
from dcrt.nn import Linear
from dcrt.sparse import encode_csc

from conftest import random_codebook, random_codes, tiny_model

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")


def test_worked_example():
    """docs/format.md §5.3, byte for byte."""
    codes = np.zeros((6, 2), np.uint8)
    codes[0, 0], codes[5, 0], codes[1, 1], codes[2, 1], codes[3, 1] = 1, 3, 1, 2, 1
    colptr, e_codes, gaps = encode_csc(codes, 2)
    assert list(colptr) == [0, 3, 6]
    assert list(e_codes) == [1, 0, 3, 1, 2, 1] and list(gaps) == [0, 3, 0, 1, 0, 0]
    cl = huffman.code_lengths(np.bincount(e_codes, minlength=4))
    il = huffman.code_lengths(np.bincount(gaps, minlength=4))
    assert list(cl) == [3, 1, 3, 2] and list(il) == [1, 2, 0, 2]
    assert [format(int(c), "b") for c in huffman.canonical_codes(cl)] == ["110", "0", "111", "10"]
    cs, co = huffman.encode(e_codes, cl, 4)
    is_, io = huffman.encode(gaps, il, 4)
    assert cs == b"\x68\xe0" and is_ == b"\x68\x00" and list(co) == list(io) == [0, 1, 2]
    L = fmt.LayerRecord(name="toy", kind="linear", rows=6, cols=2, kh=1, kw=1,
                        bias=np.array([0.5, 0, 0, 0, 0, -1], np.float32), storage="sparse", code_bits=2,
                        index_bits=2, chunk_symbols=4, nnz=5, codebook=np.array([0, -0.5, 0.25, 1.0], np.float32),
                        colptr=colptr, code_lengths=cl, index_lengths=il, code_offsets=co, index_offsets=io,
                        code_stream=cs, index_stream=is_)
    b = fmt.pack_layer(L)
    assert len(b) == 242
    assert b[:32] == bytes.fromhex("02000000 01000000 06000000 02000000 01000000 01000000 02 02 02 00 04000000")
    assert b[96:120] == np.array([0.5, 0, 0, 0, 0, -1], "<f4").tobytes()
    assert b[128:144] == bytes.fromhex("00000000 000000bf 0000803e 0000803f")
    assert b[144:148] == bytes([3, 1, 3, 2]) and b[160:164] == bytes([1, 2, 0, 2])
    assert b[176:177] == b"\xf0"  # column counts 3, 3 in 2 bits each
    assert b[224:226] == b"\x68\xe0" and b[240:242] == b"\x68\x00"
    back = fmt.parse_layer(memoryview(b), 0)
    np.testing.assert_array_equal(back.dense_weight(),
                                  [[-0.5, 0], [0, -0.5], [0, 0.25], [0, -0.5], [0, 0], [1.0, 0]])


@pytest.mark.parametrize("counts", [[0], [0, 0, 0], [3, 3], [1, 0, 255, 7], [2 ** 31, 5], list(range(100))])
def test_column_counts_pack_roundtrip(counts):
    colptr = np.concatenate([[0], np.cumsum(counts)])
    bits = fmt.count_bits(colptr)
    assert bits == max(1, max(counts).bit_length())
    raw = fmt.pack_counts(colptr, bits)
    assert len(raw) == (len(counts) * bits + 7) // 8
    np.testing.assert_array_equal(fmt.unpack_counts(raw, len(counts), bits), counts)


def test_header_layout():
    data = fmt.pack_file(fmt.Graph((4,), np.zeros(0), np.zeros(0), [fmt.Op("relu")]), {"name": "r"}, [])
    assert data[:8] == b"\x89DCZ\r\n\x1a\n"
    assert struct.unpack_from("<HHIQQ", data, 8) == (1, fmt.VERSION_MINOR, 2, len(data), 64)
    secs = [struct.unpack_from("<IIQQ", data, 64 + 32 * i) for i in range(2)]
    assert secs[0][:3] == (fmt.KIND_GRAPH, 0, 128) and secs[1][2] % 64 == 0
    f = fmt.loads(data)
    assert f.graph.input_shape == (4,) and f.meta == {"name": "r"}


def test_layer_record_roundtrip(rng):
    for cbits, ibits, chunk in [(1, 1, 1), (2, 8, 3), (5, 5, 4096), (8, 3, 17), (8, 8, 64)]:
        codes = random_codes(rng, 70, 45, 0.15, cbits, empty_cols=(0, 44))
        colptr, e_codes, gaps = encode_csc(codes, ibits)
        cl = huffman.code_lengths(np.bincount(e_codes, minlength=1 << cbits))
        il = huffman.code_lengths(np.bincount(gaps, minlength=1 << ibits))
        cs, co = huffman.encode(e_codes, cl, chunk)
        is_, io = huffman.encode(gaps, il, chunk)
        L = fmt.LayerRecord(name="layer", kind="linear", rows=70, cols=45, kh=1, kw=1,
                            bias=rng.standard_normal(70).astype(np.float32), storage="sparse", code_bits=cbits,
                            index_bits=ibits, chunk_symbols=chunk, nnz=int(np.count_nonzero(e_codes)),
                            codebook=random_codebook(rng, cbits), colptr=colptr, code_lengths=cl, index_lengths=il,
                            code_offsets=co, index_offsets=io, code_stream=cs, index_stream=is_)
        back = fmt.parse_layer(memoryview(fmt.pack_layer(L)), 0)
        np.testing.assert_array_equal(back.codes, e_codes)
        np.testing.assert_array_equal(back.gaps, gaps)
        np.testing.assert_array_equal(back.dense_weight(), L.codebook[codes])
        assert fmt.layer_nbytes(L) == len(fmt.pack_layer(L))


def assert_native_matches_python(path):
    """Writer -> Python reader -> native loader: identical decoded codes, gaps, colptr."""
    f = fmt.read(path)
    m = dcrt.load(path, threads=2)
    native = m.layers()
    assert len(native) == len(f.layers)
    for i, L in enumerate(f.layers):
        assert native[i]["name"] == L.name and native[i]["storage"] == L.storage
        if L.storage != "sparse":
            continue
        colptr, codes, gaps, cb = m._m.layer_entries(i)
        np.testing.assert_array_equal(colptr, L.colptr)
        np.testing.assert_array_equal(codes, L.codes)
        np.testing.assert_array_equal(gaps, L.gaps)
        np.testing.assert_array_equal(cb, L.codebook)
    return f, m


@pytest.mark.parametrize("arch", ["lenet-300-100", "lenet-5"])
def test_python_and_native_readers_agree_on_zoo(tmp_path, arch):
    model = zoo.build(arch, seed=3)
    p = zoo.PAPER[arch]
    path = tmp_path / f"{arch}.dcz"
    dcrt.compress(model, path, density=p["density"], bits=p["bits"], index_bits=p["index_bits"],
                  chunk_symbols=1000, progress=False)
    f, m = assert_native_matches_python(path)
    # and the writer's own codes survive the round trip
    for L, layer in zip(f.layers, model.weighted()):
        q = quantize_layer(layer.weight, prune_density(layer.weight, p["density"][layer.name]), p["bits"][layer.name])
        rec = encode_layer(layer, q, p["index_bits"], 1000, storage="sparse")
        np.testing.assert_array_equal(rec.codes, L.codes)


# ---------------------------------------------------------------- golden file
def golden():
    with open(os.path.join(GOLDEN, "tiny.dcz"), "rb") as f:
        data = f.read()
    with np.load(os.path.join(GOLDEN, "tiny_expected.npz")) as z:
        exp = {k: z[k] for k in z.files}
    return data, exp


def test_golden_writer_reproduces_bytes(tmp_path):
    import sys
    sys.path.insert(0, GOLDEN)
    from make_golden import SETTINGS
    data, exp = golden()
    m = tiny_model(seed=7)
    m.load_state_dict({k[2:]: v for k, v in exp.items() if k.startswith("w.")})
    dcrt.compress(m, tmp_path / "t.dcz", **SETTINGS)
    assert (tmp_path / "t.dcz").read_bytes() == data, "the writer drifted from tests/golden/tiny.dcz"


def test_golden_python_reader_decodes_expected_arrays():
    data, exp = golden()
    f = fmt.loads(data)
    assert [L.storage for L in f.layers] == ["sparse", "sparse", "sparse", "plain"]
    for i, L in enumerate(f.layers):
        if L.storage == "sparse":
            for name in ("colptr", "codes", "gaps", "codebook"):
                np.testing.assert_array_equal(getattr(L, name), exp[f"L{i}.{name}"], err_msg=f"L{i}.{name}")
        else:
            np.testing.assert_array_equal(L.weight, exp[f"L{i}.weight"])
    np.testing.assert_allclose(dcz_to_model(f).forward(exp["x"]), exp["y"], rtol=1e-6, atol=1e-7)
    assert f.meta["labels"] == list("abcde") and f.meta["metadata"] == {"seed": 7}


def test_golden_native_loader_and_output(tmp_path):
    data, exp = golden()
    p = tmp_path / "g.dcz"
    p.write_bytes(data)
    assert_native_matches_python(p)
    m = dcrt.load(p)
    np.testing.assert_allclose(m.infer(exp["x"]), exp["y"], rtol=1e-5, atol=1e-6)
    assert m.labels == list("abcde")


def test_golden_v1_0_file_still_loads(tmp_path):
    """Files written by dcrt 0.1 (format 1.0) load in both readers and give the same arrays
    and outputs as the current writer's file: 1.1 only tightened bounds those files meet."""
    data, exp = golden()
    with open(os.path.join(GOLDEN, "tiny-v1.0.dcz"), "rb") as f:
        old = f.read()
    assert struct.unpack_from("<HH", old, 8) == (1, 0) and struct.unpack_from("<HH", data, 8) == (1, fmt.VERSION_MINOR)
    f0, f1 = fmt.loads(old), fmt.loads(data)
    assert f0.version == (1, 0) and f1.version == (1, fmt.VERSION_MINOR)
    for a, b in zip(f0.layers, f1.layers):
        np.testing.assert_array_equal(a.dense_weight(), b.dense_weight())
    p = tmp_path / "old.dcz"
    p.write_bytes(old)
    np.testing.assert_allclose(dcrt.load(p).infer(exp["x"]), exp["y"], rtol=1e-5, atol=1e-6)


def test_writer_refuses_a_network_the_readers_would_reject(tmp_path):
    g = fmt.Graph((1,), np.zeros(1), np.full(1, 1e-30), [fmt.Op("relu")])  # std below 2^-24
    with pytest.raises(FormatError, match="refusing to write.*normalisation"):
        fmt.write(tmp_path / "m.dcz", g, {"name": "x"}, [])
    assert list(tmp_path.iterdir()) == []


def test_plain_storage_chosen_when_compression_does_not_pay(rng):
    layer = Linear(3, 2, "small")
    layer.weight = rng.standard_normal((2, 3)).astype(np.float32)
    q = quantize_layer(layer.weight, np.ones((2, 3), bool), 8)
    assert encode_layer(layer, q).storage == "plain"  # 256-entry codebook > 6 weights
    big = Linear(400, 300, "big")
    big.weight = rng.standard_normal((300, 400)).astype(np.float32)
    q = quantize_layer(big.weight, prune_density(big.weight, 0.1), 5)
    assert encode_layer(big, q).storage == "sparse"
    assert encode_layer(big, q, storage="plain").storage == "plain"
    small_sparse = encode_layer(layer, q=quantize_layer(layer.weight, np.ones((2, 3), bool), 8), storage="sparse")
    assert small_sparse.storage == "sparse"


def test_write_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "m.dcz"
    target.write_bytes(b"previous")
    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        fmt.write(target, fmt.Graph((1,), np.zeros(0), np.zeros(0), [fmt.Op("relu")]), {"name": "x"}, [])
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.dcz"]  # no temp file left behind


def test_written_file_has_ordinary_permissions(tmp_path):
    p = tmp_path / "m.dcz"
    fmt.write(p, fmt.Graph((1,), np.zeros(0), np.zeros(0), [fmt.Op("relu")]), {"name": "x"}, [])
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(p).st_mode & 0o777 == 0o666 & ~umask


def test_ancillary_sections_are_skipped_critical_rejected():
    from conftest import refix_crcs
    data = fmt.pack_file(fmt.Graph((1,), np.zeros(0), np.zeros(0), [fmt.Op("relu")]), {"name": "x"}, [])
    buf = bytearray(data)
    struct.pack_into("<I", buf, 64 + 32, fmt.KIND_META | fmt.ANCILLARY)  # META becomes an unknown ancillary
    with pytest.raises(FormatError, match="META section are required"):
        fmt.loads(refix_crcs(bytes(buf)))
    struct.pack_into("<I", buf, 64 + 32, 77)
    with pytest.raises(FormatError, match="unknown critical section kind 77"):
        fmt.loads(refix_crcs(bytes(buf)))
