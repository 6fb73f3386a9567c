"""Corrupt files: truncated at every section, flipped bytes, lengths past the end, absurd
counts. Each must raise FormatError from both the Python reader and the native loader,
never crash, hang or allocate wildly. The loaders run in a subprocess (tests/_corrupt_worker.py)."""
import os
import pickle
import struct
import subprocess
import sys

import numpy as np

from conftest import refix_crcs, section_offsets

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = open(os.path.join(HERE, "golden", "tiny.dcz"), "rb").read()


def run_cases(cases, timeout=600):
    proc = subprocess.run([sys.executable, os.path.join(HERE, "_corrupt_worker.py")], input=pickle.dumps(cases),
                          capture_output=True, timeout=timeout)
    assert proc.returncode == 0, f"worker died (rc={proc.returncode}): {proc.stderr.decode()[-2000:]}"
    import json
    return json.loads(proc.stdout)


def assert_all_rejected(cases):
    bad = [r for r in run_cases(cases)
           if r["native"] != "FormatError" or r.get("python", "FormatError") != "FormatError"]
    assert not bad, f"{len(bad)} cases not rejected with FormatError, e.g. {bad[:5]}"


def test_golden_itself_loads():
    res = run_cases([("golden", GOLDEN, True)])
    assert res[0]["native"] == "ok" and res[0]["python"] == "ok"


