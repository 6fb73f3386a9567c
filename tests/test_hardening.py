"""Issue 12: files that pass every checksum but carry hostile field values, hostile arguments,
a structure-aware field fuzzer over both readers, and writers that leave nothing behind.
Loaders run in a subprocess (tests/_corrupt_worker.py) so that a crash fails one test."""
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import dcrt
from dcrt import FormatError, LimitError, format as fmt

from conftest import refix_crcs, section_offsets
from test_corrupt import GOLDEN, run_cases

HERE = os.path.dirname(os.path.abspath(__file__))
BAD = os.path.join(HERE, "golden", "bad")
with open(os.path.join(BAD, "MANIFEST.json")) as _f:
    MANIFEST = json.load(_f)


# ---------------------------------------------------------------- golden bad files
def test_every_bad_file_is_in_the_manifest():
    files = sorted(n[:-4] for n in os.listdir(BAD) if n.endswith(".dcz"))
    assert files == sorted(MANIFEST), "tests/golden/bad and its MANIFEST.json disagree"
    assert len(files) >= 9


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_golden_bad_file_rejected_by_both_readers(name):
    with open(os.path.join(BAD, name + ".dcz"), "rb") as f:
        data = f.read()
    r = run_cases([(name, data, True)], timeout=120)[0]
    assert r["native"] == "FormatError" and r["python"] == "FormatError", r
    frag = MANIFEST[name]["message"]
    for reader in ("native_msg", "python_msg"):
        assert frag in r[reader], f"{reader}: {r[reader]!r} does not say {frag!r}"
    assert len(r["native_msg"]) < 400 and len(r["python_msg"]) < 400  # never an echo of the bytes


# ---------------------------------------------------------------- structure-aware field fuzzer
def _fields(data):
    """(name, struct format, file offset) of every integer field of the header, the section
    table, the GRAPH header and ops, and every LAYER header."""
    out = [("header.version_major", "<H", 8), ("header.version_minor", "<H", 10),
           ("header.section_count", "<I", 12), ("header.file_size", "<Q", 16), ("header.table_offset", "<Q", 24),
           ("header.flags", "<I", 36)]
    secs = section_offsets(data)
    for i in range(len(secs)):
        e = 64 + 32 * i
        out += [(f"table[{i}].kind", "<I", e), (f"table[{i}].index", "<I", e + 4), (f"table[{i}].offset", "<Q", e + 8),
                (f"table[{i}].length", "<Q", e + 16), (f"table[{i}].reserved", "<I", e + 28)]
    for kind, idx, off, length in secs:
        if kind == fmt.KIND_GRAPH:
            out += [(f"graph.{n}", "<I", off + 4 * k) for k, n in enumerate(
                ["op_count", "input_ndim", "input_shape0", "input_shape1", "input_shape2", "input_shape3",
                 "norm_count", "reserved"])]
            nops, nnorm = struct.unpack_from("<I", data, off)[0], struct.unpack_from("<I", data, off + 24)[0]
            for k in range(2 * nnorm):
                out.append((f"graph.norm[{k}]", "<I", off + 32 + 4 * k))
            base = off + 32 + 8 * nnorm
            listed = 0
            for j in range(nops):
                o = base + 40 * j
                out += [(f"op[{j}].type", "<H", o), (f"op[{j}].n_inputs", "<H", o + 2), (f"op[{j}].layer", "<i", o + 4)]
                out += [(f"op[{j}].p[{k}]", "<I", o + 8 + 4 * k) for k in range(8)]
                listed += struct.unpack_from("<H", data, o + 2)[0]
            out += [(f"graph.inputs[{k}]", "<I", base + 40 * nops + 4 * k) for k in range(listed)]
        elif kind == fmt.KIND_LAYER:
            names = ["storage", "kind", "rows", "cols", "kh", "kw"]
            out += [(f"L{idx}.{n}", "<I", off + 4 * k) for k, n in enumerate(names)]
            out += [(f"L{idx}.{n}", "<B", off + 24 + k) for k, n in enumerate(
                ["code_bits", "index_bits", "count_bits", "reserved"])]
            out.append((f"L{idx}.chunk_symbols", "<I", off + 28))
            out += [(f"L{idx}.{n}", "<Q", off + 32 + 8 * k) for k, n in enumerate(
                ["n_entries", "nnz", "code_stream_bytes", "index_stream_bytes"])]
    return out


