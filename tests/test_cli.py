"""The command line, end to end in a subprocess, and the compressor without the native runtime."""
import subprocess
import sys

import numpy as np


def dcrt_cli(*args, check=True):
    p = subprocess.run([sys.executable, "-m", "dcrt", *map(str, args)], capture_output=True, text=True, timeout=300)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def test_compress_info_run_bench(tmp_path):
    out = tmp_path / "l.dcz"
    p = dcrt_cli("compress", "lenet-300-100", out, "--paper")
    assert "Total" in p.stdout and "Weights%(P)" in p.stdout and out.exists()
    p = dcrt_cli("compress", "lenet-300-100", out, "--paper", "--quiet")  # -q: nothing but errors
    assert p.stdout == "" and out.exists()
    p = dcrt_cli("info", out)
    assert "ip1" in p.stdout and "linear -> relu" in p.stdout
    x = np.random.default_rng(0).random((3, 784), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    p = dcrt_cli("run", out, tmp_path / "x.npy", "-o", tmp_path / "y.npy", "--top", "2")
    y = np.load(tmp_path / "y.npy")
    assert y.shape == (3, 10) and "sample 2:" in p.stdout
    import dcrt
    np.testing.assert_allclose(y, dcrt.decompress(out).forward(x), rtol=1e-4, atol=1e-6)
    p = dcrt_cli("bench", out, "--repeat", "5", "--warmup", "1", "--quiet")
    assert "dcrt infer" in p.stdout and "numpy dense forward" in p.stdout and "p99" in p.stdout


def test_compress_options(tmp_path):
    out = tmp_path / "l.dcz"
    dcrt_cli("compress", "lenet-5", out, "--density", "conv1=0.5,conv2=0.2,ip1=0.05,ip2=0.3", "--bits", "6",
             "--index-bits", "ip1=3", "--init", "density", "--storage", "conv1=plain", "--chunk-symbols", "100", "-q")
    import dcrt
    f = dcrt.format.read(out)
    assert [L.storage for L in f.layers] == ["plain", "sparse", "sparse", "sparse"]
    assert f.layers[2].index_bits == 3 and f.layers[1].code_bits == 6 and f.layers[2].chunk_symbols == 100


def test_errors_are_messages_not_tracebacks(tmp_path):
    bad = tmp_path / "bad.dcz"
    bad.write_bytes(b"not a dcz file at all, really" * 4)
    p = dcrt_cli("info", bad, check=False)
    assert p.returncode == 2 and "magic" in p.stderr and "Traceback" not in p.stderr
    np.save(tmp_path / "x.npy", np.zeros((2, 5), np.float32))
    dcrt_cli("compress", "lenet-300-100", tmp_path / "l.dcz", "-q")
    p = dcrt_cli("run", tmp_path / "l.dcz", tmp_path / "x.npy", check=False)
    assert p.returncode == 2 and "expected shape [N, 784]" in p.stderr


def test_compressor_works_without_the_native_extension(tmp_path):
    code = f"""
import sys
sys.modules['dcrt._core'] = None   # as if the extension had failed to build
import dcrt, numpy as np
from dcrt import zoo
m = zoo.lenet_300_100()
r = dcrt.compress(m, {str(tmp_path / 'x.dcz')!r}, density=0.1, progress=False)
d = dcrt.decompress({str(tmp_path / 'x.dcz')!r})
assert d.forward(np.zeros((1, 784), np.float32)).shape == (1, 10)
try:
    dcrt.load({str(tmp_path / 'x.dcz')!r})
except dcrt.NativeUnavailableError as e:
    print('native unavailable:', e)
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "native unavailable" in p.stdout and "pip install" in p.stdout


def test_cli_arguments_are_checked_and_errors_name_what_is_wrong(tmp_path):
    """Each of these used to crash with a traceback or do something else than asked."""
    out = tmp_path / "l.dcz"
    dcrt_cli("compress", "lenet-300-100", out, "-q")
    for flag in ("--repeat", "--batch"):  # numpy tracebacks before
        p = dcrt_cli("bench", out, flag, "0", check=False)
        assert p.returncode == 2 and f"argument {flag}: must be at least 1, got 0" in p.stderr
        assert "Traceback" not in p.stderr
    np.savez(tmp_path / "w.npz", foo=np.zeros(3, np.float32))  # a raw KeyError before
    p = dcrt_cli("compress", "lenet-300-100", tmp_path / "m.dcz", "--weights", tmp_path / "w.npz", check=False)
    assert p.returncode == 2 and "['foo']" in p.stderr and "ip1.weight" in p.stderr and "Traceback" not in p.stderr
    p = dcrt_cli("compress", "lenet-300-100", tmp_path / "m.dcz", "--density", "foo=0.1", check=False)
    assert p.returncode == 2 and "['foo'] name no layer" in p.stderr and "'ip1'" in p.stderr
    target = tmp_path / "no" / "such" / "dir" / "m.dcz"  # the error named a temp file before
    p = dcrt_cli("compress", "lenet-300-100", target, "-q", check=False)
    assert p.returncode == 2 and str(target) in p.stderr and ".tmp-" not in p.stderr
    x = np.random.default_rng(0).random((2, 784), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    p = dcrt_cli("run", out, tmp_path / "x.npy", "--top", "3")  # printed the whole array too before
    assert p.stdout.splitlines()[0].startswith("sample 0:") and len(p.stdout.splitlines()) == 2
    assert "[[" not in p.stdout


def test_run_and_bench_take_a_device(tmp_path):
    out = tmp_path / "l.dcz"
    dcrt_cli("compress", "lenet-300-100", out, "-q")
    np.save(tmp_path / "x.npy", np.zeros((1, 784), np.float32))
    p = dcrt_cli("run", out, tmp_path / "x.npy", "--device", "cpu", "--top", "1")
    assert "sample 0:" in p.stdout
    p = dcrt_cli("bench", out, "--device", "cpu", "--repeat", "3", "--no-dense", "-q")
    assert "dcrt infer" in p.stdout
    p = dcrt_cli("run", out, tmp_path / "x.npy", "--device", "gpu", check=False)
    assert p.returncode == 2 and "expected cpu, cuda or cuda:N" in p.stderr
    import dcrt
    try:
        dcrt.load(out, device="cuda")
        has_gpu = True
    except Exception as e:  # noqa: BLE001 - the message is what the CLI must pass on
        has_gpu, why = False, str(e)
    if not has_gpu:  # the loader's own reason, as a message
        p = dcrt_cli("bench", out, "--device", "cuda", "--repeat", "2", check=False)
        assert p.returncode == 2 and why.split(":")[0] in p.stderr and "Traceback" not in p.stderr