def test_truncated_at_every_section():
    cuts = {0, 1, 8, 12, 59, 63, 64, 65, 95, 96, len(GOLDEN) - 1}
    for kind, idx, off, length in section_offsets(GOLDEN):
        cuts |= {off - 1, off, off + 1, off + length // 2, off + length - 1}
    cuts |= set(range(0, len(GOLDEN), 37))
    cases = [(f"truncate@{c}", GOLDEN[:c], True) for c in sorted(cuts) if c < len(GOLDEN)]
    cases.append(("appended byte", GOLDEN + b"\0", True))
    assert_all_rejected(cases)


def test_every_flipped_byte_is_caught():
    # The checksums make every single-byte change detectable.
    cases = [(f"flip@{i}", GOLDEN[:i] + bytes([GOLDEN[i] ^ 0xFF]) + GOLDEN[i + 1:], i % 5 == 0)
             for i in range(len(GOLDEN))]
    assert_all_rejected(cases)


def test_flips_behind_fixed_checksums_readers_agree():
    """With the CRCs recomputed, a flip reaches the structural checks. Some flips leave a
    valid file (a bias value changes); then both readers must accept it and it must run."""
    rng = np.random.default_rng(0)
    cases = []
    for i in range(64, len(GOLDEN)):
        cases.append((f"fixflip@{i}", refix_crcs(GOLDEN[:i] + bytes([GOLDEN[i] ^ 0xFF]) + GOLDEN[i + 1:]), True))
    for k in range(300):  # several random bytes at once
        buf = bytearray(GOLDEN)
        for pos in rng.integers(64, len(buf), size=int(rng.integers(2, 8))):
            buf[pos] = int(rng.integers(0, 256))
        cases.append((f"fuzz{k}", refix_crcs(bytes(buf)), True))
    results = run_cases(cases)
    odd = [r for r in results if r["native"] not in ("ok", "FormatError") or r["python"] not in ("ok", "FormatError")]
    assert not odd, f"unexpected outcomes: {odd[:5]}"
    disagree = [r for r in results if r["native"] != r["python"]]
    assert not disagree, f"readers disagree: {disagree[:5]}"
    rejected = sum(r["native"] == "FormatError" for r in results)
    assert 0.5 * len(results) < rejected < len(results)  # float payloads may change validly; structure may not


def patched(fmt_str, offset, *values):
    buf = bytearray(GOLDEN)
    struct.pack_into(fmt_str, buf, offset, *values)
    return refix_crcs(bytes(buf))


def layer_offset(i):
    return [s for s in section_offsets(GOLDEN) if s[0] == 3 and s[1] == i][0][2]


def graph_offset():
    return [s for s in section_offsets(GOLDEN) if s[0] == 1][0][2]


def absurd_cases():
    secs = section_offsets(GOLDEN)
    huge64, huge32 = (1 << 64) - 1, (1 << 32) - 1
    yield "section_count huge", patched("<I", 12, huge32)
    yield "section_count 0", patched("<I", 12, 0)
    yield "file_size huge", patched("<Q", 16, huge64)
    yield "table offset past end", patched("<Q", 24, 1 << 40)
    yield "version 2", patched("<H", 8, 2)
    for i in range(len(secs)):
        e = 64 + 32 * i
        yield f"section {i} length past end", patched("<Q", e + 16, 1 << 40)
        yield f"section {i} length max", patched("<Q", e + 16, huge64)
        yield f"section {i} offset max", patched("<Q", e + 8, huge64 - 63)
        yield f"section {i} offset misaligned", patched("<Q", e + 8, secs[i][2] + 1)
    g = graph_offset()
    yield "op_count huge", patched("<I", g, huge32)
    yield "input_ndim 0", patched("<I", g + 4, 0)
    yield "input_ndim 9", patched("<I", g + 4, 9)
    yield "input dim huge", patched("<I", g + 8, huge32)
    yield "input dims product > 2^28", patched("<III", g + 8, 1 << 10, 1 << 10, 1 << 10)
    yield "norm_count huge", patched("<I", g + 24, huge32)
    ops = g + 32 + 8 * 3
    yield "op type unknown", patched("<H", ops, 99)
    yield "op layer out of range", patched("<i", ops + 4, 1000)
    yield "op layer missing", patched("<i", ops + 4, -1)
    yield "conv stride 0", patched("<I", ops + 8, 0)
    yield "conv groups 0", patched("<I", ops + 8 + 16, 0)
    yield "conv padding huge (activation explodes)", patched("<II", ops + 8 + 8, 1 << 20, 1 << 20)
    yield "relu given a layer", patched("<i", ops + 40 + 4, 0)
    yield "lrn size even", patched("<I", ops + 80 + 8, 4)
    yield "lrn k nan", patched("<I", ops + 80 + 8 + 12, 0x7FC00000)
    yield "pool stride 0", patched("<I", ops + 120 + 8 + 8, 0)
    yield "pool padding >= kernel", patched("<I", ops + 120 + 8 + 16, 3)
    yield "pool ceil_mode 2", patched("<I", ops + 120 + 8 + 24, 2)
    for i in range(3):  # sparse layers
        L = layer_offset(i)
        yield f"L{i} storage 0", patched("<I", L, 0)
        yield f"L{i} kind 7", patched("<I", L + 4, 7)
        yield f"L{i} rows huge", patched("<I", L + 8, huge32)
        yield f"L{i} rows 0", patched("<I", L + 8, 0)
        yield f"L{i} cols huge", patched("<I", L + 12, huge32)
        yield f"L{i} code_bits 9", patched("<B", L + 24, 9)
        yield f"L{i} code_bits 0", patched("<B", L + 24, 0)
        yield f"L{i} index_bits 9", patched("<B", L + 25, 9)
        yield f"L{i} count_bits 0", patched("<B", L + 26, 0)
        yield f"L{i} count_bits 33", patched("<B", L + 26, 33)
        yield f"L{i} count_bits +1 (counts no longer sum up)", patched("<B", L + 26, GOLDEN[L + 26] + 1)
        yield f"L{i} reserved byte", patched("<B", L + 27, 1)
        yield f"L{i} chunk 0", patched("<I", L + 28, 0)
        yield f"L{i} chunk 1 (offset tables no longer fit)", patched("<I", L + 28, 1)
        yield f"L{i} n_entries huge", patched("<Q", L + 32, 1 << 62)
        yield f"L{i} n_entries +1", patched("<Q", L + 32, struct.unpack_from("<Q", GOLDEN, L + 32)[0] + 1)
        yield f"L{i} nnz > n_entries", patched("<Q", L + 40, 1 << 40)
        yield f"L{i} nnz off by one", patched("<Q", L + 40, struct.unpack_from("<Q", GOLDEN, L + 40)[0] - 1)
        yield f"L{i} code stream bytes huge", patched("<Q", L + 48, 1 << 62)
        yield f"L{i} index stream bytes huge", patched("<Q", L + 56, huge64)
        yield f"L{i} name with inner NUL", patched("<3s", L + 64, b"a\0b")
    p = layer_offset(3)  # the plain layer
    yield "plain rows huge", patched("<I", p + 8, huge32)
    yield "plain with code_bits", patched("<B", p + 24, 5)
    yield "plain with count_bits", patched("<B", p + 26, 3)
    yield "plain weight NaN", patched("<I", p + 96 + 16 * 1 + 4 * 5, 0x7FC00000)


def test_absurd_counts_and_lengths_past_the_end():
    cases = [(name, data, True) for name, data in absurd_cases()]
    assert len(cases) > 80
    assert_all_rejected(cases)


def test_arbitrary_byte_strings():
    rng = np.random.default_rng(1)
    cases = [("empty", b"", True), ("magic only", GOLDEN[:8], True), ("text", b"hello world" * 10, True)]
    for k in range(200):
        n = int(rng.integers(0, 400))
        cases.append((f"random{k}", rng.integers(0, 256, n, dtype=np.uint8).tobytes(), True))
        head = bytearray(GOLDEN[:64]) + rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        cases.append((f"header+random{k}", refix_crcs(bytes(head)), True))
    assert_all_rejected(cases)