def _values(fmt_char, valid):
    bits = struct.calcsize(fmt_char) * 8
    signed = fmt_char[-1].islower()
    top = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    lo = -(1 << (bits - 1)) if signed else 0
    vals = {0, 1, top, top - 1, valid - 1, valid + 1, 2 * valid, valid // 2}
    vals |= {1 << 31, (1 << 32) - 1, (1 << 31) - 1, 1 << 30, 1 << 28, (1 << 28) + 1, (1 << 16) + 1}
    if signed:
        vals |= {-1, lo}
    return sorted(v for v in vals if lo <= v <= top and v != valid)


def field_cases(data):
    cases = []
    for name, f, off in _fields(data):
        valid = struct.unpack_from(f, data, off)[0]
        for v in _values(f, valid):
            buf = bytearray(data)
            struct.pack_into(f, buf, off, v)
            cases.append((f"{name}={v}", refix_crcs(bytes(buf)), True))
    return cases


def test_field_fuzzer_both_readers_agree_and_never_crash():
    """Every integer field set to 0, 1, max, max-1, 2^31, 2^32-1, 2^28(+1), neighbours of its
    valid value...; CRCs recomputed so each reaches the structural checks. Both readers must
    agree (accept, or FormatError), an accepted file must run, and nothing may crash."""
    cases = field_cases(GOLDEN)
    assert len(cases) > 1500
    results = run_cases(cases, timeout=900)
    odd = [r for r in results if r["native"] not in ("ok", "FormatError") or r["python"] not in ("ok", "FormatError")]
    assert not odd, f"{len(odd)} unexpected outcomes, e.g. {odd[:5]}"
    disagree = [r for r in results if r["native"] != r["python"]]
    assert not disagree, f"readers disagree on {len(disagree)}, e.g. {disagree[:5]}"
    assert sum(r["native"] == "FormatError" for r in results) > 0.9 * len(results)


def test_field_fuzzer_on_the_one_conv_shapes(tmp_path):
    """The same on each bad file's valid twin (pool, LRN, normalisation ops of the crafted
    networks) and on format 1.2 graphs with branches (their n_inputs and input tables), so that
    the fields of every op type are covered."""
    sys.path.insert(0, os.path.join(HERE, "golden"))
    import make_bad
    from dcrt.nn import AvgPool2d, MaxPool2d
    from test_graph import NETS
    graphs = []
    for name in ("residual_proj", "squeeze_excite", "concat", "pad"):
        dcrt.compress(NETS[name], tmp_path / f"{name}.dcz", storage="plain", progress=False)
        graphs.append((tmp_path / f"{name}.dcz").read_bytes())
    cases = []
    for data in [make_bad.one_conv(mean=(0.5,), std=(0.25,)), make_bad.conv_pool(MaxPool2d(2, 2, name="p")),
                 make_bad.conv_pool(AvgPool2d(3, 1, padding=1, name="p")), make_bad.conv_lrn()] + graphs:
        cases += field_cases(data)
    results = run_cases(cases, timeout=900)
    odd = [r for r in results if r["native"] not in ("ok", "FormatError") or r["python"] not in ("ok", "FormatError")]
    assert not odd, f"{len(odd)} unexpected outcomes, e.g. {odd[:5]}"
    disagree = [r for r in results if r["native"] != r["python"]]
    assert not disagree, f"readers disagree on {len(disagree)}, e.g. {disagree[:5]}"


# ---------------------------------------------------------------- limits
def test_limits_reject_big_networks_at_load():
    m = dcrt.loads(GOLDEN, threads=1)
    plan = m.plan
    assert plan["activation"] >= 8 * 9 * 9 and plan["work"] > 0
    assert plan["bytes_per_sample"] == 4 * (plan["arena"] + plan["padded"] + plan["lin_cols"] + plan["lin_rows"])
    assert plan["activation"] <= plan["arena"] <= 2 * plan["activation"]  # a chain: two buffers at most
    assert sum(op["work"] for op in m._m.ops) + 3 * 9 * 9 == plan["work"]
    dcrt.loads(GOLDEN, max_activation=plan["activation"], max_work=plan["work"])  # at the limit: fine
    with pytest.raises(LimitError, match="over max_activation=100"):
        dcrt.loads(GOLDEN, max_activation=100)
    with pytest.raises(LimitError, match=f"needs {plan['work']} multiply-adds per sample, over max_work="):
        dcrt.loads(GOLDEN, max_work=plan["work"] - 1)
    assert issubclass(LimitError, ValueError)
    with pytest.raises(ValueError, match="max_activation must be in"):
        dcrt.loads(GOLDEN, max_activation=0)
    with pytest.raises(TypeError, match="max_work must be an int"):
        dcrt.loads(GOLDEN, max_work=1.5)


# ---------------------------------------------------------------- arguments
@pytest.mark.parametrize("bad,exc,msg", [
    (0, ValueError, "threads must be in 1..256, got 0"),
    (257, ValueError, "threads must be in 1..256, got 257"),
    (10 ** 4, ValueError, "threads must be in 1..256"),
    (2 ** 32, ValueError, "threads must be in 1..256"),
    (-1, ValueError, "threads must be in 1..256"),
    (1.5, TypeError, "threads must be an int, got float"),
    ("2", TypeError, "threads must be an int, got str"),
    (True, TypeError, "threads must be an int, got bool"),
])
def test_threads_argument(bad, exc, msg):
    with pytest.raises(exc, match=msg) as ei:
        dcrt.loads(GOLDEN, threads=bad)
    assert len(str(ei.value)) < 100


def test_threads_numpy_int_accepted():
    assert dcrt.loads(GOLDEN, threads=np.int64(2)).threads == 2


def test_native_constructor_never_echoes_the_file():
    from dcrt import _core
    big = GOLDEN + bytes(1 << 16)
    for args, exc in (((big, 2 ** 32), ValueError), ((big, 1.5), TypeError), ((big, "2"), TypeError),
                      ((bytearray(big), 1), TypeError), ((big, 1, 0), ValueError), ((big, 1, 10, -5), ValueError)):
        with pytest.raises(exc) as ei:
            _core.Model(*args)
        assert len(str(ei.value)) < 200, str(ei.value)[:300]


@pytest.mark.parametrize("bad", [5, 10 ** 10, "abc", None, [1, 2, 3], 1.5])
def test_loads_takes_only_bytes_like(bad):
    with pytest.raises(TypeError, match="data must be a bytes-like object"):
        dcrt.loads(bad)


def test_loads_accepts_bytes_like():
    ref = dcrt.loads(GOLDEN)
    x = np.random.default_rng(0).random((2,) + ref.input_shape, dtype=np.float32)
    for data in (bytearray(GOLDEN), memoryview(GOLDEN), np.frombuffer(GOLDEN, np.uint8)):
        np.testing.assert_array_equal(dcrt.loads(data).infer(x), ref.infer(x))


def test_meta_deeply_nested_is_format_error():
    nested = b'{"name":"x","metadata":{"a":' + b"[" * 100000 + b"]" * 100000 + b"}}"
    with pytest.raises(FormatError, match="META"):
        fmt.parse_meta(nested)


def test_thread_start_failure_raises_and_does_not_hang():
    """With the address space capped so that the 255 worker stacks cannot all be mapped,
    load raises a RuntimeError naming the thread (it used to hang in pthread_cond_destroy)."""
    code = textwrap.dedent(f"""
        import resource, sys
        import dcrt
        data = open({os.path.join(HERE, 'golden', 'tiny.dcz')!r}, 'rb').read()
        dcrt.loads(data, threads=2)  # warm: imports and first allocations done
        vm = int([l for l in open('/proc/self/status') if l.startswith('VmSize')][0].split()[1]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + (256 << 20), vm + (256 << 20)))
        try:
            dcrt.loads(data, threads=256)
        except RuntimeError as e:
            print('RuntimeError:', e)
            sys.exit(0)
        except MemoryError as e:
            print('MemoryError:', e)
            sys.exit(0)
        print('loaded')
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "could not start worker thread" in proc.stdout or "MemoryError" in proc.stdout, proc.stdout


# ---------------------------------------------------------------- writers leave nothing behind
_KILL_MID_WRITE = """
import os, sys, time
sys.path[:0] = {path!r}
import numpy as np
from dcrt import _atomic
real = os.fsync
def hang(fd):          # the temp file is written; the process dies before the rename
    print("writing", flush=True)
    time.sleep(600)
os.fsync = hang
{body}
"""


def _kill_mid_write(tmp_path, body):
    code = _KILL_MID_WRITE.format(path=sys.path, body=textwrap.dedent(body))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert proc.stdout.readline().strip() == "writing"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)


def test_writer_killed_mid_write_leaves_a_temp_file_the_next_write_removes(tmp_path):
    target = tmp_path / "m.dcz"
    _kill_mid_write(tmp_path, f"""
        from dcrt import format as fmt
        fmt.write({str(target)!r}, fmt.Graph((1,), np.zeros(0), np.zeros(0), [fmt.Op("relu")]), {{"name": "x"}}, [])
    """)
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".m.dcz.tmp-"), left
    fmt.write(target, fmt.Graph((1,), np.zeros(0), np.zeros(0), [fmt.Op("relu")]), {"name": "x"}, [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.dcz"]
    assert fmt.read(target).meta["name"] == "x"


def test_concurrent_writer_temp_file_is_not_removed(tmp_path):
    from dcrt import _atomic
    live = tmp_path / f".other.dcz.tmp-{os.getpid()}-abc123"  # this process: alive
    live.write_bytes(b"being written")
    dead = tmp_path / ".other.dcz.tmp-999999999-abc123"  # no such pid
    dead.write_bytes(b"left by a dead writer")
    assert _atomic.clean_stale(tmp_path) == [str(dead)]
    assert live.exists() and not dead.exists()


def test_writer_fsyncs_file_then_directory(tmp_path, monkeypatch):
    from dcrt import _atomic
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    def fsync(fd):
        calls.append(("fsync", "dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "file"))
        real_fsync(fd)
    def replace(a, b):
        calls.append(("replace",))
        real_replace(a, b)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    with _atomic.atomic_write(tmp_path / "f.bin") as f:
        f.write(b"abc")
    assert calls == [("fsync", "file"), ("replace",), ("fsync", "dir")]
    assert (tmp_path / "f.bin").read_bytes() == b"abc"


def test_writer_exception_leaves_nothing(tmp_path):
    from dcrt import _atomic
    (tmp_path / "f.bin").write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with _atomic.atomic_write(tmp_path / "f.bin") as f:
            f.write(b"half")
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]
    assert (tmp_path / "f.bin").read_bytes() == b"old"


def test_pipeline_checkpoint_killed_mid_write_is_cleaned_on_resume(tmp_path):
    from conftest import require_dataset
    from test_pipeline import TINY
    from dcrt.pipeline import Config, run
    require_dataset("fashion-mnist")
    ck = tmp_path / "ckpt"
    ck.mkdir()
    _kill_mid_write(tmp_path, f"""
        from dcrt import pipeline
        pipeline._atomic_save({str(ck / 'baseline.npz')!r}, a=np.zeros(3))
    """)
    assert [p.name.startswith(".baseline.npz.tmp-") for p in ck.iterdir()] == [True]
    logs = []
    run(Config(**TINY), tmp_path / "out.dcz", checkpoint_dir=ck, progress=False, log_fn=logs.append,
        stop_after="baseline")
    assert sorted(p.name for p in ck.iterdir()) == ["baseline.npz", "log.json"]
    assert any("interrupted checkpoint write" in str(m) for m in logs)


# ---------------------------------------------------------------- thread pool
def _big_linear(tmp_path):
    from dcrt.nn import Linear, ReLU, Sequential, he_init
    m = he_init(Sequential([Linear(2048, 1024, "a"), ReLU("r"), Linear(1024, 10, "b")], input_shape=(2048,),
                           name="big"), 3)
    p = tmp_path / "big.dcz"
    dcrt.compress(m, p, density=0.3, progress=False)
    return p


def test_small_ops_never_wake_a_sleeping_worker():
    """Below the wake threshold an op uses awake workers only: spaced calls on a small model
    issue no futex wake-up at all (they used to wake, then spin-wait for, the worker)."""
    m = dcrt.loads(GOLDEN, threads=2)
    assert all(not op["wakes_b1"] for op in m._m.ops)
    x = np.random.default_rng(0).random(m.input_shape, dtype=np.float32)
    y0 = m.infer(x)
    before = m._m.pool_stats["wakeups"]
    for _ in range(5):
        time.sleep(0.01)  # the worker spins 0.2 ms, then sleeps
        np.testing.assert_array_equal(m.infer(x), y0)
    assert m._m.pool_stats["wakeups"] == before


def test_big_ops_wake_workers_and_spaced_calls_stay_exact(tmp_path):
    """An op big enough wakes a sleeping worker; whatever the gap (around the workers' spin
    window, where the join/close races live), outputs equal threads=1 bit for bit."""
    p = _big_linear(tmp_path)
    # The row form (~600k non-zeros: hundreds of microseconds on any CPU here); the dense
    # codebook would take ~40 us on Zen 5, too short to be worth a wake-up.
    one, two = dcrt.load(p, threads=1, dense_codebook="never"), dcrt.load(p, threads=2, dense_codebook="never")
    assert [op["threads_b1"] for op in two._m.ops][0] == 2 and two._m.ops[0]["wakes_b1"]
    rng = np.random.default_rng(1)
    xs = rng.random((8, 2048), dtype=np.float32)
    ref = [one.infer(x) for x in xs]
    before = two._m.pool_stats["wakeups"]
    for k in range(200):
        time.sleep(float(rng.choice([0, 1e-4, 2e-4, 3e-4, 1e-3, 5e-3])))
        i = k % len(xs)
        np.testing.assert_array_equal(two.infer(xs[i]), ref[i])
    assert two._m.pool_stats["wakeups"] > before
    np.testing.assert_array_equal(two.infer(xs), one.infer(xs))  # batched path too
    # What decides after the first calls is the op's measured time alone per sample.
    op = two._m.ops[0]
    assert op["solo_us"] > 0 and op["wakes_b1"] == (op["solo_us"] >= 60)


def test_an_op_wakes_workers_by_its_measured_time(tmp_path):
    """Before an op has run, its work decides whether it wakes a sleeping worker; after, its
    measured time alone (a woken vCPU starts tens of microseconds late: shorter ops stay on the
    caller). The measurement is reported per op and never changes the outputs."""
    from dcrt.nn import Linear, ReLU, Sequential, he_init
    m = he_init(Sequential([Linear(512, 400, "a"), ReLU("r"), Linear(400, 10, "b")], input_shape=(512,),
                           name="mid"), 4)
    p = tmp_path / "mid.dcz"
    dcrt.compress(m, p, density=0.5, progress=False)
    two, one = dcrt.load(p, threads=2, dense_codebook="never"), dcrt.load(p, threads=1)
    ops = two._m.ops
    assert ops[0]["solo_us"] == -1 and ops[0]["wakes_b1"]  # ~100k non-zeros: over the work threshold
    x = np.random.default_rng(2).random((3, 512), dtype=np.float32)
    for k in range(30):
        time.sleep(0.002 if k % 2 else 0)
        np.testing.assert_allclose(two.infer(x[k % 3]), one.infer(x[k % 3]), rtol=1e-5, atol=1e-6)
    op = two._m.ops[0]
    assert op["solo_us"] > 0 and op["wakes_b1"] == (op["solo_us"] >= 60)
