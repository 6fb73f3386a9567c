"""Own data in the numpy pipeline (issue 14): ``dcrt pipeline ARCH OUT --data file.npz`` and the
checks on the arrays; progress lines in logs."""
import io
import subprocess
import sys

import numpy as np
import pytest

import dcrt
from dcrt import data
from dcrt.pipeline import Config, run
from dcrt.progress import Progress


def blobs(n, seed, dtype=np.uint8):
    """A 28x28 10-class problem a LeNet learns in one epoch: class k lights square k."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for i, k in enumerate(y):
        r, c = divmod(int(k), 5)
        x[i, 2 + 12 * r:10 + 12 * r, 1 + 5 * c:5 + 5 * c] = 250
    return (x if dtype == np.uint8 else (x / 255).astype(dtype)), y


def save(path, **over):
    xtr, ytr = blobs(900, 0)
    xte, yte = blobs(300, 1)
    arrays = dict(x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    arrays.update(over)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def test_pipeline_on_a_users_npz(tmp_path):
    p = save(tmp_path / "mine.npz")
    r = run(Config(arch="lenet-300-100", dataset=str(p), baseline_epochs=2, prune_steps=1, retrain_epochs=1,
                   finetune_epochs=1, density=0.2, bits=4), tmp_path / "m.dcz", progress=False, log_fn=lambda *a: None)
    assert r.baseline_test > 90 and r.native_test > 85
    m = dcrt.load(tmp_path / "m.dcz")
    assert m.meta["metadata"]["dataset"] == "mine.npz" and m.labels == [str(i) for i in range(10)]
    # float images in [0, 1] are taken as they are; [N, 1, 28, 28] and [N, 784] shapes too
    ds = data.from_npz(save(tmp_path / "f.npz", x_train=blobs(900, 0, np.float32)[0].reshape(900, 784),
                            x_test=blobs(300, 1, np.float32)[0].reshape(300, 1, 28, 28)), image=True)
    assert ds.train.x.shape[1:] == (1, 28, 28) and ds.test.x.dtype == np.float32 and len(ds.test) == 300


def test_cli_pipeline_with_npz(tmp_path):
    p = save(tmp_path / "mine.npz")
    out = subprocess.run([sys.executable, "-m", "dcrt.cli", "pipeline", "lenet-300-100", str(tmp_path / "c.dcz"),
                          "--data", str(p), "--baseline-epochs", "1", "--prune-steps", "1", "--retrain-epochs", "1",
                          "--finetune-epochs", "1", "--density", "0.3", "--distill", "0.3", "--temperature", "3",
                          "--retrain-weight-decay", "0.001"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "distill=0.3, temperature=3.0" in out.stdout and "retrain_weight_decay=0.001" in out.stdout
    assert "lenet-300-100 on " in out.stdout and "mine.npz" in out.stdout
    # not a terminal: the training stages still print progress lines
    assert "train" in out.stderr or "baseline" in out.stderr


@pytest.mark.parametrize("over,msg", [
    ({"y_test": None}, r"missing arrays \['y_test'\]"),
    ({"x_train": np.zeros((900, 32, 32), np.uint8)}, r"x_train has shape \[900, 32, 32\]; expected"),
    ({"x_train": np.zeros((900, 28, 28), np.int32)}, "x_train has dtype int32; expected uint8"),
    ({"x_test": np.full((300, 784), np.nan, np.float32)}, "x_test contains NaN or Inf"),
    ({"y_train": np.zeros(899, np.int64)}, r"y_train has shape \[899\]; expected \[900\]"),
    ({"y_train": np.zeros(900, np.float32)}, "y_train has dtype float32; expected integer"),
    ({"y_test": np.full(300, 10)}, r"y_test: labels must be in 0..9, found 10..10"),
    ({"y_test": np.full(300, -1)}, r"y_test: labels must be in 0..9, found -1..-1"),
])
def test_npz_checked_with_clear_errors(tmp_path, over, msg):
    p = save(tmp_path / "bad.npz", **over)
    with pytest.raises(ValueError, match=msg):
        data.from_npz(p)


def test_npz_not_a_file_or_not_an_npz(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        data.load(str(tmp_path / "nope.npz"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        data.load(str(tmp_path / "junk.npz"))


def test_progress_writes_lines_to_a_log():
    s = io.StringIO()  # not a TTY
    bar = Progress(100, "train", stream=s, log_every=0.0)
    for i in range(100):
        bar.update(f"ep 1 loss {i}")
    lines = s.getvalue().splitlines()
    assert len(lines) == 100 and "\r" not in s.getvalue()
    assert lines[0].startswith("train: 1/100 (1%)") and "left" in lines[0]
    assert lines[-1].startswith("train: 100/100 (100%)") and lines[-1].endswith("ep 1 loss 99")
    quiet = io.StringIO()
    b2 = Progress(1000, "x", stream=quiet, log_every=3600)
    for _ in range(999):
        b2.update()
    assert quiet.getvalue() == ""  # nothing before log_every has passed, then the last line
    b2.update()
    assert quiet.getvalue().count("\n") == 1
